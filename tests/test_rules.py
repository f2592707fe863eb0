"""Every row rule of spec section 2: a failing example per rule, its quarantine reason, and the
good rows next to it that must still be accepted (the rest of the file goes on).

One landing date with all cases is ingested once per module; each case is one test."""

from __future__ import annotations

from decimal import Decimal

import pytest
from helpers import (
    adjustment,
    coupon,
    ingest,
    lake_rows,
    land,
    order,
    partner,
    payment,
    price,
    quarantined,
    usage,
)

DAY = "2026-11-10"

PARTNERS = [
    partner("P1"),
    partner("P2", currency="USD", discount_rate="0"),
    partner("BADTAX", tax_rate="1"),
    partner("BADTAXNEG", tax_rate="-0.01"),
    partner("BADDISC", discount_rate="1"),
    partner("BADDISCNEG", discount_rate="-0.1"),
    partner("BADDISCTXT", discount_rate="ten percent"),
]
PRICES = [
    price("S1"),
    price("S2", effective_to="2026-11-01T00:00:00+08:00"),  # expired before the usage
    price("S3", effective_from="2026-11-20T00:00:00+08:00"),  # starts after the usage
    price("S4", unit="GB"),
    price("SUSD", currency="USD"),
    price("BIG", unit_price="999999999999999.999999"),
]

