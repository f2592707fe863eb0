"""Estimate variance (spec section 9): the estimate as of the cutoff against the final bill,
term by term, on hand-computed cases; the terms add up to the difference exactly."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from helpers import coupon, ingest, land, order, partner, price

from pipelines.close import close_month
from pipelines.variance import TERMS

MONTH = "2026-11"
D = Decimal


def base(d: Path) -> Path:
    d.mkdir(parents=True)
    land(d, "partners", "2026-11-30", [partner("P1")])  # tax 6%
    land(d, "prices", "2026-11-30", [price()])
    land(
        d,
        "orders",
        "2026-11-30",
        [order("o1", amount="100", official_amount="100", discount_amount="0")],
    )
    land(d, "coupons", "2026-11-30", [coupon("c1", amount="10")])
    return d


def terms(d: Path, version: int) -> dict[str, Decimal]:
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    rows = con.execute(
        "select term, amount, estimate_amount, bill_amount from estimate_variance "
        "where partner_id = 'P1' and bill_month = ? and version = ? order by term_no",
        [MONTH, version],
    ).fetchall()
    con.close()
    assert [r[0] for r in rows] == list(TERMS)
    est, bill = rows[0][2], rows[0][3]
    assert sum((r[1] for r in rows), D(0)) == bill - est  # exact, to the cent
    return {"estimate": est, "bill": bill, **{r[0]: r[1] for r in rows}}


@pytest.fixture(scope="module")
def forced(tmp_path_factory) -> Path:
    """November closed with --force while 2026-12-03 was missing."""
    d = base(tmp_path_factory.mktemp("variance") / "data")
    for day in ("2026-11-30", "2026-12-01", "2026-12-02", "2026-12-04"):
        ingest(d, day, allow_empty=True)
    close_month(d, MONTH, force=True)
    return d


def test_coupon_and_tax_explain_the_first_version(forced):
    t = terms(forced, 1)
    # estimate as of the cutoff 12-04: 100.00 (no tax, no coupon)
    # bill: 100 - coupon 10 = 90; tax round2(90 * 0.06) = 5.40; bill 95.40
    assert (t["estimate"], t["bill"]) == (D("100.00"), D("95.40"))
    assert t["coupons"] == D("-10.00")
    assert t["tax"] == D("5.40")
    assert t["landed_after_estimate"] == t["late_records"] == t["restatement"] == 0
    assert t["unexplained"] == 0


def test_a_late_record_and_a_restatement(forced, tmp_path):
    d = shutil.copytree(forced, tmp_path / "data", symlinks=True)
    # the missing date arrives: a late record from October (landed after October's cutoff, so
    # billed in November) and an on-time November record
    land(
        d,
        "orders",
        "2026-12-03",
        [
            order(
                "late1",
                amount="7.005",
                official_amount="7.005",
                discount_amount="0",
                event_time="2026-10-20T10:00:00+08:00",
            ),
            order(
                "new1",
                amount="3",
                official_amount="3",
                discount_amount="0",
                event_time="2026-11-15T10:00:00+08:00",
            ),
        ],
    )
    ingest(d, "2026-12-03")
    assert close_month(d, MONTH, restate=True).changed
    t = terms(d, 2)
    # v2: consume round2(100 + 7.005 + 3) = 110.01; coupon 10; tax round2(100.01 * 0.06) =
    # round2(6.0006) = 6.00; bill 106.01. The estimate stays the one v1 was compared with: 100.
    assert (t["estimate"], t["bill"]) == (D("100.00"), D("106.01"))
    # late: v1's lines with v2's late line: round2(100 + 7.005) - 100 = 7.01
    assert t["late_records"] == D("7.01")
    # the rest of the restatement: 110.01 - 107.01 = 3.00
    assert t["restatement"] == D("3.00")
    assert (t["coupons"], t["tax"]) == (D("-10.00"), D("6.00"))
    assert t["landed_after_estimate"] == 0 and t["unexplained"] == 0
    # version 1's rows are kept as they were made
    assert terms(d, 1) == terms(forced, 1)


def test_records_the_estimate_missed(tmp_path):
    d = base(tmp_path / "data")
    # 12-03 is ingested after 12-04: the estimate as of the cutoff was made without it
    land(
        d,
        "orders",
        "2026-12-03",
        [order("o2", amount="3", official_amount="3", discount_amount="0")],
    )
    for day in ("2026-11-30", "2026-12-01", "2026-12-02", "2026-12-04", "2026-12-03"):
        ingest(d, day, allow_empty=True)
    close_month(d, MONTH)
    t = terms(d, 1)
    # bill: 103 - 10 = 93; tax 5.58; bill 98.58; estimate 100 -> difference -1.42
    assert (t["estimate"], t["bill"]) == (D("100.00"), D("98.58"))
    assert t["landed_after_estimate"] == D("3.00")
    assert (t["coupons"], t["tax"]) == (D("-10.00"), D("5.58"))
    assert t["late_records"] == t["restatement"] == t["unexplained"] == 0


def test_the_month_page_shows_the_variance(forced, tmp_path):
    import re

    from fastapi.testclient import TestClient
    from web_helpers import csrf_of

    from pipelines import accounts
    from pipelines.web.app import create_app

    d = shutil.copytree(forced, tmp_path / "data", symlinks=True)
    accounts.add_user(d, "pat", "partner", "a long password for pat", "P1")
    with TestClient(create_app(d)) as c:
        page = c.get("/login")
        c.post(
            "/login",
            data={
                "username": "pat",
                "password": "a long password for pat",
                "csrf_token": csrf_of(page.text),
                "next": "/",
            },
        )
        for lang, words in (("en", "Estimate vs bill"), ("zh", "预估与账单对比")):
            html = c.get(f"/bills/{MONTH}?lang={lang}").text
            table = html[html.index('data-testid="variance"') :].split("</table>")[0]
            cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", table))
            assert words in html
            # estimate 100.00, coupons -10.00, tax 5.40, bill 95.40 (zero terms hidden)
            for figure in ("100.00", "10.00", "5.40", "95.40"):
                assert figure in cells, (lang, cells)
            assert 'data-term="late_records"' not in table
