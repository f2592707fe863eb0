"""The quality reports open offline (issue 14): every page under ``quality/``, opened in
Chromium with the network cut off, makes no failed request, loads every image and stylesheet it
names, and its "Home" link leads to an index that lists it."""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import ARGS, CHROMIUM, require_chromium
from helpers import ingest, land, land_reference, order, payment

from pipelines.close import close_month

require_chromium()

DAYS = ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


@pytest.fixture(scope="module")
def quality(tmp_path_factory) -> Path:
    from pipelines.config import init_data_dir

    root = init_data_dir(tmp_path_factory.mktemp("offline") / "data")
    land_reference(root, DAYS[0])
    for i, d in enumerate(DAYS):
        land(root, "orders", d, [order(f"o{i}", event_time=f"{d}T10:00:00+08:00")])
    land(root, "payments", DAYS[3], [payment("pay1", paid_at="2026-11-03T09:00:00+08:00")])
    for d in DAYS:
        ingest(root, d)
    close_month(root, "2026-10")
    return root / "quality"


def test_every_report_opens_with_the_network_cut_off(quality: Path):
    from playwright.sync_api import sync_playwright

    pages = sorted(p for p in quality.rglob("*.html"))
    assert quality / "index.html" in pages
    assert any("bills" in p.parts for p in pages) and any("ingest" in p.parts for p in pages)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(offline=True)
            blocked: list[str] = []

            def only_local(route):
                url = route.request.url
                if url.startswith(("file://", "data:")):
                    route.continue_()
                else:
                    blocked.append(url)
                    route.abort()

            context.route("**/*", only_local)
            for path in pages:
                page = context.new_page()
                failed: list[str] = []
                errors: list[str] = []
                page.on("requestfailed", lambda r, failed=failed: failed.append(r.url))
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.goto(path.as_uri(), wait_until="load")
                broken_images = page.evaluate(
                    "Array.from(document.images).filter(i => !i.complete || !i.naturalWidth)"
                    ".map(i => i.src.slice(0, 80))"
                )
                styled = page.evaluate(
                    "Array.from(document.styleSheets).some(s => s.cssRules.length > 20)"
                )
                assert failed == [], (path, failed)
                assert errors == [], (path, errors)
                assert broken_images == [], (path, broken_images)
                assert styled, f"{path} has no stylesheet of its own"
                if path.name != "index.html":
                    home = page.get_attribute("a:has-text('Home')", "href")
                    assert home and (path.parent / home).resolve() == quality / "index.html"
                page.close()
            assert blocked == []
        finally:
            browser.close()
    listing = (quality / "index.html").read_text(encoding="utf-8")
    for path in pages:
        if path.name != "index.html":
            assert path.relative_to(quality).as_posix() in listing, path
