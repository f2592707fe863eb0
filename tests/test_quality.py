"""Data-quality gates on real DuckDB tables with real Great Expectations."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

import duckdb
import pytest

from pipelines import db, quality
from pipelines.quality import (
    QualityError,
    QualityResult,
    check_quarantine_share,
    validate_bills,
    validate_feed,
)
from pipelines.schema import BILL_LINES, BILLS

D = Decimal
MONTH = "2025-03"


def round2(x: Decimal) -> Decimal:
    """Half away from zero (ROUND_HALF_UP on Decimal rounds the magnitude)."""
    return x.quantize(D("0.01"), rounding=ROUND_HALF_UP)


# (partner, version, status, tax_rate, lines as (component, amount))
PARTNERS = [
    (
        "P001",
        1,
        "closed",
        D("0.06"),
        [
            ("consume", D("100.005")),
            ("consume", D("50.123456")),
            ("refund", D("-20.005")),
            ("adjustment", D("-5.5")),
            ("coupon", D("10")),
        ],
    ),
    # coupon above the net: capped at the net, nothing due, no invoice
    ("P002", 1, "closed", D("0.06"), [("consume", D("30")), ("coupon", D("50"))]),
    # refunds above expenditure: negative bill, then a restatement with an amount due
    ("P003", 1, "superseded", D("0.09"), [("consume", D("10")), ("refund", D("-40"))]),
    ("P003", 2, "closed", D("0.09"), [("consume", D("25.555"))]),
    # no activity: a zero bill
    ("P004", 1, "closed", D("0.13"), []),
]


def expected_bill(
    partner: str, version: int, status: str, rate: Decimal, lines: list[tuple[str, Decimal]]
) -> dict:
    def total(comp: str) -> Decimal:
        return sum((a for c, a in lines if c == comp), D(0))

    consume = round2(total("consume"))
    refunds = -round2(total("refund"))
    adjustments = round2(total("adjustment"))
    coupon_total = round2(total("coupon"))
    net = consume - refunds + adjustments
    coupon = min(coupon_total, max(net, D(0)))
    tax = round2(max(net - coupon, D(0)) * rate)
    bill = net - coupon + tax
    due = max(bill, D(0))
    invoice = None
    if due > 0:
        invoice = f"INV-{partner}-{MONTH.replace('-', '')}" + (
            f"-V{version}" if version >= 2 else ""
        )
    return {
        "partner_id": partner,
        "partner_name": f"Partner {partner}",
        "bill_month": MONTH,
        "version": version,
        "currency": "CNY",
        "consume_amount": consume,
        "refunds": refunds,
        "adjustments": adjustments,
        "coupon_total": coupon_total,
        "coupon_amount": coupon,
        "tax_rate": rate,
        "tax_amount": tax,
        "bill_amount": bill,
        "amount_due": due,
        "invoice_no": invoice,
        "status": status,
        "closed_at": "2025-04-05 01:00:00+00",
        "cutoff_date": "2025-04-04",
        "forced": False,
        "missing_dates": None,
        "line_count": len(lines),
    }


def test_hand_computed_bills_are_what_the_spec_says():
    bills = {(p, v): expected_bill(p, v, s, r, ls) for p, v, s, r, ls in PARTNERS}
    p1 = bills[("P001", 1)]
    assert p1["consume_amount"] == D("150.13")  # 150.128456
    assert p1["refunds"] == D("20.01")  # -20.005 rounds away from zero
    assert (p1["coupon_amount"], p1["tax_amount"], p1["amount_due"]) == (
        D("10.00"),
        D("6.88"),
        D("121.50"),
    )  # 114.62 * 0.06 = 6.8772
    assert bills[("P002", 1)]["coupon_amount"] == D("30.00")
    assert bills[("P003", 1)]["bill_amount"] == D("-30.00")
    assert bills[("P003", 2)]["tax_amount"] == D("2.30")  # 25.56 * 0.09 = 2.3004
    assert bills[("P003", 2)]["invoice_no"] == "INV-P003-202503-V2"


@pytest.fixture
def con():
    c = db.connect()
    c.execute(BILLS.ddl().replace("bills", "stg_bills", 1))
    c.execute(BILL_LINES.ddl().replace("bill_lines", "stg_bill_lines", 1))
    for p, v, s, r, ls in PARTNERS:
        b = expected_bill(p, v, s, r, ls)
        c.execute(
            f"insert into stg_bills ({', '.join(b)}) values ({', '.join('?' * len(b))})",
            list(b.values()),
        )
        for n, (comp, amount) in enumerate(ls, start=1):
            c.execute(
                "insert into stg_bill_lines (partner_id, bill_month, version, line_no, component,"
                " charge_type, currency, amount, record_count) values (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                [p, MONTH, v, n, comp, comp.upper(), "CNY", amount],
            )
    yield c
    c.close()


def test_clean_bills_pass_and_write_a_report(con, tmp_path):
    res = validate_bills(con, "stg_bills", "stg_bill_lines", tmp_path, "close-2025-03")
    assert isinstance(res, QualityResult)
    assert res.success and res.failures == []
    assert res.n_expectations >= 25
    assert res.report_path == tmp_path / "close-2025-03.html"
    page = res.report_path.read_text(encoding="utf-8")
    for rule in (
        "bill_key_unique",
        "consume_matches_lines",
        "tax_amount_ok",
        "coupon_within_net",
        "invoice_no_iff_amount_due",
        "amount_due_ok",
    ):
        assert rule in page
    assert "PASSED" in page
    doc = json.loads((tmp_path / "close-2025-03.json").read_text())
    assert doc["success"] is True
    assert len(doc["results"]) == res.n_expectations
    assert doc["meta"]["koobill"]["rows_checked"] == len(PARTNERS)


TAMPERS = [
    pytest.param(
        "update stg_bills set consume_amount = consume_amount + 0.01 where partner_id = 'P001'",
        "consume_matches_lines",
        "P001",
        id="cent-off",
    ),
    pytest.param(
        "update stg_bill_lines set amount = amount - 0.01 "
        "where partner_id = 'P003' and version = 2",
        "consume_matches_lines",
        "P003",
        id="line-cent-off",
    ),
    pytest.param(
        "insert into stg_bills select * from stg_bills where partner_id = 'P002'",
        "bill_key_unique",
        "P002",
        id="duplicate-bill",
    ),
    pytest.param(
        "update stg_bills set invoice_no = null where partner_id = 'P001'",
        "invoice_no_iff_amount_due",
        "P001",
        id="missing-invoice",
    ),
    pytest.param(
        "update stg_bills set invoice_no = 'INV-P003-202503' "
        "where partner_id = 'P003' and version = 2",
        "invoice_no_matches_bill",
        "P003",
        id="invoice-without-version",
    ),
    pytest.param(
        "update stg_bills set tax_amount = tax_amount + 0.01, bill_amount = bill_amount"
        " + 0.01, amount_due = amount_due + 0.01 where partner_id = 'P001'",
        "tax_amount_ok",
        "P001",
        id="wrong-tax",
    ),
    pytest.param(
        "update stg_bills set coupon_amount = 50.00, bill_amount = -20.00 "
        "where partner_id = 'P002'",
        "coupon_within_net",
        "P002",
        id="coupon-above-net",
    ),
    pytest.param(
        "update stg_bills set amount_due = bill_amount where partner_id = 'P003' and version = 1",
        "amount_due_ok",
        "P003",
        id="negative-amount-due",
    ),
    # versions are per partner (P003 has v1 and v2, the others v1), but never skip one
    pytest.param(
        "update stg_bills set version = 3, invoice_no = 'INV-P003-202503-V3' "
        "where partner_id = 'P003' and version = 2; "
        "update stg_bill_lines set version = 3 where partner_id = 'P003' and version = 2",
        "versions_contiguous",
        "P003",
        id="version-gap",
    ),
    pytest.param(
        "update stg_bills set supersedes_invoice_no = 'INV-P001-202503' "
        "where partner_id = 'P003' and version = 2",
        "supersedes_previous_invoice",
        "P003",
        id="supersedes-another-invoice",
    ),
    pytest.param(
        "update stg_bills set supersedes_invoice_no = 'INV-P001-202503' where partner_id = 'P001'",
        "supersedes_previous_invoice",
        "P001",
        id="version-1-supersedes-nothing",
    ),
]


@pytest.mark.parametrize(("tamper", "rule", "partner"), TAMPERS)
def test_tampered_bills_fail_naming_rule_and_partner(con, tmp_path, tamper, rule, partner):
    con.execute(tamper)
    with pytest.raises(QualityError) as err:
        validate_bills(con, "stg_bills", "stg_bill_lines", tmp_path, "close-2025-03")
    exc = err.value
    failed = {f["expectation"]: f for f in exc.failures}
    assert rule in failed, str(exc)
    assert rule in str(exc) and partner in str(exc)
    assert {r["partner_id"] for r in failed[rule]["rows"]} == {partner}
    assert all(r["bill_month"] == MONTH for r in failed[rule]["rows"])
    assert exc.report_path == tmp_path / "close-2025-03.html"
    page = exc.report_path.read_text(encoding="utf-8")
    assert "FAILED" in page and rule in page and partner in page
    assert json.loads((tmp_path / "close-2025-03.json").read_text())["success"] is False


def test_coupon_above_net_names_the_values(con, tmp_path):
    con.execute(
        "update stg_bills set coupon_amount = 50.00, bill_amount = -20.00 where partner_id = 'P002'"
    )
    with pytest.raises(QualityError) as err:
        validate_bills(con, "stg_bills", "stg_bill_lines", tmp_path, "r")
    failed = {f["expectation"]: f for f in err.value.failures}
    assert set(failed) >= {"coupon_amount_capped", "coupon_within_net"}
    row = failed["coupon_amount_capped"]["rows"][0]
    assert (row["coupon_amount"], row["expected_coupon_amount"]) == ("50.00", "30.00")
    assert "bill_amount_adds_up" not in failed  # -20.00 = 30 - 50 + 0 still adds up


def test_orphan_lines_fail(con, tmp_path):
    con.execute(
        "insert into stg_bill_lines (partner_id, bill_month, version, line_no, component,"
        " currency, amount) values ('P999', '2025-03', 1, 1, 'consume', 'CNY', 1)"
    )
    with pytest.raises(QualityError, match="lines_have_a_bill") as err:
        validate_bills(con, "stg_bills", "stg_bill_lines", tmp_path, "r")
    assert [f["expectation"] for f in err.value.failures] == ["lines_have_a_bill"]
    assert "P999" in str(err.value)


# ---------------------------------------------------------------------------------------------
# Feeds

ORDERS_DDL = """create table stg_orders (
    record_id varchar, order_id varchar, partner_id varchar, customer_id varchar,
    customer_name varchar, product_id varchar, product_name varchar, sku_code varchar,
    region varchar, order_type varchar, official_amount decimal(38,6),
    discount_amount decimal(38,6), amount decimal(38,6), currency varchar,
    event_time timestamptz, landing_date date)"""


@pytest.fixture
def orders():
    c = db.connect()
    c.execute(ORDERS_DDL)
    rows = [
        ("R1", "NEW", "100.000001", "10", "90.000001", "2025-03-10 10:00:00+08"),
        ("R2", "RENEW", "50", "0", "50", "2025-03-10 23:59:59+08"),
        ("R3", "UNSUBSCRIBE", "-30", "0", "-30", "2025-03-09 00:00:00+08"),
        ("R4", "CHANGE", "-1.5", "0", "-1.5", "2025-03-11 12:00:00+08"),  # 1 day ahead: ok
    ]
    for rid, typ, off, disc, amt, ts in rows:
        c.execute(
            "insert into stg_orders values (?, 'O' || ?, 'P001', 'C1', 'Cust', 'PR1', 'Prod',"
            " 'SKU1', 'cn-north-4', ?, ?, ?, ?, 'CNY', ?, date '2025-03-10')",
            [rid, rid, typ, D(off), D(disc), D(amt), ts],
        )
    yield c
    c.close()


@pytest.mark.parametrize("max_gx_rows", [100_000, 0], ids=["whole-frame", "offending-rows-only"])
def test_clean_feed_passes(orders, tmp_path, max_gx_rows):
    res = validate_feed(
        orders, "orders", "stg_orders", "2025-03-10", tmp_path, max_gx_rows=max_gx_rows
    )
    assert res.success and res.rows_checked == 4
    assert res.report_path == tmp_path / "feed-orders-2025-03-10.html"
    page = res.report_path.read_text(encoding="utf-8")
    assert "record_id_unique" in page and "amount_sign_ok" in page


FEED_TAMPERS = [
    pytest.param(
        "insert into stg_orders select * from stg_orders where record_id = 'R2'",
        "record_id_unique",
        "R2",
        2,
        id="duplicate-record-id",
    ),
    pytest.param(
        "update stg_orders set official_amount = -5, discount_amount = 0, amount = -5 where record_id = 'R1'",
        "amount_sign_ok",
        "R1",
        1,
        id="new-order-negative",
    ),
    pytest.param(
        "update stg_orders set amount = amount + 0.000001 where record_id = 'R2'",
        "amount_is_official_minus_discount",
        "R2",
        1,
        id="amount-not-official-minus",
    ),
    pytest.param(
        "update stg_orders set order_type = 'REFUND' where record_id = 'R3'",
        "order_type_known",
        "R3",
        1,
        id="unknown-order-type",
    ),
    pytest.param(
        "update stg_orders set event_time = '2025-03-12 00:00:00+08' where record_id = 'R4'",
        "event_time_in_window",
        "R4",
        1,
        id="from-the-future",
    ),
    pytest.param(
        "update stg_orders set customer_id = '  ' where record_id = 'R1'",
        "customer_id_not_null",
        "R1",
        1,
        id="blank-key",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "rule", "record", "count", "max_gx_rows"),
    [
        *(pytest.param(*p.values, 100_000, id=p.id) for p in FEED_TAMPERS),
        # the large-table path: GX sees only the offending rows, SQL counts all of them
        *(pytest.param(*p.values, 0, id=p.id + "-offenders-only") for p in FEED_TAMPERS[:2]),
    ],
)
def test_broken_feed_fails(orders, tmp_path, tamper, rule, record, count, max_gx_rows):
    orders.execute(tamper)
    with pytest.raises(QualityError) as err:
        validate_feed(
            orders, "orders", "stg_orders", "2025-03-10", tmp_path, max_gx_rows=max_gx_rows
        )
    failed = {f["expectation"]: f for f in err.value.failures}
    assert list(failed) == [rule], str(err.value)
    assert failed[rule]["count"] == count
    assert {r["record_id"] for r in failed[rule]["rows"]} == {record}
    assert rule in str(err.value) and record in str(err.value)
    assert err.value.report_path.exists()


def test_several_feeds_raise_the_first_failure_in_the_order_given(orders, tmp_path):
    """``validate_feeds`` counts the smallest feed first and lets GX judge in a thread, but
    returns the results, or raises the error of the first failing feed, in the order given."""
    orders.execute("create table good as select * from stg_orders")
    orders.execute("create table bad as select * from stg_orders")
    orders.execute("insert into bad select * from bad where record_id = 'R2'")
    feeds = [("orders", "good"), ("orders", "bad")]
    with pytest.raises(QualityError) as err:
        quality.validate_feeds(
            orders, feeds, "2025-03-10", tmp_path, sizes={"orders": 4}, max_gx_rows=100_000
        )
    assert [f["expectation"] for f in err.value.failures] == ["record_id_unique"]
    assert err.value.report_path.exists()
    # in order, with the bad one first: its error, though the good one is counted before it
    with pytest.raises(QualityError) as err:
        quality.validate_feeds(orders, feeds[::-1], "2025-03-10", tmp_path / "r")
    assert [f["expectation"] for f in err.value.failures] == ["record_id_unique"]
    # an error of another kind (no such table) does not hide a failure before it in order
    broken = [("orders", "bad"), ("orders", "no_such_table")]
    with pytest.raises(QualityError):
        quality.validate_feeds(orders, broken, "2025-03-10", tmp_path / "b")
    with pytest.raises(duckdb.CatalogException):
        quality.validate_feeds(orders, broken[::-1], "2025-03-10", tmp_path / "b")
    ok = quality.validate_feeds(orders, [feeds[0], feeds[0]], "2025-03-10", tmp_path / "ok")
    assert [r.success for r in ok] == [True, True] and ok[0].rows_checked == 4
    assert quality.validate_feeds(orders, [], "2025-03-10", tmp_path / "none") == []


def test_usage_feed_counts_every_row_but_hands_gx_only_offenders(tmp_path):
    c = db.connect()
    c.execute("""create table stg_usage as
        select 'U' || i as record_id, 'P001' as partner_id, 'C1' as customer_id,
               null::varchar as customer_name, 'PR1' as product_id, null::varchar as product_name,
               'SKU1' as sku_code, 'r1' as region, 'res' || i as resource_id,
               timestamptz '2025-03-09 16:00:00+00' as usage_start,
               timestamptz '2025-03-09 17:00:00+00' as usage_end,
               case when i % 1000 = 0 then -1 else 1.5 end::decimal(38,6) as quantity,
               'h' as unit, date '2025-03-10' as landing_date
        from range(20000) t(i)""")
    with pytest.raises(QualityError, match="quantity_not_negative") as err:
        validate_feed(c, "usage", "stg_usage", "2025-03-10", tmp_path, max_gx_rows=1000)
    (f,) = err.value.failures
    assert f["count"] == 20  # exact, over all rows
    doc = json.loads((tmp_path / "feed-usage-2025-03-10.json").read_text())
    assert doc["meta"]["koobill"]["rows_checked"] == 20000
    assert doc["meta"]["koobill"]["rows_handed_to_gx"] == 20


@pytest.mark.parametrize(
    ("event_time", "ok"),
    [
        ("2025-03-11 23:59:59.999999+08", True),  # Beijing date = landing date + 1
        ("2025-03-11 16:00:00+00", False),  # 2025-03-12 00:00 in Beijing
        ("2024-02-04 00:00:00+08", True),  # landing date - 400 days (2024 is a leap year)
        ("2024-02-03 15:59:59+00", False),  # 23:59:59 the day before, in Beijing
    ],
)
def test_record_date_window_edges_in_beijing_time(orders, tmp_path, event_time, ok):
    orders.execute("update stg_orders set event_time = ? where record_id = 'R1'", [event_time])
    if ok:
        assert validate_feed(orders, "orders", "stg_orders", "2025-03-10", tmp_path).success
        return
    with pytest.raises(QualityError, match="event_time_in_window") as err:
        validate_feed(orders, "orders", "stg_orders", "2025-03-10", tmp_path)
    assert [f["count"] for f in err.value.failures] == [1]


def test_ids_are_unique_as_stored_not_trimmed(orders, tmp_path):
    """The ingest keeps ids as they are ('R1' and 'R1 ' are two records); the gate agrees,
    and still counts an all-space id as missing."""
    orders.execute("update stg_orders set record_id = 'R1 ' where record_id = 'R2'")
    assert validate_feed(orders, "orders", "stg_orders", "2025-03-10", tmp_path).success
    orders.execute("update stg_orders set customer_id = '   ' where record_id = 'R3'")
    with pytest.raises(QualityError, match="customer_id_not_null"):
        validate_feed(orders, "orders", "stg_orders", "2025-03-10", tmp_path)


def test_feed_table_missing_a_required_column(tmp_path):
    c = db.connect()
    c.execute(
        "create table t (record_id varchar, partner_id varchar, amount decimal(38,6),"
        " currency varchar, landing_date date)"
    )
    with pytest.raises(QualityError, match="paid_at") as err:
        validate_feed(c, "payments", "t", "2025-03-10", tmp_path)
    assert err.value.report_path.exists()


# ---------------------------------------------------------------------------------------------
# Which engine counts what


def test_bills_are_counted_by_great_expectations_on_every_row(con, tmp_path):
    """The bills' counts are Great Expectations' own, over the whole frame: a duplicated bill
    is two offending rows (GX's count of a repeated key), and GX saw every row."""
    con.execute("insert into stg_bills select * from stg_bills where partner_id = 'P002'")
    with pytest.raises(QualityError) as err:
        validate_bills(con, "stg_bills", "stg_bill_lines", tmp_path, "r")
    failed = {f["expectation"]: f for f in err.value.failures}
    assert failed["bill_key_unique"]["count"] == 2
    meta = json.loads((tmp_path / "r.json").read_text())["meta"]["koobill"]
    assert meta["rows_handed_to_gx"] == meta["rows_checked"] == len(PARTNERS) + 1
    assert {c["counted_by"] for c in meta["checks"]} == {"Great Expectations"}
    assert "Great Expectations (pandas) evaluated every expectation on all" in meta["coverage"]
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "evaluated every expectation on all 6 rows" in page


def test_feed_report_says_duckdb_counted_and_what_gx_saw(tmp_path):
    c = db.connect()
    c.execute("""create table stg_payments as
        select 'R' || i as record_id, 'P001' as partner_id,
               case when i < 3 then -1 else 10 end::decimal(38,6) as amount, 'CNY' as currency,
               timestamptz '2025-03-10 01:00:00+00' as paid_at, null::varchar as method,
               null::varchar as reference, date '2025-03-10' as landing_date
        from range(500) t(i)""")
    with pytest.raises(QualityError) as err:
        validate_feed(c, "payments", "stg_payments", "2025-03-10", tmp_path, max_gx_rows=10)
    (f,) = err.value.failures
    assert (f["expectation"], f["count"]) == ("amount_positive", 3)
    assert [r["amount"] for r in f["rows"]] == ["-1.000000"] * 3  # exact decimal text
    meta = json.loads((tmp_path / "feed-payments-2025-03-10.json").read_text())["meta"]["koobill"]
    assert {c["counted_by"] for c in meta["checks"]} == {"DuckDB"}
    assert meta["coverage"] == (
        "DuckDB counted every expectation on all 500 rows; Great Expectations validated 3 of "
        f"them (only rows breaking a rule, up to {quality.SAMPLE_ROWS} per expectation)"
    )


@pytest.mark.parametrize("typ", ["decimal(38,10)", "varchar"])
def test_an_amount_with_seven_decimals_fails_amounts_6dp(tmp_path, typ):
    c = db.connect()
    c.execute(f"""create table stg_payments as
        select 'R' || i as record_id, 'P001' as partner_id,
               cast(case when i = 1 then '10.0000001' else '10.000001' end as {typ}) as amount,
               'CNY' as currency, timestamptz '2025-03-10 01:00:00+00' as paid_at,
               date '2025-03-10' as landing_date
        from range(3) t(i)""")
    with pytest.raises(QualityError) as err:
        validate_feed(c, "payments", "stg_payments", "2025-03-10", tmp_path)
    (f,) = err.value.failures
    assert (f["expectation"], f["count"], f["rows"][0]["record_id"]) == ("amounts_6dp", 1, "R1")


def test_every_suite_loads_for_its_engine():
    from expectations.bills import bills_suite
    from expectations.feeds import feed_suite
    from pipelines.config import RECORD_FEEDS

    assert len(quality.load_suite(bills_suite(), "gx")) >= 25
    for feed in RECORD_FEEDS:
        rules = quality.load_suite(feed_suite(feed), "duckdb")
        assert all(r.predicate or r.unique for r in rules), feed
        assert quality._quality_sql(f"feed_{feed}")


def test_a_type_duckdb_cannot_count_is_refused_when_the_suite_loads(tmp_path, monkeypatch):
    """Refused before any data is read: the table named does not even exist."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from expectations import feeds

    def suite(feed):
        return gx.ExpectationSuite(
            name="odd",
            expectations=[gxe.ExpectColumnMeanToBeBetween(column="amount", min_value=0)],
        )

    monkeypatch.setattr(feeds, "feed_suite", suite)
    with pytest.raises(ValueError, match="expect_column_mean_to_be_between.*cannot count"):
        validate_feed(db.connect(), "payments", "no_such_table", "2025-03-10", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_argument_duckdb_does_not_honour_is_refused_when_the_suite_loads():
    import great_expectations as gx
    import great_expectations.expectations as gxe

    suite = gx.ExpectationSuite(
        name="odd",
        expectations=[gxe.ExpectColumnValuesToNotBeNull(column="amount", mostly=0.9)],
    )
    with pytest.raises(ValueError, match="sets mostly, which the DuckDB engine does not honour"):
        quality.load_suite(suite, "duckdb")
    assert quality.load_suite(suite, "gx")  # GX honours it itself


def test_a_missing_quality_sql_file_fails_loudly():
    with pytest.raises(RuntimeError, match="missing"):
        quality._quality_sql("no_such_frame")


# ---------------------------------------------------------------------------------------------
# Quarantine share


def _stats(quarantined: int, read: int = 1000) -> list[dict]:
    half = read // 2
    return [
        {
            "feed": "usage",
            "landing_date": "2025-03-10",
            "file": "a.csv",
            "rows_read": half,
            "accepted": half - quarantined,
            "quarantined": quarantined,
            "duplicates": 0,
            "top_reasons": [("no price for sku_code", quarantined - 1), ("quantity < 0", 1)],
        },
        {
            "feed": "usage",
            "landing_date": "2025-03-10",
            "file": "b.csv",
            "rows_read": read - half,
            "accepted": read - half,
            "quarantined": 0,
            "duplicates": 0,
            "top_reasons": [],
        },
        {
            "feed": "orders",
            "landing_date": "2025-03-10",
            "file": "o.csv",
            "rows_read": 10,
            "accepted": 10,
            "quarantined": 0,
            "duplicates": 0,
        },
    ]


def test_quarantine_share_below_threshold_passes(monkeypatch):
    monkeypatch.delenv("KOOBILL_MAX_QUARANTINE_SHARE", raising=False)
    check_quarantine_share(_stats(49))  # 4.9 %
    check_quarantine_share(_stats(50))  # exactly 5 % is allowed


def test_quarantine_share_above_threshold_fails_with_reasons(monkeypatch):
    monkeypatch.delenv("KOOBILL_MAX_QUARANTINE_SHARE", raising=False)
    with pytest.raises(QualityError) as err:
        check_quarantine_share(_stats(51))  # 5.1 % over the feed's two files
    msg = str(err.value)
    assert msg.startswith("usage on 2025-03-10: 5.1% of rows quarantined")
    assert "threshold 5%" in msg and "no price for sku_code (50)" in msg
    assert "orders" not in msg
    assert err.value.failures[0]["rows"][0]["feed"] == "usage"


def test_quarantine_threshold_from_env(monkeypatch):
    monkeypatch.setenv("KOOBILL_MAX_QUARANTINE_SHARE", "0.10")
    check_quarantine_share(_stats(51))
    monkeypatch.setenv("KOOBILL_MAX_QUARANTINE_SHARE", "4%")
    with pytest.raises(QualityError, match="threshold 4%"):
        check_quarantine_share(_stats(49))
    with pytest.raises(QualityError):  # an explicit threshold wins over the environment
        check_quarantine_share(_stats(49), threshold=0.01)


def test_importing_quality_does_not_import_great_expectations():
    code = "import sys, pipelines.quality; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prewarm_imports_great_expectations_in_the_background():
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pipelines import quality; quality.prewarm(); "
        "t = quality._warm; quality._await_prewarm(); "
        "print(t is not None and t.name, 'great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["koobill-gx-import", "True"]
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KOOBILL_GX_PREWARM": "0"},
    )
    assert off.stdout.split() == ["False", "False"]


def test_great_expectations_is_imported_with_scipy_stats_and_altair_deferred():
    """koobill's suites use none of the expectations that need scipy.stats or altair, a third
    of GX's import: ``import_gx`` leaves them unloaded until an attribute of them is read
    (then they load and work), and the finder that defers them is gone once GX is in."""
    import subprocess
    import sys

    code = (
        "import sys; from pipelines import quality; quality.import_gx(); "
        "lazy = [type(sys.modules[m]).__name__ for m in quality.DEFERRED_MODULES]; "
        "left = [f for f in sys.meta_path if isinstance(f, quality._DeferredImports)]; "
        "before = 'scipy.stats._stats_py' in sys.modules; "
        "h = sys.modules['scipy.stats'].entropy([0.5, 0.5]); "
        "print(lazy, len(left), before, 'scipy.stats._stats_py' in sys.modules, round(h, 4))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['_LazyModule', '_LazyModule'] 0 False True 0.6931"


def test_deferred_imports_are_lazy_only_for_the_importing_thread():
    """Another thread that imports a deferred module while GX is being imported gets the
    module itself (Python 3.11's lazy modules are not safe across threads)."""
    import importlib.util
    import threading

    from pipelines.quality import _DeferredImports

    finder = _DeferredImports(("csv",))
    mine = finder.find_spec("csv", None)
    assert isinstance(mine.loader, importlib.util.LazyLoader)
    assert finder.find_spec("json", None) is None
    seen = []
    t = threading.Thread(target=lambda: seen.append(finder.find_spec("csv", None)))
    t.start()
    t.join()
    assert seen == [None]


def test_reports_open_offline(con, tmp_path):
    """Finance and auditors read the reports offline (issue 14): no stylesheet, script, image
    or font comes from the network, the newsletter bar is gone, and "Home" leads to an index of
    every report that exists."""
    import re

    quality = tmp_path / "quality"
    report_dir = quality / "bills" / "2025-03"
    res = validate_bills(con, "stg_bills", "stg_bill_lines", report_dir, "2025-03-v1")
    page = res.report_path.read_text(encoding="utf-8")
    remote = re.findall(
        r"<(?:script|link|img)\b[^>]*(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>", page, re.I
    )
    assert remote == []
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page)
    assert "newsletter" not in page.lower()
    assert "jQuery" not in page and "$(" not in page
    assert "data:image/png;base64," in page  # the logo travels with the page
    assert ".card-header" in page  # the bundled stylesheet
    homes = set(re.findall(r'href="([^"]*index\.html)"', page))
    assert homes == {"../../index.html"}
    index = (report_dir / "../../index.html").resolve()
    assert index == quality / "index.html"
    listing = index.read_text(encoding="utf-8")
    assert "bills/2025-03/2025-03-v1.html" in listing
    assert "passed" in listing and "FAILED" not in listing
    for href in re.findall(r"href='([^']+)'", listing):
        assert (quality / href).is_file(), href
