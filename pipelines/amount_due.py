"""The Amount Due pane of Partner Center: outstanding bills, payments and credit balance.

One definition of the oldest-first settlement: the ``amount_due`` view (sql/amount_due.sql),
evaluated here as of any date through the session variable ``koobill_as_of``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pipelines import calendar as cal
from pipelines.config import Paths, check_partner_id, resolve_data_dir
from pipelines.errors import KoobillError

Echo = Callable[[str], None]


@dataclass
class AmountDue:
    partner_id: str
    partner_name: str | None
    as_of: dt.date
    currency: str | None
    total_due: Decimal  # unpaid over the published bills: current and previous months
    bills: list[dict]  # every current bill published by as_of, with paid/unpaid
    payments: list[dict]  # payment records paid on or before as_of
    paid_total: Decimal
    credit_balance: Decimal

    @property
    def unpaid_bills(self) -> list[dict]:
        return [b for b in self.bills if b["unpaid_amount"] > 0]


def amount_due(
    data_dir: str | Path | None, partner_id: str, *, as_of: str | dt.date | None = None
) -> AmountDue:
    """A partner's amount due as of ``as_of``: the current bills published on or before that
    date (see sql/amount_due.sql) and the payments paid on or before it.

    The default is "now": the later of today's Beijing date and the latest landing date
    ingested, so every published bill and every landed payment counts."""
    root = resolve_data_dir(data_dir)
    try:
        check_partner_id(partner_id)
    except ValueError as exc:
        raise KoobillError(str(exc)) from None
    from pipelines.warehouse import open_warehouse

    if not Paths(root).warehouse.exists():
        raise KoobillError(f"no warehouse at {Paths(root).warehouse}: ingest some data first")
    con = open_warehouse(root, read_only=True)
    try:
        if as_of is None:
            day = default_as_of(con)
        else:
            day = cal.parse_date(as_of) if isinstance(as_of, str) else as_of
        known = con.execute(
            "select any_value(partner_name) from bills where partner_id = ?", [partner_id]
        ).fetchone()
        has_pay = con.execute(
            "select count(*) from payments where partner_id = ?", [partner_id]
        ).fetchone()[0]
        if known[0] is None and not has_pay:
            raise KoobillError(f"partner {partner_id} has no bills and no payments")
        return amount_due_many(con, [partner_id], day)[partner_id]
    finally:
        con.close()


def amount_due_many(con, partner_ids: list[str], day: dt.date) -> dict[str, AmountDue]:
    """The Amount Due pane of each partner as of ``day``, read through an open warehouse
    connection with one query per table for all of them (the exports show it on every
    invoice)."""
    con.execute("set variable koobill_as_of = ?::date", [day])
    ids = list(partner_ids)
    known = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            "select partner_id, any_value(partner_name), any_value(currency) from bills "
            "where partner_id = any(?::varchar[]) group by partner_id",
            [ids],
        ).fetchall()
    }
    bills = _by_partner(
        _rows(
            con,
            "select * from amount_due where partner_id = any(?::varchar[]) "
            "order by partner_id, bill_month",
            [ids],
        ),
        keep_id=True,
    )
    payments = _by_partner(
        _rows(
            con,
            "select partner_id, record_id, paid_at, paid_date, amount, currency, method, "
            "reference from payments where partner_id = any(?::varchar[]) and paid_date <= ? "
            "order by partner_id, paid_at, record_id",
            [ids, day],
        ),
        keep_id=False,
    )
    return {
        pid: _pane(
            pid, day, known.get(pid, (None, None)), bills.get(pid, []), payments.get(pid, [])
        )
        for pid in ids
    }


def _by_partner(rows: list[dict], keep_id: bool) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        pid = r["partner_id"] if keep_id else r.pop("partner_id")
        out.setdefault(pid, []).append(r)
    return out


def _pane(pid: str, day: dt.date, known: tuple, bills: list[dict], payments: list[dict]):
    paid_total = sum((p["amount"] for p in payments), Decimal(0))
    settled = sum((b["paid_amount"] for b in bills), Decimal(0))
    return AmountDue(
        partner_id=pid,
        partner_name=known[0],
        as_of=day,
        currency=known[1] or (payments[0]["currency"] if payments else None),
        total_due=sum((b["unpaid_amount"] for b in bills), Decimal(0)),
        bills=bills,
        payments=payments,
        paid_total=paid_total,
        credit_balance=paid_total - settled,
    )


def default_as_of(con) -> dt.date:
    """The later of today's Beijing date and the latest landing date ingested."""
    today = dt.datetime.now(cal.BEIJING).date()
    row = con.execute("select value from _meta where key = 'latest_landing_date'").fetchone()
    return max(today, dt.date.fromisoformat(row[0])) if row and row[0] else today


def _rows(con, query: str, params: list) -> list[dict]:
    cur = con.execute(query, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _m(v: Decimal) -> str:
    return f"{v:,.2f}"


def print_amount_due(r: AmountDue, echo: Echo) -> None:
    cur = r.currency or ""
    echo(
        f"Amount Due  {r.partner_id}{' (' + r.partner_name + ')' if r.partner_name else ''}"
        f"  as of {r.as_of}"
    )
    echo(f"  amount to be paid: {cur} {_m(r.total_due)}  (unpaid fees of this and previous months)")
    echo(f"  credit balance:    {cur} {_m(r.credit_balance)}")
    echo("  Unpaid bills:")
    if not r.unpaid_bills:
        echo("    none")
    for b in r.unpaid_bills:
        echo(
            f"    {b['bill_month']}  v{b['version']}  {b['invoice_no'] or '-':<24} due "
            f"{_m(b['amount_due']):>14}  paid {_m(b['paid_amount']):>14}  unpaid "
            f"{_m(b['unpaid_amount']):>14}"
        )
    echo("  Payment records:")
    if not r.payments:
        echo("    none")
    for p in r.payments:
        echo(
            f"    {p['paid_date']}  {p['record_id']:<20} {p['currency']} {_m(p['amount']):>14}"
            f"  {p['method'] or ''} {p['reference'] or ''}".rstrip()
        )
