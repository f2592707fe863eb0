"""warehouse.duckdb: the analysts' serving layer, rebuilt from the lake at any time.

Readers never block writers. Two DuckDB files:

- ``<data-dir>/.koobill/warehouse.duckdb``, the writer's private working copy. Each pipeline step
  commits its Parquet partition to the lake first, then replaces the same partition here inside
  one transaction, holding the data dir's writer lock. No one else opens it.
- ``<data-dir>/warehouse.duckdb``, the *published* database that analysts, their tools and the
  Partner Bills page open. After every change, ``publish`` copies the working copy into a new
  file beside it (in DuckDB's v1.2.0 storage format, so DuckDB 1.2 and later open it) and renames
  it over the published one. A session left open, read-only or read-write, keeps the file it
  opened and never holds up the rename; its next connection sees the newest publication.

``rebuild`` recreates both from the lake.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

import duckdb

from pipelines import schema
from pipelines.config import Paths, resolve_data_dir
from pipelines.db import connect, database_path, ident, lake_files, render, sql
from pipelines.errors import KoobillError
from pipelines.files import fsync_dir, fsync_file
from pipelines.lake import at, export_history_files, lock_wait_s, partitions

TABLES = [t for t in schema.PUBLIC if t.kind == "table"]
# (lake table folder, partition prefix, file name in the partition, warehouse table, key column)
LAKE_SOURCES = [
    ("ingest", "landing_date", "quarantine.parquet", "quarantine", "landing_date"),
    ("ingest", "landing_date", "files.parquet", "ingest_files", "landing_date"),
    ("ingest", "landing_date", "payments.parquet", "payments", "landing_date"),
    ("ingest", "landing_date", "estimates.parquet", "estimates", "as_of_date"),
    ("bills", "bill_month", "bills.parquet", "bills", "bill_month"),
    ("bills", "bill_month", "bill_lines.parquet", "bill_lines", "bill_month"),
    # recon hook: reconciliation, estimate variance and provenance of a closed month
    ("reconcile", "bill_month", "reconciliation.parquet", "reconciliation", "bill_month"),
    ("reconcile", "bill_month", "estimate_variance.parquet", "estimate_variance", "bill_month"),
    ("reconcile", "bill_month", "bill_provenance.parquet", "bill_provenance", "bill_month"),
]
# in creation order: _current_bill_lines (internal, undocumented) is read by the two after it
VIEWS = ["_current_bill_lines", "amount_due", "expenditure_by_product", "expenditure_by_customer"]
# DuckDB storage format of the published file: DuckDB 1.2.0 and every later version open it.
PUBLISHED_STORAGE_VERSION = "v1.2.0"


def work_path(root: Path) -> Path:
    """The writer's private working copy of the warehouse."""
    return Path(root) / ".koobill" / "warehouse.duckdb"


