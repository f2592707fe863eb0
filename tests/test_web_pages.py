"""What a partner and finance see on the page and in the API: amounts to the cent, formats,
languages, paging and sorting, invoices and exports downloaded byte for byte."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from web_helpers import CLOSED, OPEN, RESTATED, A, B, build, csrf_of, login

from pipelines.web.app import create_app

WEB = Path(__file__).resolve().parent.parent / "pipelines" / "web"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-pages") / "data"
    return root, build(root)


@pytest.fixture
def alice(site):
    with TestClient(create_app(site[0])) as c:
        login(c, "alice")
        yield c


@pytest.fixture
def bob(site):
    with TestClient(create_app(site[0])) as c:
        login(c, "bob")
        yield c


def cny(x: Decimal) -> str:
    return f"{'-' if x < 0 else ''}CN¥{abs(x):,.2f}"


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_amount_due_pane(alice, site):
    _, facts = site
    # Sept and Oct bills count as of 2026-11-06; one payment of 1,000.00 settles the oldest first
    due = facts["a_sep"]["amount_due"] + facts["a_oct"]["amount_due"] - Decimal("1000.00")
    page = text(alice.get("/").text)
    assert f"Amount to be paid CN¥{due:,.2f}" in page
    assert "Unpaid Bills" in page and "Payment records" in page and "pay-a-1" in page
    assert "INV-pa-cn-202609" in page and "INV-pa-cn-202610-V2" in page
    assert "Credit balance CN¥0.00" in page
    # Repay shows the bank details and the invoices as references
    assert "Payment instructions" in page and "INV-pa-cn-202609, INV-pa-cn-202610-V2" in page
    # Monthly Bills: closed months, the open month's estimate and the required words
    assert "does not cover taxes and has not been deducted using cash coupons" in page
    assert "CN¥6,000.00" in page  # estimate of 2026-11 as of 2026-11-06 (1,000 a day)
    assert "Nov 6, 2026" in page
    assert page.count("<svg") == 0 and alice.get("/").text.count("<svg") == 2


def test_closed_month_amount_due_area_with_versions(alice, site):
    _, facts = site
    b = facts["a_oct"]
    html = alice.get(f"/bills/{RESTATED}").text
    page = text(html)
    for label, key in [
        ("Amount due", "amount_due"),
        ("Expenditures", "consume_amount"),
        ("Refunds", "refunds"),
        ("Adjustments", "adjustments"),
        ("Cash coupons", "coupon_amount"),
        ("Tax", "tax_amount"),
    ]:
        assert f"{label} {cny(b[key])}" in page, label
    assert b["coupon_amount"] == Decimal("30.00")
    assert 'href="/invoices/INV-pa-cn-202610-V2"' in html
    assert "Versions" in page and "superseded" in page and "INV-pa-cn-202610 " in page
    assert "Supersedes INV-pa-cn-202610 " in page
    assert "(UTC+08:00)" in page


def test_negative_bill_shows_amount_due_zero(bob):
    page = text(bob.get(f"/bills/{RESTATED}").text)
    assert "Amount due $0.00" in page and "Bill amount -$100.00" in page
    assert "amount due is 0" in page and "No invoice" in page


def test_open_month_shows_the_estimate(alice):
    page = text(alice.get(f"/bills/{OPEN}").text)
    assert "Bill estimate" in page and "CN¥6,000.00" in page
    assert "does not cover taxes and has not been deducted using cash coupons" in page
    assert "As of Nov 6, 2026" in page
    assert alice.get(f"/bills/{OPEN}/by-customer").status_code == 200
    assert alice.get("/bills/2031-01").status_code == 404


def test_by_product_with_region_filter_and_others(alice):
    html = alice.get(f"/bills/{RESTATED}/by-product").text
    page = text(html)
    assert "云数据库服务" in page and "弹性云服务器" in page and "Others" in page
    assert "<svg" in html  # the chart beside the table
    all_regions = re.search(r"云数据库服务.*?CN¥([\d,]+\.\d\d)", page).group(1)
    north = text(alice.get(f"/bills/{RESTATED}/by-product?region=cn-north-4").text)
    south = text(alice.get(f"/bills/{RESTATED}/by-product?region=ap-southeast-1").text)
    n = Decimal(re.search(r"云数据库服务.*?CN¥([\d,]+\.\d\d)", north).group(1).replace(",", ""))
    s = Decimal(re.search(r"云数据库服务.*?CN¥([\d,]+\.\d\d)", south).group(1).replace(",", ""))
    assert n + s == Decimal(all_regions.replace(",", ""))
    assert "弹性云服务器" not in south  # only in cn-north-4
    assert 'data-testid="others-refunds">CN¥10.00' in html
    assert 'data-testid="others-adjustments">-CN¥20.00' in html


def test_by_customer_total_zero_switch_and_paging(alice, site):
    html = alice.get(f"/bills/{RESTATED}/by-customer").text
    page = text(html)
    b = facts_total = site[1]["a_oct"]
    total = b["consume_amount"] - b["refunds"] + b["adjustments"]
    assert f"Total Amount CN¥{total:,.2f}" in page
    assert "零消费客户" not in page  # C045 nets to zero: hidden by default
    assert "Page 1 of 3" in page  # 44 customers + the partner-level row, 20 a page
    assert html.count('class="view-more"') == 20
    shown = text(alice.get(f"/bills/{RESTATED}/by-customer?zero=1&page=3").text)
    assert "零消费客户" in shown and "Partner-level adjustments" in shown
    assert facts_total


def test_view_more_pages_and_sorts_the_customers_lines(alice):
    base = f"/bills/{RESTATED}/customers/C001"
    page = text(alice.get(base).text)
    assert "北京星云科技有限公司" in page and "Lines 120" in page and "Page 1 of 3" in page
    desc = alice.get(base + "?sort=amount&dir=desc&size=20").text
    amounts = re.findall(r'<td class="num">CN¥([\d,]+\.\d+)</td>', desc)
    assert amounts[0] == "240.13" and len(amounts) == 20  # 240.125 shown half-up
    last = text(alice.get(base + "?sort=amount&dir=desc&size=20&page=6").text)
    assert "Page 6 of 6" in last
    # an unknown sort column falls back to the line order, never reaches SQL
    assert alice.get(base + "?sort=amount;drop table bills").status_code == 200


def test_invoice_download_exports_on_demand(alice, site):
    root, _ = site
    r = alice.get("/invoices/INV-pa-cn-202609")  # never exported: made now
    assert r.status_code == 200 and r.content.startswith(b"%PDF")
    assert r.headers["content-type"] == "application/pdf"
    made = list((root / "exports" / A / CLOSED).glob("*.pdf"))
    assert len(made) == 1 and made[0].read_bytes() == r.content
    r = alice.get("/invoices/INV-pa-cn-202610-V2")  # exported by the fixture
    assert (
        r.content == (root / "exports" / A / RESTATED / f"bill-{A}-{RESTATED}-v2.pdf").read_bytes()
    )
    # the superseded version's invoice is its own document
    r = alice.get("/invoices/INV-pa-cn-202610")
    assert r.status_code == 200 and r.content.startswith(b"%PDF")


def test_export_and_download_from_export_history(bob, site):
    root, _ = site
    page = bob.get("/exports")
    r = bob.post(
        "/exports",
        data={"month": RESTATED, "formats": ["pdf", "xlsx"], "csrf_token": csrf_of(page.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303
    html = bob.get(r.headers["location"]).text
    assert "Export finished: 2 files." in text(html)
    ids = re.findall(r'href="/exports/([^"?]+)"', html)
    assert ids
    from pipelines.exports import list_exports

    rows = {e["export_id"]: e for e in list_exports(root, partner=B)}
    for export_id in ids:
        got = bob.get(f"/exports/{export_id}")
        assert got.status_code == 200
        assert hashlib.sha256(got.content).hexdigest() == rows[export_id]["sha256"]
    xlsx = [i for i in ids if rows[i]["format"] == "xlsx"][0]
    assert bob.get(f"/exports/{xlsx}").content[:2] == b"PK"


def test_export_history_names_focus_files(bob, site):
    from pipelines.exports import export_month

    root, _ = site
    export_month(root, CLOSED, partner=B, formats=["focus"], lock_wait_s=0)
    page = text(bob.get("/exports").text)
    assert "FOCUS 1.2 cost and usage (Parquet)" in page
    assert "FOCUS 1.2 cost and usage (CSV)" in page
    assert "Bill details (PARQUET)" not in page and "Bill details (CSV)" not in page
    zh = text(bob.get("/exports?lang=zh").text)
    assert "FOCUS 1.2 成本和用量 (Parquet)" in zh and "FOCUS 1.2 成本和用量 (CSV)" in zh


def test_chinese_from_accept_language_and_switch(site):
    with TestClient(create_app(site[0])) as c:
        login(c, "alice")
        zh = text(c.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).text)
        assert "应付金额" in zh and "月度账单" in zh and "还款记录" in zh
        assert "不含税费，且未扣除现金券" in zh
        assert "¥" in zh and "2026年11月6日" in zh and "北京时间" in zh
        en = text(c.get("/?lang=en", headers={"Accept-Language": "zh-CN"}).text)
        assert "Amount Due" in en  # the switch wins over the browser, and sticks
        assert "Amount Due" in text(c.get("/", headers={"Accept-Language": "zh-CN"}).text)
        zh2 = text(c.get(f"/bills/{RESTATED}/by-customer?lang=zh").text)
        assert "总金额" in zh2 and "查看更多" in zh2


def test_every_label_has_a_chinese_translation():
    from pipelines.web.i18n import translations

    zh = translations("zh")
    sources = [*(WEB / "templates").glob("*.html"), WEB / "pages.py", WEB / "views.py"]
    found = set()
    for path in sources:
        body = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'\bt\("([^"]+)"', body))
        found |= set(re.findall(r'_fmt\(request\)\(\s*"([^"]+)"', body))
    assert len(found) > 80
    missing = [s for s in found if zh.gettext(s) == s]
    assert not missing


def test_api_fields_and_money_strings(alice, site):
    _, facts = site
    b = facts["a_oct"]
    r = alice.get(f"/v2/bills/partner-bills/postpaid-bill-summary?bill_cycle={RESTATED}").json()
    assert r["bill_cycle"] == RESTATED and r["currency"] == "CNY"
    assert r["consume_amount"] == f"{b['consume_amount']:.2f}"
    assert r["initial_amount_due"] == f"{b['bill_amount']:.2f}"
    assert r["tax_amount"] == f"{b['tax_amount']:.2f}" and isinstance(r["refunds"], str)
    assert [v["version"] for v in r["versions"]] == [2, 1]
    due = alice.get("/v2/bills/partner-bills/amount-due").json()
    assert [u["invoice_no"] for u in due["unpaid_bills"]] == [
        "INV-pa-cn-202609",
        "INV-pa-cn-202610-V2",
    ]
    est = alice.get(f"/v2/bills/partner-bills/estimates?bill_cycle={OPEN}").json()
    assert est["estimate_amount"] == "6000.00" and len(est["history"]) == 6
    cust = alice.get(
        f"/v2/bills/partner-bills/by-customer?bill_cycle={RESTATED}&limit=5&offset=40"
    ).json()
    # 44 customers and the partner-level adjustments; C045 (total 0) hidden
    assert cust["total_count"] == 45 and len(cust["customers"]) == 5
    assert cust["customers"][-1]["customer_id"] is None
    lines = alice.get(
        f"/v2/bills/partner-bills/customers/C001/bill-lines?bill_cycle={RESTATED}&limit=7&offset=7&sort=amount&order=desc"
    ).json()
    assert lines["total_count"] == 120 and len(lines["bill_lines"]) == 7
    assert lines["bill_lines"][0]["amount"] == "226.125000"  # the 8th largest, exact
    prod = alice.get(
        f"/v2/bills/partner-bills/by-product?bill_cycle={RESTATED}&region=cn-north-4"
    ).json()
    assert prod["others"] == {"refunds": "10.00", "adjustments": "-20.00"}
    hist = alice.get("/v2/bills/partner-bills/export-history").json()
    assert hist["total_count"] >= 2 and all(
        e["download_url"].startswith("/exports/") for e in hist["exports"]
    )


def test_users_commands(site, tmp_path):
    from pipelines.cli import cli

    root = tmp_path / "d"
    (root / "landing").mkdir(parents=True)
    run = CliRunner().invoke
    r = run(
        cli,
        [
            "--data-dir",
            str(root),
            "users",
            "add",
            "--username",
            "p1",
            "--role",
            "partner",
            "--partner",
            "P1",
            "--password-stdin",
        ],
        input="secret-pass\n",
    )
    assert r.exit_code == 0, r.output
    r = run(
        cli,
        [
            "--data-dir",
            str(root),
            "users",
            "add",
            "--username",
            "f",
            "--role",
            "finance",
            "--password-stdin",
        ],
        input="short\n",
    )
    assert r.exit_code == 1 and "too short" in r.output
    r = run(
        cli,
        [
            "--data-dir",
            str(root),
            "users",
            "add",
            "--username",
            "p2",
            "--role",
            "partner",
            "--partner",
            "../x",
            "--password-stdin",
        ],
        input="secret-pass\n",
    )
    assert r.exit_code == 1
    assert (
        run(cli, ["--data-dir", str(root), "users", "disable", "--username", "p1"]).exit_code == 0
    )
    out = run(cli, ["--data-dir", str(root), "users", "list"]).output
    assert "p1" in out and "disabled" in out and "secret-pass" not in out
    r = run(
        cli,
        [
            "--data-dir",
            str(root),
            "users",
            "reset-password",
            "--username",
            "p1",
            "--password-stdin",
        ],
        input="another-pass\n",
    )
    assert r.exit_code == 0
    from pipelines.accounts import verify_password

    assert verify_password(root, "p1", "another-pass") is None  # still disabled
    run(cli, ["--data-dir", str(root), "users", "disable", "--username", "p1", "--enable"])
    assert verify_password(root, "p1", "another-pass").partner_id == "P1"
    assert verify_password(root, "p1", "secret-pass") is None


def test_export_while_a_writer_holds_the_lock_says_busy(bob, site, monkeypatch):
    from pipelines.lake import data_dir_lock

    root, _ = site
    monkeypatch.setenv("KOOBILL_WEB_EXPORT_LOCK_WAIT_S", "0.5")
    page = bob.get("/exports")
    with data_dir_lock(root, what="a test writer"):
        r = bob.post(
            "/exports",
            data={"month": RESTATED, "formats": ["pdf"], "csrf_token": csrf_of(page.text)},
        )
        assert bob.get("/exports").status_code == 200  # the page keeps answering meanwhile
    assert r.status_code == 503 and r.headers["retry-after"] == "30"
    assert "Another koobill job" in text(r.text)


def test_demo_users_sign_in(site):
    from pipelines.accounts import create_demo_users

    root, _ = site
    users = create_demo_users(root, [A, B])
    assert [(u, role, p) for u, role, p, _ in users] == [
        ("finance", "finance", None),
        (A, "partner", A),
        (B, "partner", B),
    ]
    with TestClient(create_app(root)) as c:
        login(c, B, users[2][3])
        assert c.get(f"/bills/{RESTATED}").status_code == 200
        assert c.get(f"/bills/{RESTATED}?partner={A}").status_code == 404


def test_finance_names_the_partner_in_the_api(site):
    import base64

    from web_helpers import PASSWORDS

    auth = base64.b64encode(f"fiona:{PASSWORDS['fiona']}".encode()).decode()
    with TestClient(create_app(site[0])) as c:
        h = {"Authorization": f"Basic {auth}"}
        r = c.get("/v2/bills/partner-bills/amount-due", headers=h)
        assert r.status_code == 400 and "partner_id" in r.json()["error_msg"]
        r = c.get(f"/v2/bills/partner-bills/amount-due?partner_id={B}", headers=h)
        assert r.status_code == 200 and r.json()["partner_id"] == B


def test_by_customer_total_is_the_bills_figure_when_rows_round_apart(tmp_path):
    """Three customers of 0.005 each round to 0.01 apiece (0.03 summed), while the bill's
    expenditures round their exact sum, 0.015, to 0.02: the Total Amount area shows the bill."""
    from fastapi.testclient import TestClient
    from web_helpers import _insert, _line, bill_of

    from pipelines import accounts, schema
    from pipelines.config import init_data_dir
    from pipelines.warehouse import open_warehouse, publish
    from pipelines.web.app import create_app

    root = init_data_dir(tmp_path / "data")
    lines = [
        {
            **_line(i, "consume", "USAGE", f"c{i}", f"C{i}", "p1", "P1", "r1", "0.005"),
            "partner_id": "pr",
            "bill_month": "2026-10",
            "version": 1,
            "currency": "CNY",
        }
        for i in (1, 2, 3)
    ]
    bill = bill_of("pr", "Rounding Co", "CNY", "0", "2026-10", 1, "closed", lines)
    assert bill["consume_amount"] == Decimal("0.02")
    con = open_warehouse(root)
    try:
        _insert(con, schema.BILLS, [bill])
        _insert(con, schema.BILL_LINES, lines)
    finally:
        con.close()
    publish(root)
    accounts.add_user(root, "rita", "partner", "a long password", "pr")
    client = TestClient(create_app(root))
    answer = client.get(
        "/v2/bills/partner-bills/by-customer?bill_cycle=2026-10",
        auth=("rita", "a long password"),
    ).json()
    assert [c["total_amount"] for c in answer["customers"]] == ["0.01", "0.01", "0.01"]
    assert answer["total_amount"] == "0.02"
