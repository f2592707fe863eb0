"""Acceptance tests of `koobill ingest` (spec sections 1-4 and 7): bill months, aliases,
duplicates, rating, the cutoff rule, estimates, reruns, reconciliation and landing files."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    adjustment,
    committed,
    coupon,
    file_counts,
    ingest,
    jsonl_line,
    lake_by_id,
    lake_path,
    lake_rows,
    land,
    land_bytes,
    land_reference,
    order,
    partner,
    payment,
    price,
    quarantined,
    usage,
    warehouse,
)

from pipelines import delta, lake
from pipelines.lake import KoobillError

D = Decimal
REPO = Path(__file__).resolve().parent.parent
KOOBILL = str(Path(sys.executable).parent / "koobill")


def _snapshot(data_dir: Path) -> dict[str, bytes]:
    """Every committed lake file of every landing date, by relative path."""
    out = {}
    table = data_dir / "lake" / "ingest"
    for _day, part in lake.partitions(table, "landing_date"):
        for member in lake.members(table):
            f = part / f"{member}.parquet"
            if f.exists():
                out[f"{part.name}/{member}.parquet"] = f.read_bytes()
    return out


def _warehouse_dump(data_dir: Path) -> dict[str, list]:
    tables = ["estimates", "quarantine", "ingest_files", "payments"]
    return {t: sorted(warehouse(data_dir, f"select * from {t}"), key=repr) for t in tables}


# --- section 1: bill months where UTC and UTC+8 disagree ---------------------------------------

EDGE_DAY = "2026-11-01"
EDGES = [  # (event time, source month, bill month, late)
    ("2026-10-31T17:30:00Z", "2026-11", "2026-11", False),
    ("2026-10-31T16:00:00Z", "2026-11", "2026-11", False),
    ("2026-10-31T15:59:59Z", "2026-10", "2026-10", False),
    ("2026-10-31T23:59:59+08:00", "2026-10", "2026-10", False),
    ("2026-11-01T00:00:00+08:00", "2026-11", "2026-11", False),
    ("2026-10-31T12:30:00-05:00", "2026-11", "2026-11", False),  # 17:30Z
    ("2026-10-31T10:59:59-05:00", "2026-10", "2026-10", False),  # 15:59:59Z
    ("2026-09-30T16:00:00Z", "2026-10", "2026-10", False),
    ("2026-09-30T15:59:59Z", "2026-09", "2026-10", True),  # Sep landed after Oct 4: late
]


def test_month_edges_utc_vs_beijing(data_dir):
    land_reference(data_dir, EDGE_DAY)
    land(
        data_dir,
        "orders",
        EDGE_DAY,
        [order(f"e{i}", event_time=t) for i, (t, *_r) in enumerate(EDGES)],
    )
    land(
        data_dir,
        "usage",
        EDGE_DAY,
        [usage(f"e{i}", usage_start=t, usage_end=t) for i, (t, *_r) in enumerate(EDGES)],
    )
    r = ingest(data_dir, EDGE_DAY)
    assert r.feeds["orders"].total("accepted") == len(EDGES)
    for feed in ("orders", "usage"):
        got = lake_by_id(data_dir, EDGE_DAY, feed)
        for i, (t, src, bill, late) in enumerate(EDGES):
            row = got[f"e{i}"]
            assert (row["source_month"], row["bill_month_assigned"], row["late"]) == (
                src,
                bill,
                late,
            ), (feed, t)
    # timestamps are stored in UTC
    t = pq.read_table(lake_path(data_dir, EDGE_DAY, "orders")).schema.field("event_time").type
    assert pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00", "Etc/UTC")
    assert lake_by_id(data_dir, EDGE_DAY, "orders")["e5"]["event_time"] == dt.datetime(
        2026, 10, 31, 17, 30, tzinfo=dt.UTC
    )


def test_year_edge(data_dir):
    day = "2027-01-01"
    land_reference(data_dir, day)
    land(
        data_dir,
        "orders",
        day,
        [
            order("y1", event_time="2026-12-31T16:00:00Z"),
            order("y2", event_time="2026-12-31T15:59:59Z"),
        ],
    )
    ingest(data_dir, day)
    got = lake_by_id(data_dir, day, "orders")
    assert got["y1"]["bill_month_assigned"] == "2027-01"
    assert got["y2"]["bill_month_assigned"] == "2026-12"


# --- section 2: numeric bill_type aliases ------------------------------------------------------

ALIASES = [
    ("1", "NEW", 1),
    ("2", "RENEW", 1),
    ("3", "CHANGE", -1),
    ("4", "UNSUBSCRIBE", -1),
    ("8", "AUTO_RENEW", 1),
    ("20", "CHANGE", -1),
    ("24", "UNSUBSCRIBE", -1),
    ("new", "NEW", 1),
    (" 3 ", "CHANGE", 1),
]


def test_bill_type_aliases(data_dir):
    land_reference(data_dir)
    rows = []
    for i, (code, _name, sign) in enumerate(ALIASES):
        a = D(90) * sign
        rows.append(
            order(
                f"t{i}", order_type=code, official_amount=str(a), discount_amount="0", amount=str(a)
            )
        )
    land(data_dir, "orders", "2026-11-10", rows)
    ingest(data_dir)
    got = lake_by_id(data_dir, "2026-11-10", "orders")
    assert not quarantined(data_dir, "2026-11-10")
    for i, (_code, name, _sign) in enumerate(ALIASES):
        assert got[f"t{i}"]["order_type"] == name
    est = {e["bill_month"]: e for e in lake_rows(data_dir, "2026-11-10", "estimates")}
    # consume: 90 (NEW) + 90 (RENEW) + 90 (AUTO_RENEW) + 90 (new) + 90 (' 3 ' positive change)
    # refunds: 90 (3) + 90 (4) + 90 (20) + 90 (24)
    assert est["2026-11"]["consume_amount"] == D("450.00")
    assert est["2026-11"]["refunds"] == D("360.00")
    assert est["2026-11"]["estimate_amount"] == D("90.00")


# --- section 2: duplicates ----------------------------------------------------------------------


def test_duplicates_across_days_within_files_and_corrections(data_dir):
    d1, d2 = "2026-11-10", "2026-11-11"
    land_reference(data_dir, d1)
    land(
        data_dir,
        "orders",
        d1,
        [
            order("r1"),
            order("r3"),
            order("r3"),  # exact duplicate within one file
            order("r4"),
            order("r4", amount="80", discount_amount="20"),  # conflicting, same file
            order("r6", amount="1"),  # broken: quarantined, does not hold r6
            order("r7", amount="1"),
            order("r7"),  # broken then corrected in the same file
        ],
        name="a.csv",
    )
    land(data_dir, "orders", d1, [order("r4"), order("r5")], name="b.csv")
    land(
        data_dir,
        "orders",
        d1,
        [order("r5", official_amount="200", amount="190")],
        name="c.jsonl",
        fmt="jsonl",
    )
    ingest(data_dir, d1)
    assert file_counts(data_dir, d1)[("orders", "a.csv")] == (8, 4, 3, 1)
    assert file_counts(data_dir, d1)[("orders", "b.csv")] == (2, 1, 0, 1)
    assert file_counts(data_dir, d1)[("orders", "c.jsonl")] == (1, 0, 1, 0)
    acc = lake_by_id(data_dir, d1, "orders")
    assert sorted(acc) == ["r1", "r3", "r4", "r5", "r7"]
    assert acc["r4"]["amount"] == D("90") and acc["r4"]["_row"] == 4  # the first stands
    assert acc["r7"]["_row"] == 8
    q = {(r["file"], r["row"]): r["reason"] for r in quarantined(data_dir, d1)}
    assert "conflicting duplicate" in q[("a.csv", 5)]
    assert "conflicting duplicate" in q[("c.jsonl", 1)]

    land(
        data_dir,
        "orders",
        d2,
        [
            order("r1"),  # exact duplicate of an earlier day: dropped and counted
            order("r1", customer_name="Renamed Ltd"),  # only a non-required column differs
            order("r3", amount="90.000", event_time="2026-11-09T02:00:00Z"),  # same values
            order("r5", amount="80", discount_amount="20"),  # conflicting with an earlier day
            order("r6"),  # corrected row of one quarantined earlier: accepted
            order("r8"),
        ],
    )
    r = ingest(data_dir, d2)
    assert file_counts(data_dir, d2)[("orders", "orders.csv")] == (6, 2, 1, 3)
    assert r.feeds["orders"].total("duplicates") == 3
    assert sorted(lake_by_id(data_dir, d2, "orders")) == ["r6", "r8"]
    (q2,) = quarantined(data_dir, d2, "orders")
    assert q2["record_id"] == "r5" and "was accepted on 2026-11-10" in q2["reason"]
    # billed once: 5 accepted orders of 90 on d1 (+ r5 at 90), 2 on d2
    est = {e["bill_month"]: e for e in lake_rows(data_dir, d2, "estimates")}
    assert est["2026-11"]["consume_amount"] == D("630.00")  # 7 x 90
    wh = warehouse(
        data_dir,
        "select rows_read, accepted, quarantined, duplicates from "
        "ingest_files where landing_date = ? and feed = 'orders'",
        [d2],
    )
    assert wh == [(6, 2, 1, 3)]


def test_duplicate_partner_and_price_rows(data_dir):
    day = "2026-11-10"
    land(
        data_dir,
        "partners",
        day,
        [partner("P1"), partner("P1"), partner("P1", discount_rate="0.2")],
    )
    land(data_dir, "prices", day, [price("S1"), price("S1")])
    ingest(data_dir, day)
    assert file_counts(data_dir, day)[("partners", "partners.csv")] == (3, 1, 1, 1)
    assert file_counts(data_dir, day)[("prices", "prices.csv")] == (2, 1, 0, 1)
    (p,) = lake_rows(data_dir, day, "partners")
    assert p["discount_rate"] == D("0.1")
    # the same price landed again later is a duplicate, not a second price row
    land(data_dir, "prices", "2026-11-11", [price("S1")])
    ingest(data_dir, "2026-11-11")
    assert file_counts(data_dir, "2026-11-11")[("prices", "prices.csv")] == (1, 0, 0, 1)


# --- section 3: rating -------------------------------------------------------------------------


def test_rating_across_price_and_discount_changes(data_dir):
    d1, d2 = "2026-11-10", "2026-11-16"
    land(
        data_dir,
        "partners",
        d1,
        [partner("P1", discount_rate="0.1"), partner("P2", discount_rate="0.15")],
    )
    land(
        data_dir,
        "prices",
        d1,
        [
            price("S1", unit_price="2.5", effective_to="2026-11-15T00:00:00+08:00"),
            price("S1", unit_price="3.333333", effective_from="2026-11-15T00:00:00+08:00"),
        ],
    )
    land(
        data_dir,
        "usage",
        d1,
        [
            usage("u1", usage_start="2026-11-09T10:00:00+08:00", quantity="3"),
            usage(
                "u2",
                partner_id="P2",
                quantity="0.000003",  # on the old price: 0.0000075
                usage_start="2026-11-09T10:00:00+08:00",
            ),
        ],
    )
    # a new partners snapshot lands mid-month: P1's discount goes to 0.15
    land(
        data_dir,
        "partners",
        d2,
        [partner("P1", discount_rate="0.15"), partner("P2", discount_rate="0.15")],
    )
    land(
        data_dir,
        "usage",
        d2,
        [
            usage("u3", usage_start="2026-11-14T23:59:59+08:00", quantity="1"),  # old price
            usage("u4", usage_start="2026-11-15T00:00:00+08:00", quantity="1.5"),  # new price
            usage("u5", usage_start="2026-11-15T00:00:00+08:00", quantity="0.000003"),
        ],
        fmt="jsonl",
    )
    ingest(data_dir, d1)
    ingest(data_dir, d2)
    got = {**lake_by_id(data_dir, d1, "usage"), **lake_by_id(data_dir, d2, "usage")}

    def rated(rid):
        r = got[rid]
        return (
            r["unit_price"],
            r["discount_rate"],
            r["official_amount"],
            r["discount_amount"],
            r["amount"],
        )

    assert rated("u1") == (D("2.5"), D("0.1"), D("7.5"), D("0.75"), D("6.75"))
    # 0.000003 * 2.5 = 0.0000075 -> 0.000008 (half-up); * 0.15 = 0.0000012 -> 0.000001
    assert rated("u2") == (D("2.5"), D("0.15"), D("0.000008"), D("0.000001"), D("0.000007"))
    # landed after the new snapshot: the new discount, the price in force at usage_start
    assert rated("u3") == (D("2.5"), D("0.15"), D("2.5"), D("0.375"), D("2.125"))
    # 1.5 * 3.333333 = 4.9999995 -> 5.000000 (half-up at 6 places, never a float)
    assert rated("u4") == (D("3.333333"), D("0.15"), D("5"), D("0.75"), D("4.25"))
    # 0.000003 * 3.333333 = 0.000009999999 -> 0.000010; * 0.15 = 0.0000015 -> 0.000002
    assert rated("u5") == (D("3.333333"), D("0.15"), D("0.00001"), D("0.000002"), D("0.000008"))
    for rid in got:
        assert got[rid]["currency"] == "CNY"
    # money columns are decimal128(38, 6) in Parquet and DECIMAL(38,6) in DuckDB
    schema = pq.read_schema(lake_path(data_dir, d2, "usage"))
    for col in (
        "quantity",
        "unit_price",
        "discount_rate",
        "official_amount",
        "discount_amount",
        "amount",
    ):
        assert schema.field(col).type == pa.decimal128(38, 6), col
    for feed in ("orders", "adjustments", "coupons", "payments"):
        assert pq.read_schema(lake_path(data_dir, d2, feed)).field("amount").type == pa.decimal128(
            38, 6
        )
    import duckdb

    types = dict(
        duckdb.sql(
            f"describe select * from read_parquet('{lake_path(data_dir, d2, 'usage')}')"
        ).fetchall()
        and [
            (r[0], r[1])
            for r in duckdb.sql(
                f"describe select * from read_parquet('{lake_path(data_dir, d2, 'usage')}')"
            ).fetchall()
        ]
    )
    assert types["amount"] == "DECIMAL(38,6)"
    wh_types = dict(
        warehouse(
            data_dir,
            "select column_name, data_type from "
            "information_schema.columns where table_name = 'payments'",
        )
    )
    assert wh_types["amount"] == "DECIMAL(38,6)"
    # rerunning the first date after the second still uses the snapshot of its own date
    ingest(data_dir, d1)
    assert lake_by_id(data_dir, d1, "usage")["u1"]["discount_rate"] == D("0.1")


def test_price_landed_after_the_usage_does_not_rate_it(data_dir):
    d1, d2 = "2026-11-10", "2026-11-11"
    # d1 has a price list, without S1 (with no price list at all the date would be refused:
    # test_usage_before_any_price_list_names_the_missing_date)
    land_reference(data_dir, d1, prices=[price("S0")])
    land(data_dir, "usage", d1, [usage("u1")])
    land(data_dir, "prices", d2, [price("S1")])
    land(data_dir, "usage", d2, [usage("u2")])
    ingest(data_dir, d1)
    ingest(data_dir, d2)
    ingest(data_dir, d1)  # a rerun after the price landed still does not see it
    (q,) = quarantined(data_dir, d1, "usage")
    assert q["record_id"] == "u1" and "no price for sku S1" in q["reason"]
    assert list(lake_by_id(data_dir, d2, "usage")) == ["u2"]


def test_price_in_force_where_prices_overlap(data_dir):
    """A dated promotion over an open-ended list price: effective_from <= usage_start <
    effective_to picks the price in force; after the promotion the list price applies again."""
    day = "2026-11-10"
    land_reference(
        data_dir,
        day,
        prices=[
            price("S1", unit_price="2"),
            price(
                "S1",
                unit_price="1",
                effective_from="2026-11-01T00:00:00+08:00",
                effective_to="2026-11-05T00:00:00+08:00",
            ),
            price("S2", unit_price="3", effective_to="2026-11-03T00:00:00+08:00"),
        ],
    )
    land(
        data_dir,
        "usage",
        day,
        [
            usage("before", usage_start="2026-10-31T23:59:59+08:00", quantity="1"),
            usage("promo", usage_start="2026-11-01T00:00:00+08:00", quantity="1"),
            usage("promo_end", usage_start="2026-11-04T23:59:59+08:00", quantity="1"),
            usage("after", usage_start="2026-11-05T00:00:00+08:00", quantity="1"),
            usage("s2_ok", sku_code="S2", usage_start="2026-11-02T23:59:59+08:00", quantity="1"),
            usage("s2_gone", sku_code="S2", usage_start="2026-11-03T00:00:00+08:00", quantity="1"),
        ]
        + [usage(f"pad{i}") for i in range(20)],
    )
    ingest(data_dir, day)
    got = {k: v["unit_price"] for k, v in lake_by_id(data_dir, day, "usage").items()}
    assert (got["before"], got["promo"], got["promo_end"], got["after"], got["s2_ok"]) == (
        D(2),
        D(1),
        D(1),
        D(2),
        D(3),
    )
    (q,) = quarantined(data_dir, day, "usage")
    assert q["record_id"] == "s2_gone" and "no price for sku S2" in q["reason"]


# --- section 1: the cutoff rule -----------------------------------------------------------------

CUTOFF = [  # (landing date, bill month, late)
    ("2026-11-04", "2026-10", False),
    ("2026-11-05", "2026-11", True),
    ("2026-12-04", "2026-11", True),
    ("2026-12-05", "2026-12", True),
]


def test_cutoff_rule(data_dir):
    land_reference(data_dir, "2026-10-20")
    ingest(data_dir, "2026-10-20")
    for day, _m, _l in CUTOFF:
        land(data_dir, "orders", day, [order(f"o{day}", event_time="2026-10-20T12:00:00+08:00")])
        land(
            data_dir,
            "usage",
            day,
            [
                usage(
                    f"u{day}",
                    usage_start="2026-10-31T23:30:00+08:00",
                    usage_end="2026-11-01T00:30:00+08:00",
                )
            ],
        )
        land(data_dir, "adjustments", day, [adjustment(f"a{day}", bill_month="2026-10")])
        land(data_dir, "coupons", day, [coupon(f"c{day}", bill_month="2026-10")])
    for day, month, late in CUTOFF:
        r = ingest(data_dir, day)
        assert r.late_records == (2 if late else 0)
        for feed in ("orders", "usage", "adjustments", "coupons"):
            (row,) = lake_rows(data_dir, day, feed)
            assert (row["source_month"], row["bill_month_assigned"], row["late"]) == (
                "2026-10",
                month,
                late,
            ), (feed, day)


# --- section 4: estimates -----------------------------------------------------------------------


def _est(data_dir, day):
    return {
        (e["partner_id"], e["bill_month"]): (
            e["consume_amount"],
            e["refunds"],
            e["adjustments"],
            e["estimate_amount"],
        )
        for e in lake_rows(data_dir, day, "estimates")
    }


def test_estimates_as_of_a_date_and_open_months(data_dir):
    land_reference(data_dir, "2026-10-31", partners=[partner("P1"), partner("P2")])
    land(data_dir, "orders", "2026-10-31", [order("o1", event_time="2026-10-30T10:00:00+08:00")])
    land(
        data_dir,
        "orders",
        "2026-11-02",
        [
            order("o2", event_time="2026-11-02T10:00:00+08:00"),
            order("o3", event_time="2026-10-31T10:00:00+08:00"),
        ],
    )
    land(data_dir, "orders", "2026-11-03", [order("o4", event_time="2026-10-31T10:00:00+08:00")])
    land(data_dir, "orders", "2026-11-05", [order("o5", event_time="2026-10-31T10:00:00+08:00")])
    for day in ("2026-10-31", "2026-11-02", "2026-11-03", "2026-11-05", "2026-11-02"):
        ingest(data_dir, day)  # Nov 2 again after Nov 3: still only what landed by Nov 2
    z = (D(0),) * 4
    n = (D("90.00"), D(0), D(0), D("90.00"))
    n2 = (D("180.00"), D(0), D(0), D("180.00"))
    n3 = (D("270.00"), D(0), D(0), D("270.00"))
    # Oct 31: only October is open (Oct 31 is after September's cutoff)
    assert _est(data_dir, "2026-10-31") == {("P1", "2026-10"): n, ("P2", "2026-10"): z}
    # Nov 2: October (cutoff Nov 4) and November are open; only records landed by Nov 2 count
    assert _est(data_dir, "2026-11-02") == {
        ("P1", "2026-10"): n2,
        ("P1", "2026-11"): n,
        ("P2", "2026-10"): z,
        ("P2", "2026-11"): z,
    }
    assert _est(data_dir, "2026-11-03")[("P1", "2026-10")] == n3
    # Nov 5: October is closed for estimates; o5 (October, late) is in November's
    assert _est(data_dir, "2026-11-05") == {("P1", "2026-11"): n2, ("P2", "2026-11"): z}
    # the warehouse keeps the history day by day
    hist = warehouse(
        data_dir,
        "select as_of_date, estimate_amount from estimates where "
        "partner_id = 'P1' and bill_month = '2026-10' order by as_of_date",
    )
    assert hist == [
        (dt.date(2026, 10, 31), D("90.00")),
        (dt.date(2026, 11, 2), D("180.00")),
        (dt.date(2026, 11, 3), D("270.00")),
    ]
    types = dict(
        warehouse(
            data_dir,
            "select column_name, data_type from "
            "information_schema.columns where table_name = 'estimates'",
        )
    )
    assert types["estimate_amount"] == "DECIMAL(38,2)"


def test_estimate_rounding_half_away_from_zero(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day, partners=[partner("P1"), partner("P2"), partner("P3")])
    land(
        data_dir,
        "adjustments",
        day,
        [
            adjustment("a1", amount="-0.005"),
            adjustment("a2", partner_id="P2", amount="0.005"),
            adjustment("a3", partner_id="P3", amount="-0.004999"),
        ],
    )
    land(
        data_dir,
        "orders",
        day,
        [
            order("o1", official_amount="0.005", discount_amount="0", amount="0.005"),
            order(
                "o2",
                order_type="UNSUBSCRIBE",
                official_amount="-0.005",
                discount_amount="0",
                amount="-0.005",
            ),
            order(
                "o3",
                partner_id="P2",
                official_amount="20.0025",
                discount_amount="0.0000",
                amount="20.0025",
            ),
            order(
                "o4",
                partner_id="P2",
                official_amount="0.0025",
                discount_amount="0",
                amount="0.0025",
            ),
        ],
    )
    land(data_dir, "coupons", day, [coupon("c1", amount="50")])  # no effect on estimates
    ingest(data_dir, day)
    est = _est(data_dir, day)
    # components are rounded from their exact sums, then combined
    assert est[("P1", "2026-11")] == (D("0.01"), D("0.01"), D("-0.01"), D("-0.01"))
    assert est[("P2", "2026-11")] == (D("20.01"), D(0), D("0.01"), D("20.02"))
    assert est[("P3", "2026-11")] == (D(0), D(0), D(0), D(0))


# --- section 7: reruns --------------------------------------------------------------------------


def _busy_days(data_dir):
    d1, d2 = "2026-11-03", "2026-11-04"
    land_reference(
        data_dir,
        d1,
        partners=[partner("P1"), partner("P2", currency="USD")],
        prices=[price("S1"), price("SU", currency="USD", unit_price="0.123457")],
    )
    for day in (d1, d2):
        land(
            data_dir,
            "orders",
            day,
            [
                order(f"o{i}-{day}", event_time=f"2026-1{i % 2}-0{1 + i % 3}T0{i % 9}:00:00+08:00")
                for i in range(40)
            ]
            + [order("bad", amount="1")],
        )
        land(
            data_dir,
            "usage",
            day,
            [
                usage(
                    f"u{i}",
                    quantity=f"{i}.{i:03d}",
                    usage_start="2026-11-02T10:00:00+08:00",
                    partner_id="P2" if i % 3 else "P1",
                    sku_code="SU" if i % 3 else "S1",
                )
                for i in range(60)
            ],
            fmt="jsonl",
        )
        land(data_dir, "adjustments", day, [adjustment(f"a-{day}")], fmt="parquet")
        land(data_dir, "coupons", day, [coupon(f"c-{day}")])
        land(data_dir, "payments", day, [payment(f"p-{day}")])
    return d1, d2


def test_rerun_is_identical(data_dir):
    d1, d2 = _busy_days(data_dir)
    ingest(data_dir, d1)
    ingest(data_dir, d2)
    lake1, wh1 = _snapshot(data_dir), _warehouse_dump(data_dir)
    assert lake1[f"landing_date={d2}/usage.parquet"]
    assert file_counts(data_dir, d2)[("usage", "usage.jsonl")] == (60, 0, 0, 60)
    ingest(data_dir, d1)
    ingest(data_dir, d2)
    ingest(data_dir, d2)
    lake2, wh2 = _snapshot(data_dir), _warehouse_dump(data_dir)
    assert wh2 == wh1
    assert sorted(lake2) == sorted(lake1)
    for name in lake1:
        t1 = pq.read_table(pa.BufferReader(lake1[name]))
        t2 = pq.read_table(pa.BufferReader(lake2[name]))
        assert t1.equals(t2), name
        assert lake1[name] == lake2[name], f"{name} is not byte-identical after a rerun"
    # only the committed version is kept: each member table's folder holds its current files
    table = data_dir / "lake" / "ingest"
    for member in lake.members(table):
        on_disk = sorted(str(f) for f in (table / member).glob("landing_date=*/*.parquet"))
        assert on_disk == delta.table_files(table / member), member
        per_date = delta.partition_files(table / member, "landing_date")
        assert all(len(files) == 1 for files in per_date.values()), member
    assert not [p for p in (table / ".staging").iterdir()]


# --- section 2: landing files -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_missing_required_column_fails_the_date_and_keeps_the_old_version(data_dir, fmt):
    day = "2026-11-10"
    land_reference(data_dir, day)
    land(data_dir, "orders", day, [order("o1")])
    ingest(data_dir, day)
    before, wh_before = _snapshot(data_dir), _warehouse_dump(data_dir)
    land(data_dir, "orders", day, [order("o2")])  # would change the date if committed
    row = order("o3")
    del row["amount"]
    land(data_dir, "orders", day, [row], fmt=fmt, name=f"z_broken.{fmt}")
    with pytest.raises(KoobillError) as exc:
        ingest(data_dir, day)
    msg = str(exc.value)
    assert f"z_broken.{fmt}" in msg and "amount" in msg and "missing" in msg
    assert "official_amount" not in msg.replace("'amount'", "")  # names just the missing one
    assert _snapshot(data_dir) == before
    assert _warehouse_dump(data_dir) == wh_before
    assert not [
        p for p in (data_dir / "lake" / "ingest" / ".staging").iterdir() if p.name.endswith(".tmp")
    ]


def test_empty_file_fails_clearly(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    land_bytes(data_dir, "orders", day, "empty.csv", b"")
    with pytest.raises(KoobillError, match=r"empty\.csv: the file is empty \(0 bytes\)"):
        ingest(data_dir, day)
    assert not committed(data_dir / "lake" / "ingest" / f"landing_date={day}")


def test_header_only_and_no_files_are_valid_empty_ingests(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    land(data_dir, "orders", day, [], columns=list(order()))
    land_bytes(data_dir, "usage", day, "empty.jsonl", "\n")
    r = ingest(data_dir, day)
    assert file_counts(data_dir, day)[("orders", "orders.csv")] == (0, 0, 0, 0)
    assert file_counts(data_dir, day)[("usage", "empty.jsonl")] == (0, 0, 0, 0)
    assert lake_rows(data_dir, day, "orders") == []
    assert r.estimates and r.estimates[0]["estimate_amount"] == 0
    # a date whose only folder holds no file is present (the upstream made its folder): an
    # empty ingest. A date with no folder at all is refused: tests/test_landing.py
    (data_dir / "landing" / "payments" / "2026-11-11").mkdir(parents=True)
    r = ingest(data_dir, "2026-11-11", share=None)
    assert not r.empty
    assert all(st.files == [] for st in r.feeds.values())
    for name in (
        "orders",
        "usage",
        "adjustments",
        "coupons",
        "payments",
        "partners",
        "prices",
        "quarantine",
        "files",
    ):
        assert lake_rows(data_dir, "2026-11-11", name) == [], name
    # the snapshot of the earlier date still applies: P1 gets a zero estimate
    assert [e["partner_id"] for e in lake_rows(data_dir, "2026-11-11", "estimates")] == ["P1"]
    assert warehouse(
        data_dir, "select count(*) from ingest_files where landing_date = '2026-11-11'"
    ) == [(0,)]


def test_csv_with_bom_crlf_quotes_and_free_column_order(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    cols = list(reversed(list(order()))) + ["extra_col"]
    land(
        data_dir,
        "orders",
        day,
        [
            order("o1", customer_name='ACME, "the" Co.', extra_col="x"),
            order("o2", customer_name="line\r\nbreak"),
        ],
        columns=cols,
        bom=True,
        newline="\r\n",
    )
    ingest(data_dir, day)
    got = lake_by_id(data_dir, day, "orders")
    assert got["o1"]["customer_name"] == 'ACME, "the" Co.'
    assert got["o2"]["customer_name"] == "line\r\nbreak"
    assert got["o1"]["record_id"] == "o1"  # first column: no BOM left in it
    assert got["o1"]["event_time"] == dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC)
    assert not quarantined(data_dir, day)


def test_jsonl_numbers_keep_exact_decimals(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    land(
        data_dir,
        "orders",
        day,
        [
            order(
                "o1",
                official_amount=D("12345678901234.123456"),
                discount_amount=D("0.000001"),
                amount=D("12345678901234.123455"),
            ),
            order("o2", official_amount=100, discount_amount=D("0.1"), amount=D("99.9")),
            order(
                "o3",
                official_amount=D("0.1"),
                discount_amount=D("0.2"),
                amount=D("-0.1"),
                order_type=3,
            ),
        ],
        fmt="jsonl",
    )
    land(data_dir, "usage", day, [usage("u1", quantity=D("0.333333"))], fmt="jsonl")
    ingest(data_dir, day)
    got = lake_by_id(data_dir, day, "orders")
    assert got["o1"]["official_amount"] == D("12345678901234.123456")
    assert got["o1"]["amount"] == D("12345678901234.123455")
    assert got["o2"]["amount"] == D("99.9")
    assert got["o3"]["order_type"] == "CHANGE"
    assert lake_by_id(data_dir, day, "usage")["u1"]["official_amount"] == D("0.833333")


def test_broken_json_line_is_quarantined_with_its_line_number(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    lines = [
        jsonl_line(order("o1")),
        "",
        jsonl_line(order("o2"))[:-5],
        "[1, 2]",
        jsonl_line(order("o3")),
        "\udcff".encode("utf-8", "surrogateescape"),
    ]
    content = b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines)
    land_bytes(data_dir, "orders", day, "o.jsonl", content)
    ingest(data_dir, day)
    assert sorted(lake_by_id(data_dir, day, "orders")) == ["o1", "o3"]
    q = {r["row"]: r for r in quarantined(data_dir, day)}
    assert sorted(q) == [3, 4, 6]  # line numbers in the file (line 2 is blank)
    assert q[3]["reason"].startswith("not valid JSON") and ";" not in q[3]["reason"]
    assert '"record_id": "o2"' in q[3]["raw"]
    assert "not a JSON object" in q[4]["reason"]
    assert "not valid UTF-8" in q[6]["reason"]
    assert file_counts(data_dir, day)[("orders", "o.jsonl")] == (5, 2, 3, 0)


def test_ragged_csv_row_is_quarantined_with_its_row_number(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    path = land(data_dir, "orders", day, [order(f"o{i}") for i in range(1, 6)])
    lines = path.read_text().splitlines()
    lines[2] += ",surplus"  # record 2
    lines[4] = ",".join(lines[4].split(",")[:5])  # record 4: too few fields
    path.write_text("\n".join(lines) + "\n")
    ingest(data_dir, day)
    assert sorted(lake_by_id(data_dir, day, "orders")) == ["o1", "o3", "o5"]
    q = {r["row"]: r["reason"] for r in quarantined(data_dir, day)}
    assert sorted(q) == [2, 4]
    assert q[2] == "expected 15 fields, found 16"  # the parse error alone
    assert file_counts(data_dir, day)[("orders", "orders.csv")] == (5, 3, 2, 0)


def test_parquet_input(data_dir):
    day = "2026-11-10"
    land(data_dir, "partners", day, [partner()], fmt="parquet")
    land(data_dir, "prices", day, [price(unit_price=D("2.5"))], fmt="parquet")
    land(
        data_dir,
        "orders",
        day,
        [
            order(
                "o1",
                official_amount=D("100"),
                discount_amount=D("10"),
                amount=D("90"),
                event_time=dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC),
            ),
            order(
                "o2",
                official_amount=D("100"),
                discount_amount=D("10"),
                amount=D("90"),
                event_time=dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC),
            ),
        ],
        fmt="parquet",
    )
    land(data_dir, "usage", day, [usage("u1", quantity=D("4"))], fmt="parquet")
    land(
        data_dir,
        "orders",
        day,
        [order("o3", event_time="2026-11-09 10:00:00")],
        fmt="parquet",
        name="naive.parquet",
    )
    ingest(data_dir, day)
    got = lake_by_id(data_dir, day, "orders")
    assert sorted(got) == ["o1", "o2"]
    assert got["o1"]["event_time"] == dt.datetime(2026, 11, 9, 2, tzinfo=dt.UTC)
    assert got["o2"]["_row"] == 2
    assert lake_by_id(data_dir, day, "usage")["u1"]["amount"] == D("9")
    (q,) = quarantined(data_dir, day)
    assert q["file"] == "naive.parquet" and "no UTC offset" in q["reason"]


def test_float_amounts_in_parquet_are_refused(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)
    folder = data_dir / "landing" / "orders" / day
    folder.mkdir(parents=True)
    row = order("o1")
    t = pa.table({k: pa.array([v]) for k, v in row.items() if k != "amount"})
    t = t.append_column("amount", pa.array([90.0], pa.float64()))
    pq.write_table(t, folder / "f.parquet")
    with pytest.raises(KoobillError, match="f.parquet.*amount"):
        ingest(data_dir, day)


# --- the quarantine-share gate -----------------------------------------------------------------


def test_quarantine_share_gate(data_dir):
    """With the default gate a feed-day with > 5% quarantined rows fails and nothing of the
    date is committed. (The Great Expectations feed suites are tested with quality.py.)"""
    day = "2026-11-10"
    land_reference(data_dir, day)
    good = [order(f"o{i}") for i in range(190)]
    land(data_dir, "orders", day, good + [order(f"x{i}", amount="1") for i in range(10)])
    ingest(data_dir, day, share=None)  # 10 of 200 = 5%: at the threshold, accepted
    land(data_dir, "orders", day, [order("y", amount="1")], name="z.csv")
    with pytest.raises(KoobillError, match=r"orders.*quarantined.*threshold"):
        ingest(data_dir, day, share=None)  # 11 of 201 > 5%
    assert (
        "x0" not in lake_by_id(data_dir, day, "orders")
        and len(lake_rows(data_dir, day, "orders")) == 190
    )  # the committed version stays


def test_quarantine_share_gate_leaves_small_feed_days_to_row_quarantine(data_dir):
    """A feed-day with fewer than 100 rows is too small to call its source broken: 1 bad row of
    3 is quarantined with its reason and the date is committed."""
    day = "2026-11-10"
    land_reference(data_dir, day)
    land(data_dir, "orders", day, [order("o1"), order("o2"), order("x", amount="1")])
    ingest(data_dir, day, share=None)
    assert set(lake_by_id(data_dir, day, "orders")) == {"o1", "o2"}
    assert [q["record_id"] for q in quarantined(data_dir, day, "orders")] == ["x"]


# --- the CLI ------------------------------------------------------------------------------------


def test_help_imports_no_heavy_modules():
    code = (
        "import sys; from pipelines.cli import cli\n"
        "try:\n    cli(['--help'], prog_name='koobill')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('airflow', 'great_expectations', 'duckdb', 'pandas', 'pyarrow')"
        " if m in sys.modules]\nprint('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "HEAVY []" in out.stdout, out.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in out.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & {"airflow", "great_expectations", "duckdb", "pandas"}
    assert "Usage: koobill" in out.stdout
    res = subprocess.run([KOOBILL, "--help"], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0 and "ingest" in res.stdout


def test_cli_ingest(data_dir):
    day = "2026-11-10"
    land_reference(data_dir, day)  # reference feeds only: no feed suite (GX) in a subprocess
    res = subprocess.run(
        [KOOBILL, "--data-dir", str(data_dir), "ingest", "--date", day],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "ingested 2026-11-10: 2 rows read, 0 quarantined" in res.stdout
    assert "P1" in res.stdout and "2026-11" in res.stdout
    land_bytes(data_dir, "orders", day, "z.csv", "record_id,amount\nx,1\n")
    res = subprocess.run(
        [KOOBILL, "--data-dir", str(data_dir), "ingest", "--date", day],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1
    assert "z.csv" in res.stderr and "order_id" in res.stderr and "Traceback" not in res.stderr
