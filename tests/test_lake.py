"""The lake's commits: a partition is read as one run wrote it, even when a writer stops between
two member tables' commits (each member is its own Delta table)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pipelines import delta, lake
from pipelines.close import close_month
from pipelines.config import Paths
from pipelines.generate import generate
from pipelines.ingest import ingest_date
from pipelines.warehouse import rebuild

REPO = Path(__file__).resolve().parents[1]
DAYS = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
MONTH = "2026-10"


def _stage(part: Path, tag: str) -> Path:
    con = duckdb.connect()
    v = lake.new_version_dir(part)
    for name in ("bills", "bill_lines"):
        con.execute(
            f"copy (select '2026-10' as bill_month, '{tag}' as tag) to '{v / name}.parquet'"
        )
    return v


def _tags(part: Path) -> list[str]:
    p = lake.at(part)
    return [
        duckdb.sql(f"select tag from read_parquet('{p / (n + '.parquet')}')").fetchall()[0][0]
        for n in ("bills", "bill_lines")
    ]


def _commit_v2_with_the_marker_failing(part: Path, monkeypatch) -> None:
    """Commit version "v2" of ``part`` with the marker member's (bills) commit failing."""
    real = delta.commit_file

    def marker_fails(path, *args, **kw):
        if path.name == "bills":
            raise OSError(28, "No space left on device")
        return real(path, *args, **kw)

    monkeypatch.setattr(delta, "commit_file", marker_fails)
    with pytest.raises(lake.KoobillError, match="the previous version stays"):
        lake.commit_version(part, _stage(part, "v2"))


def test_a_commit_that_fails_between_members_is_undone(tmp_path, monkeypatch):
    part = tmp_path / "lake" / "bills" / f"bill_month={MONTH}"
    part.parent.mkdir(parents=True)
    lake.commit_version(part, _stage(part, "v1"))
    _commit_v2_with_the_marker_failing(part, monkeypatch)
    assert _tags(part) == ["v1", "v1"]  # bill_lines went back to the marker's run
    ops = [h["operation"] for h in delta.history(part.parent / "bill_lines")]
    assert "RESTORE" in ops
    monkeypatch.undo()
    lake.commit_version(part, _stage(part, "v3"))
    assert _tags(part) == ["v3", "v3"]
    assert lake.recover(part.parent) == []
    # one live file per member: the restored and replaced ones were vacuumed
    files = [p for p in part.parent.rglob("*.parquet") if "_delta_log" not in p.parts]
    assert len(files) == 2


def test_a_table_from_an_earlier_koobill_gets_its_checkpoint_interval_and_still_recovers(
    tmp_path, monkeypatch
):
    """An older table lacks delta.checkpointInterval: its next data commit is followed by a
    property commit (no run named), which recovery looks past to the data commit it undoes."""
    part = tmp_path / "lake" / "bills" / f"bill_month={MONTH}"
    part.parent.mkdir(parents=True)
    monkeypatch.setattr(delta, "TABLE_PROPERTIES", {})  # tables as an earlier koobill made them
    lake.commit_version(part, _stage(part, "v1"))
    monkeypatch.undo()
    assert (
        "delta.checkpointInterval"
        not in delta._open(part.parent / "bill_lines").metadata().configuration
    )
    _commit_v2_with_the_marker_failing(part, monkeypatch)
    ops = [h["operation"] for h in delta.history(part.parent / "bill_lines")]
    ops = [op for op in ops if not op.startswith("VACUUM")]
    assert ops[:3] == ["RESTORE", "SET TBLPROPERTIES", "WRITE"], ops  # restored past the property
    assert _tags(part) == ["v1", "v1"]
    monkeypatch.undo()
    lake.commit_version(part, _stage(part, "v3"))
    assert _tags(part) == ["v3", "v3"]
    for name in ("bills", "bill_lines"):
        config = delta._open(part.parent / name).metadata().configuration
        assert config.get("delta.checkpointInterval") == "10"


