"""koobill benchmark (``make bench``): ingest, history growth, close, CLI start-up, against a
DuckDB lower bound and a plain pandas implementation of the same day.

    .venv/bin/python bench/run.py            # full scale (see the sizes below)
    .venv/bin/python bench/run.py --tiny     # seconds; used by tests/test_bench.py

Sizes and places come from the environment (defaults in brackets):

    KOOBILL_BENCH_BIG_ROWS     usage rows of the big landing day              [5000000]
    KOOBILL_BENCH_DAY_ROWS     usage rows of each day of the month            [1000000]
    KOOBILL_BENCH_DAYS         landing days in the month                      [30]
    KOOBILL_BENCH_REPEATS      runs per measurement (the median is reported)  [3]
    KOOBILL_BENCH_BUDGET_S     stop repeating a measurement once its runs have
                               taken this long (at least one run is made)     [900]
    KOOBILL_BENCH_OUT          cache of generated and ingested data           [bench/out]
    KOOBILL_BENCH_RESULTS_DIR  where results.json and results.md are written  [bench]
    KOOBILL_BENCH_SKIP         comma list of parts to skip: big, pandas, month, close, cli

Generated landing data and the 29 ingested days of the month are cached under the out dir, so
a rerun measures again without regenerating. Every measurement runs in its own subprocess
(``--child``) and reports its own wall time, CPU time and peak RSS (VmHWM of that process), so a
run's memory is never mixed with another's. Imports happen before the clock starts.

results.json is rewritten after every measurement, so a partial run still leaves its figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BIG_DAY = "2026-03-10"
MONTH_START = "2026-04-01"
RESULT_TAG = "BENCH_RESULT "

GOALS = (
    # key, comparison, target, unit
    ("ingest_vs_lower_bound", "<=", 1.5, "x"),
    ("close_vs_lower_bound", "<=", 1.5, "x"),
    ("day30_vs_day1", "<=", 1.2, "x"),
    ("peak_rss_mb", "<=", 3072, "MB"),
    ("cli_startup_s", "<=", 1.0, "s"),
    ("pandas_vs_koobill", ">=", 5.0, "x"),
)


# --------------------------------------------------------------------------- configuration


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").replace("_", "").strip()
    return int(raw) if raw else default


def config(tiny: bool, out: str | None, results_dir: str | None) -> dict:
    if tiny:
        cfg = {"big_rows": 2000, "day_rows": 2000, "days": 2, "repeats": 1, "budget_s": 60.0}
    else:
        cfg = {
            "big_rows": _env_int("KOOBILL_BENCH_BIG_ROWS", 5_000_000),
            "day_rows": _env_int("KOOBILL_BENCH_DAY_ROWS", 1_000_000),
            "days": _env_int("KOOBILL_BENCH_DAYS", 30),
            "repeats": _env_int("KOOBILL_BENCH_REPEATS", 3),
            "budget_s": float(os.environ.get("KOOBILL_BENCH_BUDGET_S", "900")),
        }
    if cfg["days"] < 2:
        raise SystemExit("KOOBILL_BENCH_DAYS must be >= 2")
    cfg["tiny"] = tiny
    cfg["in_process"] = tiny and os.environ.get("KOOBILL_BENCH_SUBPROCESS") != "1"
    cfg["out"] = Path(out or os.environ.get("KOOBILL_BENCH_OUT") or HERE / "out").resolve()
    cfg["results_dir"] = Path(
        results_dir or os.environ.get("KOOBILL_BENCH_RESULTS_DIR") or HERE
    ).resolve()
    cfg["skip"] = {s.strip() for s in os.environ.get("KOOBILL_BENCH_SKIP", "").split(",") if s}
    return cfg


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    import duckdb
    import pandas
    import pyarrow

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "ram_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        "pandas": pandas.__version__,
        "koobill_memory_limit": os.environ.get("KOOBILL_MEMORY_LIMIT", "2GB"),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --------------------------------------------------------------------------- data (cached)


def _marker_ok(folder: Path, params: dict) -> bool:
    m = folder / ".bench-complete.json"
    try:
        return json.loads(m.read_text()) == params
    except (OSError, ValueError):
        return False


def _generate(folder: Path, start: str, end: str, rows: int) -> None:
    params = {
        "start": start,
        "end": end,
        "usage_rows_per_day": rows,
        "seed": 7,
        "n_partners": 4,
        "bad_rows": True,
    }
    if _marker_ok(folder, params):
        log(f"landing data cached in {folder}")
        return
    from pipelines.generate import generate

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"generating {start}..{end} with {rows:,} usage rows a day into {folder}")
    t = time.monotonic()
    summary = generate(
        folder, start, end, seed=7, usage_rows_per_day=rows, n_partners=4, bad_rows=True
    )
    log(f"generated in {time.monotonic() - t:.0f} s: {summary.splitlines()[0]}")
    (folder / ".bench-complete.json").write_text(json.dumps(params))


def _days(start: str, n: int) -> list[str]:
    d0 = dt.date.fromisoformat(start)
    return [(d0 + dt.timedelta(days=i)).isoformat() for i in range(n)]


def _fresh_run_dir(path: Path, landing: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    (path / "landing").symlink_to(landing, target_is_directory=True)
    return path


def _drop_partition(part: Path) -> None:
    """Remove a committed lake partition (symlink and its version folder)."""
    if part.is_symlink():
        target = part.resolve()
        part.unlink()
        shutil.rmtree(target, ignore_errors=True)


# --------------------------------------------------------------------------- children


def child(kind: str, args: dict) -> dict:
    """One measurement in this (fresh) process; returns seconds, CPU seconds and peak RSS."""
    import duckdb  # noqa: F401  (imported before any clock starts)

    if kind in ("ingest", "close"):
        import pipelines.close
        import pipelines.ingest  # noqa: F401
    if kind == "pandas":
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    out = _child_work(kind, args)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["peak_rss_mb"] = _peak_rss_mb(ru)
    # CPU seconds of the measured work (all threads); on a busy machine the ratio of CPU times
    # is a steadier comparison than the ratio of wall times
    out["cpu_s"] = (ru.ru_utime + ru.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return out


def _peak_rss_mb(ru) -> float:
    """Peak RSS of this process. VmHWM belongs to the address space, which exec replaces;
    ru_maxrss can carry the parent's peak over fork + exec on Linux, so it is only a fallback."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru.ru_maxrss / 1024


