"""Provenance of a bill version (spec section 9): what it was computed from, recorded at the
close that published it, so that the bill can be reproduced and checked.

Per partner and version, rows of three kinds:

- ``landing_file``: the landing files behind the bill: every file of a billed feed (orders,
  usage, adjustments, coupons) that holds at least one of the partner's records billed in the
  month, the partner snapshot at the cutoff, and, when the partner has usage, the price files
  landed up to the cutoff; each with its path under the data dir, size, SHA-256 (of the file as
  it lies in the landing zone at the close), rows read by the ingest and the partner's records
  billed from it;
- ``code``: the koobill version and, when it runs from a git checkout, the commit;
- ``setting``: every setting that changes an amount: the calendar (cutoff day, time zone), the
  rounding rules, the partner's tax rate and discount rate at the cutoff, and whether the close
  was forced. (``settings.toml`` holds the invoice issuer, bank accounts and payment terms: none
  of them changes an amount, so none is listed.)
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import calendar as cal
from pipelines.config import Paths
from pipelines.db import parquet
from pipelines.lake import partitions

BILLED_FEEDS = ("orders", "usage", "adjustments", "coupons")
REPO = Path(__file__).resolve().parent.parent


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def code_version() -> tuple[tuple[str, str], ...]:
    """(name, value) pairs: the package version, and the git commit when available."""
    from pipelines import __version__

    try:
        from importlib.metadata import version

        pkg = version("koobill")
    except Exception:  # noqa: BLE001 - not installed as a distribution: the module's version
        pkg = __version__
    out = [("koobill_version", pkg)]
    if (REPO / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            out.append(("git_commit", commit + (" (with uncommitted changes)" if dirty else "")))
        except (OSError, subprocess.SubprocessError):
            pass
    return tuple(out)


def _snapshot(con, paths: Paths, month: str, partner_id: str) -> tuple[Any, str | None, Any]:
    """(landing date, file, discount_rate) of the latest partner snapshot landed on or before
    the cutoff that lists the partner."""
    hi = cal.cutoff(month).isoformat()
    files = [
        p / "partners.parquet"
        for v, p in partitions(paths.ingest, "landing_date")
        if v <= hi and (p / "partners.parquet").exists()
    ]
    if not files:
        return None, None, None
    row = con.execute(
        f"select landing_date, _file, discount_rate from {parquet(files, union_by_name=True)} "
        "where partner_id = ? order by landing_date desc, _file desc limit 1",
        [partner_id],
    ).fetchone()
    return (row[0], row[1], row[2]) if row else (None, None, None)


def _files_rows(con, paths: Paths, dates: set[str]) -> dict[tuple[str, str, str], int]:
    """rows_read per (landing_date, feed, file) from the ingest's files tables."""
    files = [
        p / "files.parquet"
        for v, p in partitions(paths.ingest, "landing_date")
        if v in dates and (p / "files.parquet").exists()
    ]
    if not files:
        return {}
    return {
        (str(d), feed, f): int(n)
        for d, feed, f, n in con.execute(
            f"select landing_date, feed, file, rows_read from {parquet(files, union_by_name=True)}"
        ).fetchall()
    }


def provenance_rows(con, root: Path, month: str, bills: list[dict]) -> list[dict]:
    """The provenance rows of ``bills`` (versions without rows yet), from the temp tables of
    ``pipelines.reconcile`` (rc_records) and the landing zone as it is now."""
    paths = Paths(root)
    inputs = _Inputs.read(con, paths, month)
    stat = _FileStat(root)
    # every billed landing file hashed once, on every core (a month of big usage days is GBs)
    stat.prefetch(
        [f"landing/{feed}/{d}/{f}" for _p, feed, d, f, _n in inputs.records]
        + [f"landing/prices/{d}/{f}" for d, f in inputs.price_files]
    )
    out: list[dict] = []
    for b in bills:
        base = {"partner_id": b["partner_id"], "bill_month": month, "version": int(b["version"])}
        out += [_row(base, "code", name, value) for name, value in code_version()]
        snap_date, snap_file, discount = _snapshot(con, paths, month, b["partner_id"])
        snapshot = f"{snap_date} {snap_file}" if snap_date else None
        out += [
            _row(base, "setting", name, value)
            for name, value in _settings(month, b, discount, snapshot)
        ]
        wanted = inputs.files_of(b["partner_id"])
        if snap_date is not None:
            wanted.append((str(snap_date), "partners", snap_file, None))
        if any(feed == "usage" for _d, feed, _f, _n in wanted):
            wanted += [(str(d), "prices", f, None) for d, f in inputs.price_files]
        for d, feed, f, n in sorted(wanted, key=lambda w: (w[1], w[0], w[2])):
            rel = f"landing/{feed}/{d}/{f}"
            size, digest = stat(rel)
            out.append(
                _row(
                    base,
                    "landing_file",
                    rel,
                    None if digest else "missing from the landing zone at the close",
                    feed=feed,
                    landing_date=d,
                    bytes=size,
                    sha256=digest,
                    rows_read=inputs.counts.get((d, feed, f)),
                    records_billed=n,
                )
            )
    return out


