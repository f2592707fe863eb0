"""Month-close acceptance tests (spec sections 1, 4, 5, 6, 7): real ingests of small landing
files into a tmp data dir, then ``close_month``; the bills are read back from the warehouse and
the lake.

November 2026 is the month under test. The first landing date ingested is 2026-11-30, so the
close of November needs the landing dates 2026-11-30 .. 2026-12-04 (its cutoff)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from helpers import (
    adjustment,
    committed,
    coupon,
    ingest,
    lake_state,
    land,
    order,
    partner,
    price,
    usage,
)

from pipelines import lake
from pipelines.cli import cli
from pipelines.close import close_month, missing_dates, print_close_result
from pipelines.lake import KoobillError

REPO = Path(__file__).resolve().parent.parent
MONTH = "2026-11"
FIRST = "2026-11-30"
WINDOW = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
COMPONENTS = ("consume_amount", "refunds", "adjustments", "coupon_amount", "tax_amount")
LINE_COMPONENT = {"consume_amount": "consume", "refunds": "refund", "adjustments": "adjustment"}


# --- helpers ---------------------------------------------------------------------------------


def round2(x: Decimal) -> Decimal:
    """Half away from zero to the cent (the spec's round2)."""
    q = Decimal(x).copy_abs().quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return q if x >= 0 else -q


def D(s: str) -> Decimal:  # noqa: N802
    return Decimal(s)


def setup(d: Path, partners: list[dict], day: str = FIRST) -> None:
    land(d, "partners", day, partners)
    land(d, "prices", day, [price()])


def ingest_all(d: Path, days: list[str] = WINDOW) -> None:
    for day in days:  # a date of the window without landing data truly had none
        ingest(d, day, allow_empty=True)


def rows(d: Path, query: str, params: list | None = None) -> list[dict]:
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        cur = con.execute(query, params or [])
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def bills(d: Path, month: str = MONTH, status: str = "closed") -> dict[str, dict]:
    return {
        b["partner_id"]: b
        for b in rows(d, "select * from bills where bill_month = ? and status = ?", [month, status])
    }


def lines(d: Path, partner_id: str, month: str = MONTH, version: int | None = None) -> list[dict]:
    q = "select * from bill_lines where partner_id = ? and bill_month = ?"
    p: list = [partner_id, month]
    if version is not None:
        q += " and version = ?"
        p.append(version)
    return rows(d, q + " order by version, line_no", p)


def lake_bill_rows(
    d: Path, month: str = MONTH, name: str = "bills", exclude: str | None = None
) -> list[dict]:
    f = lake.at(d / "lake" / "bills" / f"bill_month={month}") / f"{name}.parquet"
    if not f.exists():
        return []
    con = duckdb.connect()
    try:
        con.execute("set TimeZone = 'UTC'")
        ex = f" exclude ({exclude})" if exclude else ""
        cur = con.execute(f"select *{ex} from read_parquet('{f}') order by all")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def snapshot(d: Path, month: str = MONTH) -> dict:
    """Everything a close publishes for ``month`` (warehouse and lake), closed_at left out."""
    return {
        "bills": rows(
            d, "select * exclude (closed_at) from bills where bill_month = ? order by all", [month]
        ),
        "bill_lines": rows(
            d, "select * from bill_lines where bill_month = ? order by all", [month]
        ),
        "lake_bills": lake_bill_rows(d, month, exclude="closed_at"),
        "lake_lines": lake_bill_rows(d, month, "bill_lines"),
    }


def o(rid: str, amount: str, order_type: str = "NEW", **kw) -> dict:
    """An order of ``amount`` with no discount, dated 2026-11-29 unless ``event_time`` says."""
    kw.setdefault("event_time", "2026-11-29T10:00:00+08:00")
    return order(
        rid,
        order_type=order_type,
        official_amount=amount,
        discount_amount="0",
        amount=amount,
        **kw,
    )


# --- one month with a partner per case, ingested once per module -------------------------------
# Records land on 2026-11-30 (and one on the cutoff, 2026-12-04); every case is a partner.

PARTNERS = [
    partner("P1"),  # a bit of everything
    partner("P2", tax_rate="0.13"),
    partner("Z"),  # in the snapshot, no records: a zero bill
    partner("R1"),  # refunds exceed expenditures
    partner("K1"),  # a coupon larger than the net
    partner("T1", tax_rate="0.1"),
    partner("T2", tax_rate="0.13"),
    partner("T3", tax_rate="0.1"),
    partner("N1"),
    partner("N2"),
]


def land_month(d: Path) -> None:
    setup(d, PARTNERS)
    land(
        d,
        "orders",
        FIRST,
        [
            o("o1", "90", customer_id="C1", product_id="PR1", region="cn-north-4"),
            o(
                "o2",
                "50",
                "RENEW",
                customer_id="C2",
                customer_name="Customer Two",
                product_id="PR2",
                product_name="Product Two",
                region="ap-southeast-1",
            ),
            o("o3", "20.004", customer_id="C1", product_id="PR1", region="ap-southeast-1"),
            o("o4", "-30", "UNSUBSCRIBE", customer_id="C1", product_id="PR1"),
            o(
                "o5",
                "-5.5",
                "CHANGE",
                customer_id="C2",
                customer_name="Customer Two",
                product_id="PR2",
                product_name="Product Two",
                region="ap-southeast-1",
            ),
            o("o6", "40", partner_id="P2", customer_id="C9", customer_name="Nine"),
            o("r1", "50", partner_id="R1"),
            o("r2", "-80", "UNSUBSCRIBE", partner_id="R1"),
            o("k1", "90", partner_id="K1"),
            o("k2", "-30", "UNSUBSCRIBE", partner_id="K1"),
            o("t1", "20.05", partner_id="T1"),  # tax 2.005 exactly -> 2.01
            o("t2", "10.5", partner_id="T2"),  # tax 1.365 exactly -> 1.37
            o("t3", "30.05", partner_id="T3"),  # coupon 10 -> taxable 20.05 -> tax 2.01
            o("n1", "0.004", partner_id="N2"),
            o("n2", "0.001", partner_id="N2"),  # exact sum 0.005 -> 0.01 (not 0.00 + 0.00)
            o("n3", "-10.005", "UNSUBSCRIBE", partner_id="N2"),  # refunds 10.005 -> 10.01
        ],
    )
    land(
        d,
        "usage",
        FIRST,
        [
            usage(
                "u1",
                customer_id="C2",
                customer_name="Customer Two",
                product_id="PR3",
                product_name="Product Three",
                quantity="3",
                usage_start="2026-11-29T01:00:00+08:00",
                usage_end="2026-11-29T04:00:00+08:00",
            ),
        ],
    )
    land(
        d,
        "adjustments",
        FIRST,
        [
            adjustment("a1", amount="-5"),
            adjustment("a2", customer_id="", product_id="", amount="2.5", reason="late fee"),
            adjustment("a3", partner_id="P2", customer_id="C9", amount="-0.005"),
            adjustment("a4", partner_id="K1", amount="-0.01"),
            adjustment("a5", partner_id="N1", amount="-0.005"),  # -> -0.01
        ],
    )
    land(
        d,
        "coupons",
        FIRST,
        [
            coupon("c1", amount="20"),
            coupon("c2", amount="0.5"),
            coupon("c3", partner_id="R1", amount="20"),
            coupon("c4", partner_id="K1", amount="1000"),
            coupon("c5", partner_id="T3", amount="10"),
        ],
    )
    # landed on the cutoff (the 4th of M+1), dated in M: billed in M, not late
    land(
        d,
        "orders",
        "2026-12-04",
        [
            o(
                "o7",
                "0.004",
                customer_id="C3",
                customer_name="Three",
                event_time="2026-11-20T10:00:00+08:00",
            ),
        ],
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """The month ingested through its cutoff, not closed."""
    d = tmp_path_factory.mktemp("base") / "data"
    d.mkdir()
    land_month(d)
    ingest_all(d)
    return d


@pytest.fixture(scope="module")
def closed(base, tmp_path_factory) -> Path:
    """A copy of ``base`` with November closed."""
    d = copy_of(base, tmp_path_factory.mktemp("closed") / "data")
    close_month(d, MONTH)
    return d


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- section 4: amounts ------------------------------------------------------------------------


def test_refunds_exceeding_expenditures_give_a_negative_bill_and_nothing_due(closed):
    b = bills(closed)["R1"]
    assert b["consume_amount"] == D("50.00")
    assert b["refunds"] == D("80.00")  # shown as a positive number
    assert b["bill_amount"] == D("-30.00")
    assert b["amount_due"] == D("0.00")
    assert b["invoice_no"] is None
    assert b["coupon_total"] == D("20.00")
    assert b["coupon_amount"] == D("0.00")  # nothing to deduct from
    assert b["tax_amount"] == D("0.00")
    (lake,) = [x for x in lake_bill_rows(closed) if x["partner_id"] == "R1"]
    assert lake["bill_amount"] == D("-30.00") and lake["invoice_no"] is None


def test_a_coupon_larger_than_the_net_is_capped_and_no_tax_is_charged(closed):
    b = bills(closed)
    k1 = b["K1"]
    assert k1["coupon_total"] == D("1000.00")  # kept, before the cap
    assert k1["coupon_amount"] == D("59.99")  # = consume - refunds + adjustments
    assert k1["tax_amount"] == D("0.00")
    assert k1["bill_amount"] == D("0.00")
    assert k1["amount_due"] == D("0.00") and k1["invoice_no"] is None
    p1 = b["P1"]  # coupons smaller than the net: deducted in full, tax on the rest
    assert p1["coupon_total"] == p1["coupon_amount"] == D("20.50")
    assert p1["tax_amount"] == D("6.50")  # round2((128.76 - 20.50) * 0.06 = 6.4956)
    assert p1["bill_amount"] == D("114.76")
    assert p1["invoice_no"] == "INV-P1-202611"


def test_tax_and_components_round_half_away_from_zero(closed):
    b = bills(closed)
    assert b["T1"]["tax_amount"] == D("2.01")
    assert b["T1"]["bill_amount"] == D("22.06")
    assert b["T2"]["tax_amount"] == D("1.37")
    assert b["T2"]["bill_amount"] == D("11.87")
    assert b["T3"]["coupon_amount"] == D("10.00")
    assert b["T3"]["tax_amount"] == D("2.01")
    assert b["T3"]["bill_amount"] == D("22.06")
    assert b["N1"]["adjustments"] == D("-0.01")
    assert b["N1"]["bill_amount"] == D("-0.01")
    assert b["N1"]["amount_due"] == D("0.00")
    assert b["N2"]["consume_amount"] == D("0.01")
    assert b["N2"]["refunds"] == D("10.01")
    assert b["N2"]["bill_amount"] == D("-10.00")
    assert b["P2"]["adjustments"] == D("-0.01")  # -0.005, half away from zero
    assert b["P2"]["tax_amount"] == D("5.20")  # 39.99 * 0.13 = 5.1987
    assert b["P2"]["bill_amount"] == D("45.19")


def test_components_add_up_and_match_their_lines(closed):
    b = bills(closed)
    assert set(b) == {p["partner_id"] for p in PARTNERS}  # every partner of the snapshot
    for pid, bill in b.items():
        total = (
            bill["consume_amount"]
            - bill["refunds"]
            + bill["adjustments"]
            - bill["coupon_amount"]
            + bill["tax_amount"]
        )
        assert total == bill["bill_amount"], pid
        assert bill["amount_due"] == max(bill["bill_amount"], D("0"))
        ls = lines(closed, pid, version=bill["version"])
        assert bill["line_count"] == len(ls)
        by = {
            c: sum((x["amount"] for x in ls if x["component"] == c), D("0"))
            for c in ("consume", "refund", "adjustment", "coupon")
        }
        assert bill["consume_amount"] == round2(by["consume"]), pid
        assert bill["refunds"] == round2(-by["refund"]), pid
        assert bill["adjustments"] == round2(by["adjustment"]), pid
        assert bill["coupon_total"] == round2(by["coupon"]), pid
        net = bill["consume_amount"] - bill["refunds"] + bill["adjustments"]
        assert bill["coupon_amount"] == min(bill["coupon_total"], max(net, D("0")))
        assert bill["tax_amount"] == round2(
            max(net - bill["coupon_amount"], D(0)) * bill["tax_rate"]
        )
        assert bill["invoice_no"] == (f"INV-{pid}-202611" if bill["amount_due"] > 0 else None)
        assert bill["forced"] is False and bill["missing_dates"] is None
    p1 = b["P1"]
    # 90 + 50 + 20.004 + 0.004 + usage 3 h * 2.5 * (1 - 0.1) = 6.75  -> 166.758 -> 166.76
    assert p1["consume_amount"] == D("166.76")
    assert p1["refunds"] == D("35.50")
    assert p1["adjustments"] == D("-2.50")
    z = b["Z"]  # a partner of the snapshot with no records: a zero bill
    assert [z[c] for c in COMPONENTS + ("bill_amount", "amount_due")] == [D(0)] * 7
    assert z["line_count"] == 0 and z["invoice_no"] is None
    assert lines(closed, "Z") == []


def test_bill_lines_carry_the_detail(closed):
    ls = lines(closed, "P1")
    assert [x["line_no"] for x in ls] == list(range(1, len(ls) + 1))
    use = [x for x in ls if x["charge_type"] == "USAGE"]
    assert len(use) == 1 and use[0]["quantity"] == D("3") and use[0]["amount"] == D("6.75")
    assert use[0]["customer_name"] == "Customer Two" and use[0]["product_id"] == "PR3"
    adj = sorted(
        (x["customer_id"] or "", x["amount"], x["description"])
        for x in ls
        if x["component"] == "adjustment"
    )
    # the partner-level adjustment has no customer: NULL, never ''
    assert adj == [("", D("2.5"), "late fee"), ("C1", D("-5"), "compensation")]
    assert [x["customer_id"] for x in ls if x["description"] == "late fee"] == [None]
    cp = sorted(x["description"] for x in ls if x["component"] == "coupon")
    assert cp == ["cp-c1", "cp-c2"]
    assert all(x["source_month"] == MONTH and x["late"] is False for x in ls)
    # the record that landed on the cutoff is in M
    assert [x["amount"] for x in ls if x["customer_id"] == "C3"] == [D("0.004")]


# --- section 6: the views ----------------------------------------------------------------------


def _close_enough(got: Decimal, want: Decimal, n_rows: int) -> bool:
    """Per-row round2 can move a total by at most half a cent per row."""
    return abs(got - want) <= D("0.005") * max(n_rows, 1)


def test_expenditure_by_product_has_others_and_filters_by_region(closed):
    rs = rows(
        closed,
        "select * from expenditure_by_product where partner_id = 'P1' and bill_month = ?",
        [MONTH],
    )
    prod = {(r["product_id"], r["region"]): r for r in rs}
    assert prod[("PR1", "cn-north-4")]["consume_amount"] == D("90.00")  # 90 + 0.004
    assert prod[("PR1", "ap-southeast-1")]["consume_amount"] == D("20.00")
    assert prod[("PR2", "ap-southeast-1")]["consume_amount"] == D("50.00")
    assert prod[("PR3", "cn-north-4")]["consume_amount"] == D("6.75")
    others = [r for r in rs if r["product_id"] == "OTHERS"]
    assert len(others) == 1
    assert others[0]["refunds"] == D("35.50") and others[0]["adjustments"] == D("-2.50")
    assert others[0]["consume_amount"] == D("0")
    assert all(
        r["refunds"] == 0 and r["adjustments"] == 0 for r in rs if r["product_id"] != "OTHERS"
    )
    # filterable by region
    cn = rows(
        closed,
        "select product_id, consume_amount from expenditure_by_product "
        "where partner_id = 'P1' and region = 'cn-north-4' order by all",
    )
    assert cn == [
        {"product_id": "PR1", "consume_amount": D("90.00")},
        {"product_id": "PR3", "consume_amount": D("6.75")},
    ]
    # reconciles with the bills: refunds and adjustments exactly, consumption up to rounding
    for pid, b in bills(closed).items():
        got = rows(
            closed,
            "select coalesce(sum(consume_amount), 0) c, coalesce(sum(refunds), 0) r,"
            " coalesce(sum(adjustments), 0) a, count(*) n "
            "from expenditure_by_product where partner_id = ? and bill_month = ?",
            [pid, MONTH],
        )[0]
        assert (got["r"], got["a"]) == (b["refunds"], b["adjustments"]), pid
        assert _close_enough(got["c"], b["consume_amount"], got["n"]), pid
        if pid in ("R1", "K1", "T1", "T2", "P2"):  # whole cents: exact
            assert got["c"] == b["consume_amount"], pid


def test_expenditure_by_customer_totals(closed):
    rs = rows(closed, "select * from expenditure_by_customer where bill_month = ?", [MONTH])
    for r in rs:
        assert r["total_amount"] == r["consume_amount"] - r["refunds"] + r["adjustments"]
    p1 = {r["customer_id"]: r for r in rs if r["partner_id"] == "P1"}
    assert set(p1) == {"C1", "C2", "C3", None}  # None = the partner-level adjustment
    assert p1["C1"]["consume_amount"] == D("110.00")
    assert p1["C1"]["refunds"] == D("30.00")
    assert p1["C1"]["adjustments"] == D("-5.00")
    assert p1["C1"]["total_amount"] == D("75.00")
    assert p1["C2"]["customer_name"] == "Customer Two"
    assert p1["C2"]["total_amount"] == D("51.25")  # 50 + 6.75 - 5.5
    assert p1[None]["adjustments"] == D("2.50")
    for pid, b in bills(closed).items():
        got = [r for r in rs if r["partner_id"] == pid]
        net = b["consume_amount"] - b["refunds"] + b["adjustments"]
        assert _close_enough(sum((r["total_amount"] for r in got), D(0)), net, len(got)), pid
        if pid in ("R1", "K1", "T1", "T2", "P2", "N1"):  # one customer each: exact
            assert sum((r["total_amount"] for r in got), D(0)) == net, pid
            assert sum((r["refunds"] for r in got), D(0)) == b["refunds"], pid


# --- section 7: idempotency --------------------------------------------------------------------


def test_closing_twice_changes_nothing(closed):
    before = snapshot(closed)
    assert before["bills"] and before["bill_lines"] and before["lake_lines"]
    r = close_month(closed, MONTH)
    assert r.changed is False and r.version == 1
    assert "nothing changed" in r.message
    assert snapshot(closed) == before
    res = CliRunner().invoke(cli, ["--data-dir", str(closed), "close", "--month", MONTH])
    assert res.exit_code == 0, res.output
    assert "nothing changed" in res.output
    assert "INV-P1-202611" in res.output
    assert snapshot(closed) == before


# --- section 1: the cutoff and late data -------------------------------------------------------


def test_a_late_record_goes_to_the_next_month_and_the_closed_bill_does_not_change(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    nov = snapshot(d)
    assert bills(d)["P1"]["cutoff_date"] == dt.date(2026, 12, 4)
    # dated in November, landed on the 5th of December, after the close of November: late
    land(
        d,
        "orders",
        "2026-12-05",
        [
            o("o8", "7", event_time="2026-11-25T10:00:00+08:00"),
            o("o9", "3", event_time="2026-12-05T10:00:00+08:00"),
        ],
    )
    res = ingest(d, "2026-12-05")
    assert res.late_records == 1
    assert snapshot(d) == nov  # the closed bill of M does not change
    assert close_month(d, MONTH).changed is False
    assert snapshot(d) == nov
    # December is closed with --force (its landing dates 12-06 .. 01-04 are not in this test)
    dec = close_month(d, "2026-12", force=True)
    assert dec.forced
    assert bills(d, "2026-12")["P1"]["consume_amount"] == D("10.00")
    ls = lines(d, "P1", "2026-12")
    assert [(x["source_month"], x["amount"]) for x in ls if x["late"]] == [("2026-11", D("7"))]
    assert [(x["source_month"], x["amount"]) for x in ls if not x["late"]] == [("2026-12", D("3"))]
    assert snapshot(d) == nov


# --- section 7: restatement --------------------------------------------------------------------


def land_more(d: Path) -> None:
    """A file that belongs to a landing date already ingested arrives; the date is re-ingested."""
    land(d, "orders", "2026-12-03", [o("o10", "50")], name="more.csv")
    res = ingest(d, "2026-12-03")
    assert any(MONTH in w for w in res.closed_month_warnings)


def lake_bytes(d: Path) -> dict[str, tuple[int, dict[str, bytes]]]:
    """Every member table of the bills: its Delta version and its current files' bytes (a new
    commit shows as a new version)."""
    return {
        member: (version, {f: Path(f).read_bytes() for f in files})
        for member, (version, files) in lake_state(d / "lake" / "bills").items()
    }


def test_a_restatement_with_nothing_changed_changes_nothing(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    before, lake_before = snapshot(d), lake_bytes(d)
    invoices = {p: b["invoice_no"] for p, b in bills(d).items()}
    res = CliRunner().invoke(cli, ["--data-dir", str(d), "close", "--month", MONTH, "--restate"])
    assert res.exit_code == 0, res.output
    assert "nothing changed" in res.output
    assert "version 2" not in res.output and "-V2" not in res.output
    r = close_month(d, MONTH, restate=True)
    assert r.changed is False and r.version == 1 and r.changes == []
    assert {p: b["invoice_no"] for p, b in bills(d).items()} == invoices
    assert bills(d, status="superseded") == {}
    assert snapshot(d) == before
    assert lake_bytes(d) == lake_before  # no commit: the same files, the same bytes


def test_a_restatement_makes_a_new_version_only_for_the_changed_partner(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    land_more(d)
    assert close_month(d, MONTH).changed is False  # not without --restate
    assert bills(d)["P1"]["consume_amount"] == D("166.76")
    unchanged = {p: b for p, b in bills(d).items() if p != "P1"}
    out: list[str] = []
    r2 = close_month(d, MONTH, restate=True, echo=out.append)
    print_close_result(r2, out.append)
    assert r2.changed and r2.version == 2
    assert [b["partner_id"] for b in r2.bills] == ["P1"]
    v2 = bills(d)["P1"]
    assert v2["version"] == 2
    assert v2["consume_amount"] == D("216.76")
    assert v2["invoice_no"] == "INV-P1-202611-V2"
    assert v2["supersedes_invoice_no"] == "INV-P1-202611"
    v1 = bills(d, status="superseded")["P1"]
    assert v1["version"] == 1 and v1["consume_amount"] == D("166.76")
    assert v1["invoice_no"] == "INV-P1-202611" and v1["supersedes_invoice_no"] is None
    # every other partner keeps its version 1 and its invoice, untouched
    assert list(bills(d, status="superseded")) == ["P1"]
    assert {p: b for p, b in bills(d).items() if p != "P1"} == unchanged
    assert all(b["version"] == 1 for b in unchanged.values())
    # the printed changes name the changed component and the superseded invoice
    text = "\n".join(out)
    assert "changed: P1: consume_amount 166.76 -> 216.76" in text
    assert "INV-P1-202611-V2" in text and "supersedes INV-P1-202611" in text
    assert not any(c.startswith("P1: refunds") or c.startswith("Z:") for c in r2.changes)
    # the lake keeps every version, lines included
    lake = lake_bill_rows(d)
    assert sorted((x["version"], x["status"]) for x in lake if x["partner_id"] == "P1") == [
        (1, "superseded"),
        (2, "closed"),
    ]
    assert len(lake) == len(PARTNERS) + 1
    assert {(x["partner_id"], x["version"]) for x in lake_bill_rows(d, name="bill_lines")} >= {
        ("P1", 1),
        ("P1", 2),
    }
    assert {
        x["version"] for x in lake_bill_rows(d, name="bill_lines") if x["partner_id"] != "P1"
    } == {1}
    # the views follow the current version only
    cust = rows(
        d, "select * from expenditure_by_customer where partner_id = 'P1' and customer_id = 'C1'"
    )
    assert [c["consume_amount"] for c in cust] == [D("160.00")]
    # the amount due counts the restated amount from the first publication (version 1)
    due = rows(d, "select * from amount_due where partner_id = 'P1'")
    v1_day = (v1["closed_at"] + dt.timedelta(hours=8)).date()
    assert [(x["version"], x["amount_due"], x["published_on"]) for x in due] == [
        (2, v2["amount_due"], min(v1_day, dt.date(2026, 12, 5)))
    ]
    # a second restatement with nothing new changes nothing
    assert close_month(d, MONTH, restate=True).changed is False
    assert bills(d)["P1"]["version"] == 2


def test_a_restatement_marks_the_superseded_exports(closed, tmp_path):
    """Finance exports version 1, a change lands, the month is restated and exported again:
    only P1 gets version 2, its PDF names the invoice it supersedes, and `exports list` and the
    export folder mark P1's version-1 files superseded (their paths stay as recorded)."""
    from pypdf import PdfReader

    d = copy_of(closed, tmp_path / "data")
    runner = CliRunner()
    base = ["--data-dir", str(d)]
    res = runner.invoke(cli, [*base, "export", "--month", MONTH, "--format", "pdf,csv"])
    assert res.exit_code == 0, res.output
    folder = d / "exports" / "P1" / MONTH
    v1_files = sorted(p.name for p in folder.iterdir())
    assert v1_files == [f"bill-P1-{MONTH}-v1.pdf", f"bill-details-P1-{MONTH}-v1.csv"]
    land_more(d)
    res = runner.invoke(cli, [*base, "close", "--month", MONTH, "--restate"])
    assert res.exit_code == 0, res.output
    assert "INV-P1-202611-V2" in res.output
    # the folder says which files are superseded, and by which invoice
    note = (folder / "SUPERSEDED.txt").read_text(encoding="utf-8")
    assert "version 1: superseded by INV-P1-202611-V2" in note
    assert all(n in note for n in v1_files)
    assert not (d / "exports" / "P2" / MONTH / "SUPERSEDED.txt").exists()  # P2 unchanged
    res = runner.invoke(cli, [*base, "export", "--month", MONTH, "--format", "pdf,csv"])
    assert res.exit_code == 0, res.output
    pdf = folder / f"bill-P1-{MONTH}-v2.pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(pdf).pages)
    assert "INV-P1-202611-V2" in text and "supersedes invoice INV-P1-202611" in text
    assert (d / "exports" / "P2" / MONTH / f"bill-P2-{MONTH}-v1.pdf").exists()
    assert not (d / "exports" / "P2" / MONTH / f"bill-P2-{MONTH}-v2.pdf").exists()
    res = runner.invoke(cli, [*base, "exports", "list", "--partner", "P1"])
    assert res.exit_code == 0, res.output
    listed = [ln for ln in res.output.splitlines() if f"-{MONTH}-v" in ln]
    v1 = [ln for ln in listed if ln.split()[-2].endswith(("-v1.pdf", "-v1.csv"))]
    v2 = [ln for ln in listed if ln.split()[-2].endswith(("-v2.pdf", "-v2.csv"))]
    assert len(v1) == 2 and len(v2) == 2  # P1 v1 before the restatement, v2 after
    assert all("superseded by INV-P1-202611-V2" in ln for ln in v1), v1
    assert all(" closed " in ln for ln in v2), v2
    from pipelines.exports import list_exports

    hist = list_exports(d, partner="P1")
    first = [r for r in hist if r["version"] == 1]
    assert {r["bill_status"] for r in first} == {"superseded"}
    assert {r["superseded_by"] for r in first} == {"INV-P1-202611-V2"}
    assert all((d / r["path"]).exists() for r in hist)  # recorded paths still hold the files
    # P2's files stay current
    assert {r["bill_status"] for r in list_exports(d, partner="P2")} == {"closed"}
    # the analysts' export_history says the same
    assert rows(
        d,
        "select partner_id, version, bill_status, count(*) n from export_history "
        "group by all order by all",
    ) == sorted(
        (
            {"partner_id": p, "version": v, "bill_status": st, "n": n}
            for p, v, st, n in [("P1", 1, "superseded", 2), ("P1", 2, "closed", 2)]
            + [(x["partner_id"], 1, "closed", 4) for x in PARTNERS if x["partner_id"] != "P1"]
        ),
        key=lambda r: (r["partner_id"], r["version"], r["bill_status"]),
    )


# --- section 7: the cutoff refusal and --force -------------------------------------------------


def test_close_refuses_while_dates_are_missing_and_force_records_them(data_dir):
    setup(data_dir, [partner("P1")])
    land(data_dir, "orders", FIRST, [o("o1", "100")])
    ingest_all(data_dir, ["2026-11-30", "2026-12-01", "2026-12-03"])
    assert missing_dates(data_dir, MONTH) == ["2026-12-02", "2026-12-04"]
    with pytest.raises(KoobillError) as exc:
        close_month(data_dir, MONTH)
    assert "2026-12-02" in str(exc.value) and "2026-12-04" in str(exc.value)
    assert not committed(data_dir / "lake" / "bills" / f"bill_month={MONTH}")
    assert rows(data_dir, "select * from bills") == []
    runner = CliRunner()
    res = runner.invoke(cli, ["--data-dir", str(data_dir), "close", "--month", MONTH])
    assert res.exit_code == 1
    assert "2026-12-02" in res.output and "2026-12-04" in res.output
    assert "--force" in res.output
    assert rows(data_dir, "select * from bills") == []
    res = runner.invoke(cli, ["--data-dir", str(data_dir), "close", "--month", MONTH, "--force"])
    assert res.exit_code == 0, res.output
    assert "2026-12-02" in res.output and "forced" in res.output
    b = bills(data_dir)["P1"]
    assert b["forced"] is True
    assert b["missing_dates"] == "2026-12-02,2026-12-04"
    assert b["consume_amount"] == D("100.00")


# --- a crash during the close ------------------------------------------------------------------

CHILD = r"""
import os, signal, sys

point = sys.argv[4]

def hook(event, args):
    if point == "before-commit" and event == "os.rename" and "bills/.staging" in str(args[0]):
        os.kill(os.getpid(), signal.SIGSTOP)  # version staged, no member moved or committed
    if point == "before-warehouse" and event == "open" and str(args[0]).endswith(
            "amount_due.sql"):
        os.kill(os.getpid(), signal.SIGSTOP)  # lake committed, warehouse not yet replaced

sys.addaudithook(hook)
from pipelines.close import close_month

close_month(sys.argv[1], sys.argv[2], restate=sys.argv[3] == "1")
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


def crash_close(d: Path, point: str, restate: bool = False) -> None:
    """Run a close in a subprocess, freeze it at ``point`` and SIGKILL it there."""
    env = {**os.environ, "KOOBILL_LOCK_WAIT_S": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d), MONTH, "1" if restate else "0", point],
        cwd=REPO,
        env=env,
    )
    staging = d / "lake" / "bills" / ".staging"
    deadline = time.monotonic() + 120
    try:
        while True:  # poll until the child is frozen at the crash point
            assert proc.poll() is None, "the close finished before the crash point"
            assert time.monotonic() < deadline, "the close never reached the crash point"
            if _stopped(proc.pid):
                if point == "before-commit":
                    tmp = [p for p in staging.iterdir() if p.name.endswith(".tmp")]
                    assert tmp and (tmp[0] / "bills.parquet").exists()
                    assert (tmp[0] / "bill_lines.parquet").exists()
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL


def test_a_crash_before_the_lake_commit_leaves_no_bills(base, closed, tmp_path):
    d = copy_of(base, tmp_path / "data")
    crash_close(d, "before-commit")
    assert not committed(d / "lake" / "bills" / f"bill_month={MONTH}")
    assert lake_state(d / "lake" / "bills") == {}  # no member table got a commit
    assert rows(d, "select * from bills") == []
    assert rows(d, "select * from bill_lines") == []
    r = close_month(d, MONTH)  # the rerun gives the clean result
    assert r.changed and r.version == 1
    assert snapshot(d) == snapshot(closed)
    assert [
        p.name for p in (d / "lake" / "bills" / ".staging").iterdir() if p.name.endswith(".tmp")
    ] == []  # the orphan was cleaned by the next commit


def test_a_crash_after_the_lake_commit_is_repaired_by_a_rerun(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    land_more(d)
    before = snapshot(d)
    # a restatement killed after its lake commit, before the warehouse took it: the warehouse
    # keeps version 1 whole, and a rerun brings it level with the lake (the source of truth)
    crash_close(d, "before-warehouse", restate=True)
    after = snapshot(d)
    assert after["bills"] == before["bills"] and after["bill_lines"] == before["bill_lines"]
    assert {x["version"] for x in after["lake_bills"]} == {1, 2}
    r = close_month(d, MONTH)
    assert r.changed is False and r.version == 2
    s = snapshot(d)
    assert len(s["bills"]) == len(PARTNERS) + 1  # only P1 changed: P1 v1 and v2
    assert s["bills"] == s["lake_bills"] and s["bill_lines"] == s["lake_lines"]
    assert bills(d)["P1"]["version"] == 2
    assert bills(d)["P1"]["consume_amount"] == D("216.76")