def _child_work(kind: str, args: dict) -> dict:
    if kind == "ingest":
        from pipelines.ingest import ingest_date

        t = time.perf_counter()
        r = ingest_date(args["data_dir"], args["day"])
        secs = time.perf_counter() - t
        rows = sum(st.total("rows_read") for st in r.feeds.values())
        usage = r.feeds["usage"].total("rows_read")
        out = {"seconds": secs, "rows_read": rows, "usage_rows": usage}
    elif kind == "close":
        from pipelines.close import close_month

        t = time.perf_counter()
        r = close_month(args["data_dir"], args["month"], force=True)
        secs = time.perf_counter() - t
        out = {"seconds": secs, "bills": len(r.bills)}
    elif kind == "lower_ingest":
        import duckdb

        out = _lower_ingest(duckdb, Path(args["landing"]), args["day"], Path(args["out"]))
    elif kind == "lower_close":
        import duckdb

        out = _lower_close(duckdb, Path(args["data_dir"]), args["month"], Path(args["out"]))
    elif kind == "pandas":
        out = _pandas_day(Path(args["landing"]), args["day"], Path(args["out"]))
    else:
        raise SystemExit(f"unknown child kind {kind}")
    return out


def run_child(cfg: dict, kind: str, args: dict, label: str) -> dict:
    if cfg["in_process"]:
        # tiny mode: one process, so Great Expectations and DuckDB are imported once; the
        # peak RSS figures are then the process's running maximum, not per run.
        return json.loads(json.dumps(child(kind, args)))
    logs = cfg["out"] / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{label}.log", "ab") as err:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(args)],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=REPO,
            env={**os.environ, "KOOBILL_LOCK_WAIT_S": "0"},
        )
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{label} failed (exit {proc.returncode}); see {logs / (label + '.log')}"
        )
    return json.loads(lines[-1][len(RESULT_TAG) :])


