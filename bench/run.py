"""koobill benchmark (``make bench``): ingest, history growth, close, CLI start-up, against a
DuckDB lower bound and a plain pandas implementation of the same day.

    .venv/bin/python bench/run.py            # full scale (see the sizes below)
    .venv/bin/python bench/run.py --tiny     # seconds; used by tests/test_bench.py

Sizes and places come from the environment (defaults in brackets):

    KOOBILL_BENCH_BIG_ROWS     usage rows of the big landing day              [5000000]
    KOOBILL_BENCH_DAY_ROWS     usage rows of each day of the month            [1000000]
    KOOBILL_BENCH_DAYS         landing days in the month                      [30]
    KOOBILL_BENCH_YEAR_DAYS    landing dates of the random-id history (the
                               last is measured against a first date)      [365]
    KOOBILL_BENCH_REPEATS      runs per measurement (the median is reported)  [3]
    KOOBILL_BENCH_BUDGET_S     stop repeating a measurement once its runs have
                               taken this long (at least one run is made)     [900]
    KOOBILL_BENCH_OUT          cache of generated and ingested data           [bench/out]
    KOOBILL_BENCH_RESULTS_DIR  where results.json and results.md are written  [bench]
    KOOBILL_BENCH_KEEP         1: keep the last results.json's figures of the parts
                               skipped (same sizes), and note it in the results
    KOOBILL_BENCH_SKIP         comma list of parts to skip: big, pandas, month, close, cli,
                               year, exports
    KOOBILL_BENCH_EXPORT_PARTNERS / KOOBILL_BENCH_EXPORT_ROWS
                               the exported month: partners, usage rows a day [200 / 20000]
                               (see bench/exports_measure.py)

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
for _p in (str(REPO), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import exports_measure  # noqa: E402  (bench/exports_measure.py)

from pipelines.env import settings  # noqa: E402  (validated: an amount such as 2GB)

BIG_DAY = "2026-03-10"
MONTH_START = "2026-04-01"
RESULT_TAG = "BENCH_RESULT "

GOALS = (
    # key, comparison, target, unit
    ("ingest_vs_lower_bound", "<=", 2.0, "x"),
    ("ingest_cpu_vs_lower_bound", "<=", 2.5, "x"),
    ("close_vs_lower_bound", "<=", 1.5, "x"),
    ("day30_vs_day1", "<=", 1.2, "x"),
    ("day365_vs_day1_random_ids", "<=", 1.5, "x"),
    ("peak_rss_mb", "<=", 3072, "MB"),
    ("cli_startup_s", "<=", 1.0, "s"),
    ("pandas_vs_koobill", ">=", 2.5, "x"),
    ("exports_cpu_s_per_partner", "<=", 0.15, "s"),
    ("exports_2000_partners_s", "<=", 300, "s"),
)


# --------------------------------------------------------------------------- configuration


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").replace("_", "").strip()
    return int(raw) if raw else default


def config(tiny: bool, out: str | None, results_dir: str | None) -> dict:
    if tiny:
        cfg = {
            "big_rows": 2000,
            "day_rows": 2000,
            "days": 2,
            "year_days": 3,
            "repeats": 1,
            "budget_s": 60.0,
        }
    else:
        cfg = {
            "big_rows": _env_int("KOOBILL_BENCH_BIG_ROWS", 5_000_000),
            "day_rows": _env_int("KOOBILL_BENCH_DAY_ROWS", 1_000_000),
            "days": _env_int("KOOBILL_BENCH_DAYS", 30),
            "year_days": _env_int("KOOBILL_BENCH_YEAR_DAYS", 365),
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
        "koobill_memory_limit": settings().memory_limit,
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


def _ingest_fresh(cfg: dict, path: Path, landing: Path, day: str, label: str) -> dict:
    """One measured ingest of ``day`` into a fresh data dir at ``path`` over ``landing``."""
    d = _fresh_run_dir(path, landing)
    try:
        return run_child(cfg, "ingest", {"data_dir": str(d), "day": day}, label)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _drop_partition(part: Path) -> None:
    """Remove a committed lake partition from every member table (a Delta commit each; the
    files are vacuumed)."""
    from pipelines import lake

    lake.drop_partition(part)


# --------------------------------------------------------------------------- children


def child(kind: str, args: dict) -> dict:
    """One measurement in this (fresh) process; returns seconds, CPU seconds and peak RSS."""
    import duckdb  # noqa: F401  (imported before any clock starts)

    if kind in ("ingest", "close"):
        import pipelines.close
        import pipelines.ingest  # noqa: F401
    if kind == "exports":
        import pipelines.exports.run  # noqa: F401
    if kind == "pandas":
        import numpy  # noqa: F401
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    cpu0 = _cpu_s()
    out = _child_work(kind, args)
    out["cpu_s"] = _cpu_s() - cpu0
    out["peak_rss_mb"] = _peak_rss_mb(resource.getrusage(resource.RUSAGE_SELF))
    return out


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process's threads and of its waited-for child
    processes (a pool of workers, a helper program): on a busy machine the ratio of CPU times
    is a steadier comparison than the ratio of wall times."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


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
    elif kind == "floor_ingest":
        import duckdb

        out = _floor_ingest(duckdb, Path(args["landing"]), args["day"], Path(args["out"]))
    elif kind == "lower_close":
        import duckdb

        out = _lower_close(duckdb, Path(args["data_dir"]), args["month"], Path(args["out"]))
    elif kind == "pandas":
        out = _pandas_day(Path(args["landing"]), args["day"], Path(args["out"]))
    elif kind == "exports":
        out = exports_measure.child_work(args)
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


def interleaved(cfg: dict, jobs: list[tuple[str, object]]) -> dict[str, dict]:
    """Run the jobs in turn (A, B, A, B, ...), up to ``repeats`` rounds within the time
    budget; medians per job. Compared measurements alternate, so a machine that slows down
    or speeds up during the bench (a shared host, thermal limits) weighs on both sides alike
    instead of on whichever ran last."""
    runs: dict[str, list[dict]] = {label: [] for label, _ in jobs}
    spent = 0.0
    for i in range(cfg["repeats"]):
        took = 0.0
        for label, once in jobs:
            r = once(i)
            runs[label].append(r)
            took += r["seconds"]
            log(
                f"  {label} run {i + 1}: {r['seconds']:.2f} s (process CPU {r['cpu_s']:.1f} s), "
                f"peak RSS {r['peak_rss_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}"
            )
        spent += took
        if spent + took > cfg["budget_s"]:
            break
    return {label: _medians(rs) for label, rs in runs.items()}


def _medians(runs: list[dict]) -> dict:
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


def _ref_folders(landing: Path, feed: str, day: str) -> list[Path]:
    root = landing / feed
    return sorted(p for p in root.iterdir() if p.name <= day) if root.is_dir() else []


YARDSTICK_SQL = HERE / "yardstick.sql"


def yardstick_sql() -> str:
    """The yardstick's statement (bench/yardstick.sql); its values are bound parameters."""
    return YARDSTICK_SQL.read_text(encoding="utf-8")


