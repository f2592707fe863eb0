"""A lake written before the Delta tables (one symlink per partition to a folder under
``.versions/``, one Parquet file per export run) is moved into Delta tables by the next writer,
with every row as it was."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb

from pipelines import delta, lake
from pipelines.close import close_month
from pipelines.config import Paths
from pipelines.exports import export_month
from pipelines.generate import generate
from pipelines.ingest import ingest_date
from pipelines.warehouse import rebuild

DAYS = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
TABLES = ["bills", "bill_lines", "estimates", "quarantine", "payments", "export_history"]


def _published(root: Path) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return {t: sorted(con.execute(f"select * from {t}").fetchall(), key=repr) for t in TABLES}
    finally:
        con.close()


def _to_legacy(root: Path) -> None:
    """Rewrite the lake in the layout of koobill before the Delta tables."""
    for table, prefix in (("ingest", "landing_date"), ("bills", "bill_month"),
                          ("reconcile", "bill_month")):  # fmt: skip
        table_dir = Paths(root).lake / table
        for value, part in lake.partitions(table_dir, prefix):
            folder = table_dir / ".versions" / f"{prefix}={value}.20260101T000000.abcd1234"
            folder.mkdir(parents=True)
            for member in lake.members(table_dir):
                f = part / f"{member}.parquet"
                if f.exists():
                    shutil.copyfile(f, folder / f"{member}.parquet")
            os.symlink(os.path.relpath(folder, table_dir), table_dir / f"{prefix}={value}")
        for member in lake.members(table_dir):
            shutil.rmtree(table_dir / member)
    history = Paths(root).lake / "export_history"
    files = lake.export_history_files(root)
    for i, f in enumerate(files):
        shutil.copyfile(f, history / f"20260101T00000{i}Z-run{i}.parquet.new")
    shutil.rmtree(history / "_delta_log")
    for f in history.glob("part-*.parquet"):
        f.unlink()
    for f in history.glob("*.new"):
        f.rename(f.with_suffix(""))
    delta.reset_cache()  # this process opened the tables just removed


def test_a_legacy_lake_is_moved_into_delta_tables_with_every_row(tmp_path):
    root = tmp_path / "data"
    generate(root, DAYS[0], DAYS[-1], usage_rows_per_day=40, n_partners=2)
    for day in DAYS:
        ingest_date(root, day)
    close_month(root, "2026-10")
    export_month(root, "2026-10", formats=["csv"])
    before = _published(root)
    _to_legacy(root)
    assert (Paths(root).lake / "bills" / "bill_month=2026-10").is_symlink()
    assert lake.partitions(Paths(root).bills, "bill_month") == []  # unreadable as Delta
    rebuild(root)  # the first writer upgrades the lake, then rebuilds from it
    assert _published(root) == before
    assert not list(Paths(root).lake.glob("*/*=*"))  # no partition link left
    assert not list(Paths(root).lake.glob("*/.versions"))
    assert [v for v, _p in lake.partitions(Paths(root).ingest, "landing_date")] == DAYS
    # and the upgraded lake goes on as any other: a rerun changes nothing
    ingest_date(root, DAYS[-1])
    assert _published(root) == before
