"""Reconciliation, estimate variance and provenance of a closed month (spec section 9).

After every close (and by ``koobill reconcile --month M``) three tables are built for the month
and committed together as one lake partition ``lake/reconcile/bill_month=M/``, then mirrored
into the warehouse like the bills:

- ``reconciliation``: every link from the landed rows to the invoices (``sql/reconciliation.sql``),
  recomputed on every run from the lake as it is (payments as of the latest landing date);
- ``estimate_variance`` (``pipelines.variance``) and ``bill_provenance``
  (``pipelines.provenance``): one set of rows per bill version, made once, at the close that
  published the version, and kept as they were made; a version without rows (a month closed
  before this existed) gets them at the next run.

A run whose rows equal the stored ones writes nothing, so rerunning a close of an unchanged
month leaves the lake's bytes as they were. ``pipelines.recon_report`` prints them (``koobill
reconcile``, ``koobill explain``) and makes the XLSX export's ``reconciliation`` sheet.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines import calendar as cal
from pipelines import schema
from pipelines.config import FILE_SUFFIXES, Paths, require_data_dir
from pipelines.db import connect, create_temp, lake_files, parquet, quote_path, sql
from pipelines.env import settings
from pipelines.errors import KoobillError
from pipelines.lake import (
    at,
    commit_version,
    data_dir_lock,
    export_history_files,
    new_version_dir,
    partitions,
)

Echo = Callable[[str], None]
LAKE_TABLE = "reconcile"
# statuses of a reconciliation row that need no action (a credit balance is the partner's)
NOT_RESIDUAL = ("ok", "credit_balance")
PREFIX = "bill_month"
FILES = {
    "reconciliation": "reconciliation.parquet",
    "estimate_variance": "estimate_variance.parquet",
    "bill_provenance": "bill_provenance.parquet",
}
BILLED_FEEDS = ("orders", "usage", "adjustments", "coupons")
ALL_FEEDS = ("partners", "prices", "orders", "usage", "adjustments", "coupons", "payments")


@dataclass
class MonthReport:
    month: str
    reconciliation: list[dict]
    variance: list[dict]
    provenance: list[dict]
    written: bool

    @property
    def residuals(self) -> list[dict]:
        return [r for r in self.reconciliation if r["status"] not in NOT_RESIDUAL]


def partition_dir(root: Path, month: str) -> Path:
    return Paths(root).lake / LAKE_TABLE / f"{PREFIX}={month}"


# --- entry points ------------------------------------------------------------------------------


def after_close(root: Path, month: str, echo: Echo | None = None) -> MonthReport | None:
    """The close's hook (the caller holds the writer lock): build the month's tables; say how
    many residuals the reconciliation lists. A month with no bills (nothing closed) is left
    alone."""
    if not (at(Paths(root).bills_dir(month)) / "bills.parquet").exists():
        return None
    report = build_month(root, month)
    if echo is not None and report.residuals:
        echo(
            f"  reconciliation: {len(report.residuals)} residual(s); "
            f"see koobill reconcile --month {month}"
        )
    return report


def reconcile_month(data_dir: str | Path | None, month: str) -> MonthReport:
    """``koobill reconcile``: rebuild and store the month's tables under the writer lock."""
    root = require_data_dir(data_dir)
    cal.parse_month(month)
    if not (at(Paths(root).bills_dir(month)) / "bills.parquet").exists():
        raise KoobillError(
            f"{month} has not been closed: there is nothing to reconcile. "
            f"Run koobill close --month {month} first."
        )
    with data_dir_lock(root, wait_s=settings().lock_wait_s, what=f"reconcile {month}"):
        return build_month(root, month)