# (feed, record_id, overrides, expected reason fragment); None = the row must be accepted.
CASES = [
    # orders: amount identity and signs per order_type
    ("orders", "amount_mismatch", dict(amount="80"), "is not official_amount - discount_amount"),
    (
        "orders",
        "amount_mismatch_cent",
        dict(amount="90.000001"),
        "is not official_amount - discount_amount",
    ),
    (
        "orders",
        "new_negative",
        dict(official_amount="-10", discount_amount="0", amount="-10"),
        "amount is negative for order_type NEW",
    ),
    (
        "orders",
        "renew_negative",
        dict(order_type="RENEW", official_amount="-1", discount_amount="0", amount="-1"),
        "amount is negative for order_type RENEW",
    ),
    (
        "orders",
        "auto_renew_negative",
        dict(order_type="8", official_amount="-1", discount_amount="0", amount="-1"),
        "amount is negative for order_type AUTO_RENEW",
    ),
    (
        "orders",
        "unsub_positive",
        dict(order_type="UNSUBSCRIBE"),
        "amount is positive for order_type UNSUBSCRIBE",
    ),
    (
        "orders",
        "unsub24_positive",
        dict(order_type="24"),
        "amount is positive for order_type UNSUBSCRIBE",
    ),
    ("orders", "bad_order_type", dict(order_type="5"), "order_type is not one of"),
    (
        "orders",
        "unsub_negative",
        dict(order_type="UNSUBSCRIBE", official_amount="-100", discount_amount="-10", amount="-90"),
        None,
    ),
    (
        "orders",
        "change_negative",
        dict(order_type="CHANGE", official_amount="-5", discount_amount="0", amount="-5"),
        None,
    ),
    ("orders", "change_positive", dict(order_type="20"), None),
    ("orders", "new_zero", dict(official_amount="0", discount_amount="0", amount="0"), None),
    # currency and partner
    ("orders", "wrong_currency", dict(currency="USD"), "is not the partner's currency CNY"),
    (
        "orders",
        "unknown_partner",
        dict(partner_id="P9"),
        "partner P9 is not in the partner snapshot",
    ),
    ("orders", "quarantined_partner", dict(partner_id="BADTAX"), "is not in the partner snapshot"),
    ("orders", "dotdot_partner", dict(partner_id="../etc"), "partner_id is not a valid partner id"),
    ("orders", "slash_partner", dict(partner_id="P1/x"), "partner_id is not a valid partner id"),
    ("orders", "long_partner", dict(partner_id="P" * 65), "partner_id is not a valid partner id"),
    ("orders", "missing_customer", dict(customer_id=""), "customer_id is missing"),
    ("orders", "tab_customer", dict(customer_id="\t"), "customer_id is missing"),
    ("orders", "nbsp_region", dict(region="\u00a0 "), "region is missing"),
    # timestamps
    ("orders", "no_offset", dict(event_time="2026-11-09T10:00:00"), "event_time has no UTC offset"),
    ("orders", "date_only", dict(event_time="2026-11-09"), "event_time has no UTC offset"),
    ("orders", "bad_ts", dict(event_time="2026-02-30T10:00:00Z"), "event_time is not a valid"),
    ("orders", "future", dict(event_time="2026-11-12T00:00:00+08:00"), "from the future"),
    ("orders", "future_utc", dict(event_time="2026-11-11T16:00:00Z"), "from the future"),
    ("orders", "tomorrow_ok", dict(event_time="2026-11-11T23:59:59+08:00"), None),
    ("orders", "utc_z_ok", dict(event_time="2026-11-11T15:59:59Z"), None),
    ("orders", "ts_fraction_ok", dict(event_time="2026-11-09T10:00:00.123456+08:00"), None),
    ("orders", "ts_compact_offset_ok", dict(event_time="2026-11-09T10:00:00+0800"), None),
    (
        "orders",
        "ts_7_fraction",
        dict(event_time="2026-11-09T10:00:00.1234567Z"),
        "event_time is not a valid ISO 8601 timestamp",
    ),
    # numbers
    ("orders", "nan", dict(official_amount="NaN"), "official_amount is not a plain decimal"),
    ("orders", "infinity", dict(amount="Infinity"), "amount is not a plain decimal"),
    ("orders", "neg_infinity", dict(amount="-inf"), "amount is not a plain decimal"),
    ("orders", "exponent", dict(official_amount="1e2"), "official_amount is not a plain decimal"),
    (
        "orders",
        "seven_places",
        dict(official_amount="100.0000001", amount="90.0000001"),
        "has more than 6 decimal places",
    ),
    ("orders", "thousands_sep", dict(official_amount="1,000"), "not a plain decimal"),
    (
        "orders",
        "too_big",
        dict(official_amount="1" + "0" * 20, discount_amount="0", amount="1" + "0" * 20),
        "out of range",
    ),
    (
        "orders",
        "negative_zero",
        dict(official_amount="-0", discount_amount="0.000000", amount="-0.0"),
        None,
    ),
    (
        "orders",
        "six_places",
        dict(official_amount="0.123456", discount_amount="0.000001", amount="0.123455"),
        None,
    ),
    # usage
    ("usage", "neg_quantity", dict(quantity="-1"), "quantity is negative"),
    (
        "usage",
        "end_before_start",
        dict(usage_end="2026-11-09T09:59:59+08:00"),
        "usage_end is before usage_start",
    ),
    ("usage", "zero_length_ok", dict(usage_end="2026-11-09T10:00:00+08:00", quantity="0"), None),
    ("usage", "wrong_sku", dict(sku_code="S9"), "no price for sku S9"),
    ("usage", "wrong_unit", dict(unit="GB"), "no price for sku S1"),
    ("usage", "expired_price", dict(sku_code="S2"), "no price for sku S2"),
    ("usage", "price_not_yet", dict(sku_code="S3"), "no price for sku S3"),
    ("usage", "price_other_unit_ok", dict(sku_code="S4", unit="GB"), None),
    ("usage", "price_currency", dict(partner_id="P2"), "no price for sku S1"),
    ("usage", "price_currency_ok", dict(partner_id="P2", sku_code="SUSD"), None),
    ("usage", "unknown_partner", dict(partner_id="P9"), "is not in the partner snapshot"),
    (
        "usage",
        "future",
        dict(usage_start="2026-11-12T00:00:00+08:00", usage_end="2026-11-12T01:00:00+08:00"),
        "from the future",
    ),
    (
        "usage",
        "future_utc",
        dict(usage_start="2026-11-11T16:00:00Z", usage_end="2026-11-11T17:00:00Z"),
        "from the future",
    ),
    (
        "usage",
        "last_microsecond_ok",
        dict(usage_start="2026-11-11T23:59:59.999999+08:00", usage_end="2026-11-12T01:00:00+08:00"),
        None,
    ),
    ("usage", "no_offset", dict(usage_end="2026-11-09 11:00:00"), "usage_end has no UTC offset"),
    ("usage", "qty_nan", dict(quantity="nan"), "quantity is not a plain decimal"),
    # an extreme quantity * price is quarantined instead of overflowing DECIMAL(38) for the date
    (
        "usage",
        "rated_too_big",
        dict(sku_code="BIG", quantity="999999999999.999999"),
        "quantity * unit_price is out of range",
    ),
    # adjustments
    ("adjustments", "wrong_currency", dict(currency="EUR"), "is not the partner's currency"),
    ("adjustments", "unknown_partner", dict(partner_id="nobody"), "is not in the partner snapshot"),
    ("adjustments", "future", dict(bill_month="2026-12"), "bill_month is more than 1 day after"),
    ("adjustments", "bad_month", dict(bill_month="2026-13"), "bill_month is not a month"),
    ("adjustments", "positive_ok", dict(amount="5"), None),
    ("adjustments", "missing_reason", dict(reason=""), "reason is missing"),
    # coupons
    ("coupons", "zero", dict(amount="0"), "amount must be > 0"),
    ("coupons", "negative", dict(amount="-3"), "amount must be > 0"),
    ("coupons", "future", dict(bill_month="2027-01"), "from the future"),
    ("coupons", "wrong_currency", dict(currency="USD"), "is not the partner's currency"),
    ("coupons", "last_month_ok", dict(bill_month="2026-10"), None),
    # payments
    ("payments", "zero", dict(amount="0.000000"), "amount must be > 0"),
    ("payments", "negative", dict(amount="-100"), "amount must be > 0"),
    ("payments", "future", dict(paid_at="2026-11-13T00:00:00+08:00"), "from the future"),
    ("payments", "future_midnight", dict(paid_at="2026-11-12T00:00:00+08:00"), "from the future"),
    ("payments", "last_microsecond_ok", dict(paid_at="2026-11-11T23:59:59.999999+08:00"), None),
    ("payments", "unknown_partner", dict(partner_id="P7"), "is not in the partner snapshot"),
    ("payments", "tiny_ok", dict(amount="0.000001"), None),
]
ROWS = {
    "orders": order,
    "usage": usage,
    "adjustments": adjustment,
    "coupons": coupon,
    "payments": payment,
}
# partners: (partner_id, expected reason fragment)
PARTNER_CASES = [
    ("BADTAX", "tax_rate must be >= 0 and < 1"),
    ("BADTAXNEG", "tax_rate must be >= 0 and < 1"),
    ("BADDISC", "discount_rate must be >= 0 and < 1"),
    ("BADDISCNEG", "discount_rate must be >= 0 and < 1"),
    ("BADDISCTXT", "discount_rate is not a plain decimal"),
]
# JSONL-only cases: values a CSV cannot carry (a NUL byte) and JSON numbers / constants.
JSONL_CASES = [
    ("nul_partner", dict(partner_id="P1\x00"), "partner_id is not a valid partner id"),
    ("nul_dotdot", dict(partner_id="..\x00/P1"), "partner_id is not a valid partner id"),
    ("json_blank_ws_id", dict(customer_id=" \r\n\u3000"), "customer_id is missing"),
    ("json_id_with_inner_tab_ok", dict(customer_id="C\t1"), None),
    ("json_ideographic_spaces_id", dict(customer_id="\u3000\u3000"), "customer_id is missing"),
    ("json_ideographic_space_then_id_ok", dict(customer_id="\u3000C1"), None),
    ("json_cjk_id_ok", dict(customer_id="客户一"), None),
    ("json_nan", dict(official_amount=float("nan")), "official_amount is not a plain decimal"),
    ("json_inf", dict(amount=float("inf")), "amount is not a plain decimal"),
    ("json_exponent", dict(official_amount=1e20), "official_amount is not a plain decimal"),
    (
        "json_7dp",
        dict(discount_amount=Decimal("0.0000001"), amount=Decimal("99.9999999")),
        "more than 6 decimal places",
    ),
    (
        "json_numbers_ok",
        dict(
            official_amount=Decimal("100.5"),
            discount_amount=Decimal("0.5"),
            amount=Decimal("100.000000"),
        ),
        None,
    ),
    ("json_negzero_ok", dict(official_amount=Decimal("-0.0"), discount_amount=0, amount=0), None),
]


