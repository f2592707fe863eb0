"""Amount Due (spec section 5): payments settle a partner's closed bills oldest first, what
they leave over is a credit balance, and a bill of M counts as closed from the 5th of M+1.
Checked through ``amount_due()``, the ``amount_due`` view and ``koobill amount-due``.

Both months are closed with --force: the test lands only the dates it needs."""

from __future__ import annotations

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
    r = amount_due(dd, "P1")  # as of the latest landing date ingested
    assert str(r.as_of) == "2026-12-05"
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


def test_a_bill_of_m_counts_from_the_5th_of_m_plus_1(dd):
    r = amount_due(dd, "P1", as_of="2026-12-04")  # November not closed yet; pay3 not paid yet
    assert [(b["bill_month"], b["paid_amount"], b["unpaid_amount"]) for b in r.bills] == [
        ("2026-10", D(80), D(20))
    ]
    assert r.total_due == D(20) and r.credit_balance == D(0)
    r = amount_due(dd, "P1", as_of="2026-11-04")  # October not closed yet either
    assert r.bills == [] and r.total_due == D(0)
    assert r.credit_balance == D(80)  # paid before any bill counts
    r = amount_due(dd, "P1", as_of="2026-11-05")
    assert r.total_due == D(20) and r.credit_balance == D(0)


def test_the_amount_due_view_and_its_as_of_variable(dd):
    assert view(dd) == [
        ("P1", "2026-10", D(100), D(100), D(0), "2026-12-05"),
        ("P1", "2026-11", D(50), D(20), D(30), "2026-12-05"),
        ("P2", "2026-10", D(30), D(30), D(0), "2026-12-05"),
        ("P2", "2026-11", D(0), D(0), D(0), "2026-12-05"),
    ]
    assert view(dd, "2026-12-04") == [
        ("P1", "2026-10", D(100), D(80), D(20), "2026-12-04"),
        ("P2", "2026-10", D(30), D(30), D(0), "2026-12-04"),
    ]
    assert view(dd, "2026-11-04") == []


def test_cli_amount_due_shows_total_unpaid_bills_payments_and_credit(dd):
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", str(dd), "amount-due", "--partner", "P1"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "as of 2026-12-05" in out
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