def build_month(root: Path, month: str) -> MonthReport:
    """Compute the month's three tables; commit and publish them if they differ from the
    stored ones. The caller holds the writer lock."""
    from pipelines import provenance, variance

    root = Path(root)
    part = partition_dir(root, month)
    con = connect(":memory:")
    try:
        _stage(con, root, month)
        stored = {name: _stored(con, part, name) for name in FILES}
        recon = query_rows(con, sql("reconciliation"), _params(root, month))
        bills = query_rows(con, "select * from rc_bills order by partner_id, version")
        have_var = {(r["partner_id"], r["version"]) for r in stored["estimate_variance"]}
        have_prov = {(r["partner_id"], r["version"]) for r in stored["bill_provenance"]}
        var_rows = list(stored["estimate_variance"])
        prov_rows = list(stored["bill_provenance"])
        new_var = [b for b in bills if (b["partner_id"], b["version"]) not in have_var]
        new_prov = [b for b in bills if (b["partner_id"], b["version"]) not in have_prov]
        if new_var:
            var_rows += variance.variance_rows(con, root, month, new_var, var_rows)
        if new_prov:
            prov_rows += provenance.provenance_rows(con, root, month, new_prov)
        var_rows.sort(key=lambda r: (r["partner_id"], r["version"], r["term_no"]))
        prov_rows.sort(key=_prov_key)
        new = {
            "reconciliation": recon,
            "estimate_variance": var_rows,
            "bill_provenance": prov_rows,
        }
        changed = any(_norm(new[n]) != _norm(stored[n]) for n in FILES)
        if changed:
            _write(con, part, new)
    finally:
        con.close()
    if changed or not _in_warehouse(root, month):
        from pipelines.warehouse import sync_partition

        sync_partition(root, LAKE_TABLE, month)
    return MonthReport(month, recon, var_rows, prov_rows, changed)


def _prov_key(r: dict) -> tuple:
    return (
        r["partner_id"],
        r["version"],
        {"code": 0, "setting": 1, "landing_file": 2}.get(r["kind"], 3),
        r["name"],
    )


def _norm(rows: list[dict]) -> list[tuple]:
    return [tuple(sorted((k, str(v)) for k, v in r.items())) for r in rows]


# --- staging -----------------------------------------------------------------------------------


def file_range(root: Path, month: str) -> tuple[str, str]:
    """The landing dates whose files the month's reconciliation accounts for: after the cutoff
    of the latest month closed before it (from the first date ever, if none) through its own
    cutoff, so that every landing date belongs to exactly one closed month."""
    closed = [m for m, _p in partitions(Paths(root).bills, "bill_month") if m < month]
    lo = (cal.cutoff(closed[-1]) + dt.timedelta(days=1)).isoformat() if closed else "0001-01-01"
    return lo, cal.cutoff(month).isoformat()


def _params(root: Path, month: str) -> dict[str, Any]:
    lo, hi = file_range(root, month)
    dates = [v for v, _p in partitions(Paths(root).ingest, "landing_date")]
    as_of = dates[-1] if dates else cal.cutoff(month).isoformat()
    return {"month": month, "file_lo": lo, "file_hi": hi, "as_of": as_of}


def _view(con, name: str, files: list[Path], empty: str, select: str = "*") -> None:
    files = [f for f in files if f.exists()]
    if files:
        con.execute(
            f"create or replace temp view {name} as select {select} "
            f"from {parquet(files, union_by_name=True)}"
        )
    else:
        con.execute(f"create or replace temp table {name} ({empty})")


_EMPTY_RECORDS = {
    "orders": "partner_id varchar, amount decimal(38,6), order_type varchar, customer_id varchar, "
    "customer_name varchar, product_id varchar, product_name varchar, sku_code varchar, "
    "region varchar, source_month varchar, late boolean, currency varchar, "
    "official_amount decimal(38,6), discount_amount decimal(38,6), "
    "event_time timestamptz, bill_month_assigned varchar, landing_date date, _file varchar",
    "usage": "partner_id varchar, customer_id varchar, customer_name varchar, product_id varchar, "
    "product_name varchar, sku_code varchar, region varchar, source_month varchar, "
    "late boolean, currency varchar, quantity decimal(38,6), "
    "official_amount decimal(38,6), discount_amount decimal(38,6), amount decimal(38,6), "
    "usage_start timestamptz, bill_month_assigned varchar, landing_date date, _file varchar",
    "adjustments": "partner_id varchar, customer_id varchar, product_id varchar, "
    "source_month varchar, late boolean, reason varchar, currency varchar, "
    "amount decimal(38,6), bill_month_assigned varchar, landing_date date, _file varchar",
    "coupons": "partner_id varchar, source_month varchar, late boolean, coupon_id varchar, "
    "currency varchar, amount decimal(38,6), bill_month_assigned varchar, landing_date date, "
    "_file varchar",
}


