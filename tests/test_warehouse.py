"""warehouse.duckdb is a serving layer: rebuilt from the lake it holds exactly what the
incremental runs put there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
from helpers import adjustment, ingest, land, land_reference, order, payment, usage

from pipelines import schema
from pipelines.close import close_month
from pipelines.warehouse import rebuild

REPO = Path(__file__).resolve().parent.parent


def _tables(db: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for t in schema.PUBLIC:
            cols = ", ".join(f'"{c}"' for c in t.column_names)
            out[t.name] = con.execute(f"select {cols} from {t.name} order by all").fetchall()
        out["_meta"] = con.execute("select * from _meta order by all").fetchall()
        return out
    finally:
        con.close()


def test_rebuild_reproduces_every_public_table_and_view(data_dir: Path):
    days = ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    land_reference(data_dir, days[0])
    land(data_dir, "orders", days[1], [order("o1", event_time="2026-11-01T10:00:00+08:00")])
    land(
        data_dir,
        "usage",
        days[2],
        [
            usage(
                "u1", usage_start="2026-11-02T01:00:00+08:00", usage_end="2026-11-02T02:00:00+08:00"
            )
        ],
    )
    land(data_dir, "adjustments", days[3], [adjustment("a1", bill_month="2026-11")])
    land(data_dir, "payments", days[4], [payment("p1", paid_at="2026-11-04T09:00:00+08:00")])
    for d in days:  # 2026-11-05 truly had no data: recorded empty
        ingest(data_dir, d, allow_empty=True)
    close_month(data_dir, "2026-10")
    before = _tables(data_dir / "warehouse.duckdb")
    assert before["bills"] and before["estimates"] and before["payments"]

    rebuild(data_dir)
    assert _tables(data_dir / "warehouse.duckdb") == before

    # the CLI does the same, and a lost warehouse comes back whole
    (data_dir / "warehouse.duckdb").unlink()
    r = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--data-dir", str(data_dir), "rebuild-warehouse"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert _tables(data_dir / "warehouse.duckdb") == before


def test_lake_reads_match_only_their_own_paths(tmp_path: Path):
    """A data dir under a folder whose name holds glob characters reads its own files, not
    those of a folder the pattern would match (issue 15: `gx[1]` was read from `gx1`)."""
    from pipelines.db import connect, parquet

    con = connect()
    try:
        for i, name in enumerate(["gx[1]", "gx1", "a*b", "aXb", "q?x", "qzx", "{c,d}", "c"]):
            (tmp_path / name).mkdir()
            f = tmp_path / name / "bills.parquet"
            con.execute(f"copy (select {i} as v, '{name}' as n) to '{f}' (format parquet)")
        for name in ["gx[1]", "a*b", "q?x", "{c,d}"]:
            rows = con.execute(
                f"select n from {parquet(tmp_path / name / 'bills.parquet')}"
            ).fetchall()
            assert rows == [(name,)], name
    finally:
        con.close()
