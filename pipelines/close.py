"""Close a bill month: stage the bills and their lines, validate them, publish them.

Publishing is one atomic commit of ``lake/bills/bill_month=M`` (every version of the month's
bills and lines), then the same partition is replaced in the warehouse in one transaction.
A closed month never changes; ``restate`` makes version n+1 and marks version n superseded.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pipelines import calendar as cal
from pipelines import quality
from pipelines.config import Paths, require_data_dir, resolve_data_dir
from pipelines.db import connect, parquet, quote_path, sql
from pipelines.lake import KoobillError, commit_version, data_dir_lock, new_version_dir, partitions

Echo = Callable[[str], None]
COMPONENTS = (
    "consume_amount",
    "refunds",
    "adjustments",
    "coupon_amount",
    "tax_amount",
    "bill_amount",
    "amount_due",
)


@dataclass
class CloseResult:
    month: str
    version: int
    changed: bool
    bills: list[dict]
    message: str
    forced: bool = False
    missing_dates: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    report_path: str | None = None


def ingested_dates(root: Path) -> list[str]:
    return [v for v, _ in partitions(Paths(root).ingest, "landing_date")]


def missing_dates(data_dir: str | Path | None, month: str) -> list[str]:
    """Landing dates from the 1st of ``month`` (or the first date ever ingested, if later)
    through its cutoff that have not been ingested."""
    root = require_data_dir(data_dir)
    cal.parse_month(month)
    done = ingested_dates(root)
    start = cal.first_day(month)
    if done:
        start = max(start, dt.date.fromisoformat(done[0]))
    have = set(done)
    return [
        d.isoformat() for d in cal.date_range(start, cal.cutoff(month)) if d.isoformat() not in have
    ]


def close_month(
    data_dir: str | Path | None,
    month: str,
    *,
    force: bool = False,
    restate: bool = False,
    echo: Echo | None = None,
) -> CloseResult:
    """Generate, validate and publish the bills of ``month``."""
    root = resolve_data_dir(data_dir)
    cal.parse_month(month)
    echo = echo or (lambda _m: None)
    with data_dir_lock(
        root, wait_s=float(os.environ.get("KOOBILL_LOCK_WAIT_S", "600")), what=f"close {month}"
    ):
        return _close(root, month, force, restate, echo)


def _existing(paths: Paths, month: str, con) -> tuple[int, Path | None]:
    part = paths.bills_dir(month)
    f = part / "bills.parquet"
    if not f.exists():
        return 0, None
    v = con.execute(f"select coalesce(max(version), 0) from {parquet(f)}").fetchone()[0]
    return int(v), part


def _close(root: Path, month: str, force: bool, restate: bool, echo: Echo) -> CloseResult:
    t0 = time.monotonic()
    quality.prewarm()  # the quality gate's import overlaps the bills' SQL
    paths = Paths(root)
    con = connect(":memory:")
    try:
        prev_version, prev_part = _existing(paths, month, con)
        if prev_version and not restate:
            bills = _rows(
                con,
                f"select * from {parquet(prev_part / 'bills.parquet')} "
                "where status = 'closed' order by partner_id",
            )
            # The lake is the truth: a close killed between its lake commit and the warehouse
            # transaction left the warehouse behind; replacing the partition again is a no-op
            # otherwise.
            from pipelines.warehouse import sync_partition

            sync_partition(root, "bills", month)
            return CloseResult(
                month,
                prev_version,
                False,
                bills,
                f"{month} is already closed (version {prev_version}); nothing changed. "
                "Use --restate to make a new version.",
            )
        if restate and not prev_version:
            raise KoobillError(f"{month} has not been closed yet: there is nothing to restate")
        missing = missing_dates(root, month)
        if missing and not force:
            raise KoobillError(
                f"cannot close {month}: {len(missing)} landing date(s) through the cutoff "
                f"{cal.cutoff(month)} have not been ingested: {cal.format_date_ranges(missing)}. "
                "Ingest them (koobill ingest --date ...) or close with --force."
            )
        if missing:
            echo(
                f"warning: closing {month} with --force; missing landing dates: {cal.format_date_ranges(missing)}"
            )
        version = prev_version + 1
        echo(
            f"closing {month} (version {version}) from landing dates "
            f"{cal.landing_window(month)[0]}..{cal.cutoff(month)}"
        )
        _stage_inputs(con, paths, month)
        closed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
        params = {"month": month, "version": version}
        con.execute("create temp table staged_lines as " + sql("bill_lines"), params)
        con.execute(
            "create temp table staged_bills as " + sql("bills"),
            {
                **params,
                "closed_at": closed_at,
                "cutoff": cal.cutoff(month),
                "forced": bool(missing),
                "missing": ",".join(missing) if missing else None,
            },
        )
        report = _validate(con, paths, month, version)
        changes: list[str] = []
        vdir = new_version_dir(paths.bills_dir(month))
        try:
            if prev_part is not None:
                changes = _diff(con, prev_part, version)
                old_b = parquet(prev_part / "bills.parquet")
                old_l = parquet(prev_part / "bill_lines.parquet")
                bills_q = (
                    f"select * replace ('superseded' as status) from {old_b} "
                    "union all by name select * from staged_bills"
                )
                lines_q = f"select * from {old_l} union all by name select * from staged_lines"
            else:
                bills_q, lines_q = "select * from staged_bills", "select * from staged_lines"
            con.execute(
                f"copy ({bills_q} order by version, partner_id) to "
                f"{quote_path(vdir / 'bills.parquet')} (format parquet)"
            )
            con.execute(
                f"copy ({lines_q} order by version, partner_id, line_no) to "
                f"{quote_path(vdir / 'bill_lines.parquet')} (format parquet, compression zstd)"
            )
            commit_version(paths.bills_dir(month), vdir)
        except BaseException:
            import shutil

            shutil.rmtree(vdir, ignore_errors=True)
            raise
        bills = _rows(con, "select * from staged_bills order by partner_id")
    finally:
        con.close()
    from pipelines.warehouse import sync_partition

    sync_partition(root, "bills", month)
    msg = f"closed {month} version {version}: {len(bills)} bill(s) in {time.monotonic() - t0:.1f} s"
    return CloseResult(
        month,
        version,
        True,
        bills,
        msg,
        forced=bool(missing),
        missing_dates=missing,
        changes=changes,
        report_path=report,
    )


def _stage_inputs(con, paths: Paths, month: str) -> None:
    lo, hi = (d.isoformat() for d in cal.landing_window(month))
    parts = [(v, p) for v, p in partitions(paths.ingest, "landing_date") if lo <= v <= hi]
    for feed in ("orders", "usage", "adjustments", "coupons"):
        files = [p / f"{feed}.parquet" for _v, p in parts if (p / f"{feed}.parquet").exists()]
        if files:
            con.execute(
                f"create temp view {feed}_m as select * from {parquet(files, union_by_name=True)}"
            )
        else:
            con.execute(f"create temp table {feed}_m ({_EMPTY[feed]})")
    # Partners billed: the snapshot at the cutoff plus any partner with records in the month;
    # attributes from the latest snapshot (on or before the cutoff) that lists the partner.
    snaps = [
        (v, p / "partners.parquet")
        for v, p in partitions(paths.ingest, "landing_date")
        if v <= hi and (p / "partners.parquet").exists()
    ]
    snaps = [
        (v, f) for v, f in snaps if con.execute(f"select count(*) from {parquet(f)}").fetchone()[0]
    ]
    if snaps:
        latest = snaps[-1][0]
        con.execute(
            f"""create temp table bill_partners as
            with allp as (
              select landing_date, partner_id, partner_name, currency, tax_rate
              from {parquet([f for _v, f in snaps])}
            ),
            latest as (
              select * exclude (rn) from (
                select *, row_number() over (partition by partner_id order by landing_date desc) rn
                from allp) where rn = 1
            ),
            wanted as (
              select partner_id from allp where landing_date = '{latest}'::date
              union
              select partner_id from orders_m where bill_month_assigned = $month
              union
              select partner_id from usage_m where bill_month_assigned = $month
              union
              select partner_id from adjustments_m where bill_month_assigned = $month
              union
              select partner_id from coupons_m where bill_month_assigned = $month
            )
            select l.partner_id, l.partner_name, l.currency, l.tax_rate
            from latest l join wanted w using (partner_id) order by l.partner_id""",
            {"month": month},
        )
    else:
        con.execute(
            "create temp table bill_partners (partner_id varchar, partner_name varchar, "
            "currency varchar, tax_rate decimal(38,6))"
        )


_EMPTY = {
    "orders": "partner_id varchar, amount decimal(38,6), order_type varchar, customer_id varchar, "
    "customer_name varchar, product_id varchar, product_name varchar, sku_code varchar, "
    "region varchar, source_month varchar, late boolean, currency varchar, "
    "official_amount decimal(38,6), discount_amount decimal(38,6), "
    "event_time timestamptz, bill_month_assigned varchar",
    "usage": "partner_id varchar, customer_id varchar, customer_name varchar, product_id varchar, "
    "product_name varchar, sku_code varchar, region varchar, source_month varchar, "
    "late boolean, currency varchar, quantity decimal(38,6), "
    "official_amount decimal(38,6), discount_amount decimal(38,6), amount decimal(38,6), "
    "usage_start timestamptz, bill_month_assigned varchar",
    "adjustments": "partner_id varchar, customer_id varchar, product_id varchar, "
    "source_month varchar, late boolean, reason varchar, currency varchar, "
    "amount decimal(38,6), bill_month_assigned varchar",
    "coupons": "partner_id varchar, source_month varchar, late boolean, coupon_id varchar, "
    "currency varchar, amount decimal(38,6), bill_month_assigned varchar",
}


def _validate(con, paths: Paths, month: str, version: int) -> str | None:
    from pipelines import quality

    res = quality.validate_bills(
        con, "staged_bills", "staged_lines", paths.quality / "bills" / month, f"{month}-v{version}"
    )
    return str(res.report_path)


def _diff(con, prev_part: Path, version: int) -> list[str]:
    """What a restatement changed, component by component, per partner."""
    old = _rows(
        con, f"select * from {parquet(prev_part / 'bills.parquet')} where status = 'closed'"
    )
    new = _rows(con, "select * from staged_bills")
    by_old = {b["partner_id"]: b for b in old}
    out = []
    for b in new:
        o = by_old.get(b["partner_id"])
        if o is None:
            out.append(f"{b['partner_id']}: new bill (amount due {b['amount_due']})")
            continue
        for c in COMPONENTS:
            if o[c] != b[c]:
                out.append(f"{b['partner_id']}: {c} {o[c]} -> {b[c]} ({b[c] - o[c]:+})")
    if not out:
        out.append(f"no amount changed in version {version}")
    return out


def _rows(con, query: str) -> list[dict]:
    cur = con.execute(query)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _fmt(v) -> str:
    return f"{v:,.2f}" if isinstance(v, Decimal) else str(v)


def print_close_result(r: CloseResult, echo: Echo) -> None:
    echo(r.message)
    if r.forced:
        echo(f"  forced: missing landing dates {cal.format_date_ranges(r.missing_dates)}")
    for c in r.changes:
        echo(f"  changed: {c}")
    if r.report_path:
        echo(f"  data-quality report: {r.report_path}")
    print_bills(r.bills, echo)


def print_bills(bills: list[dict], echo: Echo) -> None:
    """The bills as a table, one line per partner."""
    amounts = (
        "consume_amount",
        "refunds",
        "adjustments",
        "coupon_amount",
        "tax_amount",
        "bill_amount",
        "amount_due",
    )
    head = ("consume", "refunds", "adjust", "coupon", "tax", "bill", "due")
    w = max([len("partner")] + [len(b["partner_id"]) for b in bills]) + 2
    echo(
        "  "
        + f"{'partner':<{w}}{'month':<9}{'v':>2} {'cur':<4}"
        + "".join(f"{h:>14}" for h in head)
        + "  invoice"
    )
    for b in bills:
        echo(
            "  " + f"{b['partner_id']:<{w}}{b['bill_month']:<9}{b['version']:>2} "
            f"{b['currency']:<4}"
            + "".join(f"{_fmt(b[c]):>14}" for c in amounts)
            + f"  {b['invoice_no'] or '-'}"
        )
