"""Reading the bills to export from the warehouse: the bill versions, their lines and daily
estimates, the rows of the analysts' views (``sql/expenditure_by_product.sql``,
``sql/expenditure_by_customer.sql``) and the Amount Due pane as of each invoice date.

The documents show the views' rows as they are; nothing the views compute is computed again
here. A month's lines, estimates and view rows are read with one query each, not one per bill.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pipelines.errors import KoobillError
from pipelines.exports.bill import Bill
from pipelines.exports.common import DETAIL_COLUMNS, check_partner, rows_of

# the analysts' views the documents show: sql/export_<key>.sql reads each for many bills
VIEWS = {"by_product": "expenditure_by_product", "by_customer": "expenditure_by_customer"}


def load_bills(
    con,
    month: str,
    partner: str | Sequence[str] | None,
    version: int | None,
    *,
    settings: Any,
    documents: bool,
) -> list[Bill]:
    """The bills to export, in partner order, each reconciled with its lines: the current
    closed version of each partner (or ``version``). ``documents``: also read the Amount Due
    pane the PDF and XLSX show."""
    headers = bill_headers(con, month, partner, version)
    for h in headers:
        check_partner(h["partner_id"])  # it names a folder
    bills = _assemble(con, month, headers)
    for bill in bills:
        bill.reconcile()
        bill.settings = settings
    if documents:
        _add_accounts(con, bills)
    return bills


def bill_headers(
    con, month: str, partner: str | Sequence[str] | None, version: int | None
) -> list[dict]:
    """The bill headers to export: the current closed version of each partner (or ``version``),
    of every partner or of ``partner`` (one id or several)."""
    total = con.execute("select count(*) from bills where bill_month = ?", [month]).fetchone()[0]
    if total == 0:
        raise KoobillError(
            f"month {month} not closed: no bills in the warehouse. "
            f"Run `koobill close --month {month}` first."
        )
    where = ["bill_month = ?"]
    params: list[Any] = [month]
    if version is None:
        where.append("status = 'closed'")
    else:
        where.append("version = ?")
        params.append(int(version))
    wanted = [partner] if isinstance(partner, str) else None if partner is None else list(partner)
    if wanted is not None:
        where.append("partner_id = any(?::varchar[])")
        params.append(wanted)
    # every column, so that columns added to bills (supersedes_invoice_no) are read if present
    # a partner has at most one closed version; if a faulty close left two, the newest wins
    rows = rows_of(
        con.execute(
            f"select * from bills where {' and '.join(where)} "
            "qualify row_number() over (partition by partner_id order by version desc) = 1 "
            "order by partner_id",
            params,
        )
    )
    what = f"version {version} of the bill" if version is not None else "closed bill"
    if wanted is not None:
        missing = sorted(set(wanted) - {r["partner_id"] for r in rows})
        if missing:
            who = (
                f"partner {missing[0]} has"
                if len(missing) == 1
                else "partners " + ", ".join(missing) + " have"
            )
            raise KoobillError(f"{who} no {what} for {month}; nothing exported")
    if not rows:
        raise KoobillError(f"there is no {what} for {month}; nothing exported")
    return rows


def load_bill(con, header: dict[str, Any]) -> Bill:
    """One bill version (its lines, estimates and view rows), not reconciled."""
    return _assemble(con, header["bill_month"], [header])[0]


def _assemble(con, month: str, headers: list[dict[str, Any]]) -> list[Bill]:
    pids = [h["partner_id"] for h in headers]
    params = {"month": month, "partner_ids": pids}
    keyed = {**params, "versions": [int(h["version"]) for h in headers]}
    lines = _grouped(con, "export_bill_lines", keyed, ("partner_id", "version"))
    estimates = _grouped(con, "export_estimates", params, ("partner_id",))
    views = {v: _grouped(con, f"export_{v}", params, ("partner_id",)) for v in VIEWS}
    bills = []
    for h in headers:
        pid, ver = h["partner_id"], int(h["version"])
        if "supersedes_invoice_no" not in h:
            h = {**h, "supersedes_invoice_no": _previous_invoice(con, h)}
        if str(h.get("status")) == "closed":
            products, customers = (views[v].get((pid,), []) for v in VIEWS)
        else:
            products, customers = (_version_view_rows(con, VIEWS[v], h) for v in VIEWS)
        bills.append(
            Bill(
                h,
                [{c: r[c] for c in DETAIL_COLUMNS} for r in lines.get((pid, ver), [])],
                [(r["as_of_date"], r["estimate_amount"]) for r in estimates.get((pid,), [])],
                products=products,
                customers=customers,
            )
        )
    return bills


def _grouped(con, name: str, params: dict, key: tuple[str, ...]) -> dict[tuple, list[dict]]:
    """The rows of ``sql/<name>.sql`` grouped by ``key``, each group in the query's order."""
    from pipelines.db import sql

    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows_of(con.execute(sql(name), params)):
        out[tuple(r[k] for k in key)].append(r)
    return out


def _previous_invoice(con, header: dict[str, Any]) -> str | None:
    """Before bills carried supersedes_invoice_no: the invoice of the partner's previous
    version."""
    prev = con.execute(
        "select invoice_no from bills where partner_id = ? and bill_month = ? "
        "and version < ? order by version desc limit 1",
        [header["partner_id"], header["bill_month"], header["version"]],
    ).fetchone()
    return prev[0] if prev else None


def _version_view_rows(con, view: str, header: dict[str, Any]) -> list[dict[str, Any]]:
    """A view's rows for a superseded bill version: the views show the current bills, so the
    view's SQL is run over that version's bill and lines alone, in a scratch database."""
    import duckdb

    from pipelines.db import sql

    where = "where partner_id = ? and bill_month = ? and version = ?"
    params = [header["partner_id"], header["bill_month"], header["version"]]
    bills_t = con.sql(f"select * from bills {where}", params=params).to_arrow_table()
    lines_t = con.sql(f"select * from bill_lines {where}", params=params).to_arrow_table()
    scratch = duckdb.connect(":memory:")
    try:
        scratch.execute("set TimeZone = 'UTC'")
        scratch.register("src_bills", bills_t)
        scratch.register("src_lines", lines_t)
        scratch.execute(
            "create table bills as select * replace ('closed' as status) from src_bills"
        )
        scratch.execute("create table bill_lines as select * from src_lines")
        scratch.execute("create view _current_bill_lines as " + sql("_current_bill_lines"))
        return rows_of(scratch.execute(sql(view)))
    finally:
        scratch.close()


def _add_accounts(con, bills: list[Bill]) -> None:
    """Each current bill's Amount Due pane as of its invoice date (none for a superseded
    version, which the pane no longer shows, or a bill without a closing time)."""
    from pipelines.amount_due import amount_due_many

    by_date: dict[Any, list[Bill]] = defaultdict(list)
    for bill in bills:
        if bill.is_current and bill.invoice_date is not None:
            by_date[bill.invoice_date].append(bill)
    for day, group in sorted(by_date.items()):
        panes = amount_due_many(con, [b.partner_id for b in group], day)
        for bill in group:
            bill.account = panes[bill.partner_id]
