"""Great Expectations is imported only when it validates rows: a big clean feed is counted by
DuckDB alone, and its report says so. Each check runs in a fresh Python, where nothing has
imported GX yet."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLEAN_PAYMENTS = """
import json, sys
from pipelines import db, quality
c = db.connect()
c.execute('''create table stg_payments as
    select 'R' || i as record_id, 'P001' as partner_id, {amount}::decimal(38,6) as amount,
           'CNY' as currency, timestamptz '2025-03-10 01:00:00+00' as paid_at,
           null::varchar as method, null::varchar as reference,
           date '2025-03-10' as landing_date
    from range(500) t(i)''')
try:
    quality.validate_feed(c, 'payments', 'stg_payments', '2025-03-10', sys.argv[1],
                          max_gx_rows=10)
    print('passed')
except quality.QualityError as exc:
    print('failed', [(f['expectation'], f['count']) for f in exc.failures])
print('great_expectations' in sys.modules)
"""


def _run(code: str, *args: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_a_big_clean_feed_is_counted_by_duckdb_without_importing_gx(tmp_path: Path):
    assert _run(CLEAN_PAYMENTS.format(amount="10"), str(tmp_path)) == ["passed", "False"]
    doc = json.loads((tmp_path / "feed-payments-2025-03-10.json").read_text())
    meta = doc["meta"]["koobill"]
    assert meta["success"] is True and doc["success"] is True
    assert (meta["rows_checked"], meta["rows_handed_to_gx"]) == (500, 0)
    assert meta["coverage"] == (
        "DuckDB counted every expectation on all 500 rows; no row was handed to Great "
        "Expectations (no row breaks a rule), so it was not run"
    )
    assert {c["counted_by"] for c in meta["checks"]} == {"DuckDB"}
    assert len(doc["results"]) == len(meta["checks"]) > 5
    assert {r["result"]["unexpected_count"] for r in doc["results"]} == {0}
    amount = next(
        r for r in doc["results"] if r["expectation_config"]["meta"]["rule"] == "amount_positive"
    )
    assert amount["expectation_config"]["kwargs"] == {
        "column": "amount_positive",
        "value_set": [True],
    }
    page = (tmp_path / "feed-payments-2025-03-10.html").read_text(encoding="utf-8")
    assert "so it was not run" in page and ">Home</a>" in page
    assert "PASSED" in page


def test_a_big_feed_with_a_bad_row_still_hands_it_to_gx(tmp_path: Path):
    code = CLEAN_PAYMENTS.format(amount="case when i = 7 then -1 else 10 end")
    assert _run(code, str(tmp_path)) == ["failed [('amount_positive', 1)]", "True"]
    meta = json.loads((tmp_path / "feed-payments-2025-03-10.json").read_text())["meta"]["koobill"]
    assert meta["rows_handed_to_gx"] == 1
    assert "Great Expectations validated 1 of them" in meta["coverage"]


def test_the_ingest_prewarms_gx_only_for_a_feed_gx_will_see_whole():
    code = """
from pipelines import ingest, quality
big = ingest.FeedStats('usage', [{'rows_read': quality.MAX_GX_ROWS + 1}])
ingest._prewarm_if_needed('usage', big)
ingest._prewarm_if_needed('prices', ingest.FeedStats('prices', [{'rows_read': 5}]))
ingest._prewarm_if_needed('orders', ingest.FeedStats('orders', []))
print(quality._warm is None)
ingest._prewarm_if_needed('orders', ingest.FeedStats('orders', [{'rows_read': 48}]))
print(quality._warm is not None)
"""
    assert _run(code) == ["True", "True"]