@dataclass
class _Inputs:
    """What the month's bills were computed from: the billed records per landing file, the
    price files up to the cutoff, and the rows the ingest read of each landing file."""

    records: list[tuple]
    price_files: list[tuple]
    counts: dict[tuple[str, str, str], int]

    @classmethod
    def read(cls, con, paths: Paths, month: str) -> _Inputs:
        hi = cal.cutoff(month).isoformat()
        records = con.execute(
            "select partner_id, feed, landing_date, _file, sum(n) from rc_records "
            "group by all order by all"
        ).fetchall()
        prices = [
            p / "prices.parquet"
            for v, p in partitions(paths.ingest, "landing_date")
            if v <= hi and (p / "prices.parquet").exists()
        ]
        price_files = (
            con.execute(
                "select distinct landing_date, _file from "
                f"{parquet(prices, union_by_name=True)} order by all"
            ).fetchall()
            if prices
            else []
        )
        dates = {v for v, _p in partitions(paths.ingest, "landing_date") if v <= hi}
        return cls(records, price_files, _files_rows(con, paths, dates))

    def files_of(self, partner_id: str) -> list[tuple[str, str, str, int | None]]:
        """(landing date, feed, file, records billed) of the partner's billed records."""
        return [(str(d), feed, f, int(n)) for p, feed, d, f, n in self.records if p == partner_id]


class _FileStat:
    """Size and SHA-256 of a landing file as it lies now (each file read once)."""

    def __init__(self, root: Path):
        self.root = root
        self.seen: dict[Path, tuple[int | None, str | None]] = {}

    def __call__(self, rel: str) -> tuple[int | None, str | None]:
        p = self.root / rel
        if p not in self.seen:
            self.seen[p] = self._read(p)
        return self.seen[p]

    @staticmethod
    def _read(p: Path) -> tuple[int | None, str | None]:
        from pipelines import objectstore

        p = objectstore.local_copy(p)  # object storage: the mirror's copy, fetched if missing
        return (p.stat().st_size, sha256_of(p)) if p.is_file() else (None, None)

    def prefetch(self, rels: list[str]) -> None:
        """Hash these files in threads, one per core (hashlib releases the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        todo = sorted({self.root / r for r in rels} - set(self.seen))
        if len(todo) < 2:
            return
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            self.seen.update(zip(todo, pool.map(self._read, todo), strict=True))


def _settings(month: str, bill: dict, discount: Any, snapshot: str | None) -> list[tuple]:
    """The settings a bill version was computed with, as (name, value)."""
    lo_w, hi_w = cal.landing_window(month)
    return [
        ("cutoff_day", f"{cal.CUTOFF_DAY} (the cutoff of {month} is {cal.cutoff(month)})"),
        ("time_zone", "Asia/Shanghai (UTC+08:00): months and days are Beijing time"),
        ("landing_window", f"{lo_w}..{hi_w}"),
        ("component_rounding", "round2: each component of its exact sum, half away from 0"),
        ("rating_rounding", "usage amounts half-up to 6 decimal places"),
        ("currency", bill["currency"]),
        ("tax_rate", bill["tax_rate"]),
        ("discount_rate", discount),
        ("partner_snapshot", snapshot),
        ("forced", bool(bill.get("forced"))),
        ("missing_dates", bill.get("missing_dates")),
    ]


def _row(base: dict, kind: str, name: str, value: Any = None, **kw: Any) -> dict:
    """One provenance row of the bill version ``base``."""
    return {
        **base,
        "kind": kind,
        "name": name,
        "value": None if value is None else str(value),
        "feed": kw.get("feed"),
        "landing_date": kw.get("landing_date"),
        "bytes": kw.get("bytes"),
        "sha256": kw.get("sha256"),
        "rows_read": kw.get("rows_read"),
        "records_billed": kw.get("records_billed"),
    }