def _day_csvs(landing: Path, day: str, who: str) -> dict:
    """The bound lists of a one-statement measure of the day: its usage CSVs, the price CSVs
    landed so far and the latest partner snapshot."""
    usage = _landing_files(landing / "usage" / day, ".csv")
    if not usage:
        raise SystemExit(f"{who} reads CSV: no usage CSV under {landing / 'usage' / day}")
    prices = [
        f for folder in _ref_folders(landing, "prices", day) for f in _landing_files(folder, ".csv")
    ]
    snapshots = [f for f in _ref_folders(landing, "partners", day) if _landing_files(f, ".csv")]
    if not prices or not snapshots:
        raise SystemExit(f"{who} needs price and partner CSVs landed on or before {day}")
    return {
        "usage": [str(p) for p in usage],
        "prices": [str(p) for p in prices],
        "partners": [str(p) for p in _landing_files(snapshots[-1], ".csv")],
    }


def _one_statement(duckdb, stmt: str, params: dict, out: Path, unordered: bool = False) -> dict:
    """Run a measure's one COPY statement (its values bound) on a fresh connection limited as
    koobill's is; the rows written come from the COPY's returned statistics. ``unordered``:
    the rows keep no order, as koobill's usage file (pipelines.ingest._accept); the
    yardstick's as-of join already gives up the order (measured: the setting changes nothing
    there)."""
    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set memory_limit = $limit", {"limit": settings().memory_limit})
    if unordered:
        con.execute("set preserve_insertion_order = false")
    out.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    res = con.execute(stmt, {**params, "path": str(out)}).fetchall()
    secs = time.perf_counter() - t
    rows = sum(int(r[1]) for r in res) if res and len(res[0]) > 1 else 0
    con.close()
    return {"seconds": secs, "rows_written": rows}


def _lower_ingest(duckdb, landing: Path, day: str, out: Path) -> dict:
    """The yardstick (bench/yardstick.sql): one DuckDB statement that reads and types the day's
    usage CSV with the narrowest exact types, rates it with an as-of join on the price list
    and the partner's discount, and writes the rated rows to Parquet."""
    params = _day_csvs(landing, day, "the yardstick")
    return _one_statement(duckdb, yardstick_sql(), params, out)


FLOOR_SQL = HERE / "floor.sql"


def floor_sql() -> str:
    """The floor's statement (bench/floor.sql) with koobill's typing rules and rounding filled
    in; its values are bound parameters."""
    from pipelines import rules
    from pipelines.db import fill
    from pipelines.ingest import _round6_product

    parts = {
        "typed_select": rules.typed_select("usage"),
        "type_guard": rules.type_guard("usage"),
        "official": _round6_product("u.quantity", "u.unit_price"),
        "discount": _round6_product("official_amount", "discount_rate"),
    }
    return fill(FLOOR_SQL.read_text(encoding="utf-8"), str(FLOOR_SQL.relative_to(REPO)), **parts)


def _floor_ingest(duckdb, landing: Path, day: str, out: Path) -> dict:
    """The floor (bench/floor.sql): the yardstick's work plus what every implementation of the
    usage rules must do (the records typed from their text with the typing rules, the rows
    breaking a rule left out, a repeated id written once, the lake's columns and types)."""
    from pipelines import calendar as cal

    d = dt.date.fromisoformat(day)
    params = {
        **_day_csvs(landing, day, "the floor"),
        "landing_date": d,
        "landed_month": cal.month_of(d - dt.timedelta(days=cal.CUTOFF_DAY)),
        "future_from": cal.beijing_midnight(d + dt.timedelta(days=2)),
    }
    return _one_statement(duckdb, floor_sql(), params, out, unordered=True)


def _lower_close(duckdb, data_dir: Path, month: str, out: Path) -> dict:
    """One aggregation of the month's lake records into bill lines (the grain the bills and
    their detail are published at), written to Parquet."""
    from pipelines import calendar as cal

    lo, hi = (d.isoformat() for d in cal.landing_window(month))
    from pipelines import lake

    ingest = data_dir / "lake" / "ingest"
    parts = [p for v, p in lake.partitions(ingest, "landing_date") if lo <= v <= hi]

    def files(feed: str) -> str:
        fs = [p / f"{feed}.parquet" for p in parts if (p / f"{feed}.parquet").exists()]
        return "[" + ", ".join(_q(f) for f in fs) + "]"

    con = duckdb.connect()
    con.execute("set TimeZone = 'UTC'")
    con.execute("set memory_limit = $limit", {"limit": settings().memory_limit})
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
#
# The same day's work as koobill's ingest of the usage feed, written as a data engineer would
# write it in pandas: every row rule with its reason, quarantine, dedupe, rating, the cutoff
# rule, the lake write and the estimate refresh. Vectorised throughout (pandas 3 strings are
# Arrow-backed); Python loops run only over files, reference rows, distinct keys and rejected
# rows. Money is exact: integer micro-units (Python ints past int64), written as decimal128.

MICRO = 1_000_000
USAGE_COLS = list(USAGE_TYPES)
USAGE_REQUIRED = [c for c in USAGE_COLS if c not in ("customer_name", "product_name")]
# what "the same content" of a usage record means: its required columns, typed
USAGE_CONTENT = [
    "record_id",
    "partner_id",
    "customer_id",
    "product_id",
    "sku_code",
    "region",
    "resource_id",
    "usage_start",
    "usage_end",
    "q_micro",
    "unit",
]
PARTNER_COLS = ["partner_id", "partner_name", "currency", "tax_rate", "discount_rate"]
PRICE_COLS = list(PRICE_TYPES)
PRICE_KEY = ["sku_code", "unit", "currency"]
PD_PARTNER_RE = r"[A-Za-z0-9_-]{1,64}"
PD_DEC_RE = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
# ISO 8601 with a UTC offset (Z, +08, +0800, +08:00)
PD_TS_RE = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
    r"(?:Z|[+-](?:0[0-9]|1[0-4])(?::?[0-5][0-9])?)"
)
PD_TS_NAIVE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?"
PD_MONEY_DIGITS = {"money": 15, "qty": 12, "rate": 0}  # |value| < 10^digits


class _Reasons:
    """The broken row rules of a frame: one boolean mask per rule, in rule order, with its
    reason text (a constant, or a function building the texts of the failing rows only)."""

    def __init__(self, n: int):
        self.n = n
        self.rules: list = []

    def add(self, mask, text) -> None:
        import numpy as np

        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            self.rules.append((mask, text))

    def failing(self):
        import numpy as np

        out = np.zeros(self.n, dtype=bool)
        for mask, _ in self.rules:
            out |= mask
        return out

    def texts(self, idx):
        """The reasons of rows ``idx`` joined by '; ' (rule order)."""
        import numpy as np

        acc = np.full(len(idx), "", dtype=object)
        for mask, text in self.rules:
            hit = mask[idx]
            if not hit.any():
                continue
            if callable(text):
                vals = np.full(len(idx), "", dtype=object)
                vals[hit] = np.asarray(text(idx[hit]), dtype=object)
            else:
                vals = text
            acc = np.where(hit, np.where(acc == "", vals, acc + "; " + vals), acc)
        return acc


