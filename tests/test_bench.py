"""The benchmark runs end to end in its tiny mode and writes every figure it promises.

Timings are never asserted here: speed is judged by ``make bench`` on a known machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
KEYS = (
    "ingest_vs_lower_bound",
    "close_vs_lower_bound",
    "day30_vs_day1",
    "peak_rss_mb",
    "cli_startup_s",
    "pandas_vs_koobill",
    "ingest_s",
    "ingest_rows",
    "ingest_rows_per_s",
    "ingest_lower_bound_s",
    "pandas_s",
    "day1_s",
    "day30_s",
    "close_s",
    "close_lower_bound_s",
)


@pytest.mark.slow
def test_bench_tiny_writes_every_result(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOOBILL_")}
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

    res = json.loads((tmp_path / "results.json").read_text())
    for key in KEYS:
        assert isinstance(res[key], (int, float)) and res[key] > 0, (key, res[key])
    assert res["complete"] is True
    assert res["ingest_rows"] >= 2000  # the tiny day's usage rows, plus orders and the rest
    assert set(res["goals"]) == {
        "ingest_vs_lower_bound",
        "close_vs_lower_bound",
        "day30_vs_day1",
        "peak_rss_mb",
        "cli_startup_s",
        "pandas_vs_koobill",
    }
    assert all(g["status"] in ("met", "missed") for g in res["goals"].values())
    for key in ("cpu_model", "cores", "ram_gb", "python", "duckdb"):
        assert res["machine"][key], key

    md = (tmp_path / "results.md").read_text()
    assert "| measure |" in md and res["machine"]["duckdb"] in md
    # the tiny landing data is cached: a second run reuses it
    assert (tmp_path / "out" / "big-2000" / ".bench-complete.json").exists()
