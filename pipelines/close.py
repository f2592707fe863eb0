"""Close a bill month: stage the bills and their lines, validate them, publish them.

Publishing is one atomic commit of ``lake/bills/bill_month=M`` (every version of the month's
bills and lines), then the same partition is replaced in the warehouse in one transaction.
A closed month never changes. ``restate`` recomputes the month and compares each partner's
bill with its current version: only a partner whose bill changed (a component or a line)
gets version n+1 (invoice ``-V<n+1>``, naming the invoice it supersedes) and its version n
becomes ``superseded``; every other bill keeps its version and invoice. With no change at all
nothing is written.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from pipelines import calendar as cal
from pipelines import quality
from pipelines.config import Paths, require_data_dir, resolve_data_dir
from pipelines.db import connect, create_temp, database_path, lake_files, render, sql
from pipelines.errors import KoobillError
from pipelines.lake import (
    at,
    commit_version,
    data_dir_lock,
    lock_wait_s,
    new_version_dir,
    partitions,
)
from pipelines.schema import BILL_COMPONENTS as COMPONENTS

Echo = Callable[[str], None]
# optional partner columns carried from the snapshot at the cutoff onto the bill (the invoice's
# recipient block)
RECIPIENT_COLUMNS = ("legal_name", "address", "tax_id", "billing_email")


@dataclass
class CloseResult:
    """``version``: the highest bill version of the month after the run (versions are per
    partner); ``changed``: something was published; ``bills``: the bills published by this run
    (every bill of a first close, the changed partners' new versions of a restatement), or the
    current bills when nothing changed; ``changes``: what a restatement changed, per partner."""

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
    with data_dir_lock(root, wait_s=lock_wait_s(), what=f"close {month}"):
        result = _close(root, month, force, restate, echo)
        from pipelines.reconcile import after_close  # recon hook

        after_close(root, month, echo)  # recon hook: reconciliation, variance, provenance
        return result


def _existing(paths: Paths, month: str, con) -> tuple[int, Path | None]:
    part = at(paths.bills_dir(month))
    f = part / "bills.parquet"
    if not f.exists():
        return 0, None
    q = "select coalesce(max(version), 0) from read_parquet($bills, hive_partitioning = false)"
    v = con.execute(q, {"bills": lake_files(f)}).fetchone()[0]
    return int(v), part


def _close(root: Path, month: str, force: bool, restate: bool, echo: Echo) -> CloseResult:
    t0 = time.monotonic()
    quality.prewarm()  # the quality gate's import overlaps the bills' SQL
    paths = Paths(root)
    database_path(paths.warehouse)  # the warehouse can be written there: fail up front
    con = connect(":memory:")
    try:
        prev_version, prev_part = _existing(paths, month, con)
        if prev_version and not restate:
            return _already_closed(con, root, month, prev_version, prev_part)
        missing = _missing_before_close(root, month, restate, prev_version, force, echo)
        _stage(con, paths, month, prev_part, missing)
        changes: list[str] = []
        if prev_part is not None:
            changed = _changed_partners(con, prev_part)
            if not changed:
                # nothing is written: no new version, no new invoice number, the same lake bytes
                return CloseResult(
                    month,
                    prev_version,
                    False,
                    _current(con, prev_part),
                    f"restating {month}: nothing changed since the published bills "
                    f"(no component and no line differs); every bill keeps its version and "
                    "invoice, nothing was written",
                )
            changes = _diff(con, prev_part, changed)
        version, report = _publish(con, paths, month, prev_part, prev_version)
        bills = _rows(con, "select * from staged_bills order by partner_id")
    finally:
        con.close()
    from pipelines.warehouse import sync_partition

    sync_partition(root, "bills", month)
    if prev_part is not None:
        from pipelines.exports import mark_superseded

        mark_superseded(root, month)
    secs = time.monotonic() - t0
    if prev_part is None:
        msg = f"closed {month} version 1: {len(bills)} bill(s) in {secs:.1f} s"
    else:
        new = ", ".join(
            f"{b['partner_id']} v{b['version']}"
            + (f" ({b['invoice_no']})" if b["invoice_no"] else "")
            for b in bills
        )
        msg = (
            f"restated {month}: {len(bills)} bill(s) changed, now {new}; every other bill "
            f"keeps its version and invoice ({secs:.1f} s)"
        )
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


def _already_closed(con, root: Path, month: str, version: int, part: Path) -> CloseResult:
    bills = _current(con, part)
    # The lake is the truth: a close killed between its lake commit and the warehouse
    # transaction left the warehouse behind; replacing the partition again is a no-op
    # otherwise.
    from pipelines.warehouse import sync_partition

    sync_partition(root, "bills", month)
    return CloseResult(
        month,
        version,
        False,
        bills,
        f"{month} is already closed (version {version}); nothing changed. "
        "Use --restate to make a new version.",
    )


def _missing_before_close(
    root: Path, month: str, restate: bool, prev_version: int, force: bool, echo: Echo
) -> list[str]:
    """The landing dates of the month not ingested (an error unless ``force``)."""
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
    window = f"{cal.landing_window(month)[0]}..{cal.cutoff(month)}"
    if not prev_version:
        echo(f"closing {month} (version 1) from landing dates {window}")
    else:
        echo(f"restating {month} (current version {prev_version}) from landing dates {window}")
    return missing


def _stage(con, paths: Paths, month: str, prev_part: Path | None, missing: list[str]) -> None:
    """``staged_lines`` and ``staged_bills``: the month's bills as this run computes them."""
    _stage_inputs(con, paths, month)
    _assign_versions(con, prev_part)
    closed_at = dt.datetime.now(dt.UTC).replace(microsecond=0)
    params = {"month": month}
    create_temp(con, "staged_lines", sql("bill_lines"), params)
    create_temp(
        con,
        "staged_bills",
        sql("bills"),
        {
            **params,
            "closed_at": closed_at,
            "cutoff": cal.cutoff(month),
            "forced": bool(missing),
            "missing": ",".join(missing) if missing else None,
        },
    )


def _publish(
    con, paths: Paths, month: str, prev_part: Path | None, prev_version: int
) -> tuple[int, str | None]:
    """Validate the month's partition as it will be published (every version) and commit it.
    Returns the highest version and the quality report."""
    if prev_part is not None:
        # only the partners whose bill changed get a new version
        for t in ("staged_bills", "staged_lines"):
            con.execute(f"delete from {t} where partner_id not in (select partner_id from changed)")
        old = {
            "bills": lake_files(prev_part / "bills.parquet"),
            "lines": lake_files(prev_part / "bill_lines.parquet"),
        }
        bills_q, lines_q = sql("close/published_bills"), sql("close/published_lines")
        create_temp(con, "pub_bills", bills_q, {"bills": old["bills"]})
        create_temp(con, "pub_lines", lines_q, {"lines": old["lines"]})
    else:
        con.execute("create temp table pub_bills as from staged_bills order by partner_id")
        con.execute("create temp table pub_lines as from staged_lines order by partner_id, line_no")
    version = int(con.execute("select max(version) from pub_bills").fetchone()[0])
    # the whole partition as it will be published (every version) passes the quality gate
    report = _validate(con, paths, month, prev_version + 1)
    vdir = new_version_dir(paths.bills_dir(month))
    try:
        con.execute(
            "copy pub_bills to $path (format parquet)", {"path": str(vdir / "bills.parquet")}
        )
        con.execute(
            "copy pub_lines to $path (format parquet, compression zstd)",
            {"path": str(vdir / "bill_lines.parquet")},
        )
        commit_version(paths.bills_dir(month), vdir)
    except BaseException:
        import shutil

        shutil.rmtree(vdir, ignore_errors=True)
        raise
    return version, report


def _current(con, part: Path) -> list[dict]:
    """The current (closed) bill of each partner in a published partition."""
    return _rows(con, sql("close/current_bills"), {"bills": lake_files(part / "bills.parquet")})


def _assign_versions(con, prev_part: Path | None) -> None:
    """Give each partner of ``bill_partners`` the version its new bill would have: 1, or one
    more than its latest published version, with that version's invoice number (the invoice
    a restated bill supersedes)."""
    if prev_part is None:
        create_temp(con, "bill_partners", sql("close/first_versions"))
        return
    create_temp(
        con,
        "bill_partners",
        sql("close/bill_versions"),
        {"bills": lake_files(prev_part / "bills.parquet")},
    )


# a bill changes when one of these differs (its components, or the partner's name, currency or
# tax rate in the snapshot at the cutoff), or one of its lines (every column but version).
# forced/missing_dates alone do not make a new version: the invoice is not reissued for them.
_COMPARED = ("partner_name", "currency", "coupon_total", "tax_rate", "line_count", *COMPONENTS)


def _changed_partners(con, prev_part: Path) -> list[str]:
    """The partners whose staged bill differs from their current published bill (a component
    or a line), whose bill is new, or who are no longer billed; kept in temp table
    ``changed``."""
    from pipelines import schema

    line_cols = ", ".join(f'"{c}"' for c in schema.BILL_LINES.column_names if c != "version")
    query = render(
        "close/changed_partners",
        bill_columns=", ".join(f"s.{c}" for c in _COMPARED),
        published_columns=", ".join(f"o.{c}" for c in _COMPARED),
        line_columns=line_cols,
    )
    create_temp(
        con,
        "changed",
        query,
        {
            "bills": lake_files(prev_part / "bills.parquet"),
            "lines": lake_files(prev_part / "bill_lines.parquet"),
        },
    )
    return [r[0] for r in con.execute("select partner_id from changed").fetchall()]


def _stage_inputs(con, paths: Paths, month: str) -> None:
    """The month's inputs: ``<feed>_m``, the accepted records of its landing window, and
    ``bill_partners``, the partners billed."""
    lo, hi = (d.isoformat() for d in cal.landing_window(month))
    parts = [(v, p) for v, p in partitions(paths.ingest, "landing_date") if lo <= v <= hi]
    con.execute(sql("close/month_inputs"))
    for feed in ("orders", "usage", "adjustments", "coupons"):
        files = [p / f"{feed}.parquet" for _v, p in parts if (p / f"{feed}.parquet").exists()]
        if files:
            variable = f"koobill_{feed}_files"
            con.execute(f"set variable {variable} = $files", {"files": lake_files(files)})
            con.execute(render("close/month_input", view=f"{feed}_m", variable=variable))
        else:
            con.execute(f"create temp view {feed}_m as from {feed}_none")
    # Partners billed: the snapshot at the cutoff plus any partner with records in the month;
    # attributes from the latest snapshot (on or before the cutoff) that lists the partner.
    snaps = [
        (v, lake_files(p / "partners.parquet"))
        for v, p in partitions(paths.ingest, "landing_date")
        if v <= hi and (p / "partners.parquet").exists()
    ]
    snaps = [(v, f) for v, f in snaps if _row_count(con, f)]
    if not snaps:
        con.execute("create temp table bill_partners as from bill_partners_none")
        return
    files = [f for _v, fs in snaps for f in fs]
    # the recipient columns are optional: snapshots landed before they existed lack them
    q = "describe select * from read_parquet($files, hive_partitioning = false, union_by_name = true)"
    have = {r[0] for r in con.execute(q, {"files": files}).fetchall()}
    query = render(
        "close/bill_partners",
        recipient=", ".join(c if c in have else f"null::varchar as {c}" for c in RECIPIENT_COLUMNS),
        recipient_names=", ".join(f"l.{c}" for c in RECIPIENT_COLUMNS),
    )
    create_temp(
        con,
        "bill_partners",
        query,
        {"snapshots": files, "latest": dt.date.fromisoformat(snaps[-1][0]), "month": month},
    )


def _row_count(con, files: list[str]) -> int:
    q = "select count(*) from read_parquet($files, hive_partitioning = false)"
    return int(con.execute(q, {"files": files}).fetchone()[0])


def _validate(con, paths: Paths, month: str, publication: int) -> str | None:
    """Run the quality gate over the partition to publish (every version of the month). The
    report is ``<month>-v<n>``, n the month's publication: 1 for the first close, then one
    more than the highest bill version published so far for each restatement."""
    from pipelines import quality

    res = quality.validate_bills(
        con, "pub_bills", "pub_lines", paths.quality / "bills" / month, f"{month}-v{publication}"
    )
    return str(res.report_path)


def _diff(con, prev_part: Path, changed: list[str]) -> list[str]:
    """What a restatement changed, component by component, per changed partner."""
    old = _current(con, prev_part)
    new = _rows(con, "select * from staged_bills")
    by_old = {b["partner_id"]: b for b in old}
    by_new = {b["partner_id"]: b for b in new}
    out = []
    for pid in changed:
        o, b = by_old.get(pid), by_new.get(pid)
        if b is None:
            out.append(
                f"{pid}: no longer billed (not in the partner snapshot at the cutoff and no "
                f"records); version {o['version']} superseded"
            )
            continue
        if o is None:
            out.append(f"{pid}: new bill v{b['version']} (amount due {b['amount_due']})")
            continue
        sup = f"; supersedes {o['invoice_no']}" if o["invoice_no"] else ""
        amounts = [
            f"{pid}: {c} {o[c]} -> {b[c]} ({b[c] - o[c]:+})" for c in COMPONENTS if o[c] != b[c]
        ]
        out += amounts
        if not amounts:
            out.append(
                f"{pid}: lines changed, amounts unchanged ({o['line_count']} -> "
                f"{b['line_count']} lines)"
            )
        out.append(
            f"{pid}: v{o['version']} -> v{b['version']} {b['invoice_no'] or ''}{sup}".rstrip()
        )
    return out


def _rows(con, query: str, params: dict | None = None) -> list[dict]:
    cur = con.execute(query, params)
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
        from pipelines import objectstore

        echo(f"  data-quality report: {objectstore.display(r.report_path)}")
    print_bills(r.bills, echo)


def print_bills(bills: list[dict], echo: Echo) -> None:
    """The bills as a table, one line per partner."""
    amounts = COMPONENTS
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