def _stage(con, root: Path, month: str) -> None:
    """The temp tables ``sql/reconciliation.sql`` and the variance and provenance read."""
    paths = Paths(root)
    ingest = partitions(paths.ingest, "landing_date")
    lo, hi = file_range(root, month)
    w_lo, w_hi = (d.isoformat() for d in cal.landing_window(month))
    _stage_files(con, paths, [(v, p) for v, p in ingest if lo <= v <= hi])
    _stage_records(con, [p for v, p in ingest if w_lo <= v <= w_hi], month)
    _stage_bills(con, paths, month)
    _stage_payments(con, [p for _v, p in ingest], _params(root, month)["as_of"])
    _stage_documents(con, root, month)
    # the estimates of the month (the variance)
    _view(
        con,
        "rc_estimates",
        [p / "estimates.parquet" for _v, p in ingest],
        "partner_id varchar, bill_month varchar, as_of_date date, currency varchar, "
        "estimate_amount decimal(38,2)",
    )


def _stage_files(con, paths: Paths, in_files: list[tuple[str, Path]]) -> None:
    """Step 1: the ingest's counts (``rc_files``), the landing folders' content (``rc_disk``),
    the lake's accepted (``rc_accepted``) and quarantined (``rc_quarantine``) rows per file."""
    _view(
        con,
        "rc_files",
        [p / "files.parquet" for _v, p in in_files],
        "landing_date date, feed varchar, file varchar, rows_read bigint, accepted bigint, "
        "quarantined bigint, duplicates bigint",
    )
    con.execute(
        "create or replace temp table rc_disk (landing_date date, feed varchar, file varchar)"
    )
    from pipelines import objectstore

    disk = [
        (v, feed, f.name)
        for v, _p in in_files
        for feed in ALL_FEEDS
        if objectstore.pull_dir(paths.landing_dir(feed, v)).is_dir()
        for f in sorted(paths.landing_dir(feed, v).iterdir())
        if f.is_file() and f.suffix.lower() in FILE_SUFFIXES and not f.name.startswith(".")
    ]
    if disk:
        con.executemany("insert into rc_disk values (?, ?, ?)", disk)
    _stage_accepted(con, [p for _v, p in in_files])
    _view(
        con,
        "rc_quarantine_rows",
        [p / "quarantine.parquet" for _v, p in in_files],
        "feed varchar, landing_date date, file varchar, row bigint",
    )
    create_temp(con, "rc_quarantine", sql("reconcile/quarantine"))


def _stage_accepted(con, parts: list[Path]) -> None:
    """``rc_accepted``: the accepted rows of each landing file, counted in the lake."""
    counts = []
    for feed in ALL_FEEDS:
        files = [p / f"{feed}.parquet" for p in parts if (p / f"{feed}.parquet").exists()]
        if files:
            counts.append(
                f"select landing_date, '{feed}' as feed, _file as file, count(*) as n "
                f"from {parquet(files, union_by_name=True)} group by all"
            )
    con.execute(
        "create or replace temp table rc_accepted as "
        + (
            " union all ".join(counts)
            if counts
            else "select null::date as landing_date, null::varchar as feed, "
            "null::varchar as file, 0::bigint as n where false"
        )
    )


def _stage_records(con, window: list[Path], month: str) -> None:
    """Step 2: ``rc_records``, the month's accepted records as the close reads them."""
    for feed in BILLED_FEEDS:
        _view(con, f"{feed}_m", [p / f"{feed}.parquet" for p in window], _EMPTY_RECORDS[feed])
    create_temp(con, "rc_records", sql("reconcile/records"), {"month": month})


def _stage_bills(con, paths: Paths, month: str) -> None:
    """Step 3: the month's bills and lines, every version (``rc_bills``, ``rc_lines``), the
    lines recomputed from the records (``rc_relines``), and the invoices of every month
    (``rc_invoices_all``, ``rc_invoices``, ``rc_billed``)."""
    bills_part = at(paths.bills_dir(month))
    create_temp(
        con, "rc_bills", sql("reconcile/bills"), {"bills": lake_files(bills_part / "bills.parquet")}
    )
    create_temp(
        con,
        "rc_lines",
        sql("reconcile/lines"),
        {"lines": lake_files(bills_part / "bill_lines.parquet")},
    )
    create_temp(con, "bill_partners", sql("reconcile/bill_partners"))
    create_temp(con, "rc_relines", sql("bill_lines"), {"month": month})
    all_bills = lake_files(
        p / "bills.parquet"
        for _m, p in partitions(paths.bills, "bill_month")
        if (p / "bills.parquet").exists()
    )
    for name in ("invoices_all", "invoices", "billed"):
        create_temp(con, f"rc_{name}", sql(f"reconcile/{name}"), {"bills": all_bills})


