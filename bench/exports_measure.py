"""The export measures of ``bench/run.py``: every format (PDF, XLSX, CSV, Parquet) of a closed
month with many partners, written as ``koobill export`` writes them (one process per core).

The month is generated, ingested and closed once (the demo generator with
``--partners N --usage-rows-per-day R``: N = $KOOBILL_BENCH_EXPORT_PARTNERS [200],
R = $KOOBILL_BENCH_EXPORT_ROWS [20000]) and cached under the bench's out dir. Each run exports
it in a fresh process and reports its wall time and the CPU time of that process and of the
worker processes it started. ``exports_2000_partners_s`` is the wall time scaled to 2,000
partners when fewer were measured (the generator makes at most 999), and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

MONTH = "2026-10"
TARGET_PARTNERS = 2000


def sizes(tiny: bool) -> dict:
    if tiny:
        return {"partners": 4, "rows": 200, "days": 3}
    return {
        "partners": int(os.environ.get("KOOBILL_BENCH_EXPORT_PARTNERS", "200")),
        "rows": int(os.environ.get("KOOBILL_BENCH_EXPORT_ROWS", "20000")),
        "days": None,  # the whole month through its cutoff
    }


def prepare(out: Path, tiny: bool, log) -> Path:
    """A data dir with ``MONTH`` closed for the configured partners (cached)."""
    from pipelines import calendar as cal

    sz = sizes(tiny)
    root = out / f"exports-{sz['partners']}x{sz['rows']}" / "data"
    marker = root.parent / ".bench-complete.json"
    params = {**sz, "month": MONTH, "seed": 7}
    try:
        if json.loads(marker.read_text()) == params:
            log(f"export month cached in {root}")
            return root
    except (OSError, ValueError):
        pass
    from pipelines.close import close_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    shutil.rmtree(root.parent, ignore_errors=True)
    root.parent.mkdir(parents=True)
    days = cal.date_range(cal.first_day(MONTH), cal.cutoff(MONTH))
    if sz["days"]:
        days = days[: sz["days"]]
    t = time.monotonic()
    log(f"generating {MONTH} for {sz['partners']} partners, {sz['rows']:,} usage rows a day")
    generate(
        root, days[0].isoformat(), days[-1].isoformat(), seed=7,
        usage_rows_per_day=sz["rows"], n_partners=sz["partners"], bad_rows=True,
    )  # fmt: skip
    for day in days:
        ingest_date(root, day.isoformat())
    close_month(root, MONTH, force=bool(sz["days"]))
    log(f"export month ready in {time.monotonic() - t:.0f} s")
    marker.write_text(json.dumps(params))
    return root


def child_work(args: dict) -> dict:
    """One export run (in a fresh process); wall and CPU seconds, the pool's included."""
    import resource

    from pipelines.exports import export_month
    from pipelines.exports.run import warm_up, worker_count

    root = Path(args["data_dir"])
    shutil.rmtree(root / "exports", ignore_errors=True)
    warm_up()  # imports and fonts of this process, as a long-lived Airflow worker has them
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = export_month(root, MONTH, lock_wait_s=0)
    secs = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        (a.ru_utime + a.ru_stime) - (b.ru_utime + b.ru_stime)
        for a, b in zip(after, before, strict=True)
    )
    n = len(r.partners)
    return {
        "seconds": secs,
        # bench/run.py's child() reports its own process's CPU as cpu_s; the workers' is here
        "cpu_with_workers_s": cpu,
        "partners": n,
        "files": len(r.files),
        "workers": worker_count(n),
    }


def summary(res: dict) -> dict:
    """The export figures of results.json."""
    e = res.get("exports")
    if not e:
        return {"exports_cpu_s_per_partner": None, "exports_2000_partners_s": None}
    n = e["partners"]
    return {
        "exports_cpu_s_per_partner": round(e["cpu_with_workers_s"] / n, 4),
        "exports_2000_partners_s": round(e["seconds"] * TARGET_PARTNERS / n, 1),
        "exports_2000_partners_extrapolated_from": n if n != TARGET_PARTNERS else None,
        "exports_partners": n,
        "exports_s": round(e["seconds"], 2),
        "exports_workers": e.get("workers"),
        # what the CPU time allows on a quiet machine with that many worker processes (the
        # wall time above carries whatever else the machine was doing)
        "exports_2000_partners_cpu_bound_s": round(
            e["cpu_with_workers_s"] / n * TARGET_PARTNERS / max(e.get("workers") or 1, 1), 1
        ),
        "exports_load_avg_1m_after": e.get("load_avg_1m_after"),
    }


def markdown_rows(s: dict) -> list[tuple[str, str, str, str, str]]:
    n = s.get("exports_partners")
    scaled = s.get("exports_2000_partners_extrapolated_from")
    return [
        (
            "Exports, CPU per partner",
            f"PDF + XLSX + CSV + Parquet, {n or '—'} partners",
            f"{s.get('exports_s') or '—'} s wall on {s.get('exports_workers') or '—'} processes",
            "",
            "exports_cpu_s_per_partner",
        ),
        (
            "Exports, 2,000 partners",
            f"extrapolated from {scaled} partners" if scaled else "measured",
            "",
            f"CPU-bound {s.get('exports_2000_partners_cpu_bound_s') or '—'} s",
            "exports_2000_partners_s",
        ),
    ]
