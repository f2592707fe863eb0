"""The page in a real browser (Playwright driving Debian's Chromium): a partner and finance
sign in, walk every pane in English and Chinese, switch months and regions, open View More,
download the invoice and an export; a screenshot of each page goes to test-output/browser/."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from chromium import ARGS, CHROMIUM, require_chromium
from web_helpers import CLOSED, OPEN, PASSWORDS, RESTATED, A, B, build

from pipelines.web.app import create_app

OUT = Path(__file__).resolve().parent.parent / "test-output" / "browser"

require_chromium()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    from live_server import live_server

    root = tmp_path_factory.mktemp("web-browser") / "data"
    build(root)
    with live_server(create_app(root)) as url:
        yield url, root


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser, base: str, locale: str = "en-US"):
    context = browser.new_context(
        base_url=base, locale=locale, accept_downloads=True, viewport={"width": 1280, "height": 900}
    )
    return context.new_page()


def sign_in(page, user: str) -> None:
    page.goto("/")
    assert "/login" in page.url
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("button[type=submit].primary")
    page.wait_for_url("**/")


def shot(page, name: str) -> None:
    page.evaluate("document.fonts.ready.then(() => true)")
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=True)


def test_partner_walks_every_pane_in_english(browser, base_url):
    base, root = base_url
    page = new_page(browser, base)
    sign_in(page, "alice")
    assert page.get_by_role("heading", name="Amount Due").is_visible()
    assert page.get_by_test_id("amount-to-be-paid").inner_text().startswith("CN¥")
    assert "does not cover taxes" in page.inner_text("#monthly-bills")
    # Repay opens the payment instructions with the invoice numbers as references
    assert not page.get_by_test_id("repay-reference").is_visible()
    page.click("#repay summary")
    assert "INV-pa-cn-202609" in page.get_by_test_id("repay-reference").inner_text()
    shot(page, "en-partner-home")

    # the month picker: the closed, restated month
    page.select_option("#monthly-bills select[name=month]", RESTATED)
    page.click("#monthly-bills button[type=submit]")
    page.wait_for_url(f"**/bills/{RESTATED}")
    assert page.get_by_test_id("amount-due").inner_text().startswith("CN¥")
    assert "Versions" in page.inner_text("main")
    shot(page, "en-partner-month")

    # the invoice downloads, byte for byte the exported document
    with page.expect_download() as dl:
        page.get_by_test_id("invoice-link").click()
    data = Path(dl.value.path()).read_bytes()
    assert data.startswith(b"%PDF")
    assert data == (root / "exports" / A / RESTATED / f"bill-{A}-{RESTATED}-v2.pdf").read_bytes()

    # By Product, then filtered by region, with the Others area
    page.click("nav.tabs >> text=By Product")
    assert page.locator("svg.chart").count() == 1
    page.select_option("#region", "ap-southeast-1")
    page.click("#by-product button[type=submit]")
    page.wait_for_url("**region=ap-southeast-1")
    assert "弹性云服务器" not in page.inner_text("#by-product table >> nth=0")
    assert page.get_by_test_id("others-refunds").inner_text() == "CN¥10.00"
    shot(page, "en-partner-by-product")

    # By Customer, page 2, View More, sort by amount
    page.click("nav.tabs >> text=By Customer")
    assert page.get_by_test_id("total-amount").inner_text().startswith("CN¥")
    shot(page, "en-partner-by-customer")
    page.click("a[rel=next]")
    assert "Page 2 of 3" in page.inner_text(".pager")
    page.click("nav.tabs >> text=By Customer")
    page.locator("a.view-more").first.click()
    page.wait_for_url("**/customers/C001*")
    assert "Page 1 of 3" in page.inner_text(".pager")
    page.click("th >> text=Amount")
    page.click("th >> text=Amount")  # the second click sorts descending
    assert page.locator("tbody tr >> nth=0 >> td >> nth=7").inner_text() == "CN¥240.13"
    shot(page, "en-partner-view-more")

    # the open month: the estimate, its as-of date and the chart day by day
    page.goto(f"/bills/{OPEN}")
    assert "does not cover taxes and has not been deducted using cash coupons" in page.inner_text(
        "#estimate"
    )
    assert page.locator("#estimate svg.chart").count() == 1
    shot(page, "en-partner-estimate")

    # Export, then download from the Export History and check the bytes
    page.click("header nav >> text=Export")
    page.select_option("#export-month", CLOSED)
    page.click("#export button[type=submit]")
    page.wait_for_url("**/exports?*")
    assert "Export finished" in page.inner_text("main")
    shot(page, "en-partner-exports")
    link = page.locator("a.download").first
    with page.expect_download() as dl:
        link.click()
    got = Path(dl.value.path()).read_bytes()
    from pipelines.exports import list_exports

    sha = {e["sha256"] for e in list_exports(root, partner=A)}
    assert hashlib.sha256(got).hexdigest() in sha
    # nothing of the other partner anywhere on the way
    for path in ["/", f"/bills/{RESTATED}", "/exports"]:
        page.goto(path)
        assert B not in page.content()


def test_partner_walks_every_pane_in_chinese(browser, base_url):
    base, _ = base_url
    page = new_page(browser, base, locale="zh-CN")
    page.set_extra_http_headers({"Accept-Language": "zh-CN,zh;q=0.9"})
    sign_in(page, "alice")
    assert page.get_by_role("heading", name="应付金额").is_visible()
    assert "不含税费，且未扣除现金券" in page.inner_text("#monthly-bills")
    assert page.get_by_test_id("amount-to-be-paid").inner_text().startswith("¥")
    shot(page, "zh-partner-home")
    for path, words, name in [
        (f"/bills/{RESTATED}", "发票号", "zh-partner-month"),
        (f"/bills/{RESTATED}/by-product", "其他", "zh-partner-by-product"),
        (f"/bills/{RESTATED}/by-customer", "总金额", "zh-partner-by-customer"),
        (f"/bills/{RESTATED}/customers/C001", "来源月份", "zh-partner-view-more"),
        (f"/bills/{OPEN}", "每日预估", "zh-partner-estimate"),
        ("/exports", "导出记录", "zh-partner-exports"),
    ]:
        page.goto(path)
        assert words in page.inner_text("main"), path
        assert "2026年" in page.inner_text("main")
        shot(page, name)
    # the switch to English sticks
    page.click("text=English")
    assert "Export History" in page.inner_text("main")
    page.goto("/")
    assert page.get_by_role("heading", name="Amount Due").is_visible()


def test_finance_picks_a_partner(browser, base_url):
    base, _ = base_url
    page = new_page(browser, base)
    sign_in(page, "fiona")
    page.select_option("#partner", B)
    page.click("form.picker button")
    assert "Globex Secret Corp" in page.inner_text("h1")
    page.select_option("#monthly-bills select[name=month]", RESTATED)
    page.click("#monthly-bills button[type=submit]")
    page.wait_for_url(f"**/bills/{RESTATED}?partner={B}")
    assert page.get_by_test_id("amount-due").inner_text() == "$0.00"
    assert "amount due is 0" in page.inner_text("main")
    shot(page, "en-finance-negative-bill")
    page.goto(f"/bills/{CLOSED}?partner={A}")
    assert "INV-pa-cn-202609" in page.inner_text("main")
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    page.goto("/")
    assert "/login" in page.url
