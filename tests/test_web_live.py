"""Readers never block writers: an ingest and a close run while clients load the page in a loop
from a real uvicorn server; both succeed without waiting for a lock (the wait is 0), every
answer is 200, and the next request after the close shows the closed bill."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from helpers import land, land_reference, order, partner
from live_server import live_server
from web_helpers import csrf_of

from pipelines import accounts
from pipelines.close import close_month
from pipelines.ingest import ingest_date
from pipelines.web.app import create_app

MONTH = "2026-11"
DAYS = ["2026-11-28", "2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03"]
LAST = "2026-12-04"


def land_day(d, day: str, n: int) -> None:
    rows = [
        order(
            f"o-{day}-{i}",
            partner_id="P1",
            customer_id=f"C{i % 7}",
            customer_name=f"客户 {i % 7}",
            event_time=f"{min(day, '2026-11-30')}T10:00:00+08:00",
        )
        for i in range(n)
    ]
    land(d, "orders", day, rows)


@pytest.fixture
def site(data_dir):
    land_reference(data_dir, DAYS[0], partners=[partner("P1")])
    for day in DAYS:
        land_day(data_dir, day, 30)
        ingest_date(data_dir, day, max_quarantine_share=1.0)
    land_day(data_dir, LAST, 30)
    accounts.add_user(data_dir, "p1", "partner", "p1-password", "P1")
    return data_dir


def client_loop(base: str, stop: threading.Event, results: list, paths: list[str]) -> None:
    with httpx.Client(base_url=base, timeout=30) as c:
        page = c.get("/login")
        c.post(
            "/login",
            data={"username": "p1", "password": "p1-password", "csrf_token": csrf_of(page.text)},
        )
        while not stop.is_set():
            for path in paths:
                r = c.get(path)
                results.append((path, r.status_code, time.monotonic()))


def test_ingest_and_close_while_pages_load(site):
    root = site
    paths = [
        "/",
        f"/bills/{MONTH}",
        f"/bills/{MONTH}/by-customer",
        "/exports",
        "/v2/bills/partner-bills/amount-due",
        "/v2/bills/partner-bills/bill-cycles",
    ]
    with live_server(create_app(root)) as base:
        stop = threading.Event()
        results: list = []
        clients = [
            threading.Thread(target=client_loop, args=(base, stop, results, paths))
            for _ in range(4)
        ]
        for t in clients:
            t.start()
        try:
            deadline = time.monotonic() + 60
            while len(results) < 4 * len(paths) and time.monotonic() < deadline:
                time.sleep(0.1)  # every client signed in and loading pages
            before = len(results)
            ingest = ingest_date(root, LAST, max_quarantine_share=1.0)  # lock wait is 0
            closed = close_month(root, MONTH)
            done_at = time.monotonic()
            time.sleep(1.0)
        finally:
            stop.set()
            for t in clients:
                t.join(30)
        assert ingest is not None and closed.changed
        assert before > 0 and len(results) > before  # pages were loading throughout
        bad = [r for r in results if r[1] != 200]
        assert not bad, bad[:5]
        after = [r for r in results if r[2] > done_at]
        assert after
    # the next request after the close shows the closed month with its invoice
    with live_server(create_app(root)) as base, httpx.Client(base_url=base) as c:
        page = c.get("/login")
        c.post(
            "/login",
            data={"username": "p1", "password": "p1-password", "csrf_token": csrf_of(page.text)},
        )
        html = c.get(f"/bills/{MONTH}").text
        assert "INV-P1-202611" in html


def test_a_publication_shows_on_the_next_request(site):
    """While a reader's cursor on the old file is still open, a new request sees the new file."""
    from pipelines.web.data import reader

    root = site

    def kind(db) -> str:
        return {m["bill_month"]: m["kind"] for m in db.months("P1")}[MONTH]

    with reader(root) as old:
        assert kind(old) == "open"
        close_month(root, MONTH, force=True)
        with reader(root) as new:
            assert kind(new) == "closed"
        assert kind(old) == "open"  # the old reader kept its snapshot
