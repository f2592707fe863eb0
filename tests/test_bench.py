"""The benchmark runs end to end in its tiny mode and writes every figure it promises.

Timings are never asserted here: speed is judged by ``make bench`` on a known machine.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import lake_path

REPO = Path(__file__).resolve().parent.parent
KEYS = (
    "ingest_vs_lower_bound",
    "ingest_cpu_vs_lower_bound",
    "close_vs_lower_bound",
    "day30_vs_day1",
    "day365_vs_day1_random_ids",
    "random_ids_day1_s",
    "random_ids_dayN_s",
    "peak_rss_mb",
    "cli_startup_s",
    "pandas_vs_koobill",
    "ingest_s",
    "ingest_cpu_s",
    "ingest_lower_bound_cpu_s",
    "ingest_rows",
    "ingest_rows_per_s",
    "ingest_lower_bound_s",
    "pandas_s",
    "ingest_floor_s",
    "ingest_vs_floor",
    "pandas_vs_floor",
    "day1_s",
    "day30_s",
    "close_s",
    "close_lower_bound_s",
    "exports_cpu_s_per_partner",
    "exports_2000_partners_s",
)


def _run_tiny(tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--tiny",
            "--out",
            str(tmp_path / "out"),
            "--results-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bench_tiny_writes_every_result(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOOBILL_")}
    proc = _run_tiny(tmp_path, env)

    res = json.loads((tmp_path / "results.json").read_text())
    for key in KEYS:
        assert isinstance(res[key], (int, float)) and res[key] > 0, (key, res[key])
    assert res["complete"] is True
    assert res["ingest_rows"] >= 2000  # the tiny day's usage rows, plus orders and the rest
    assert set(res["goals"]) >= {
        "ingest_vs_lower_bound",
        "ingest_cpu_vs_lower_bound",
        "close_vs_lower_bound",
        "day30_vs_day1",
        "day365_vs_day1_random_ids",
        "peak_rss_mb",
        "cli_startup_s",
        "pandas_vs_koobill",
        "exports_cpu_s_per_partner",
        "exports_2000_partners_s",
    }
    assert all(g["status"] in ("met", "missed") for g in res["goals"].values())
    for key in ("cpu_model", "cores", "ram_gb", "python", "duckdb"):
        assert res["machine"][key], key

    md = (tmp_path / "results.md").read_text()
    assert "| measure |" in md and res["machine"]["duckdb"] in md
    # the yardstick's statement is printed beside the figures, as run (values bound)
    yardstick = (REPO / "bench" / "yardstick.sql").read_text(encoding="utf-8")
    assert res["yardstick_sql"] == yardstick
    assert yardstick.strip() in md and yardstick.strip() in proc.stdout
    assert res["raw"]["ingest_lower_bound"]["rows_written"] > 0
    # the floor is measured beside it and reported, with no goal
    assert res["raw"]["ingest_floor"]["rows_written"] > 0 and "ingest_vs_floor" not in res["goals"]
    assert "The floor (`bench/floor.sql`" in md
    # the tiny landing data is cached: a second run reuses it
    assert (tmp_path / "out" / "big-2000" / ".bench-complete.json").exists()

    # KOOBILL_BENCH_KEEP=1: a run of one part keeps the other parts' figures, and says so
    keep = {"KOOBILL_BENCH_KEEP": "1", "KOOBILL_BENCH_SKIP": "big,month,year,exports"}
    _run_tiny(tmp_path, {**env, **keep})
    again = json.loads((tmp_path / "results.json").read_text())
    for key in ("ingest_s", "day30_s", "random_ids_dayN_s", "exports_cpu_s_per_partner"):
        assert again[key] == res[key], key
    assert again["generated_at"] >= res["generated_at"]
    assert "Measured in this run: cli;" in again["notes"][0]
    assert "Measured in this run: cli;" in (tmp_path / "results.md").read_text()


# --- the pandas implementation does koobill's work for the usage feed -------------------------

EDGE_DAY = "2026-03-06"


def _bench_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "bench" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _u(rid, **kw) -> dict:
    return {
        "note": "an extra column",
        "record_id": rid,
        "partner_id": "ptn-yunqi",
        "customer_id": "cust-edge",
        "customer_name": 'Edge, "Quoted"\nName 名',
        "product_id": "KG-WAF-IMG",
        "product_name": "WAF",
        "sku_code": "waf.c6.large.hour",
        "region": "cn-north-4",
        "resource_id": "res-edge",
        "usage_start": "2026-03-06T10:00:00+08:00",
        "usage_end": "2026-03-06T11:00:00+08:00",
        "quantity": "2",
        "unit": "hour",
        **kw,
    }


def _day(start: str, end: str | None = None) -> dict:
    return {"usage_start": start, "usage_end": end or "2026-03-06T11:00:00+08:00"}


EDGE_USAGE = [
    _u("e-ok"),
    _u("e-ok"),  # exact duplicate
    _u("e-ok", quantity="2.000000"),  # the same typed content: a duplicate
    _u("e-ok", **_day("2026-03-06T02:00:00Z", "2026-03-06T03:00:00Z")),  # the same instants
    _u("e-ok", customer_name="Other"),  # an optional column is not content
    _u("e-ok", quantity="3"),  # conflicting duplicate
    _u("u-20260306-000000005", quantity="999"),  # conflicts with a generated row
    _u("e-first-bad", quantity="-1"),
    _u("e-first-bad"),  # a quarantined row does not hold its record_id
    _u(None),
    _u("   "),
    _u("NA"),
    _u("e-region", region="  "),
    _u("e-pid", partner_id="ptn yunqi"),
    _u("e-ghost", partner_id="ptn-unknown"),
    _u("e-rate", partner_id="ptn-rate"),  # its snapshot row is invalid
    _u("e-eur", partner_id="ptn-eur"),  # no EUR price
    _u("e-naive", usage_start="2026-03-06T10:00:00"),
    _u("e-v1", **_day("2026-03-06 10:00+08", "2026-03-06 11:00+08")),
    _u("e-v2", usage_start="2026-03-06T10:00:00+0800"),
    _u("e-v3", usage_start="2026-03-06T10:00:00.5+08:00"),
    _u("e-feb30", usage_start="2026-02-30T10:00:00+08:00"),
    _u("e-word", usage_start="yesterday"),
    _u("e-space-offset", usage_start="2026-03-06T10:00:00 +08:00"),
    _u("e-q-abc", quantity="abc"),
    _u("e-q-7", quantity="1.1234567"),
    _u("e-q-7z", quantity="1.1234560"),
    _u("e-q-1e12", quantity="1000000000000"),
    _u("e-q-neg0", quantity="-0"),
    _u("e-q-sp", quantity=" 5 "),
    _u("e-q-dot", quantity=".5"),
    _u("e-q-plus", quantity="+5"),
    _u("e-q-trail", quantity="5."),
    _u("e-q-33", quantity="1" * 33),
    _u("e-q-exp", quantity="1e3"),
    # unit price 5000: 10^11 units are 5 * 10^14 (past int64 micro-units), 10^12 - 1 too many
    _u("e-big-ok", sku_code="edge.big", unit="unit", quantity="100000000000"),
    _u("e-big-over", sku_code="edge.big", unit="unit", quantity="999999999999"),
    _u("e-big-both", sku_code="edge.big", unit="unit", quantity="10000000000000"),
    _u("e-end", usage_end="2026-03-06T09:00:00+08:00"),
    _u("e-fut", **_day("2026-03-08T00:00:00+08:00", "2026-03-08T01:00:00+08:00")),
    _u("e-fut-z", **_day("2026-03-07T16:00:00Z", "2026-03-07T17:00:00Z")),
    _u("e-next", **_day("2026-03-07T23:00:00+08:00", "2026-03-08T00:00:00+08:00")),
    _u("e-late", **_day("2026-02-27T10:00:00+08:00", "2026-02-27T11:00:00+08:00")),
    _u("e-early", **_day("2026-01-15T00:00:00+08:00", "2026-01-15T01:00:00+08:00")),
    _u("e-unit-gb", unit="GB"),
    _u("e-unit-space", unit="hour "),
    _u("e-multi", partner_id="ptn-unknown", quantity="-1", usage_end="2026-03-06T11:00:00"),
    _u("e-sku-null", sku_code=None),
    _u("e-sku-space", sku_code="  "),
    _u("e-promo-10", usage_start="2026-03-05T10:00:00+08:00"),
    _u("e-promo-11", usage_start="2026-03-05T11:59:59+08:00"),
    _u("e-promo-12", usage_start="2026-03-05T12:00:00+08:00"),  # effective_to is exclusive
    _u(
        "e-ocr-old",
        sku_code="ocr.general.1kcalls",
        unit="1k-calls",
        usage_start="2026-03-04T23:59:59+08:00",
    ),
    _u(
        "e-ocr-new",
        sku_code="ocr.general.1kcalls",
        unit="1k-calls",
        usage_start="2026-03-05T00:00:00+08:00",
    ),
    _u("e-cdn", sku_code="cdn.traffic.gb", unit="GB", quantity="10"),
    _u("e-round1", quantity="0.000005"),
    _u("e-round2", quantity="0.000003", usage_start="2026-03-05T10:00:00+08:00"),
    _u("e-round3", partner_id="ptn-haina", quantity="0.000010"),
    _u("e-haina", partner_id="ptn-haina", quantity="1234.5678"),
]

EDGE_PARTNERS = [  # partner_id, partner_name, currency, tax_rate, discount_rate
    ("ptn-yunqi", "北京云启科技有限公司", "CNY", "0.06", "0.10"),
    ("ptn-brightsoft", "BrightSoft Pte. Ltd.", "USD", "0", "0.20"),
    ("ptn-haina", "上海海纳数据服务有限公司", "cny", "0.13", "0.07"),
    ("ptn-haina", "上海海纳数据服务有限公司", "CNY", "0.13", "0.09"),  # the first stands
    ("ptn-nimbus", "Nimbus Analytics, Inc.", "USD", "0", "0.20"),
    ("ptn-nimbus", "Nimbus Analytics, Inc.", "USD", "0", "0.20"),
    ("bad partner!", "Bad", "CNY", "0", "0.1"),
    ("ptn-eur", "Euro GmbH", "EUR", "0.19", "0.3"),
    ("ptn-rate", "Rate Ltd", "CNY", "0", "1"),
]

EDGE_PRICES = [  # sku_code, unit, unit_price, currency, effective_from, effective_to
    (
        "waf.c6.large.hour",
        "hour",
        "0.50",
        "CNY",
        "2026-03-05T10:00:00+08:00",
        "2026-03-05T12:00:00+08:00",
    ),  # a promotion over the open-ended list price
    ("waf.c6.large.hour", "hour", "0.85", "CNY", "2026-02-01T00:00:00+08:00", ""),
    ("cdn.traffic.gb", "GB", "0.25", "CNY", "2026-02-01T00:00:00+08:00", ""),  # re-landed
    ("edge.big", "unit", "5000", "CNY", "2026-01-01T00:00:00+08:00", ""),
    ("kubeops.node.hour", "node-hour", "-1", "CNY", "2026-03-01T00:00:00+08:00", ""),
    (
        "kubeops.node.hour",
        "node-hour",
        "0.1",
        "CNY",
        "2026-03-06T00:00:00+08:00",
        "2026-03-01T00:00:00+08:00",
    ),
    ("dbbackup.storage.gbh", "GB-hour", "0.0003", "CNY", "2026-03-06T05:00:00", ""),
]


def _land_edges(data: Path) -> None:
    """Edge cases on EDGE_DAY: usage as CSV (columns reordered, an extra one), JSONL (numbers,
    a blank line) and Parquet (typed timestamps and decimals); a partner snapshot; prices."""
    import datetime as dt
    from decimal import Decimal

    from helpers import jsonl_line, land, land_bytes

    land(data, "usage", EDGE_DAY, EDGE_USAGE, name="zz-edge.csv", columns=list(EDGE_USAGE[0])[::-1])
    cols = ["partner_id", "partner_name", "currency", "tax_rate", "discount_rate"]
    land(data, "partners", EDGE_DAY, [dict(zip(cols, r, strict=True)) for r in EDGE_PARTNERS])
    cols = ["sku_code", "unit", "unit_price", "currency", "effective_from", "effective_to"]
    land(
        data,
        "prices",
        EDGE_DAY,
        [dict(zip(cols, r, strict=True)) for r in EDGE_PRICES],
        name="promo.csv",
    )
    base = {k: v for k, v in _u("j").items() if k not in ("note", "customer_name")}
    lines = [
        jsonl_line({**base, "record_id": "j-num", "quantity": Decimal("2.5")}),
        "",
        jsonl_line({**base, "record_id": "j-exp", "quantity": Decimal("1E+2")}),
        jsonl_line({**base, "record_id": "j-bool", "quantity": True}),
        jsonl_line({**base, "record_id": "j-null", "sku_code": None}),
        jsonl_line({**base, "record_id": "j-int", "quantity": Decimal("7")}),
        jsonl_line({**base, "record_id": "e-ok"}),  # a duplicate of the CSV's first row
    ]
    land_bytes(data, "usage", EDGE_DAY, "zz-edge2.jsonl", "\n".join(lines) + "\n")
    t0 = dt.datetime(2026, 3, 6, 2, tzinfo=dt.UTC)
    rows = [
        {**base, "record_id": "p-ok", "quantity": Decimal("1.5")},
        {**base, "record_id": "p-neg", "quantity": Decimal("-1.5")},
        {
            **base,
            "record_id": "p-fut",
            "quantity": Decimal("1"),
            "usage_start": t0 + dt.timedelta(days=2),
        },
    ]
    for r in rows:
        r["usage_start"] = r["usage_start"] if isinstance(r["usage_start"], dt.datetime) else t0
        r["usage_end"] = r["usage_start"] + dt.timedelta(hours=1)
    land(data, "usage", EDGE_DAY, rows, fmt="parquet", name="zz-edge3.parquet")


@pytest.mark.slow
def test_pandas_day_agrees_with_koobill(tmp_path: Path) -> None:
    """On generated days plus edge cases, the pandas implementation of the benchmark accepts,
    rates, quarantines (with the same reasons) and drops exactly what koobill does."""
    from collections import defaultdict
    from decimal import Decimal

    import pyarrow.parquet as pq

    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    bench = _bench_module()
    data = tmp_path / "data"
    days = ["2026-03-05", EDGE_DAY]
    generate(data, days[0], days[-1], usage_rows_per_day=2000)
    _land_edges(data)
    for d in days:
        ingest_date(data, d, max_quarantine_share=1.0)

    def lake(d: str, name: str) -> Path:
        return lake_path(data, d, name)

    cols = [
        "record_id",
        "partner_id",
        "quantity",
        "usage_start",
        "currency",
        "unit_price",
        "discount_rate",
        "official_amount",
        "discount_amount",
        "amount",
        "source_month",
        "bill_month_assigned",
        "late",
    ]
    for i, d in enumerate(days):
        out = tmp_path / "pandas" / d / "usage.parquet"
        r = bench._pandas_day(data / "landing", d, out, [lake(e, "usage") for e in days[:i]])

        kb = {(x["_file"], x["_row"]): x for x in pq.read_table(lake(d, "usage")).to_pylist()}
        pd_ = {(x["_file"], x["_row"]): x for x in pq.read_table(out).to_pylist()}
        assert sorted(kb) == sorted(pd_)
        assert [[kb[k][c] for c in cols] for k in sorted(kb)] == [
            [pd_[k][c] for c in cols] for k in sorted(kb)
        ]
        kq = {
            (x["file"], x["row"]): x["reason"]
            for x in pq.read_table(lake(d, "quarantine")).to_pylist()
            if x["feed"] == "usage"
        }
        pq_ = {
            (x["file"], x["row"]): x["reason"]
            for x in pq.read_table(out.with_name("quarantine.parquet")).to_pylist()
        }
        assert pq_ == kq

        files = [x for x in pq.read_table(lake(d, "files")).to_pylist() if x["feed"] == "usage"]
        assert (r["rows_read"], r["rows_written"], r["rows_quarantined"], r["rows_duplicate"]) == (
            sum(x["rows_read"] for x in files),
            sum(x["accepted"] for x in files),
            sum(x["quarantined"] for x in files),
            sum(x["duplicates"] for x in files),
        )
        total = sum(x["amount"] for x in kb.values())
        assert Decimal(r["amount_total_micro"]).scaleb(-6) == total

        # the estimate: koobill's accepted usage of every date so far, per partner and month
        usage = defaultdict(Decimal)
        for e in days[: i + 1]:
            for x in pq.read_table(lake(e, "usage")).to_pylist():
                usage[x["partner_id"], x["bill_month_assigned"]] += x["amount"]
        kest = {
            (x["partner_id"], x["bill_month"]): x["currency"]
            for x in pq.read_table(lake(d, "estimates")).to_pylist()
        }
        est = pq.read_table(out.with_name("estimates.parquet")).to_pylist()
        assert {(x["partner_id"], x["bill_month"]): x["currency"] for x in est} == kest
        for x in est:
            want = usage[x["partner_id"], x["bill_month"]].quantize(
                Decimal("0.01"), "ROUND_HALF_UP"
            )
            assert x["consume_amount"] == want, x

    assert r["rows_quarantined"] >= 40 and r["rows_duplicate"] >= 8  # the edge cases ran


def test_yardstick_rates_like_koobill(tmp_path: Path) -> None:
    """The yardstick (bench/yardstick.sql) does the irreducible work correctly: on a generated
    day (no bad rows), its rated rows are koobill's accepted usage, with the same typed rating
    (narrow decimals, half-up to 6 places)."""
    import duckdb
    import pyarrow.parquet as pq

    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    bench = _bench_module()
    data = tmp_path / "data"
    day = "2026-03-05"
    generate(data, day, day, usage_rows_per_day=3000, bad_rows=False)
    ingest_date(data, day, max_quarantine_share=1.0)
    out = tmp_path / "yardstick" / "usage.parquet"
    r = bench._lower_ingest(duckdb, data / "landing", day, out)

    lake = lake_path(data, day, "usage")
    cols = ["quantity", "currency", "unit_price", "discount_rate"]
    cols += ["official_amount", "discount_amount", "amount"]
    kb = {x["record_id"]: x for x in pq.read_table(lake).to_pylist()}
    ys = pq.read_table(out)
    got = {x["record_id"]: x for x in ys.to_pylist()}
    assert r["rows_written"] == len(got) == ys.num_rows > 2000
    assert set(got) == set(kb)  # every row is rated exactly once
    assert all([got[k][c] for c in cols] == [kb[k][c] for c in cols] for k in kb)
    schema = {f.name: str(f.type) for f in ys.schema}
    assert schema["quantity"] == "decimal64(18, 6)" or schema["quantity"] == "decimal128(18, 6)"
    assert schema["amount"].endswith("(21, 6)")


def test_the_floor_writes_what_koobill_accepts(tmp_path: Path) -> None:
    """The floor (bench/floor.sql) does the work every implementation of the rules must: on a
    generated day with bad rows of every kind, it writes exactly the record ids koobill
    accepts, with koobill's typed values, bill month and rating, in the lake's types."""
    import duckdb
    import pyarrow.parquet as pq

    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    bench = _bench_module()
    data = tmp_path / "data"
    day = "2026-03-05"
    generate(data, day, day, usage_rows_per_day=20000)
    # ids landed twice, first with a partner the snapshot lacks, then valid: the id is kept
    # (the copy that breaks a rule is not the one a repeated id keeps)
    folder = data / "landing" / "usage" / day
    src = sorted(folder.glob("*.csv"))[0]
    with open(src, encoding="utf-8", newline="") as f:
        rows = [x for x in csv.DictReader(f) if x["record_id"].startswith("u-")][:50]
    twice = []
    for i, x in enumerate(rows):
        twice += [dict(x, record_id=f"twice-{i}", partner_id="ptn-nosuch")]
        twice += [dict(x, record_id=f"twice-{i}")]
    with open(folder / "zz-twice.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(twice)
    r = ingest_date(data, day, max_quarantine_share=1.0)
    assert r.feeds["usage"].total("quarantined") >= 70  # the bad rows are there
    out = tmp_path / "floor" / "usage.parquet"
    got = bench._floor_ingest(duckdb, data / "landing", day, out)

    lake = pq.read_table(lake_path(data, day, "usage"))
    floor = pq.read_table(out)
    assert got["rows_written"] == floor.num_rows == lake.num_rows > 19000
    kb = {x["record_id"]: x for x in lake.to_pylist()}
    fl = {x["record_id"]: x for x in floor.to_pylist()}
    assert set(fl) == set(kb)
    assert {f"twice-{i}" for i in range(50)} <= set(fl)
    # every column but the record's number, whose values match but for the rows of an id
    # repeated within the day (the floor keeps any one of them)
    skip = {"_row"}  # the floor does not number the CSV's records
    cols = [f.name for f in floor.schema]
    assert set(cols) | skip == {f.name for f in lake.schema}
    same = [k for k in kb if all(fl[k][c] == kb[k][c] for c in cols)]
    assert len(same) >= len(kb) - r.feeds["usage"].total("duplicates")
    assert {f.name: f.type for f in floor.schema} == {
        f.name: f.type for f in lake.schema if f.name not in skip
    }