def open_warehouse(root: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """The writer's working copy (callers hold the data dir's writer lock and call ``publish``
    after their change), or with ``read_only`` the published database (``connect_published``).

    A data dir without a working copy (new, or from before the copy existed) gets one rebuilt
    from the lake first."""
    if read_only:
        return connect_published(root)
    _set_work_origin(root, None)  # about to change: no longer equal to a publication
    work = work_path(root)
    if not work.exists():
        _rebuild_work(Path(root))
    con = _connect_waiting(work, False)
    # written by an older koobill (another schema, or a storage format the published file
    # cannot be copied from): the lake has it all
    if not (_schema_is_current(con) and _storage_version(con) == PUBLISHED_STORAGE_VERSION):
        con.close()
        _rebuild_work(Path(root))
        con = _connect_waiting(work, False)
    ensure_schema(con)
    return con


def _schema_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Every public table exists with exactly the columns of ``schema``."""
    have: dict[str, list[str]] = {}
    for table, column in con.execute(
        "select table_name, column_name from duckdb_columns() "
        "where database_name = current_database() and schema_name = 'main' "
        "order by table_name, column_index"
    ).fetchall():
        have.setdefault(table, []).append(column)
    return all(have.get(t.name) == t.column_names for t in TABLES)


def _storage_version(con: duckdb.DuckDBPyConnection, database: str | None = None) -> str:
    """The storage format of a database (``v1.2.0``): the one it was created with."""
    q = "select tags from duckdb_databases() where database_name = coalesce($db, current_database())"
    tags = con.execute(q, {"db": database}).fetchone()[0] or {}
    return str(tags.get("storage_version", "")).rstrip("+")


def connect_published(root: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the newest published analysts' database.

    Never waits for and never blocks a writer: the published file is replaced by a rename, and
    this connection keeps reading the file it opened. Before anything is published, an empty
    in-memory database with every public table and view. On object storage the newest
    published database is fetched from the bucket first."""
    from pipelines import objectstore

    path = objectstore.refresh(Paths(Path(root)).warehouse)
    if path.exists():
        # Attached into a fresh in-memory database rather than opened by path: DuckDB caches
        # database instances by path within a process, so while any connection to the old file
        # is open in this process (a long-lived page), connect(path) would hand back the old file.
        con = connect(":memory:")
        try:
            con.execute("attach $path as published (read_only)", {"path": str(path)})
            con.execute("use published")
            return con
        except duckdb.IOException:
            con.close()
            if path.exists():
                raise
    con = connect(":memory:")
    ensure_schema(con)
    return con


def publish(root: Path) -> Path:
    """Copy the working copy into a new file and rename it over ``warehouse.duckdb``.

    The working copy is kept in the published storage format, so the copy is a copy of its
    bytes (a year of history is a file of hundreds of MB: rewriting it table by table would
    cost seconds on every ingest); a working copy in another format, or with a write-ahead
    log beside it (a connection still open on it), is copied table by table instead.
    Callers hold the writer lock. Open sessions on the previous file are not disturbed."""
    root = Path(root)
    work = work_path(root)
    target = Paths(root).warehouse
    tmp = root / f".warehouse.{uuid.uuid4().hex[:12]}.publish.duckdb"
    con = connect(":memory:")
    try:
        con.execute("attach $path as work (read_only)", {"path": str(work)})
        if (
            _storage_version(con, "work") == PUBLISHED_STORAGE_VERSION
            and not Path(str(work) + ".wal").exists()
        ):
            con.execute("detach work")
            database_path(tmp)
            shutil.copyfile(work, tmp)
        else:
            con.execute(
                f"attach $path as pub (storage_version '{PUBLISHED_STORAGE_VERSION}')",
                {"path": database_path(tmp)},
            )
            con.execute("copy from database work to pub")
            con.execute("detach pub")
            con.execute("detach work")
    except BaseException:
        con.close()
        _unlink(tmp, Path(str(tmp) + ".wal"))
        raise
    con.close()
    try:
        fsync_file(tmp)
        # A read-write session left open on the previous file may have a write-ahead log beside
        # it; a new connection to the new file would replay it. It belongs to a file that is no
        # longer published: drop it (analysts' own tables belong in their own database).
        wal = Path(str(target) + ".wal")
        _unlink(wal)
        os.replace(tmp, target)
        _unlink(wal)
        fsync_dir(root)
    except OSError as exc:
        _unlink(tmp)
        raise KoobillError(
            f"cannot publish {target}: {exc.strerror or exc}; the lake is committed, "
            "run `koobill rebuild-warehouse` once the problem is fixed"
        ) from None
    for stale in root.glob(".warehouse.*.publish.duckdb*"):  # left by a killed publish
        _unlink(stale)
    from pipelines import objectstore

    etag = objectstore.upload_if_mirrored(target)  # object storage: the bucket's copy, one PUT
    if etag is not None:
        _set_work_origin(root, etag)  # the working copy is this publication
    return target


def pull_published(root: Path) -> None:
    """On object storage, at the start of a writer's turn (holding the bucket's lock): make
    the working copy the bucket's published database unless it already is that publication
    (its etag is recorded beside it when it is published or pulled); with nothing published,
    rebuild it from the lake. A no-op on a local data dir."""
    from pipelines import objectstore

    root = Path(root)
    if objectstore.remote_of(root) is None:
        return
    target, work = Paths(root).warehouse, work_path(root)
    remote = objectstore.etag(target)
    if remote is not None and work.exists() and _work_origin(root) == remote:
        return
    _set_work_origin(root, None)
    work.parent.mkdir(parents=True, exist_ok=True)
    _unlink(work, Path(str(work) + ".wal"))
    if remote is not None and objectstore.download(target):
        shutil.copyfile(target, work)
        _set_work_origin(root, objectstore.etag(target))
    # else: no working copy; open_warehouse rebuilds it from the lake


def _origin_path(root: Path) -> Path:
    return work_path(root).with_name("warehouse.origin")


def _work_origin(root: Path) -> str | None:
    """The etag of the publication the working copy equals (object storage), if known."""
    try:
        return _origin_path(root).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _set_work_origin(root: Path, etag: str | None) -> None:
    from pipelines.files import write_text

    if etag is None:
        _unlink(_origin_path(root))
    else:
        write_text(_origin_path(root), etag, mirror=False)


def _unlink(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


def _connect_waiting(path: Path, read_only: bool, wait_s: float = 30.0):
    """Open the working copy; only koobill writers (holding the lock) open it, so waiting
    means a foreign process opened the private file: wait ``wait_s`` seconds, then fail with
    what to do."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise KoobillError(
                    f"{path} (koobill's private working copy) is held by another process: "
                    f"{str(exc).splitlines()[0]}. Analysts open {path.parent.parent}/"
                    "warehouse.duckdb instead; close that process and rerun this command."
                ) from None
            time.sleep(0.5)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing public tables and (re)create the views from ``sql/``."""
    for t in TABLES:
        con.execute(t.ddl())
    con.execute("create table if not exists _meta (key varchar primary key, value varchar)")
    for name in VIEWS:
        con.execute(f"create or replace view {name} as\n{sql(name)}")


def replace_partition(
    con: duckdb.DuckDBPyConnection, table: str, key: str, value: str, files: Iterable[Path]
) -> None:
    """Delete ``table``'s rows where ``key`` = ``value`` and insert the rows of ``files``.

    Runs inside the caller's transaction; columns are matched by name so the lake may carry
    extra columns."""
    con.execute(f"delete from {table} where {key}::varchar = ?", [value])
    files = [f for f in files if f.exists()]
    if files:
        insert_from_lake(con, table, files)


def insert_from_lake(con: duckdb.DuckDBPyConnection, table: str, files: list[Path]) -> None:
    """Insert the rows of lake ``files`` into ``table``, matching columns by name. A column the
    files do not have (written before the column existed) is NULL, so older lakes still load."""
    t = schema_of(table)
    files_ = {"files": lake_files(files)}
    q = "describe select * from read_parquet($files, hive_partitioning = false, union_by_name = true)"
    present = {r[0] for r in con.execute(q, files_).fetchall()}
    select = ", ".join(
        f'"{n}"' if n in present else f'null::{typ} as "{n}"' for n, typ, _ in t.columns
    )
    query = render(
        "warehouse/insert_from_lake",
        table=ident(table),
        columns=", ".join(ident(c) for c in t.column_names),
        select=select,
    )
    con.execute(query, files_)


def schema_of(table: str) -> schema.Table:
    for t in schema.PUBLIC:
        if t.name == table:
            return t
    raise KeyError(table)


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("insert or replace into _meta values (?, ?)", [key, value])


def sync_partition(root: Path, lake_table: str, value: str) -> None:
    """Replace one lake partition's rows in every warehouse table fed by it, atomically, then
    publish. An ingest partition also moves the latest landing date."""
    paths = Paths(root)
    prefix = next(pf for lt, pf, *_ in LAKE_SOURCES if lt == lake_table)
    part = at(paths.lake / lake_table / f"{prefix}={value}")
    con = open_warehouse(root)
    try:
        con.execute("begin transaction")
        for lt, _prefix, fname, table, key in LAKE_SOURCES:
            if lt == lake_table:
                replace_partition(con, table, key, value, [part / fname])
        if lake_table == "ingest":
            _set_latest_landing_date(con, root)
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.close()
    publish(root)


def _set_latest_landing_date(con: duckdb.DuckDBPyConnection, root: Path) -> bool:
    """Record the latest committed landing date; True if it changed."""
    dates = [v for v, _ in partitions(Paths(root).ingest, "landing_date")]
    if not dates:
        return False
    row = con.execute("select value from _meta where key = 'latest_landing_date'").fetchone()
    if row and row[0] == dates[-1]:
        return False
    set_meta(con, "latest_landing_date", dates[-1])
    return True


def rebuild(data_dir: str | Path | None = None) -> None:
    """Recreate the working copy from the lake and publish it, holding the data dir's writer
    lock. Sessions open on the published database are not disturbed."""
    from pipelines.lake import data_dir_lock

    root = resolve_data_dir(data_dir)
    with data_dir_lock(root, wait_s=lock_wait_s(), what="rebuild-warehouse"):
        _rebuild_work(root)
        publish(root)


def _rebuild_work(root: Path) -> None:
    """Write a new working copy from the lake to a temporary file, then rename it into place."""
    paths = Paths(root)
    work = work_path(root)
    work.parent.mkdir(exist_ok=True)
    tmp = work.with_name(".warehouse.rebuild.duckdb")
    _unlink(tmp, Path(str(tmp) + ".wal"))
    con = connect(tmp, storage_version=PUBLISHED_STORAGE_VERSION)
    try:
        ensure_schema(con)
        for lt, prefix, fname, table, _key in LAKE_SOURCES:
            files = [
                p / fname for _, p in partitions(paths.lake / lt, prefix) if (p / fname).exists()
            ]
            if files:
                insert_from_lake(con, table, files)
        hist = export_history_files(root)
        if hist:
            from pipelines.exports import refresh_export_status

            insert_from_lake(con, "export_history", hist)
            refresh_export_status(con)  # a restatement superseded some exported versions
        _set_latest_landing_date(con, root)
        con.execute("checkpoint")
    finally:
        con.close()
    _unlink(Path(str(work) + ".wal"))
    tmp.replace(work)
    _unlink(Path(str(tmp) + ".wal"))
