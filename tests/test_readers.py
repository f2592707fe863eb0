"""Readers never block writers (spec section 6, issue 13 points 1 and 9).

An analyst leaves a DuckDB session open on ``warehouse.duckdb`` in another process, read-only
(the DuckDB CLI's ``-readonly``, a notebook) or read-write (the CLI's default, DBeaver), and the
nightly ingest, the close and a rebuild run meanwhile: each succeeds, the open session keeps the
state it opened, and the analyst's next connection sees the new rows. The published file opens
in DuckDB 1.x as well as 2.x.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from helpers import ingest, land, land_reference, order, payment

from pipelines.close import close_month
from pipelines.warehouse import PUBLISHED_STORAGE_VERSION, connect_published, rebuild, work_path

REPO = Path(__file__).resolve().parent.parent

# A DuckDB session in another process: it opens the database once and answers one SQL query a
# line on stdin with one line of output, until stdin closes.
_SESSION = textwrap.dedent(
    """
    import sys, duckdb
    path, mode = sys.argv[1], sys.argv[2]
    con = duckdb.connect(path, read_only=(mode == "ro"))
    if mode == "rw":  # what an analyst does in a read-write session
        con.execute("create table my_scratch as select 42 as answer")
        con.execute("insert into quarantine (feed, reason) values ('mine', 'analyst row')")
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            print(repr(con.execute(line).fetchall()), flush=True)
        except Exception as exc:
            print("error " + str(exc).splitlines()[0], flush=True)
    con.close()
    """
)


class Session:
    """An analyst's DuckDB session left open in another process."""

    def __init__(self, path: Path, mode: str, python: str = sys.executable):
        self.proc = subprocess.Popen(
            [python, "-c", _SESSION, str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = self.proc.stdout.readline().strip()
        assert first == "ready", first + self.proc.stderr.read()

    def query(self, sql: str) -> str:
        self.proc.stdin.write(sql.replace("\n", " ") + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def _count(root: Path, sql: str) -> int:
    con = duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


DAYS = ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]


@pytest.fixture
def ingested(data_dir: Path) -> Path:
    land_reference(data_dir, DAYS[0])
    land(data_dir, "orders", DAYS[0], [order("o0", event_time="2026-10-30T10:00:00+08:00")])
    for i, d in enumerate(DAYS[1:], start=1):
        land(data_dir, "orders", d, [order(f"o{i}", event_time=f"{d}T10:00:00+08:00")])
    land(data_dir, "payments", DAYS[4], [payment("pay1", paid_at="2026-11-04T09:00:00+08:00")])
    ingest(data_dir, DAYS[0])
    return data_dir


@pytest.mark.parametrize("mode", ["ro", "rw"])
def test_open_session_blocks_neither_ingest_nor_close_nor_rebuild(ingested: Path, mode: str):
    root = ingested
    session = Session(root / "warehouse.duckdb", mode)
    try:
        assert session.query("select count(*) from estimates") == "[(1,)]"
        for d in DAYS[1:]:
            ingest(root, d)  # old code: waited 30 s, then "held by another process"
        result = close_month(root, "2026-10")
        assert result.changed and result.bills
        rebuild(root)
        # the open session still reads the state it opened ...
        assert session.query("select count(*) from bills") == "[(0,)]"
        # ... and a new connection sees the newest publication
        assert _count(root, "select count(*) from bills where bill_month = '2026-10'") == 1
        assert _count(root, "select count(distinct as_of_date) from estimates") == 5
        assert _count(root, "select count(*) from payments") == 1
        # the analyst's own writes went into the file they opened, not into the publication
        assert _count(root, "select count(*) from quarantine where feed = 'mine'") == 0
        names = _count(
            root, "select count(*) from information_schema.tables where table_name = 'my_scratch'"
        )
        assert names == 0
    finally:
        session.close()
    # once the session is gone nothing of it is replayed into the published file
    assert _count(root, "select count(*) from quarantine where feed = 'mine'") == 0
    assert not (root / "warehouse.duckdb.wal").exists()


def test_session_opened_mid_run_sees_whole_publications_only(ingested: Path):
    """A reader that connects again and again while ingests run always sees a whole
    publication: the estimates of a date arrive with its latest landing date, never half."""
    root = ingested
    script = textwrap.dedent(
        """
        import sys, time, duckdb
        path, stop = sys.argv[1], sys.argv[2]
        seen = set()
        import os
        while not os.path.exists(stop):
            con = duckdb.connect(path, read_only=True)
            d, n = con.execute(
                "select (select value from _meta where key = 'latest_landing_date'), "
                "(select count(distinct as_of_date) from estimates)").fetchone()
            con.close()
            seen.add((d, n))
        print(sorted(seen))
        """
    )
    stop = root.parent / "stop-reader"
    reader = subprocess.Popen(
        [sys.executable, "-c", script, str(root / "warehouse.duckdb"), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for d in DAYS[1:]:
            ingest(root, d)
        close_month(root, "2026-10")
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    seen = eval(out)  # noqa: S307 - our own reader's repr of a list of tuples
    for latest, n_days in seen:
        assert n_days == DAYS.index(latest) + 1, seen


def test_published_file_is_not_the_writers_copy(ingested: Path):
    root = ingested
    assert work_path(root).exists()
    assert work_path(root).resolve() != (root / "warehouse.duckdb").resolve()
    con = connect_published(root)
    try:
        assert con.execute("select count(*) from estimates").fetchone()[0] == 1
    finally:
        con.close()
    # a lost working copy is rebuilt from the lake by the next writer
    work_path(root).unlink()
    ingest(root, DAYS[1])
    assert _count(root, "select count(distinct as_of_date) from estimates") == 2


def test_published_before_anything_is_an_empty_database(data_dir: Path):
    con = connect_published(data_dir)
    try:
        assert con.execute("select count(*) from bills").fetchone()[0] == 0
        assert con.execute("select count(*) from amount_due").fetchone()[0] == 0
    finally:
        con.close()
    assert not (data_dir / "warehouse.duckdb").exists()


# --- DuckDB 1.x ----------------------------------------------------------------------------------

DUCKDB1_LOCK = REPO / "requirements" / "duckdb1.txt"
DUCKDB1_VENV = REPO / ".venv-duckdb1"


def _duckdb1_python() -> str:
    """A virtual environment with DuckDB 1.x from the pinned, hashed requirements file."""
    py = DUCKDB1_VENV / "bin" / "python"
    stamp = DUCKDB1_VENV / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < DUCKDB1_LOCK.stat().st_mtime:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DUCKDB1_VENV)], check=True)
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--require-hashes", "-r", str(DUCKDB1_LOCK)],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, f"cannot install DuckDB 1.x for this test: {r.stderr[-2000:]}"
        stamp.touch()
    return str(py)


def test_published_database_opens_in_duckdb_1(ingested: Path):
    root = ingested
    for d in DAYS[1:]:
        ingest(root, d)
    close_month(root, "2026-10")
    py = _duckdb1_python()
    version = subprocess.run(
        [py, "-c", "import duckdb; print(duckdb.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert version.startswith("1."), version
    session = Session(root / "warehouse.duckdb", "ro", python=py)
    try:
        assert session.query("select count(*), sum(amount_due) from bills") == repr(
            duckdb.connect(str(root / "warehouse.duckdb"), read_only=True)
            .execute("select count(*), sum(amount_due) from bills")
            .fetchall()
        )
        for view in ("amount_due", "expenditure_by_product", "expenditure_by_customer"):
            assert not session.query(f"select count(*) from {view}").startswith("error"), view
        # and a DuckDB 1.x session left open does not stop the next run either
        ingest(root, DAYS[4])
    finally:
        session.close()


def test_storage_version_is_written_for_old_clients(ingested: Path):
    """DuckDB 2.0 writes a storage format that DuckDB 1.5 refuses ("can only read versions
    between 64 and 68"); the published file carries DuckDB 1.2's format (64), whatever the
    writer's private copy uses."""
    with open(ingested / "warehouse.duckdb", "rb") as fh:
        header = fh.read(20)
    assert header[8:12] == b"DUCK"
    assert 64 <= int.from_bytes(header[12:20], "little") <= 68
    assert PUBLISHED_STORAGE_VERSION == "v1.2.0"


def _work_storage_version(root: Path) -> str:
    con = duckdb.connect()
    con.execute(f"attach '{work_path(root)}' as w (read_only)")
    tags = con.execute("select tags from duckdb_databases() where database_name = 'w'").fetchone()
    con.close()
    return tags[0]["storage_version"]


def test_a_working_copy_in_another_storage_format_is_rebuilt_in_the_published_one(
    ingested: Path,
):
    """The writer's working copy is kept in the published format, so publishing copies its
    bytes; one an earlier koobill wrote in DuckDB's newer format is rebuilt from the lake by
    the next writer, with nothing lost."""
    root = ingested
    assert _work_storage_version(root) == f"{PUBLISHED_STORAGE_VERSION}+"
    old = work_path(root).with_name("old.duckdb")
    con = duckdb.connect()
    con.execute(f"attach '{work_path(root)}' as w (read_only)")
    con.execute(f"attach '{old}' as o (storage_version 'v2.0.0')")
    con.execute("copy from database w to o")
    con.close()
    old.replace(work_path(root))
    assert _work_storage_version(root) != f"{PUBLISHED_STORAGE_VERSION}+"
    ingest(root, DAYS[1])
    assert _work_storage_version(root) == f"{PUBLISHED_STORAGE_VERSION}+"
    assert _count(root, "select count(distinct as_of_date) from estimates") == 2


def test_a_killed_publish_leaves_the_previous_publication(ingested: Path):
    """A publication is written beside the served file and renamed over it: a temporary file
    left by a killed run is never what a reader opens, and the next publication removes it."""
    root = ingested
    stale = root / ".warehouse.deadbeef.publish.duckdb"
    stale.write_bytes(b"half a database")
    assert _count(root, "select count(distinct as_of_date) from estimates") == 1
    ingest(root, DAYS[1])
    assert not stale.exists()
    assert _count(root, "select count(distinct as_of_date) from estimates") == 2


def test_a_working_copy_from_an_older_koobill_is_rebuilt_from_the_lake(ingested: Path):
    """A data dir whose working copy lacks a column added since (e.g. quarantine.reason_codes)
    is brought up to date from the lake by the next writer, with nothing lost."""
    root = ingested
    con = duckdb.connect(str(work_path(root)))
    try:
        con.execute("alter table quarantine drop column reason_codes")
    finally:
        con.close()
    ingest(root, DAYS[1])
    assert _count(root, "select count(distinct as_of_date) from estimates") == 2
    assert (
        _count(
            root,
            "select count(*) from duckdb_columns() where table_name = 'quarantine' "
            "and column_name = 'reason_codes'",
        )
        == 1
    )


def test_a_lake_written_before_a_column_existed_still_rebuilds(ingested: Path):
    """Partitions written by an older koobill lack the newer columns: they load as NULL."""
    import pyarrow.parquet as pq

    root = ingested
    for d in DAYS[1:]:
        ingest(root, d)
    close_month(root, "2026-10")
    from helpers import commit_lake_files

    from pipelines import lake

    # the partition recommitted as an older koobill wrote it: its bills file lacks the column
    partition = root / "lake" / "bills" / "bill_month=2026-10"
    current = lake.at(partition)
    files = {m: current / f"{m}.parquet" for m in lake.members(partition.parent)}
    files = {m: f for m, f in files.items() if f.exists()}
    files["bills"] = pq.read_table(files["bills"]).drop_columns(["supersedes_invoice_no"])
    commit_lake_files(partition, files)
    assert "supersedes_invoice_no" not in pq.read_schema(lake.at(partition) / "bills.parquet").names
    rebuild(root)
    assert _count(root, "select count(*) from bills where supersedes_invoice_no is null") == 1