def test_files_a_killed_writer_left_unvacuumed_go_within_ten_commits(tmp_path):
    """Only a commit that replaces files vacuums its table, and every tenth version of a table
    sweeps it: a replaced file a killed writer left behind is deleted then."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = tmp_path / "t"

    def commit(value: str, vacuum: bool = True) -> bool:
        f = tmp_path / "f.parquet"
        pq.write_table(pa.table({"v": [value]}), f)
        return delta.commit_file(table, "k", value, f, vacuum=vacuum)

    assert not commit("a")  # version 0: a new partition, nothing to vacuum
    assert commit("a", vacuum=False)  # version 1 replaced a's file; killed before its vacuum
    assert len(list(table.glob("k=a/*.parquet"))) == 2
    for i in range(2, 10):  # versions 2-9: new partitions, no vacuum
        assert not commit(f"n{i}")
    assert len(list(table.glob("k=a/*.parquet"))) == 2
    assert delta._open(table).version() == 9
    assert commit("n10")  # version 10: the sweep
    assert len(list(table.glob("k=a/*.parquet"))) == 1
    assert (table / "_delta_log" / "_last_checkpoint").exists()


CHILD = r"""
import os, signal, sys

def hook(event, args):
    # the restatement's bill_lines are committed; its bills (the marker) are about to be placed
    if event == "os.rename" and "/lake/bills/bills/" in str(args[1]):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
from pipelines.close import close_month

close_month(sys.argv[1], sys.argv[2], restate=True)
"""


def _lines(root: Path) -> list[tuple]:
    f = lake.at(Paths(root).bills_dir(MONTH)) / "bill_lines.parquet"
    return duckdb.sql(
        f"select * exclude (version) from read_parquet('{f}') order by all"
    ).fetchall()


def test_a_restatement_killed_between_members_reads_as_before_and_reruns_clean(tmp_path):
    root = tmp_path / "data"
    generate(root, DAYS[0], DAYS[-1], usage_rows_per_day=40, n_partners=2)
    for day in DAYS:
        ingest_date(root, day)
    close_month(root, MONTH)
    before = _lines(root)
    # a late adjustment, then a restatement killed after its bill_lines commit
    folder = root / "landing" / "adjustments" / DAYS[-1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "late.csv").write_text(
        "record_id,partner_id,customer_id,product_id,amount,currency,bill_month,reason\n"
        "late-1,ptn-brightsoft,,,-7.50,USD,2026-10,late credit\n",
        encoding="utf-8",
    )
    ingest_date(root, DAYS[-1])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), MONTH],
        cwd=REPO,
        env={**os.environ, "KOOBILL_LOCK_WAIT_S": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    # the next writer restores the member that ran ahead: the month reads as before
    rebuild(root)
    assert _lines(root) == before
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    assert con.execute("select max(version) from bills").fetchone()[0] == 1
    con.close()
    # and the restatement, run again, makes version 2 whole
    r = close_month(root, MONTH, restate=True)
    assert r.changed and r.version == 2
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    v2 = con.execute("select count(*) from bill_lines where version = 2").fetchone()[0]
    v1 = con.execute("select count(*) from bill_lines where version = 1").fetchone()[0]
    con.close()
    assert v2 > 0 and v1 == len(before)


def test_a_table_deleted_and_made_again_in_one_process_is_not_mistaken_for_the_old(tmp_path):
    """A long-lived process (a worker, the bench) keeps its Delta handles: a data dir deleted
    and made again at the same path must be read and written as the new table it is."""
    from helpers import committed, land_reference

    from pipelines.config import init_data_dir

    for _round in range(2):
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
        d = init_data_dir(tmp_path / "data")
        for day in ("2026-11-10", "2026-11-11"):
            land_reference(d, day)
            ingest_date(d, day)
        assert committed(d / "lake" / "ingest" / "landing_date=2026-11-11")