@pytest.fixture(scope="module")
def ruled(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    land(d, "partners", DAY, PARTNERS)
    land(d, "prices", DAY, PRICES)
    for feed, make in ROWS.items():
        rows = [make(f"good{i}") for i in range(3)]  # plain good rows around the bad ones
        rows += [make(rid, **kw) for f, rid, kw, _ in CASES if f == feed]
        land(d, feed, DAY, rows, name=f"a_{feed}.csv")
    land(
        d,
        "orders",
        DAY,
        [order(rid, **kw) for rid, kw, _ in JSONL_CASES],
        fmt="jsonl",
        name="b_orders.jsonl",
    )
    result = ingest(d, DAY)
    return d, result


def _outcome(d, feed: str, rid: str, file: str | None = None):
    q = [
        r
        for r in quarantined(d, DAY, feed)
        if r["record_id"] == rid and (file is None or r["file"] == file)
    ]
    acc = [
        r
        for r in lake_rows(d, DAY, feed)
        if r["record_id"] == rid and (file is None or r["_file"] == file)
    ]
    return q, acc


@pytest.mark.parametrize("feed, rid, kw, reason", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_row_rule(ruled, feed, rid, kw, reason):
    d, _ = ruled
    q, acc = _outcome(d, feed, rid)
    if reason is None:
        assert acc and not q, f"{feed}/{rid} should be accepted, quarantined as {q}"
    else:
        assert not acc, f"{feed}/{rid} should be quarantined"
        assert len(q) == 1
        assert reason in q[0]["reason"], q[0]["reason"]
        assert q[0]["file"] == f"a_{feed}.csv"
        assert q[0]["raw"]  # the raw record is kept


@pytest.mark.parametrize("rid, kw, reason", JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_row_rule_jsonl(ruled, rid, kw, reason):
    d, _ = ruled
    q, acc = _outcome(d, "orders", rid, "b_orders.jsonl")
    if reason is None:
        assert acc and not q, q
    else:
        assert not acc and len(q) == 1
        assert reason in q[0]["reason"], q[0]["reason"]


@pytest.mark.parametrize("pid, reason", PARTNER_CASES)
def test_partner_rate_rules(ruled, pid, reason):
    d, _ = ruled
    q = [r for r in quarantined(d, DAY, "partners") if r["record_id"] == pid]
    assert len(q) == 1 and reason in q[0]["reason"], q
    assert pid not in {r["partner_id"] for r in lake_rows(d, DAY, "partners")}
    # a quarantined partner gets no estimate row
    assert pid not in {r["partner_id"] for r in lake_rows(d, DAY, "estimates")}


def test_good_rows_and_reconciliation(ruled):
    """The good rows of every file are accepted; every file reconciles to the known counts."""
    d, result = ruled
    for feed in ROWS:
        ids = {r["record_id"] for r in lake_rows(d, DAY, feed)}
        assert {"good0", "good1", "good2"} <= ids
        bad = sum(1 for f, _r, _k, why in CASES if f == feed and why)
        ok = sum(1 for f, _r, _k, why in CASES if f == feed and not why)
        st = result.feeds[feed]
        assert st.total("rows_read") == 3 + bad + ok + (len(JSONL_CASES) if feed == "orders" else 0)
        assert st.total("quarantined") == bad + (
            sum(1 for c in JSONL_CASES if c[2]) if feed == "orders" else 0
        )
        assert st.total("duplicates") == 0
    files = {(r["feed"], r["file"]): r for r in lake_rows(d, DAY, "files")}
    for (feed, _f), r in files.items():
        assert r["rows_read"] == r["accepted"] + r["quarantined"] + r["duplicates"], (feed, r)
    assert files[("partners", "partners.csv")]["accepted"] == 2


def test_negative_zero_is_stored_as_zero(ruled):
    d, _ = ruled
    row = {r["record_id"]: r for r in lake_rows(d, DAY, "orders")}["negative_zero"]
    assert row["amount"] == 0 and row["official_amount"] == 0
    assert str(row["amount"]) in ("0E-6", "0.000000")


def test_quarantine_in_warehouse(ruled):
    from helpers import warehouse

    d, _ = ruled
    n_lake = len(quarantined(d, DAY))
    (n_wh,) = warehouse(d, "select count(*) from quarantine where landing_date = ?", [DAY])[0]
    assert n_wh == n_lake > 0
    reasons = dict(warehouse(d, "select record_id, reason from quarantine where feed = 'usage'"))
    assert "usage_end is before usage_start" in reasons["end_before_start"]


def test_reasons_are_clean_sentences(ruled):
    """Every reason reads as '<rule>; <rule>': no empty part, no dangling separator."""
    d, _ = ruled
    reasons = [r["reason"] for r in quarantined(d, DAY)]
    assert reasons
    for reason in reasons:
        parts = reason.split("; ")
        assert all(p.strip() for p in parts), repr(reason)
        assert not reason.rstrip().endswith(";"), repr(reason)


def test_blank_is_decided_as_the_regex_decides():
    """``blank_sql`` skips the regex for a value whose first character is surely not white
    space; every white space of ``BLANK_RE``, alone, repeated or before text, and the first
    characters around the shortcut's bounds are decided as the regex decides."""
    import re

    import duckdb

    from pipelines import rules

    spaces = [*"\t\n\x0b\f\r\x85 \xa0\u1680\u2028\u2029\u202f\u205f\u3000"]
    spaces += [chr(c) for c in range(0x2000, 0x200B)]
    assert max(map(ord, spaces)) == rules.LAST_BLANK
    values = ["", "\u3001", "\u3001 ", "\u2fff", "客户", " 客户", "a", "~", "\x7f", "\x00", "é"]
    values += [s for c in spaces for s in (c, c * 3, c + "x", "x" + c)]
    py = re.compile("[" + "".join(spaces) + "]*")
    con = duckdb.connect()
    got = con.execute(
        f"select v, {rules.blank_sql('v')} from unnest($values) as t(v)", {"values": values}
    ).fetchall()
    assert got == [(v, py.fullmatch(v) is not None) for v in values]


def test_not_blank_start_is_the_first_code_point_rule():
    """The shortcut compares text as bytes: it holds exactly when the first character is
    printable ASCII or above ``LAST_BLANK``, at each bound of the UTF-8 encoding's lengths."""
    import duckdb

    from pipelines import rules

    firsts = [0, 1, 9, 32, 33, 65, 126, 127, 128, 0xE9, 0x7FF, 0x800, 0x2FFF]
    firsts += [rules.LAST_BLANK - 1, rules.LAST_BLANK, rules.LAST_BLANK + 1, 0x4E2D, 0xFFFF]
    firsts += [0x10000, 0x1F600, 0x10FFFF]
    values = ["", None] + [
        chr(c) + tail for c in firsts for tail in ("", "x", "\x7f", "\U0010ffff")
    ]

    def want(v):
        if v is None:
            return None
        return bool(v) and (33 <= ord(v[0]) <= 126 or ord(v[0]) > rules.LAST_BLANK)

    con = duckdb.connect()
    got = con.execute(
        f"select v, {rules._not_blank_start('v')} from unnest($values) with ordinality as t(v, i) "
        "order by i",
        {"values": values},
    ).fetchall()
    assert got == [(v, want(v)) for v in values]


# The usage rules again, on a day without the BIG price: ingest looks for the rejected usage
# rows among suspects (pipelines.ingest._usage_suspects), and a price of 10^15 makes every row
# a suspect. Here each rule's row is found only through its own term.
SUSPECT_PRICES = [p for p in PRICES if p["sku_code"] != "BIG"] + [price("MID", unit_price="10000")]
SUSPECT_CASES = [c[1:] for c in CASES if c[0] == "usage" and c[1] != "rated_too_big"] + [
    ("rated_too_big_mid", dict(sku_code="MID", quantity="100000000000"), "is out of range"),
    ("rated_below_ok", dict(sku_code="MID", quantity="99999999999.99"), None),
]


@pytest.fixture(scope="module")
def suspects_day(tmp_path_factory):
    d = tmp_path_factory.mktemp("suspects")
    land(d, "partners", DAY, PARTNERS)
    land(d, "prices", DAY, SUSPECT_PRICES)
    rows = [usage(f"good{i}") for i in range(3)]
    rows += [usage(rid, **kw) for rid, kw, _ in SUSPECT_CASES]
    land(d, "usage", DAY, rows, name="a_usage.csv")
    return d, ingest(d, DAY)  # fails the date if a row were neither accepted nor quarantined


@pytest.mark.parametrize("rid, kw, reason", SUSPECT_CASES, ids=[c[0] for c in SUSPECT_CASES])
def test_usage_rule_without_a_price_that_makes_every_row_a_suspect(suspects_day, rid, kw, reason):
    d, result = suspects_day
    q, acc = _outcome(d, "usage", rid)
    if reason is None:
        assert acc and not q, q
    else:
        assert not acc and len(q) == 1
        assert reason in q[0]["reason"], q[0]["reason"]
    st = result.feeds["usage"]
    assert st.total("quarantined") == sum(1 for c in SUSPECT_CASES if c[2])