def _pd_show(s, what: str):
    """Reason texts ``<what> (<value, 40 characters at most>)`` for the rows given."""

    def texts(idx):
        return (what + " (" + s.iloc[idx].str.slice(0, 40) + ")").to_numpy(object)

    return texts


# empty or white space only: the Unicode space separators plus tab and line breaks (as koobill's
# rules.BLANK_RE)
PD_BLANK_RE = "[\t\n\x0b\f\r\x85 \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


def _pd_blank(s):
    return (s.isna() | s.str.fullmatch(PD_BLANK_RE)).to_numpy(bool)


def _pd_required(df, col: str, why: _Reasons):
    why.add(_pd_blank(df[col]), f"{col} is missing")


def _pd_partner_id(df, col: str, why: _Reasons):
    """The partner id where it is valid, else NaN."""
    s = df[col]
    blank = _pd_blank(s)
    ok = s.str.fullmatch(PD_PARTNER_RE).to_numpy(bool)
    why.add(blank, f"{col} is missing")
    why.add(~blank & ~ok, _pd_show(s, f"{col} is not a valid partner id"))
    return s.where(ok)


def _pd_currency(df, col: str, why: _Reasons):
    s = df[col]
    t = s.str.strip(" ").str.upper()
    blank = _pd_blank(s)
    ok = t.str.fullmatch("[A-Z]{3}").to_numpy(bool)
    why.add(blank, f"{col} is missing")
    why.add(~blank & ~ok, _pd_show(s, f"{col} is not a 3-letter currency code"))
    return t.where(ok)


def _pd_ts(df, col: str, why: _Reasons, required: bool = True):
    """UTC timestamps of ISO 8601 texts with an offset; NaT where missing or invalid."""
    import numpy as np
    import pandas as pd

    s = df[col]
    t = s.str.strip(" ")
    ok = t.str.fullmatch(PD_TS_RE).to_numpy(bool)
    ts = pd.to_datetime(t.where(ok), format="ISO8601", utc=True, errors="coerce")
    blank = _pd_blank(s)
    bad = ~blank & ts.isna().to_numpy()
    naive = np.zeros(len(s), dtype=bool)
    naive[bad] = t[bad].str.fullmatch(PD_TS_NAIVE_RE).to_numpy(bool)
    if required:
        why.add(blank, f"{col} is missing")
    why.add(naive, _pd_show(s, f"{col} has no UTC offset"))
    why.add(bad & ~naive, _pd_show(s, f"{col} is not a valid ISO 8601 timestamp"))
    return ts


def _pd_micro(text):
    """Exact micro-units of decimal texts already checked (<= 6 places, < 10^32): int64, or
    Python ints (object) when a value does not fit int64."""
    import pyarrow as pa

    dec = pa.array(text, type=pa.large_string()).cast(pa.decimal128(38, 6))
    return _pd_decimal_ints(dec)


def _pd_decimal_ints(dec):
    """The unscaled integers of a null-free decimal128 array (its two 64-bit words a value)."""
    import numpy as np
    import pyarrow as pa

    if isinstance(dec, pa.ChunkedArray):
        dec = dec.combine_chunks()
    if not len(dec):
        return np.zeros(0, dtype=np.int64)
    words = np.frombuffer(dec.buffers()[1], dtype=np.int64)
    words = words[2 * dec.offset : 2 * (dec.offset + len(dec))]
    lo, hi = words[0::2], words[1::2]
    if (hi == (lo >> 63)).all():  # the high word only extends the sign: fits int64
        return lo.copy()
    return hi.astype(object) * 2**64 + lo.view(np.uint64).astype(object)


def _pd_decimal(df, col: str, kind: str, why: _Reasons):
    """A plain decimal column (spec section 2): (micro-units, typed mask, value as float).

    The typed mask marks values that parsed (<= 6 significant places); the range rules of
    ``kind`` (money < 10^15, qty < 10^12 and >= 0, rate in [0, 1)) are reasons on top. The float
    is only for the overflow guard of rating, never for money."""
    import numpy as np
    import pandas as pd

    s = df[col]
    t = s.str.strip(" ")
    blank = _pd_blank(s)
    fmt = t.str.fullmatch(PD_DEC_RE).to_numpy(bool)
    dot = t.str.find(".").to_numpy()
    places = np.where(dot >= 0, t.str.rstrip("0").str.len().to_numpy() - dot - 1, 0)
    whole = t.str.lstrip("+-").str.lstrip("0")  # significant integer digits, then the rest
    wdot = whole.str.find(".").to_numpy()
    int_digits = np.where(wdot >= 0, wdot, whole.str.len().to_numpy())
    typed = fmt & (places <= 6) & (int_digits <= 32)  # what DECIMAL(38, 6) holds
    limit = PD_MONEY_DIGITS[kind]
    in_range = typed & (int_digits <= limit)
    micro = np.zeros(len(s), dtype=np.int64)
    if in_range.any():
        parsed = _pd_micro(t[in_range])
        micro = micro.astype(parsed.dtype)
        micro[in_range] = parsed
    value = np.full(len(s), np.nan)
    value[in_range] = micro[in_range].astype(float) / MICRO
    big = typed & ~in_range
    value[big] = pd.to_numeric(t[big]).to_numpy(float)
    negative = typed & (value < 0)
    why.add(blank, f"{col} is missing")
    why.add(~blank & ~fmt, _pd_show(s, f"{col} is not a plain decimal number"))
    why.add(fmt & (places > 6), _pd_show(s, f"{col} has more than 6 decimal places"))
    oor = _pd_show(s, f"{col} is out of range")
    why.add(fmt & (places <= 6) & (int_digits > 32), oor)
    if kind == "rate":
        why.add(negative | (typed & (int_digits >= 1)), f"{col} must be >= 0 and < 1")
    else:
        why.add(big, oor)
        if kind == "qty":
            why.add(in_range & negative, _pd_show(s, f"{col} is negative"))
    return micro, typed, value


def _pd_json_text(v):
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    return json.dumps(v, ensure_ascii=False)