def repeat(cfg: dict, label: str, once) -> dict:
    """Run ``once()`` up to ``repeats`` times within the time budget; medians of the runs."""
    runs: list[dict] = []
    spent = 0.0
    while len(runs) < cfg["repeats"]:
        r = once(len(runs))
        runs.append(r)
        spent += r["seconds"]
        log(
            f"  {label} run {len(runs)}: {r['seconds']:.2f} s (process CPU {r['cpu_s']:.1f} s), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}"
        )
        if spent + r["seconds"] > cfg["budget_s"]:
            break
    out = {
        "runs": len(runs),
        "all_seconds": [round(r["seconds"], 3) for r in runs],
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    for k in runs[0]:
        if isinstance(runs[0][k], (int, float)):
            out[k] = statistics.median(r[k] for r in runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return out


# --------------------------------------------------------------------------- lower bounds


def _landing_files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if p.is_file()) if folder.is_dir() else []


def _q(p: Path | str) -> str:
    return "'" + str(p).replace("'", "''") + "'"


def _typed_source(folder: Path, types: dict[str, str]) -> str:
    """A typed SELECT over every file of a landing folder (CSV, JSONL or Parquet)."""
    parts = []
    csvs = _landing_files(folder, ".csv")
    if csvs:
        import csv

        with open(csvs[0], encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh))
        cols = ", ".join(f"{_q(h)}: {_q(types.get(h, 'VARCHAR'))}" for h in header)
        parts.append(
            f"select {', '.join(types)} from read_csv([{', '.join(_q(p) for p in csvs)}], "
            f"columns={{{cols}}}, header=true, auto_detect=false, ignore_errors=true)"
        )
    for p in _landing_files(folder, ".jsonl"):
        sel = ", ".join(f"try_cast({c} as {t}) as {c}" for c, t in types.items())
        cols = ", ".join(f"{_q(c)}: 'VARCHAR'" for c in types)
        parts.append(
            f"select {sel} from read_json({_q(p)}, format='newline_delimited', columns={{{cols}}})"
        )
    for p in _landing_files(folder, ".parquet"):
        sel = ", ".join(f"try_cast({c} as {t}) as {c}" for c, t in types.items())
        parts.append(f"select {sel} from read_parquet({_q(p)}, union_by_name=true)")
    return " union all ".join(parts)


USAGE_TYPES = {
    "record_id": "VARCHAR",
    "partner_id": "VARCHAR",
    "customer_id": "VARCHAR",
    "customer_name": "VARCHAR",
    "product_id": "VARCHAR",
    "product_name": "VARCHAR",
    "sku_code": "VARCHAR",
    "region": "VARCHAR",
    "resource_id": "VARCHAR",
    "usage_start": "TIMESTAMPTZ",
    "usage_end": "TIMESTAMPTZ",
    "quantity": "DECIMAL(38,6)",
    "unit": "VARCHAR",
}
PRICE_TYPES = {
    "sku_code": "VARCHAR",
    "unit": "VARCHAR",
    "unit_price": "DECIMAL(38,6)",
    "currency": "VARCHAR",
    "effective_from": "TIMESTAMPTZ",
    "effective_to": "TIMESTAMPTZ",
}
PARTNER_TYPES = {"partner_id": "VARCHAR", "currency": "VARCHAR", "discount_rate": "DECIMAL(38,6)"}


def _ref_folders(landing: Path, feed: str, day: str) -> list[Path]:
    root = landing / feed
    return sorted(p for p in root.iterdir() if p.name <= day) if root.is_dir() else []


