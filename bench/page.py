"""Page latency: p50/p95 of `/`, `/bills/<M>` and `/bills/<M>/by-customer` for a partner with
1,000 customers and 100,000 bill lines, 20 concurrent clients, while an ingest runs.

    .venv/bin/python bench/page.py [--customers 1000] [--lines 100000] [--clients 20] [--seconds 10]

The server is `koobill serve` in its own process (as in production); the clients are asyncio
tasks of this process, each with its own HTTP connection; an ingest of generated landing dates runs in
a loop in a third process. The figures go into bench/results.json under "page" (other keys are
kept) and are printed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MONTH = "2026-10"
PARTNER = "P-BENCH"
PASSWORD = "bench-password"


def build(root: Path, customers: int, lines: int) -> None:
    """A generated landing zone (for the ingest that runs meanwhile) and one big partner."""
    from pipelines.accounts import add_user
    from pipelines.warehouse import open_warehouse, publish

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    subprocess.run(
        [
            BIN / "koobill",
            "--data-dir",
            root,
            "generate",
            "--start",
            "2026-11-01",
            "--end",
            "2026-11-08",
            "--usage-rows-per-day",
            "20000",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [BIN / "koobill", "--data-dir", root, "ingest", "--date", "2026-11-01", "--quiet"],
        check=True,
        capture_output=True,
    )
    con = open_warehouse(root)
    try:
        con.execute("begin transaction")
        con.execute(
            """
            insert into bill_lines (partner_id, bill_month, version, line_no, component,
                charge_type, customer_id, customer_name, product_id, product_name, sku_code,
                region, source_month, late, description, currency, quantity, official_amount,
                discount_amount, amount, record_count)
            select $p, $m, 1, i::integer, 'consume', 'USAGE', 'C' || lpad((i % $c)::varchar, 5, '0'),
                '客户 ' || (i % $c), 'PR' || (i % 37), '产品 ' || (i % 37), 'SKU' || (i % 91),
                ['cn-north-4', 'cn-east-3', 'ap-southeast-1'][1 + i % 3], $m, false, null, 'CNY',
                (i % 50)::decimal(38, 6), (1 + (i % 997) / 7)::decimal(38, 6), 0,
                (1 + (i % 997) / 7)::decimal(38, 6), 1
            from range(1, $n + 1) t(i)
            """,
            {"p": PARTNER, "m": MONTH, "c": customers, "n": lines},
        )
        con.execute(
            """
            insert into bills (partner_id, partner_name, bill_month, version, currency,
                consume_amount, refunds, adjustments, coupon_total, coupon_amount, tax_rate,
                tax_amount, bill_amount, amount_due, invoice_no, status, closed_at, cutoff_date,
                forced, line_count)
            select $p, 'Bench Partner', $m, 1, 'CNY', round(s, 2), 0, 0, 0, 0, 0.06,
                round(round(s, 2) * 0.06, 2), round(s, 2) + round(round(s, 2) * 0.06, 2),
                round(s, 2) + round(round(s, 2) * 0.06, 2), 'INV-' || $p || '-202610', 'closed',
                timestamptz '2026-11-05 01:00:00+00', date '2026-11-04', false, $n
            from (select sum(amount) as s from bill_lines where partner_id = $p)
            """,
            {"p": PARTNER, "m": MONTH, "n": lines},
        )
        con.execute("commit")
    finally:
        con.close()
    publish(root)
    add_user(root, "bench", "partner", PASSWORD, PARTNER)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _client(base: str, path: str, until: list, out: list[float], errors: list) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=60) as c:
        page = await c.get("/login")
        token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        await c.post(
            "/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token}
        )
        await c.get(path)  # warm: the first answer of a published file is computed
        while not until or time.perf_counter() < until[0]:
            t = time.perf_counter()
            r = await c.get(path)
            elapsed = time.perf_counter() - t
            if r.status_code != 200:
                errors.append(r.status_code)
            if until:
                out.append(elapsed)


async def _measure(base: str, path: str, clients: int, seconds: float) -> tuple[list, list]:
    samples: list[float] = []
    errors: list = []
    until: list = []
    tasks = [
        asyncio.create_task(_client(base, path, until, samples, errors)) for _ in range(clients)
    ]
    await asyncio.sleep(3)  # every client signed in (one password check each) and warm
    until.append(time.perf_counter() + seconds)
    await asyncio.gather(*tasks)
    return samples, errors


def measure(base: str, path: str, clients: int, seconds: float) -> dict:
    """``clients`` concurrent clients (asyncio, one connection each) load ``path`` in a loop."""
    samples, errors = asyncio.run(_measure(base, path, clients, seconds))
    q = statistics.quantiles(samples, n=100)
    return {
        "requests": len(samples),
        "errors": len(errors),
        "p50_ms": round(q[49] * 1000, 1),
        "p95_ms": round(q[94] * 1000, 1),
        "req_per_s": round(len(samples) / seconds, 1),
    }


def ingest_loop(root: Path, stop: threading.Event, runs: list) -> None:
    days = [f"2026-11-0{d}" for d in range(2, 9)]
    i = 0
    while not stop.is_set():
        day = days[i % len(days)]
        t = time.perf_counter()
        p = subprocess.run(
            [BIN / "koobill", "--data-dir", root, "ingest", "--date", day, "--quiet"],
            capture_output=True,
            text=True,
        )
        runs.append({"date": day, "s": round(time.perf_counter() - t, 2), "rc": p.returncode})
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--data-dir", default=str(REPO / "bench" / "out" / "page"))
    a = ap.parse_args()
    load = os.getloadavg()
    root = Path(a.data_dir).resolve()
    print(f"building {root}: {a.customers} customers, {a.lines} lines ...", flush=True)
    build(root, a.customers, a.lines)
    port = free_port()
    env = {**os.environ, "KOOBILL_LOCK_WAIT_S": "600"}
    server = subprocess.Popen(
        [BIN / "koobill", "--data-dir", root, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        stop = threading.Event()
        runs: list = []
        loader = threading.Thread(target=ingest_loop, args=(root, stop, runs))
        loader.start()
        routes, single = {}, {}
        try:
            for path in ["/", f"/bills/{MONTH}", f"/bills/{MONTH}/by-customer"]:
                routes[path] = measure(base, path, a.clients, a.seconds)
                single[path] = measure(base, path, 1, 3)
                print(f"  {path:<28} {a.clients} clients {routes[path]}", flush=True)
                print(f"  {'':<28} 1 client   {single[path]}", flush=True)
        finally:
            stop.set()
            loader.join()
    finally:
        server.terminate()
        server.wait(10)
    worst = max(r["p95_ms"] for r in routes.values())
    page = {
        "routes": routes,
        "single_client": single,
        "load_average_before": [round(x, 2) for x in load],
        "clients": a.clients,
        "seconds_per_route": a.seconds,
        "customers": a.customers,
        "bill_lines": a.lines,
        "ingests_meanwhile": runs,
        "ingests_failed": sum(1 for r in runs if r["rc"] != 0),
        "goal": {
            "value": worst,
            "target": "p95 <= 100 ms",
            "status": "met" if worst <= 100 else "missed",
        },
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = REPO / "bench" / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results["page"] = page
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote the page figures into {path} (worst p95 {worst} ms)")


if __name__ == "__main__":
    main()