def _pd_read(folder: Path, columns: list[str], required: list[str]):
    """Every record of a landing folder as text (files in name order, rows in file order),
    with ``_file`` and ``_row`` (1-based; a JSONL record is numbered by its line)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = (
        sorted(
            (
                p
                for p in folder.iterdir()
                if not p.name.startswith(".") and p.suffix.lower() in (".csv", ".jsonl", ".parquet")
            ),
            key=lambda p: p.name,
        )
        if folder.is_dir()
        else []
    )
    frames = []
    for p in files:
        suffix = p.suffix.lower()
        if suffix == ".csv":
            df = pd.read_csv(p, engine="pyarrow", dtype=str, keep_default_na=False, na_values=[""])
            rows = np.arange(1, len(df) + 1)
        elif suffix == ".jsonl":
            records, numbers = [], []
            with open(p, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=str)
                        records.append({k: _pd_json_text(v) for k, v in obj.items()})
                        numbers.append(lineno)
            df = pd.DataFrame.from_records(records).astype("str")
            rows = np.array(numbers, dtype=np.int64)
        else:
            table = pq.read_table(p)
            text = {}
            for name, col in zip(table.column_names, table.columns, strict=True):
                if pa.types.is_floating(col.type) and name.strip() in (
                    "quantity",
                    "unit_price",
                    "tax_rate",
                    "discount_rate",
                ):
                    raise ValueError(f"{p}: column {name} is binary floating point, not exact")
                if pa.types.is_timestamp(col.type) and col.type.tz is not None:
                    utc = col.cast(pa.timestamp("us", "UTC"))
                    col = pc.binary_join_element_wise(
                        pc.strftime(utc, format="%Y-%m-%dT%H:%M:%S"), "Z", ""
                    )
                text[name] = col.cast(pa.string())
            df = pa.table(text).to_pandas()
            rows = np.arange(1, len(df) + 1)
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in required if c not in df.columns]
        if missing:
            raise ValueError(f"{p}: missing required column(s): {', '.join(missing)}")
        for c in columns:
            if c not in df.columns:
                df[c] = pd.Series(np.nan, index=df.index, dtype="str")
        df = df[columns]
        df.insert(len(columns), "_file", p.name)
        df.insert(len(columns) + 1, "_row", rows)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in [*columns, "_file"]}).assign(
            _row=pd.Series(dtype="int64")
        )
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _pd_partners(landing: Path, day: str):
    """The partner snapshot of the day: the latest partners folder <= day with valid rows;
    a partner listed twice keeps its first row. Index partner_id: currency, rate_micro."""
    import pandas as pd

    for folder in reversed(_ref_folders(landing, "partners", day)):
        df = _pd_read(folder, PARTNER_COLS, PARTNER_COLS)
        why = _Reasons(len(df))
        pid = _pd_partner_id(df, "partner_id", why)
        _pd_required(df, "partner_name", why)
        currency = _pd_currency(df, "currency", why)
        _pd_decimal(df, "tax_rate", "rate", why)
        rate, _, _ = _pd_decimal(df, "discount_rate", "rate", why)
        ok = ~why.failing()
        snap = pd.DataFrame(
            {"partner_id": pid[ok], "currency": currency[ok], "rate_micro": rate[ok]}
        ).drop_duplicates("partner_id", keep="first")
        if len(snap):
            return snap.set_index("partner_id")
    return pd.DataFrame(
        {"currency": pd.Series(dtype="str"), "rate_micro": pd.Series(dtype="int64")},
        index=pd.Index([], dtype="str", name="partner_id"),
    )


def _pd_prices(landing: Path, day: str):
    """The price list as of the day: every valid price row landed on or before it; the latest
    landed row wins per (sku_code, unit, currency, effective_from)."""
    import pandas as pd

    frames = []
    for folder in _ref_folders(landing, "prices", day):
        df = _pd_read(folder, PRICE_COLS, [c for c in PRICE_COLS if c != "effective_to"])
        why = _Reasons(len(df))
        _pd_required(df, "sku_code", why)
        _pd_required(df, "unit", why)
        price, _, value = _pd_decimal(df, "unit_price", "money", why)
        currency = _pd_currency(df, "currency", why)
        start = _pd_ts(df, "effective_from", why)
        end = _pd_ts(df, "effective_to", why, required=False)
        why.add(value < 0, "unit_price is negative")
        why.add((end <= start).to_numpy(bool), "effective_to is not after effective_from")
        ok = ~why.failing()
        frames.append(
            pd.DataFrame(
                {
                    "sku_code": df["sku_code"][ok],
                    "unit": df["unit"][ok],
                    "currency": currency[ok],
                    "effective_from": start[ok],
                    "effective_to": end[ok],
                    "price_micro": pd.Series(price[ok].astype(object), index=df.index[ok]),
                }
            )
        )
    prices = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*PRICE_KEY, "effective_from", "effective_to", "price_micro"])
    )
    return prices.drop_duplicates([*PRICE_KEY, "effective_from"], keep="last")


def _pd_round_div(x, divisor: int):
    """x / divisor rounded half away from zero (exact integers)."""
    import numpy as np

    half = divisor // 2
    return np.where(x < 0, -((half - x) // divisor), (x + half) // divisor)


def _pd_mul_round6(a, b):
    """round_half_up(a * b, 6) of micro-unit integers, exactly: int64 while the products fit,
    else Python ints."""
    import numpy as np

    if len(a) and (
        a.dtype == object
        or b.dtype == object
        or int(np.abs(a).max()) * int(np.abs(b).max()) >= 2**63 - MICRO
    ):
        a, b = a.astype(object), b.astype(object)
    return _pd_round_div(a * b, MICRO)


def _pd_decimal_array(x, scale: int = 6):
    """A decimal128(38, scale) Arrow array from unscaled integers (int64 or Python ints)."""
    import decimal

    import numpy as np
    import pyarrow as pa

    if x.dtype != object:
        x = np.ascontiguousarray(x, dtype=np.int64)
        words = np.empty(len(x) * 2, dtype=np.int64)
        words[0::2] = x
        words[1::2] = np.where(x < 0, -1, 0)
        return pa.Array.from_buffers(pa.decimal128(38, scale), len(x), [None, pa.py_buffer(words)])
    return pa.array(
        [decimal.Decimal(int(v)).scaleb(-scale) for v in x], type=pa.decimal128(38, scale)
    )


def _pd_history(history, record_ids):
    """Earlier accepted usage (lake Parquet files) of the given record_ids, typed."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = [c for c in USAGE_CONTENT if c != "q_micro"] + ["quantity", "landing_date"]
    frames = []
    for f in history or []:
        t = pq.read_table(f, columns=cols)
        mask = pd.Series(t["record_id"].to_pandas()).isin(record_ids).to_numpy()
        if mask.any():
            t = t.filter(mask)
            df = t.drop(["quantity"]).to_pandas()
            df["q_micro"] = _pd_decimal_ints(t["quantity"].cast(pa.decimal128(38, 6)))
            frames.append(df)
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True).drop_duplicates("record_id", keep="first")


def _pd_exact_sum(x):
    """Sum of micro-unit integers without int64 overflow."""
    import numpy as np

    if not len(x):
        return 0
    if x.dtype != object and int(np.abs(x).max()) * len(x) < 2**63:
        return int(x.sum(dtype=np.int64))
    return int(sum(x.tolist()))