def _lower_ingest(duckdb, landing: Path, day: str, out: Path) -> dict:
    """One DuckDB statement: read and type the day's usage, rate it with an ASOF join on the
    price list (and the partner's discount), write the rated rows to Parquet."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"set memory_limit = '{os.environ.get('KOOBILL_MEMORY_LIMIT', '2GB')}'")
    usage = _typed_source(landing / "usage" / day, USAGE_TYPES)
    prices = " union all ".join(
        _typed_source(f, PRICE_TYPES) for f in _ref_folders(landing, "prices", day)
    )
    partners = _typed_source(_ref_folders(landing, "partners", day)[-1], PARTNER_TYPES)
    out.parent.mkdir(parents=True, exist_ok=True)
    stmt = f"""copy (
      select u.*, s.currency, p.unit_price, s.discount_rate,
             round(u.quantity * p.unit_price, 6)::decimal(38,6) as official_amount,
             round(round(u.quantity * p.unit_price, 6)::decimal(38,6) * s.discount_rate, 6)
               ::decimal(38,6) as discount_amount,
             (round(u.quantity * p.unit_price, 6)::decimal(38,6)
              - round(round(u.quantity * p.unit_price, 6)::decimal(38,6) * s.discount_rate, 6)
               ::decimal(38,6)) as amount
      from ({usage}) u
      join ({partners}) s on s.partner_id = u.partner_id
      asof join ({prices}) p
        on p.sku_code = u.sku_code and p.unit = u.unit and p.currency = s.currency
       and u.usage_start >= p.effective_from
    ) to {_q(out)} (format parquet, compression zstd, return_stats)"""
    t = time.perf_counter()
    res = con.execute(stmt).fetchall()
    secs = time.perf_counter() - t
    rows = sum(int(r[1]) for r in res) if res and len(res[0]) > 1 else 0
    con.close()
    return {"seconds": secs, "rows_written": rows}


def _lower_close(duckdb, data_dir: Path, month: str, out: Path) -> dict:
    """One aggregation of the month's lake records into bill lines (the grain the bills and
    their detail are published at), written to Parquet."""
    from pipelines import calendar as cal

    lo, hi = (d.isoformat() for d in cal.landing_window(month))
    ingest = data_dir / "lake" / "ingest"
    parts = sorted(
        p
        for p in ingest.iterdir()
        if p.name.startswith("landing_date=") and lo <= p.name[13:] <= hi
    )

    def files(feed: str) -> str:
        fs = [p / f"{feed}.parquet" for p in parts if (p / f"{feed}.parquet").exists()]
        return "[" + ", ".join(_q(f) for f in fs) + "]"

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute(f"set memory_limit = '{os.environ.get('KOOBILL_MEMORY_LIMIT', '2GB')}'")
    stmt = f"""copy (
      with r as (
        select partner_id, case when amount < 0 then 'refund' else 'consume' end component,
               order_type charge_type, customer_id, product_id, coalesce(sku_code, '') sku_code,
               region, source_month, late, '' description, currency, null::decimal(38,6) quantity,
               official_amount, discount_amount, amount
        from read_parquet({files("orders")}) where bill_month_assigned = '{month}'
        union all
        select partner_id, 'consume', 'USAGE', customer_id, product_id, sku_code, region,
               source_month, late, '', currency, quantity, official_amount, discount_amount, amount
        from read_parquet({files("usage")}) where bill_month_assigned = '{month}'
        union all
        select partner_id, 'adjustment', 'ADJUSTMENT', coalesce(customer_id, ''),
               coalesce(product_id, ''), '', '', source_month, late, reason, currency, null,
               amount, 0, amount
        from read_parquet({files("adjustments")}, union_by_name=true)
        where bill_month_assigned = '{month}'
        union all
        select partner_id, 'coupon', 'COUPON', '', '', '', '', source_month, late, coupon_id,
               currency, null, amount, 0, amount
        from read_parquet({files("coupons")}, union_by_name=true)
        where bill_month_assigned = '{month}'
      )
      select partner_id, component, charge_type, customer_id, product_id, sku_code, region,
             source_month, late, description, currency,
             sum(quantity)::decimal(38,6) quantity, sum(official_amount)::decimal(38,6) official,
             sum(discount_amount)::decimal(38,6) discount, sum(amount)::decimal(38,6) amount,
             count(*) record_count
      from r group by all order by all
    ) to {_q(out)} (format parquet)"""
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    con.execute(stmt)
    secs = time.perf_counter() - t
    con.close()
    return {"seconds": secs}


# --------------------------------------------------------------------------- pandas


def _pandas_day(landing: Path, day: str, out: Path) -> dict:
    """The day as a data engineer would write it in pandas: read the CSV (pyarrow engine),
    parse the timestamps, attach the partner's discount, merge_asof on the price list, compute
    the amounts exactly in integer micro-units (half-up to 6 places), write Parquet with
    decimal128(38, 6) money columns."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    def read(folder: Path) -> pd.DataFrame:
        frames = [
            pd.read_csv(p, engine="pyarrow", dtype=str) for p in _landing_files(folder, ".csv")
        ]
        frames += [pd.read_json(p, lines=True, dtype=str) for p in _landing_files(folder, ".jsonl")]
        frames += [pd.read_parquet(p).astype(str) for p in _landing_files(folder, ".parquet")]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]

    def ts(s: pd.Series) -> pd.Series:
        ok = s.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
        return pd.to_datetime(s.where(ok), format="ISO8601", utc=True, errors="coerce")

    def micro(s: pd.Series) -> pd.Series:
        """Plain non-negative decimals with <= 6 places as exact int64 micro-units."""
        parts = s.str.partition(".")
        whole = parts[0].replace("", "0").astype("int64")
        frac = parts[2].str.pad(6, side="right", fillchar="0").replace("", "000000")
        return whole * 1_000_000 + frac.astype("int64")

    def decimal_col(x: np.ndarray) -> pa.Array:
        x = np.ascontiguousarray(x, dtype=np.int64)
        words = np.empty(len(x) * 2, dtype=np.int64)
        words[0::2] = x
        words[1::2] = np.where(x < 0, -1, 0)
        return pa.Array.from_buffers(pa.decimal128(38, 6), len(x), [None, pa.py_buffer(words)])

    t = time.perf_counter()
    usage = read(landing / "usage" / day)
    rows_read = len(usage)
    partners = read(_ref_folders(landing, "partners", day)[-1])
    prices = pd.concat([read(f) for f in _ref_folders(landing, "prices", day)], ignore_index=True)

    usage["usage_start"] = ts(usage["usage_start"])
    usage["usage_end"] = ts(usage["usage_end"])
    q = usage["quantity"].str.strip()
    usage = usage[
        q.str.fullmatch(r"\d+(?:\.\d{0,6})?", na=False)
        & usage["usage_start"].notna()
        & usage["usage_end"].notna()
    ]
    usage["q_micro"] = micro(usage["quantity"].str.strip())

    partners = partners[["partner_id", "currency", "discount_rate"]].copy()
    partners["rate_micro"] = micro(partners["discount_rate"].str.strip())
    prices["effective_from"] = ts(prices["effective_from"])
    prices["effective_to"] = ts(prices["effective_to"].fillna(""))
    prices["price_micro"] = micro(prices["unit_price"].str.strip())
    prices = prices.sort_values("effective_from")

    usage = usage.merge(partners[["partner_id", "currency", "rate_micro"]], on="partner_id")
    usage = usage.sort_values("usage_start", kind="stable")
    rated = pd.merge_asof(
        usage,
        prices[["sku_code", "unit", "currency", "effective_from", "effective_to", "price_micro"]],
        left_on="usage_start",
        right_on="effective_from",
        by=["sku_code", "unit", "currency"],
        direction="backward",
    )
    rated = rated[
        rated["price_micro"].notna()
        & (rated["effective_to"].isna() | (rated["usage_start"] < rated["effective_to"]))
    ]
    qm = rated["q_micro"].to_numpy(np.int64)
    pm = rated["price_micro"].to_numpy(np.int64)
    if len(qm) and int(qm.max()) * int(pm.max()) >= 2**62:
        raise OverflowError("quantity * unit_price does not fit int64 micro-units")
    official = (qm * pm + 500_000) // 1_000_000  # half-up (amounts are >= 0)
    discount = (official * rated["rate_micro"].to_numpy(np.int64) + 500_000) // 1_000_000
    amount = official - discount

    keep = [
        "record_id",
        "partner_id",
        "customer_id",
        "customer_name",
        "product_id",
        "product_name",
        "sku_code",
        "region",
        "resource_id",
        "usage_start",
        "usage_end",
        "unit",
        "currency",
    ]
    table = pa.Table.from_pandas(rated[keep], preserve_index=False)
    table = table.append_column("quantity", decimal_col(qm))
    table = table.append_column("unit_price", decimal_col(pm))
    table = table.append_column("official_amount", decimal_col(official))
    table = table.append_column("discount_amount", decimal_col(discount))
    table = table.append_column("amount", decimal_col(amount))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    secs = time.perf_counter() - t
    return {"seconds": secs, "rows_read": rows_read, "rows_written": table.num_rows}


