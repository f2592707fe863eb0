"""Amount Due (spec section 5): payments settle a partner's published bills oldest first, what
they leave over is a credit balance, and a bill counts from its publication (its first close,
or the 5th of M+1 if earlier), whatever the latest landing date. The default as-of is "now":
the later of today's Beijing date and the latest landing date. Checked through
``amount_due()``, the ``amount_due`` view and ``koobill amount-due``.

Both months of the fixture are closed with --force: the test lands only the dates it needs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from helpers import ingest, land, order, partner, payment, price

from pipelines.amount_due import amount_due, print_amount_due
from pipelines.cli import cli
from pipelines.close import close_month
from pipelines.lake import KoobillError

D = Decimal
BEIJING = dt.timezone(dt.timedelta(hours=8))


def now_or(day: str) -> str:
    """The default as-of: the later of today's Beijing date and ``day`` (the latest landing)."""
    return max(dt.datetime.now(BEIJING).date(), dt.date.fromisoformat(day)).isoformat()


def o(rid: str, amount: str, pid: str, event_time: str) -> dict:
    return order(
        rid,
        partner_id=pid,
        official_amount=amount,
        discount_amount="0",
        amount=amount,
        event_time=event_time,
    )


@pytest.fixture(scope="module")
def dd(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("amount_due") / "data"
    d.mkdir()
    # October: P1 owes 100, P2 owes 30 (no tax, to keep the numbers plain)
    land(d, "partners", "2026-10-31", [partner("P1", tax_rate="0"), partner("P2", tax_rate="0")])
    land(d, "prices", "2026-10-31", [price()])
    land(
        d,
        "orders",
        "2026-10-31",
        [
            o("o1", "100", "P1", "2026-10-30T10:00:00+08:00"),
            o("o2", "30", "P2", "2026-10-30T10:00:00+08:00"),
        ],
    )
    land(
        d,
        "payments",
        "2026-10-31",
        [
            payment("pay1", partner_id="P1", amount="80", paid_at="2026-10-31T10:00:00+08:00"),
            payment("pay2", partner_id="P2", amount="200", paid_at="2026-10-31T11:00:00+08:00"),
        ],
    )
    ingest(d, "2026-10-31")
    close_month(d, "2026-10", force=True)
    # November: P1 owes 50 (landed on the cutoff); another payment on 2026-12-05
    land(d, "orders", "2026-12-04", [o("o3", "50", "P1", "2026-11-29T10:00:00+08:00")])
    ingest(d, "2026-12-04")
    close_month(d, "2026-11", force=True)
    land(
        d,
        "payments",
        "2026-12-05",
        [
            payment("pay3", partner_id="P1", amount="40", paid_at="2026-12-05T09:00:00+08:00"),
        ],
    )
    ingest(d, "2026-12-05")
    return d


def view(d: Path, as_of: str | None = None) -> list[tuple]:
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    try:
        if as_of:
            con.execute(f"set variable koobill_as_of = date '{as_of}'")
        return con.execute(
            "select partner_id, bill_month, amount_due, paid_amount, unpaid_amount, "
            "cast(as_of_date as varchar) from amount_due order by all"
        ).fetchall()
    finally:
        con.close()


def test_payments_settle_bills_oldest_first(dd):
    r = amount_due(dd, "P1")  # as of now: every published bill, every landed payment
    assert str(r.as_of) == now_or("2026-12-05")
    assert [
        (b["bill_month"], b["amount_due"], b["paid_amount"], b["unpaid_amount"]) for b in r.bills
    ] == [("2026-10", D(100), D(100), D(0)), ("2026-11", D(50), D(20), D(30))]
    assert r.total_due == D(30)
    assert r.paid_total == D(120)
    assert r.credit_balance == D(0)
    assert [b["invoice_no"] for b in r.unpaid_bills] == ["INV-P1-202611"]
    assert [p["record_id"] for p in r.payments] == ["pay1", "pay3"]


def test_a_payment_larger_than_everything_leaves_a_credit_balance(dd):
    r = amount_due(dd, "P2")
    assert [
        (b["bill_month"], b["amount_due"], b["paid_amount"], b["unpaid_amount"]) for b in r.bills
    ] == [("2026-10", D(30), D(30), D(0)), ("2026-11", D(0), D(0), D(0))]  # a zero bill
    assert r.total_due == D(0)
    assert r.credit_balance == D(170)
    assert r.unpaid_bills == []


def test_a_bill_counts_from_its_publication(dd):
    # October was closed after its cutoff (today, in this test): it counts from the 5th of
    # November, the date a bill of October is published by the calendar
    r = amount_due(dd, "P1", as_of="2026-11-04")  # before that: no bill yet
    assert r.bills == [] and r.total_due == D(0)
    assert r.credit_balance == D(80)  # paid before any bill counts
    r = amount_due(dd, "P1", as_of="2026-11-05")
    assert [(b["bill_month"], b["paid_amount"], b["unpaid_amount"]) for b in r.bills] == [
        ("2026-10", D(80), D(20))
    ]
    assert str(r.bills[0]["published_on"]) == "2026-11-05"
    assert r.total_due == D(20) and r.credit_balance == D(0)
    # November was force-closed today: it counts from today's Beijing date, or from the 5th
    # of December if that is earlier, and from then on whatever the latest landing date
    today = dt.datetime.now(BEIJING).date()
    nov = min(today, dt.date(2026, 12, 5))
    r = amount_due(dd, "P1", as_of=nov)
    assert [b["bill_month"] for b in r.bills] == ["2026-10", "2026-11"]
    assert r.bills[1]["published_on"] == nov
    r = amount_due(dd, "P1", as_of=nov - dt.timedelta(days=1))
    assert [b["bill_month"] for b in r.bills] == ["2026-10"]


def test_the_amount_due_view_and_its_as_of_variable(dd):
    now = now_or("2026-12-05")
    assert view(dd) == [
        ("P1", "2026-10", D(100), D(100), D(0), now),
        ("P1", "2026-11", D(50), D(20), D(30), now),
        ("P2", "2026-10", D(30), D(30), D(0), now),
        ("P2", "2026-11", D(0), D(0), D(0), now),
    ]
    assert view(dd, "2026-11-05") == [
        ("P1", "2026-10", D(100), D(80), D(20), "2026-11-05"),
        ("P2", "2026-10", D(30), D(30), D(0), "2026-11-05"),
    ]
    assert view(dd, "2026-11-04") == []
    con = duckdb.connect(str(dd / "warehouse.duckdb"), read_only=True)
    try:  # published money: DECIMAL(38,2) like amount_due
        types = dict(
            con.execute("select column_name, column_type from (describe amount_due)").fetchall()
        )
    finally:
        con.close()
    assert types["amount_due"] == types["paid_amount"] == types["unpaid_amount"] == "DECIMAL(38,2)"


def test_cli_amount_due_shows_total_unpaid_bills_payments_and_credit(dd):
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", str(dd), "amount-due", "--partner", "P1"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert f"as of {now_or('2026-12-05')}" in out
    assert "amount to be paid: CNY 30.00" in out
    assert "credit balance:    CNY 0.00" in out
    assert "INV-P1-202611" in out and "INV-P1-202610 " not in out  # only unpaid bills
    assert "pay1" in out and "pay3" in out
    res = runner.invoke(
        cli, ["--data-dir", str(dd), "amount-due", "--partner", "P2", "--as-of", "2026-12-05"]
    )
    assert res.exit_code == 0, res.output
    assert "credit balance:    CNY 170.00" in res.output
    assert "amount to be paid: CNY 0.00" in res.output
    res = runner.invoke(cli, ["--data-dir", str(dd), "amount-due", "--partner", "NOPE"])
    assert res.exit_code == 1 and "NOPE" in res.output
    lines: list[str] = []
    print_amount_due(amount_due(dd, "P1", as_of="2026-11-04"), lines.append)
    assert "none" in "\n".join(lines)  # no unpaid bills as of the 4th


def test_unknown_partner_is_refused(dd):
    with pytest.raises(KoobillError):
        amount_due(dd, "NOPE")
    with pytest.raises(KoobillError):
        amount_due(dd, "../x")


def test_a_bill_is_due_right_after_its_close(tmp_path):
    """The close on the 5th: the latest landing date is still the 4th (the cutoff), yet the bill
    just published is due at once, in the view, in amount_due() and on the command line."""
    d = tmp_path / "data"
    d.mkdir()
    land(d, "partners", "2026-10-31", [partner("P1", tax_rate="0.06")])
    land(d, "prices", "2026-10-31", [price()])
    land(d, "orders", "2026-10-31", [o("o1", "1000", "P1", "2026-10-30T10:00:00+08:00")])
    land(
        d,
        "payments",
        "2026-11-03",
        [payment("pay1", partner_id="P1", amount="60", paid_at="2026-11-03T10:00:00+08:00")],
    )
    for day in ("2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"):
        ingest(d, day, allow_empty=True)
    closed = close_month(d, "2026-10")  # every landing date through the cutoff: no --force
    assert closed.bills[0]["amount_due"] == D("1060.00")  # 1000 + 6% tax
    r = amount_due(d, "P1")
    assert [
        (b["bill_month"], b["amount_due"], b["paid_amount"], b["unpaid_amount"]) for b in r.bills
    ] == [("2026-10", D("1060.00"), D("60.00"), D("1000.00"))]
    assert r.total_due == D("1000.00") and r.bills[0]["invoice_no"] == "INV-P1-202610"
    assert view(d) == [
        ("P1", "2026-10", D("1060.00"), D("60.00"), D("1000.00"), now_or("2026-11-04"))
    ]
    # as of the 5th, the day of the close: due; as of the cutoff, the day before: not yet
    assert amount_due(d, "P1", as_of="2026-11-05").total_due == D("1000.00")
    assert amount_due(d, "P1", as_of="2026-11-04").bills == []
    res = CliRunner().invoke(cli, ["--data-dir", str(d), "amount-due", "--partner", "P1"])
    assert res.exit_code == 0, res.output
    assert "amount to be paid: CNY 1,000.00" in res.output and "INV-P1-202610" in res.output