def _pandas_day(landing: Path, day: str, out: Path, history: list | None = None) -> dict:
    """koobill's ingest of one landing day of the usage feed, in pandas.

    Reads the day's usage files (CSV with the pyarrow engine; JSONL, Parquet), the partner
    snapshot and the price list as of the day; applies every row rule of the spec with a reason
    per rejected row; drops exact duplicates and quarantines conflicting ones (the first in file
    and row order stands; ``history``: earlier accepted usage Parquet files, e.g. koobill's
    lake); rates the accepted rows (the price in force at usage_start, the partner's discount,
    half-up to 6 places in exact integer micro-units); assigns source_month,
    bill_month_assigned and late (cutoff rule); writes the rated rows to ``out``
    (decimal128(38, 6) money), and beside it the quarantine (``quarantine.parquet``) and the
    usage estimate of every snapshot partner and open month, in cents (``estimates.parquet``).
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines import calendar as cal

    t = time.perf_counter()
    d = dt.date.fromisoformat(day)
    landed_month = cal.month_of(d - dt.timedelta(days=cal.CUTOFF_DAY))

    partners = _pd_partners(landing, day)
    prices = _pd_prices(landing, day)
    u = _pd_read(landing / "usage" / day, USAGE_COLS, USAGE_REQUIRED)
    rows_read = len(u)

    # --- type every column; one reason per broken rule, in the spec's column order
    why = _Reasons(rows_read)
    _pd_required(u, "record_id", why)
    pid = _pd_partner_id(u, "partner_id", why)
    for c in ("customer_id", "product_id", "sku_code", "region", "resource_id"):
        _pd_required(u, c, why)
    start = _pd_ts(u, "usage_start", why)
    end = _pd_ts(u, "usage_end", why)
    q_micro, q_typed, q_value = _pd_decimal(u, "quantity", "qty", why)
    _pd_required(u, "unit", why)

    # --- partner, price in force and calendar, once per distinct (partner, sku, unit, start)
    keys = pd.DataFrame(
        {"partner_id": pid, "sku_code": u["sku_code"], "unit": u["unit"], "usage_start": start}
    )
    gid = keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy()
    k = keys.iloc[np.unique(gid, return_index=True)[1]].reset_index(drop=True)
    at = partners.index.get_indexer(k["partner_id"])  # the partner's row; -1: not in the
    known_k = at >= 0  # snapshot, which picks the sentinel appended below
    k["currency"] = pd.Series(
        np.append(partners["currency"].to_numpy(object), None)[at], dtype="str"
    )
    rate_k = np.append(partners["rate_micro"].to_numpy(np.int64), 0)[at]
    rateable = k[known_k & k[["sku_code", "unit", "usage_start"]].notna().all(axis=1)]
    m = rateable.reset_index(names="key").merge(prices, on=PRICE_KEY)
    m = m[
        (m["effective_from"] <= m["usage_start"])
        & (m["effective_to"].isna() | (m["usage_start"] < m["effective_to"]))
    ]
    # overlapping prices: the one in force with the latest effective_from applies
    in_force = m.sort_values("effective_from", kind="stable").drop_duplicates("key", keep="last")
    k["price_micro"] = in_force.set_index("key")["price_micro"].reindex(k.index)
    bj = k["usage_start"].dt.tz_convert(None) + pd.Timedelta(hours=8)  # Beijing wall time
    k["source_month"] = bj.dt.strftime("%Y-%m")
    k["bill_month"] = k["source_month"].where(k["source_month"] > landed_month, landed_month)
    future_k = (bj.dt.normalize() > pd.Timestamp(d + dt.timedelta(days=1))).to_numpy(bool)

    known = known_k[gid]
    has_price = k["price_micro"].notna().to_numpy()[gid]
    price_value = k["price_micro"].astype(float).to_numpy()[gid] / MICRO
    currency_k = k["currency"].to_numpy(object)

    # --- the feed's own rules
    why.add((end < start).to_numpy(bool), "usage_end is before usage_start")
    why.add(
        has_price & q_typed & (q_value * price_value >= 1e15),
        "quantity * unit_price is out of range (>= 1e+15)",
    )
    why.add(
        pid.notna().to_numpy() & ~known,
        lambda i, p=pid: ("partner " + p.iloc[i] + " is not in the partner snapshot").to_numpy(
            object
        ),
    )
    why.add(
        known
        & ~has_price
        & u["sku_code"].notna().to_numpy()
        & u["unit"].notna().to_numpy()
        & start.notna().to_numpy(),
        lambda i, sku=u["sku_code"], unit=u["unit"]: (
            "no price for sku "
            + sku.iloc[i]
            + " in "
            + unit.iloc[i]
            + " and "
            + currency_k[gid[i]]
            + " effective at usage_start"
        ).to_numpy(object),
    )
    why.add(
        future_k[gid], "usage_start is more than 1 day after the landing date (from the future)"
    )
    failing = why.failing()

    # --- dedupe the valid rows: the same record_id with the same content is dropped, with
    # different content quarantined; the first in file and row order stands
    ok = np.flatnonzero(~failing)

    def content(u, rows):
        return (
            u[USAGE_CONTENT[:7] + ["unit", "_file", "_row"]]
            .iloc[rows]
            .assign(
                usage_start=start.array[rows],
                usage_end=end.array[rows],
                q_micro=q_micro[rows],
            )
        )

    status = np.zeros(len(ok), dtype=np.int8)  # 0 accepted, 1 duplicate, 2 conflicting
    conflict = np.full(len(ok), None, dtype=object)
    rid = u["record_id"][~failing]
    rep = np.flatnonzero(rid.duplicated(keep=False).to_numpy())
    if len(rep):
        r = content(u, ok[rep])
        g = r.groupby("record_id", sort=False)
        first = g[USAGE_CONTENT[1:] + ["_file", "_row"]].transform("first")
        same = (r[USAGE_CONTENT[1:]] == first[USAGE_CONTENT[1:]]).all(axis=1).to_numpy()
        later = g.cumcount().to_numpy() > 0
        status[rep] = np.where(later, np.where(same, 1, 2), 0)
        c = later & ~same
        conflict[rep[c]] = (
            "conflicting duplicate: record_id " + r["record_id"][c] + " was accepted earlier "
            "this date ("
            + first["_file"][c]
            + " row "
            + first["_row"][c].astype(str)
            + ") with different content"
        ).to_numpy(object)
    hist = _pd_history(history, rid) if history else None
    if hist is not None:
        seen = np.flatnonzero(rid.isin(hist["record_id"]).to_numpy())
        h = content(u, ok[seen]).merge(hist, on="record_id", how="left", suffixes=("", "_h"))
        same = np.logical_and.reduce(
            [(h[c] == h[c + "_h"]).to_numpy(bool) for c in USAGE_CONTENT[1:]]
        )
        status[seen] = np.where(same, 1, 2)
        conflict[seen] = np.where(
            same,
            None,
            (
                "conflicting duplicate: record_id "
                + h["record_id"]
                + " was accepted on "
                + h["landing_date"].astype(str)
                + " with different content"
            ).to_numpy(object),
        )

    # --- quarantine: broken rules and conflicting duplicates, in file and row order (the
    # position in ``u``), each with its reasons and its raw record as JSON
    bad = np.flatnonzero(failing)
    q_rows = np.concatenate([bad, ok[status == 2]])
    q_why = np.concatenate([why.texts(bad), conflict[status == 2]])
    order = np.argsort(q_rows, kind="stable")
    q_rows, q_why = q_rows[order], q_why[order]
    raw = u[USAGE_COLS].iloc[q_rows].astype(object)
    raw = raw.where(raw.notna(), None).to_dict("records")
    quarantine = pa.table(
        {
            "feed": pa.array(["usage"] * len(q_rows), pa.string()),
            "landing_date": pa.array([d] * len(q_rows), pa.date32()),
            "file": pa.array(u["_file"].iloc[q_rows], pa.string()),
            "row": pa.array(u["_row"].iloc[q_rows], pa.int64()),
            "record_id": pa.array(u["record_id"].iloc[q_rows], pa.string()),
            "reason": pa.array(q_why, pa.string()),
            "raw": pa.array([json.dumps(x, ensure_ascii=False) for x in raw], pa.string()),
        }
    )

    # --- rate the accepted rows and assign their bill month
    acc = np.zeros(rows_read, dtype=bool)  # boolean masks: much cheaper than takes here
    acc[ok[status == 0]] = True
    g_acc = gid[acc]
    qm = q_micro[acc]
    price_k = k["price_micro"].fillna(0).to_numpy(object)  # Python ints, one per key
    if max(price_k, default=0) < 2**63:
        price_k = price_k.astype(np.int64)
    pm = price_k[g_acc]
    rm = rate_k[g_acc]
    official = _pd_mul_round6(qm, pm)
    discount = _pd_mul_round6(official, rm)
    amount = official - discount

    def per_key(values):
        """A string column of the accepted rows from a per-key column (dictionary-encoded)."""
        codes, cats = pd.factorize(values)
        return pa.DictionaryArray.from_arrays(codes[g_acc], pa.array(cats, pa.string())).cast(
            pa.string()
        )

    text = pa.Table.from_pandas(  # zero-copy for Arrow-backed strings; filter copies once
        u[[*USAGE_COLS[:9], "unit", "_file"]], preserve_index=False
    ).filter(pa.array(acc))
    table = pa.table(
        {
            "landing_date": pa.array([d] * len(text), pa.date32()),
            **{c: text[c] for c in USAGE_COLS[:9]},
            "usage_start": pa.array(start[acc]).cast(pa.timestamp("us", "UTC")),
            "usage_end": pa.array(end[acc]).cast(pa.timestamp("us", "UTC")),
            "quantity": _pd_decimal_array(qm),
            "unit": text["unit"],
            "_file": text["_file"],
            "_row": pa.array(u["_row"].to_numpy()[acc], pa.int64()),
            "source_month": per_key(k["source_month"]),
            "bill_month_assigned": per_key(k["bill_month"]),
            "late": pa.array((k["bill_month"] > k["source_month"]).to_numpy(bool)[g_acc]),
            "currency": per_key(k["currency"]),
            "unit_price": _pd_decimal_array(pm),
            "discount_rate": _pd_decimal_array(rm),
            "official_amount": _pd_decimal_array(official),
            "discount_amount": _pd_decimal_array(discount),
            "amount": _pd_decimal_array(amount),
        }
    )
    del u, text, keys, pid, why  # free the day's text before the write
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, compression="zstd")
    pq.write_table(quarantine, out.with_name("quarantine.parquet"), compression="zstd")

    # --- estimates as of the day: the usage of every month open on the day (this day's, plus
    # the earlier accepted usage in ``history``), per partner of the snapshot, in cents
    months = cal.open_months(d)
    exact = amount
    if len(amount) and (amount.dtype == object or int(np.abs(amount).max()) * len(amount) >= 2**63):
        exact = amount.astype(object)
    k["amount"] = pd.Series(exact).groupby(g_acc).sum().reindex(k.index, fill_value=0)
    sums = [k[["partner_id", "bill_month", "amount"]]]
    for f in history or []:
        h = pq.read_table(
            f,
            columns=["partner_id", "bill_month_assigned", "amount"],
            filters=[("bill_month_assigned", "in", months)],
        )
        sums.append(
            pd.DataFrame(
                {
                    "partner_id": h["partner_id"].to_pandas(),
                    "bill_month": h["bill_month_assigned"].to_pandas(),
                    "amount": _pd_decimal_ints(h["amount"]).astype(object),
                }
            )
        )
    totals = pd.concat(sums).groupby(["partner_id", "bill_month"])["amount"].sum()
    est = pd.MultiIndex.from_product(
        [partners.index, months], names=["partner_id", "bill_month"]
    ).to_frame(index=False)
    micro = np.array([int(totals.get(key, 0)) for key in est.itertuples(index=False)], object)
    cents = _pd_decimal_array(_pd_round_div(micro, 10_000), 2)
    estimates = pa.table(
        {
            "partner_id": pa.array(est["partner_id"], pa.string()),
            "bill_month": pa.array(est["bill_month"], pa.string()),
            "as_of_date": pa.array([d] * len(est), pa.date32()),
            "currency": pa.array(partners["currency"].reindex(est["partner_id"]), pa.string()),
            "consume_amount": cents,
            "estimate_amount": cents,
        }
    )
    pq.write_table(estimates, out.with_name("estimates.parquet"))

    n_dup = int((status == 1).sum())
    if rows_read != table.num_rows + len(q_rows) + n_dup:
        raise RuntimeError("pandas day: rows read != accepted + quarantined + duplicates")
    return {
        "seconds": time.perf_counter() - t,
        "rows_read": rows_read,
        "rows_written": table.num_rows,
        "rows_quarantined": len(q_rows),
        "rows_duplicate": n_dup,
        "amount_total_micro": _pd_exact_sum(amount),
    }


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

    def floor(i: int) -> dict:
        return run_child(
            cfg,
            "floor_ingest",
            {"landing": str(landing), "day": BIG_DAY, "out": str(runs / "floor" / "usage.parquet")},
            "floor_ingest",
        )

    def koobill(i: int) -> dict:
        return _ingest_fresh(cfg, runs / "big-ingest", landing, BIG_DAY, "big_ingest")

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

    log(
        f"the {cfg['big_rows']:,}-row day: lower bound (one DuckDB statement), the floor "
        "(one statement with the typing rules), koobill"
        + ("" if "pandas" in cfg["skip"] else ", pandas")
        + ", in turn"
    )
    jobs = [("lower bound", lower), ("floor", floor), ("koobill ingest", koobill)]
    if "pandas" not in cfg["skip"]:
        jobs.append(("pandas", pandas))
    got = interleaved(cfg, jobs)
    res["ingest_lower_bound"] = got["lower bound"]
    res["ingest_floor"] = got["floor"]
    res["ingest_big"] = got["koobill ingest"]
    if "pandas" in got:
        res["pandas_big"] = got["pandas"]
    save()
    shutil.rmtree(runs / "lower", ignore_errors=True)
    shutil.rmtree(runs / "floor", ignore_errors=True)
    shutil.rmtree(runs / "pandas", ignore_errors=True)


def measure_exports(cfg: dict, res: dict, save) -> None:
    data = exports_measure.prepare(cfg["out"], cfg["tiny"], log)

    def once(i: int) -> dict:
        return run_child(cfg, "exports", {"data_dir": str(data)}, "exports")

    log("exports: every format of the month, one process per core")
    res["exports"] = interleaved(cfg, [("exports", once)])["exports"]
    save()


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
    from pipelines import lake

    done = {v for v, _p in lake.partitions(state / "lake" / "ingest", "landing_date")}
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
    got = interleaved(cfg, [("day 1", day1), (f"day {len(days)}", day30)])
    res["ingest_day1"], res["ingest_dayN"] = got["day 1"], got[f"day {len(days)}"]
    save()

    if "close" in cfg["skip"]:
        return

    def close(i: int) -> dict:
        # a first close each time: the month's bills and its reconciliation, variance and
        # provenance (a re-close with them in place skips the provenance's hashing)
        _drop_partition(state / "lake" / "bills" / f"bill_month={month}")
        _drop_partition(state / "lake" / "reconcile" / f"bill_month={month}")
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
    got = interleaved(cfg, [("close lower bound", lower_close), ("koobill close", close)])
    res["close_lower_bound"], res["close"] = got["close lower bound"], got["koobill close"]
    save()
    shutil.rmtree(runs / "lower_close", ignore_errors=True)


YEAR_TARGET = "2027-03-31"


def _randomize_ids_sql(reader: str, fmt: str) -> str:
    """A usage file with its record ids made random-looking (UUID-shaped, from each id's md5):
    the same ids stay the same (the day's repeats and blanks are kept), but no order is left."""
    uid = (
        "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-' || substr(h, 13, 4) || '-' || "
        "substr(h, 17, 4) || '-' || substr(h, 21, 12)"
    )
    return (
        "copy (select * replace (case when trim(coalesce(record_id::varchar, '')) = '' "
        f"then record_id else (select {uid} from (select md5(record_id::varchar) as h)) end "
        f"as record_id) from {reader}) to $dst ({fmt})"
    )


READERS = {
    ".csv": ("read_csv($src, all_varchar = true, header = true)", "header true"),
    ".parquet": ("read_parquet($src)", "format parquet"),
}


def _random_id_landing(gen_landing: Path, day: str, out: Path) -> Path:
    """The generated landing day, its usage ids randomized (the other feeds linked as they are)."""
    import duckdb

    if (out / ".done").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    for feed_dir in sorted(gen_landing.iterdir()):
        src = feed_dir / day
        if not src.is_dir():
            continue
        dst = out / feed_dir.name / day
        dst.mkdir(parents=True)
        for f in sorted(src.iterdir()):
            if feed_dir.name == "usage" and f.suffix in READERS:
                q = _randomize_ids_sql(*READERS[f.suffix])
                duckdb.connect().execute(q, {"src": str(f), "dst": str(dst / f.name)})
            else:
                (dst / f.name).symlink_to(f)
    (out / ".done").write_text("")
    return out


def _simulate_history(state: Path, target: str, n_days: int) -> None:
    """``n_days`` earlier landing dates in ``state``'s lake, cheaply: each a copy of the
    target's ingested usage file with fresh random record ids (and its file counts), committed
    as an ingest partition the way an ingest commits one. The record-id index of those files
    is then built by the next ingest, through the same path any ingest takes."""
    import duckdb

    from pipelines import lake
    from pipelines.config import Paths

    paths = Paths(state)
    have = {v for v, _p in lake.partitions(paths.ingest, "landing_date")}
    template = lake.partition(paths.ingest, "landing_date", target)
    usage_file, files_file = template / "usage.parquet", template / "files.parquet"
    d0 = dt.date.fromisoformat(target)
    dates = [(d0 - dt.timedelta(days=i)).isoformat() for i in range(n_days, 0, -1)]
    todo = [d for d in dates if d not in have]
    if todo:
        log(f"simulating {len(todo)} earlier landing dates of random ids in {state}")
    con = duckdb.connect()
    t = time.monotonic()
    for i, d in enumerate(todo):
        part = paths.ingest_dir(d)
        vdir = lake.new_version_dir(part)
        con.execute(
            "copy (select * replace (uuid()::varchar as record_id, "
            "cast($d as date) as landing_date) from read_parquet($src)) "
            "to $dst (format parquet, compression zstd)",
            {"src": str(usage_file), "dst": str(vdir / "usage.parquet"), "d": d},
        )
        shutil.copyfile(files_file, vdir / "files.parquet")
        lake.commit_version(part, vdir)
        if (i + 1) % 50 == 0:
            log(f"  {i + 1} of {len(todo)} dates ({time.monotonic() - t:.0f} s)")


def measure_year(cfg: dict, res: dict, save) -> None:
    """Day 365 vs day 1 with random (UUID-like) record ids: the cost of the duplicate lookup
    must not grow with history (the record-id index)."""
    from pipelines import lake

    n_days, rows = cfg["year_days"], cfg["day_rows"]
    target = YEAR_TARGET
    ydir = cfg["out"] / f"year-{rows}"
    _generate(ydir / "gen", target, target, rows)
    landing = _random_id_landing(ydir / "gen" / "landing", target, ydir / "landing")
    runs = cfg["out"] / "runs"
    state = ydir / f"state-{n_days}"
    if not (state / "landing").exists():
        state.mkdir(parents=True, exist_ok=True)
        (state / "landing").symlink_to(landing, target_is_directory=True)
    part = state / "lake" / "ingest" / f"landing_date={target}"
    have = {v for v, _p in lake.partitions(state / "lake" / "ingest", "landing_date")}
    if target not in have:  # the template of the simulated dates
        _child_work("ingest", {"data_dir": str(state), "day": target})
    _simulate_history(state, target, n_days - 1)
    # untimed: the target again, with the history, which indexes the simulated files (once)
    _drop_partition(part)
    log(f"indexing the history of {n_days - 1} dates (the first ingest after them)")
    t = time.monotonic()
    _child_work("ingest", {"data_dir": str(state), "day": target})
    log(f"  done in {time.monotonic() - t:.0f} s")

    def day1(i: int) -> dict:
        return _ingest_fresh(cfg, runs / "year-day1", landing, target, "year_day1")

    def day_n(i: int) -> dict:
        _drop_partition(part)
        return run_child(cfg, "ingest", {"data_dir": str(state), "day": target}, "year_dayN")

    log(f"day 1 vs day {n_days} with random record ids ({rows:,} usage rows a day)")
    got = interleaved(cfg, [("random ids day 1", day1), (f"random ids day {n_days}", day_n)])
    res["random_ids_day1"] = got["random ids day 1"]
    res["random_ids_dayN"] = got[f"random ids day {n_days}"]
    save()


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
        "day365_vs_day1_random_ids": ratio(sec("random_ids_dayN"), sec("random_ids_day1")),
        "random_ids_day1_s": sec("random_ids_day1"),
        "random_ids_dayN_s": sec("random_ids_dayN"),
        "random_ids_history_days": cfg["year_days"] - 1,
        "peak_rss_mb": round(big["peak_rss_mb"], 1) if big else None,
        "cli_startup_s": round(sec("cli"), 3) if sec("cli") else None,
        "pandas_vs_koobill": ratio(sec("pandas_big"), sec("ingest_big")),
        "ingest_s": sec("ingest_big"),
        "ingest_rows": big.get("rows_read"),
        "ingest_usage_rows": big.get("usage_rows"),
        "ingest_rows_per_s": round(big["rows_read"] / big["seconds"]) if big else None,
        "ingest_lower_bound_s": sec("ingest_lower_bound"),
        "ingest_lower_bound_peak_rss_mb": res.get("ingest_lower_bound", {}).get("peak_rss_mb"),
        # the floor (bench/floor.sql): no goal, it tells how close any implementation of the
        # rules can come to the yardstick, and how far pandas is from the best that keeps them
        "ingest_floor_s": sec("ingest_floor"),
        "ingest_vs_floor": ratio(sec("ingest_big"), sec("ingest_floor")),
        "pandas_vs_floor": ratio(sec("pandas_big"), sec("ingest_floor")),
        "floor_vs_lower_bound": ratio(sec("ingest_floor"), sec("ingest_lower_bound")),
        "floor_sql_file": str(FLOOR_SQL.relative_to(REPO)),
        "pandas_s": sec("pandas_big"),
        "pandas_peak_rss_mb": res.get("pandas_big", {}).get("peak_rss_mb"),
        "day1_s": sec("ingest_day1"),
        "day30_s": sec("ingest_dayN"),
        "day_rows": res.get("ingest_dayN", {}).get("rows_read"),
        "close_s": sec("close"),
        "close_lower_bound_s": sec("close_lower_bound"),
        "close_peak_rss_mb": res.get("close", {}).get("peak_rss_mb"),
        "month_usage_rows": cfg["day_rows"] * cfg["days"],
        **exports_measure.summary(res),
    }

    def cpu(key):
        return res.get(key, {}).get("cpu_s")

    out["ingest_cpu_vs_lower_bound"] = ratio(cpu("ingest_big"), cpu("ingest_lower_bound"))
    out["ingest_cpu_s"] = cpu("ingest_big")
    out["ingest_lower_bound_cpu_s"] = cpu("ingest_lower_bound")
    out["yardstick_sql_file"] = str(YARDSTICK_SQL.relative_to(REPO))
    out["yardstick_sql"] = yardstick_sql()

    # the same ratios over CPU seconds of the measured work (steadier on a shared machine)
    out["cpu_ratios"] = {
        "ingest_vs_lower_bound": ratio(cpu("ingest_big"), cpu("ingest_lower_bound")),
        "close_vs_lower_bound": ratio(cpu("close"), cpu("close_lower_bound")),
        "day30_vs_day1": ratio(cpu("ingest_dayN"), cpu("ingest_day1")),
        "day365_vs_day1_random_ids": ratio(cpu("random_ids_dayN"), cpu("random_ids_day1")),
        "pandas_vs_koobill": ratio(cpu("pandas_big"), cpu("ingest_big")),
        "ingest_vs_floor": ratio(cpu("ingest_big"), cpu("ingest_floor")),
        "pandas_vs_floor": ratio(cpu("pandas_big"), cpu("ingest_floor")),
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
            "year_days": cfg["year_days"],
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
            f"yardstick {_fmt(s['ingest_lower_bound_s'], ' s')}",
            "ingest_vs_lower_bound",
        ),
        (
            "Ingest CPU, big day",
            "CPU s of the process and its children",
            _fmt(s.get("ingest_cpu_s"), " s"),
            f"yardstick {_fmt(s.get('ingest_lower_bound_cpu_s'), ' s')}",
            "ingest_cpu_vs_lower_bound",
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
            f"Day {z['year_days']} vs day 1, random ids",
            f"{_fmt(z['month_day_usage_rows'])} usage rows, UUID-like ids",
            f"{_fmt(s['random_ids_dayN_s'], ' s')} vs {_fmt(s['random_ids_day1_s'], ' s')}",
            "",
            "day365_vs_day1_random_ids",
        ),
        (
            "Close of the month",
            f"{_fmt(s['month_usage_rows'])} usage rows",
            _fmt(s["close_s"], " s"),
            f"lower bound {_fmt(s['close_lower_bound_s'], ' s')}",
            "close_vs_lower_bound",
        ),
        ("`koobill --help`", "median of 5", _fmt(s["cli_startup_s"], " s"), "", "cli_startup_s"),
        *exports_measure.markdown_rows(s),
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
    floor = ""
    if s.get("ingest_floor_s"):
        floor = (
            f"\nThe floor (`{s['floor_sql_file']}`: the yardstick's work plus the typing rules, "
            "a row breaking a rule left out, a repeated id written once and the lake's columns "
            "and types, in one statement; no goal): "
            f"{_fmt(s['ingest_floor_s'], ' s')}, {_fmt(s['floor_vs_lower_bound'])} times the "
            f"yardstick. koobill is {_fmt(s['ingest_vs_floor'])} times the floor; pandas is "
            f"{_fmt(s.get('pandas_vs_floor'))} times it.\n"
        )
    yardstick = (
        f"\nThe yardstick (`{s['yardstick_sql_file']}`, values bound: the day's usage CSVs, the "
        "price CSVs landed so far, the latest partner snapshot, the output path):\n\n"
        f"```sql\n{s['yardstick_sql'].rstrip()}\n```\n"
    )
    table = "\n".join(lines) + "\n" + (notes + "\n" if notes else "")
    return head + "\n\n" + table + floor + yardstick


PARTS = ("cli", "big", "pandas", "month", "close", "year", "exports")


def _kept(cfg: dict, measured: list[str]) -> dict:
    """``KOOBILL_BENCH_KEEP=1``: start from the raw figures of the last results.json (same
    sizes), so a run of some parts updates them and keeps the others."""
    try:
        old = json.loads((cfg["results_dir"] / "results.json").read_text())
    except (OSError, ValueError):
        return {}
    sizes = old.get("sizes", {})
    want = {
        "big_day_usage_rows": cfg["big_rows"],
        "month_day_usage_rows": cfg["day_rows"],
        "month_days": cfg["days"],
    }
    if any(sizes.get(k) != v for k, v in want.items()):
        log("KOOBILL_BENCH_KEEP: the last results have other sizes; nothing kept")
        return {}
    res = dict(old.get("raw", {}))
    when = old.get("generated_at", "?")
    res["kept"] = res.get("kept") or f"the run of {when}"
    log(f"KOOBILL_BENCH_KEEP: measuring {', '.join(measured)}; keeping the rest ({when})")
    return res


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
    needs = {"pandas": "big", "close": "month"}  # measured within another part
    measured = [p for p in PARTS if {p, needs.get(p)}.isdisjoint(cfg["skip"])]
    if os.environ.get("KOOBILL_BENCH_KEEP") == "1":
        res = _kept(cfg, measured)
    log(
        f"koobill bench: big day {cfg['big_rows']:,} rows; month {cfg['days']} x "
        f"{cfg['day_rows']:,} rows; repeats {cfg['repeats']}; cache {cfg['out']}"
    )

    def save(complete: bool = False) -> dict:
        s = summarize(cfg, res, mach, complete)
        if res.get("kept"):
            s["notes"] = [
                f"Measured in this run: {', '.join(measured)}; the other figures are kept "
                f"from earlier runs ({res['kept']})."
            ]
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
    if "year" not in cfg["skip"]:
        measure_year(cfg, res, save)
    if "exports" not in cfg["skip"]:
        measure_exports(cfg, res, save)
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