# --------------------------------------------------------------------------- measurements


def measure_cli(cfg: dict) -> dict:
    exe = Path(sys.executable).parent / "koobill"
    cmd = (
        [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "pipelines.cli", "--help"]
    )
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    times = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return {"seconds": statistics.median(times), "all_seconds": [round(x, 3) for x in times]}


def measure_big(cfg: dict, res: dict, save) -> None:
    big = cfg["out"] / f"big-{cfg['big_rows']}"
    _generate(big, BIG_DAY, BIG_DAY, cfg["big_rows"])
    landing = big / "landing"
    runs = cfg["out"] / "runs"

    def lower(i: int) -> dict:
        return run_child(
            cfg,
            "lower_ingest",
            {"landing": str(landing), "day": BIG_DAY, "out": str(runs / "lower" / "usage.parquet")},
            "lower_ingest",
        )

    def koobill(i: int) -> dict:
        d = _fresh_run_dir(runs / "big-ingest", landing)
        try:
            return run_child(cfg, "ingest", {"data_dir": str(d), "day": BIG_DAY}, "big_ingest")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def pandas(i: int) -> dict:
        return run_child(
            cfg,
            "pandas",
            {
                "landing": str(landing),
                "day": BIG_DAY,
                "out": str(runs / "pandas" / "usage.parquet"),
            },
            "pandas",
        )

    log(f"lower bound of the {cfg['big_rows']:,}-row day (one DuckDB statement)")
    res["ingest_lower_bound"] = repeat(cfg, "lower bound", lower)
    save()
    log(f"koobill ingest of the {cfg['big_rows']:,}-row day")
    res["ingest_big"] = repeat(cfg, "koobill ingest", koobill)
    save()
    if "pandas" not in cfg["skip"]:
        log(f"pandas implementation of the {cfg['big_rows']:,}-row day")
        res["pandas_big"] = repeat(cfg, "pandas", pandas)
        save()
    shutil.rmtree(runs / "lower", ignore_errors=True)
    shutil.rmtree(runs / "pandas", ignore_errors=True)