def _stage_payments(con, parts: list[Path], as_of: str) -> None:
    """``rc_payments``: every payment paid on or before ``as_of``."""
    files = lake_files(p / "payments.parquet" for p in parts if (p / "payments.parquet").exists())
    if files:
        create_temp(
            con, "rc_payments", sql("reconcile/payments"), {"payments": files, "as_of": as_of}
        )
    else:
        con.execute(
            "create or replace temp table rc_payments (record_id varchar, partner_id varchar, "
            "amount decimal(38,6), currency varchar, paid_at timestamptz, paid_date date, "
            "reference varchar, landing_date date)"
        )


def _stage_documents(con, root: Path, month: str) -> None:
    """``rc_documents``: the invoice PDFs exported for the month's current bills, each with the
    SHA-256 export_history recorded and the one of the file as it lies now."""
    from pipelines.provenance import sha256_of

    con.execute(
        "create or replace temp table rc_documents (partner_id varchar, version integer, "
        "invoice_no varchar, path varchar, recorded varchar, on_disk varchar)"
    )
    hist = export_history_files(root)
    if not hist:
        return
    rows = con.execute(
        sql("reconcile/documents"), {"history": lake_files(hist), "month": month}
    ).fetchall()
    for pid, v, inv, path, recorded in rows:
        from pipelines import objectstore

        f = objectstore.refresh(root / path, every_s=0)  # object storage: the bucket's file
        on_disk = sha256_of(f) if f.is_file() else None
        con.execute(
            "insert into rc_documents values (?, ?, ?, ?, ?, ?)",
            [pid, v, inv, path, recorded, on_disk],
        )


# --- storage -----------------------------------------------------------------------------------


def _stored(con, part: Path, name: str) -> list[dict]:
    f = at(part) / FILES[name]
    if not f.exists():
        return []
    return query_rows(con, f"select * from {parquet(f)}")


def _write(con, part: Path, tables: dict[str, list[dict]]) -> None:
    import shutil

    import duckdb

    vdir = new_version_dir(part)
    try:
        for name, rows in tables.items():
            t = _schema(name)
            cols = ", ".join(f'"{n}" {typ}' for n, typ, _ in t.columns)
            con.execute(f"create or replace temp table _out ({cols})")
            if rows:
                con.executemany(
                    f"insert into _out values ({', '.join('?' for _ in t.columns)})",
                    [[r.get(n) for n in t.column_names] for r in rows],
                )
            con.execute(f"copy _out to {quote_path(vdir / FILES[name])} (format parquet)")
        commit_version(part, vdir)
    except BaseException as exc:
        shutil.rmtree(vdir, ignore_errors=True)
        if isinstance(exc, duckdb.IOException | OSError) and not isinstance(exc, KoobillError):
            raise KoobillError(
                f"cannot write the reconciliation of {part.name}: "
                f"{str(exc).splitlines()[0]}; the bills are published as they were, rerun "
                f"koobill reconcile --month {part.name.split('=', 1)[1]} once fixed"
            ) from exc
        raise


def _schema(name: str) -> schema.Table:
    return next(t for t in schema.PUBLIC if t.name == name)


def _in_warehouse(root: Path, month: str) -> bool:
    """The working copy holds the month's reconciliation (a run killed between its lake commit
    and the warehouse is repaired by the next)."""
    from pipelines.warehouse import work_path

    if not work_path(root).exists():
        return False
    import duckdb

    try:
        con = connect(work_path(root), read_only=True)
    except duckdb.Error:
        return False
    try:
        n = con.execute(
            "select count(*) from reconciliation where bill_month = ?", [month]
        ).fetchone()[0]
    except duckdb.Error:
        return False
    finally:
        con.close()
    return n > 0


def query_rows(con, query: str, params: Any = None) -> list[dict]:
    cur = con.execute(query, params) if params is not None else con.execute(query)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