def measure_month(cfg: dict, res: dict, save) -> None:
    days = _days(MONTH_START, cfg["days"])
    month = MONTH_START[:7]
    mdir = cfg["out"] / f"month-{cfg['day_rows']}x{cfg['days']}"
    _generate(mdir / "gen", days[0], days[-1], cfg["day_rows"])
    landing = mdir / "gen" / "landing"
    target = days[-1]
    runs = cfg["out"] / "runs"

    # The month's data dir: days 1..N-1 ingested once and cached (resumable).
    state = mdir / "state"
    if not (state / "landing").exists():
        state.mkdir(parents=True, exist_ok=True)
        (state / "landing").symlink_to(landing, target_is_directory=True)
    done = {
        p.name.split("=", 1)[1]
        for p in (state / "lake" / "ingest").glob("landing_date=*")
        if p.is_symlink()
    }
    todo = [d for d in days[:-1] if d not in done]
    if todo:
        log(
            f"building the month: ingesting {len(todo)} of {len(days) - 1} day(s) "
            f"({cfg['day_rows']:,} usage rows each) into {state}"
        )
    history = []
    for d in todo:
        # untimed set-up: in this process, so Great Expectations is imported once, not per day
        r = _child_work("ingest", {"data_dir": str(state), "day": d})
        r["peak_rss_mb"] = _peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF))
        history.append(
            {"day": d, "seconds": round(r["seconds"], 2), "peak_rss_mb": round(r["peak_rss_mb"])}
        )
        log(f"  ingested {d}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    if history:
        res["month_build_ingests"] = history
        save()

    # Day 1: the same landing day ingested with no history but the reference data (partners,
    # prices) that landed before it, so both runs read identical input.
    ref_days = sorted(
        {
            p.name
            for feed in ("partners", "prices")
            for p in (landing / feed).glob("*")
            if p.name < target
        }
    )

    def day1(i: int) -> dict:
        d = runs / "day1"
        shutil.rmtree(d, ignore_errors=True)
        for feed in ("partners", "prices"):
            for rd in ref_days:
                if (landing / feed / rd).is_dir():
                    (d / "landing" / feed).mkdir(parents=True, exist_ok=True)
                    (d / "landing" / feed / rd).symlink_to(landing / feed / rd)
        for feed_dir in landing.iterdir():
            if (feed_dir / target).is_dir():
                (d / "landing" / feed_dir.name).mkdir(parents=True, exist_ok=True)
                (d / "landing" / feed_dir.name / target).symlink_to(feed_dir / target)
        for rd in ref_days:  # untimed set-up, in this process
            _child_work("ingest", {"data_dir": str(d), "day": rd})
        try:
            return run_child(cfg, "ingest", {"data_dir": str(d), "day": target}, "day1")
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def day30(i: int) -> dict:
        _drop_partition(state / "lake" / "ingest" / f"landing_date={target}")
        return run_child(cfg, "ingest", {"data_dir": str(state), "day": target}, "dayN")

    log(
        f"day 1 vs day {len(days)}: ingest {target} with no history, then with "
        f"{len(days) - 1} ingested days"
    )
    res["ingest_day1"] = repeat(cfg, "day 1", day1)
    save()
    res["ingest_dayN"] = repeat(cfg, f"day {len(days)}", day30)
    save()

    if "close" in cfg["skip"]:
        return

    def close(i: int) -> dict:
        _drop_partition(state / "lake" / "bills" / f"bill_month={month}")
        return run_child(cfg, "close", {"data_dir": str(state), "month": month}, "close")

    def lower_close(i: int) -> dict:
        return run_child(
            cfg,
            "lower_close",
            {
                "data_dir": str(state),
                "month": month,
                "out": str(runs / "lower_close" / "lines.parquet"),
            },
            "lower_close",
        )

    log(f"close of {month} ({cfg['days']} days x {cfg['day_rows']:,} usage rows)")
    res["close_lower_bound"] = repeat(cfg, "close lower bound", lower_close)
    save()
    res["close"] = repeat(cfg, "koobill close", close)
    save()
    shutil.rmtree(runs / "lower_close", ignore_errors=True)


# --------------------------------------------------------------------------- results


def summarize(cfg: dict, res: dict, mach: dict, complete: bool) -> dict:
    def sec(key):
        return res.get(key, {}).get("seconds")

    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    big = res.get("ingest_big", {})
    out = {
        "ingest_vs_lower_bound": ratio(sec("ingest_big"), sec("ingest_lower_bound")),
        "close_vs_lower_bound": ratio(sec("close"), sec("close_lower_bound")),
        "day30_vs_day1": ratio(sec("ingest_dayN"), sec("ingest_day1")),
        "peak_rss_mb": round(big["peak_rss_mb"], 1) if big else None,
        "cli_startup_s": round(sec("cli"), 3) if sec("cli") else None,
        "pandas_vs_koobill": ratio(sec("pandas_big"), sec("ingest_big")),
        "ingest_s": sec("ingest_big"),
        "ingest_rows": big.get("rows_read"),
        "ingest_usage_rows": big.get("usage_rows"),
        "ingest_rows_per_s": round(big["rows_read"] / big["seconds"]) if big else None,
        "ingest_lower_bound_s": sec("ingest_lower_bound"),
        "ingest_lower_bound_peak_rss_mb": res.get("ingest_lower_bound", {}).get("peak_rss_mb"),
        "pandas_s": sec("pandas_big"),
        "pandas_peak_rss_mb": res.get("pandas_big", {}).get("peak_rss_mb"),
        "day1_s": sec("ingest_day1"),
        "day30_s": sec("ingest_dayN"),
        "day_rows": res.get("ingest_dayN", {}).get("rows_read"),
        "close_s": sec("close"),
        "close_lower_bound_s": sec("close_lower_bound"),
        "close_peak_rss_mb": res.get("close", {}).get("peak_rss_mb"),
        "month_usage_rows": cfg["day_rows"] * cfg["days"],
    }

    def cpu(key):
        return res.get(key, {}).get("cpu_s")

    # the same ratios over CPU seconds of the measured work (steadier on a shared machine)
    out["cpu_ratios"] = {
        "ingest_vs_lower_bound": ratio(cpu("ingest_big"), cpu("ingest_lower_bound")),
        "close_vs_lower_bound": ratio(cpu("close"), cpu("close_lower_bound")),
        "day30_vs_day1": ratio(cpu("ingest_dayN"), cpu("ingest_day1")),
        "pandas_vs_koobill": ratio(cpu("pandas_big"), cpu("ingest_big")),
    }
    goals = {}
    for key, op, target, _unit in GOALS:
        v = out.get(key)
        if v is None:
            goals[key] = {"value": None, "target": f"{op} {target}", "status": "not measured"}
        else:
            met = v <= target if op == "<=" else v >= target
            goals[key] = {
                "value": v,
                "target": f"{op} {target}",
                "status": "met" if met else "missed",
            }
    return {
        **out,
        "goals": goals,
        "complete": complete,
        "sizes": {
            "big_day_usage_rows": cfg["big_rows"],
            "month_day_usage_rows": cfg["day_rows"],
            "month_days": cfg["days"],
            "repeats": cfg["repeats"],
            "tiny": cfg["tiny"],
            "subprocess_per_run": not cfg["in_process"],
        },
        "machine": mach,
        "raw": res,
        "generated_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


def _fmt(v, unit="") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:,.2f}"
    elif isinstance(v, int):
        v = f"{v:,}"
    return f"{v}{unit}"


def markdown(s: dict) -> str:
    m = s["machine"]
    g = s["goals"]
    z = s["sizes"]
    rows = [
        (
            "Ingest, big day",
            f"{_fmt(z['big_day_usage_rows'])} usage rows (CSV)",
            _fmt(s["ingest_s"], " s") + f" ({_fmt(s['ingest_rows_per_s'])} rows/s)",
            f"lower bound {_fmt(s['ingest_lower_bound_s'], ' s')}",
            "ingest_vs_lower_bound",
        ),
        (
            "Ingest vs pandas",
            "same day, exact money",
            f"pandas {_fmt(s['pandas_s'], ' s')}",
            "",
            "pandas_vs_koobill",
        ),
        ("Peak RSS, big day", "", _fmt(s["peak_rss_mb"], " MB"), "", "peak_rss_mb"),
        (
            f"Day {z['month_days']} vs day 1",
            f"{_fmt(z['month_day_usage_rows'])} usage rows",
            f"{_fmt(s['day30_s'], ' s')} vs {_fmt(s['day1_s'], ' s')}",
            "",
            "day30_vs_day1",
        ),
        (
            "Close of the month",
            f"{_fmt(s['month_usage_rows'])} usage rows",
            _fmt(s["close_s"], " s"),
            f"lower bound {_fmt(s['close_lower_bound_s'], ' s')}",
            "close_vs_lower_bound",
        ),
        ("`koobill --help`", "median of 5", _fmt(s["cli_startup_s"], " s"), "", "cli_startup_s"),
    ]
    lines = [
        "| measure | input | koobill | reference | ratio / value | goal | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, inp, kb, ref, key in rows:
        gg = g[key]
        lines.append(
            f"| {name} | {inp} | {kb} | {ref} | {_fmt(gg['value'])} | "
            f"{gg['target']} | {gg['status']} |"
        )
    head = (
        "Benchmark (`make bench`, medians of up to "
        f"{z['repeats']} runs{', tiny mode' if z['tiny'] else ''}"
        f"{'' if s['complete'] else ', PARTIAL run'}) on {m['cpu_model']}, {m['cores']} cores, "
        f"{m['ram_gb']} GB RAM; Python {m['python']}, DuckDB {m['duckdb']}, "
        f"pyarrow {m['pyarrow']}, pandas {m['pandas']}; koobill memory_limit "
        f"{m['koobill_memory_limit']}."
    )
    notes = "".join(f"\n- {n}" for n in s.get("notes", []))
    return head + "\n\n" + "\n".join(lines) + "\n" + (notes + "\n" if notes else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, one run each (for tests)")
    ap.add_argument("--out", help="cache dir (default $KOOBILL_BENCH_OUT or bench/out)")
    ap.add_argument("--results-dir", help="where results.json/.md go (default bench/)")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "ARGS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        r = child(a.child[0], json.loads(a.child[1]))
        print(RESULT_TAG + json.dumps(r), flush=True)
        return

    cfg = config(a.tiny, a.out, a.results_dir)
    cfg["out"].mkdir(parents=True, exist_ok=True)
    cfg["results_dir"].mkdir(parents=True, exist_ok=True)
    mach = machine()
    res: dict = {}
    log(
        f"koobill bench: big day {cfg['big_rows']:,} rows; month {cfg['days']} x "
        f"{cfg['day_rows']:,} rows; repeats {cfg['repeats']}; cache {cfg['out']}"
    )

    def save(complete: bool = False) -> dict:
        s = summarize(cfg, res, mach, complete)
        (cfg["results_dir"] / "results.json").write_text(json.dumps(s, indent=2, default=str))
        (cfg["results_dir"] / "results.md").write_text(markdown(s))
        return s

    if "cli" not in cfg["skip"]:
        res["cli"] = measure_cli(cfg)
        log(f"koobill --help: {res['cli']['seconds']:.3f} s (median of 5)")
        save()
    if "big" not in cfg["skip"]:
        measure_big(cfg, res, save)
    if "month" not in cfg["skip"]:
        measure_month(cfg, res, save)
    s = save(complete=True)
    print()
    print(markdown(s))
    for key, _op, _t, unit in GOALS:
        gg = s["goals"][key]
        print(
            f"  {key:<24} {_fmt(gg['value']):>10} {unit:<3} goal {gg['target']:<8} {gg['status']}"
        )
    print(f"\nwrote {cfg['results_dir'] / 'results.json'} and {cfg['results_dir'] / 'results.md'}")


if __name__ == "__main__":
    main()
