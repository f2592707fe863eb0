"""The lake's tables: Delta Lake tables (delta-rs), on local disk or on S3-compatible storage.

Every lake file kind is one Delta table, partitioned by the lake table's key
(``lake/ingest/usage`` by ``landing_date``, ``lake/bills/bills`` by ``bill_month``, ...). A
partition holds one Parquet file, written by DuckDB and committed as it is: a commit adds the
new file and removes the partition's old one in one Delta transaction (``overwrite`` with a
partition filter), so a reader sees the old file or the new one, never both or neither, and a
writer killed before the log entry lands leaves the previous version in place. Two writers
racing on one table: the log's conditional write lets one commit; the other gets
``CommitFailedError`` (:class:`LakeConflict` here) and nothing of it is visible.

The same code runs on a local data dir and on ``s3://bucket/prefix``: a table's address is its
path under the data dir, mapped to the object store's URI when the data dir is a mounted mirror
(:mod:`pipelines.objectstore`). DuckDB reads the files through local paths: on object storage
each data file (immutable, uniquely named) is fetched into the mirror once, when first read.

Superseded files are removed right after each commit (the Delta ``vacuum`` of the files the
log itself removed, never of a file another writer may be about to commit), unless
``KOOBILL_LAKE_RETENTION_HOURS`` keeps them for time travel; the log keeps every commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.errors import KoobillError

__all__ = [
    "LakeConflict",
    "commit_file",
    "last_run",
    "restore",
    "runs",
    "vacuum",
    "append_file",
    "delete_partition",
    "history",
    "is_table",
    "partition_files",
    "table_files",
    "table_uri",
]


class LakeConflict(KoobillError):
    """Another writer committed to the same table first; nothing of this commit is visible."""


_LOCK = threading.Lock()
_TABLES: dict[str, tuple] = {}  # uri -> (DeltaTable, version, its log's mtime); refreshed on use


def _remote(path: Path) -> str | None:
    from pipelines import objectstore

    return objectstore.remote_of(path)


def table_uri(path: Path) -> str:
    """The Delta table's URI: its local path, or its ``s3://`` URI under a mounted mirror."""
    return _remote(Path(path)) or str(path)


def _storage_options(uri: str) -> dict[str, str] | None:
    if not uri.startswith("s3://"):
        return None
    from pipelines import objectstore

    return objectstore.delta_storage_options()


def _log_stamp(path: Path, version: int) -> int | None:
    """The modification time of the log entry of ``version`` of the local table at ``path``
    (None when it is gone): a table deleted and made again at the same path has another one
    (or none), so a cached handle is never used on a table that is not its own."""
    try:
        return (Path(path) / "_delta_log" / f"{version:020d}.json").stat().st_mtime_ns
    except OSError:
        return None


def _cache(uri: str, path: Path, dt) -> None:
    local = not uri.startswith("s3://")
    v = dt.version()
    with _LOCK:
        _TABLES[uri] = (dt, v, _log_stamp(path, v) if local else None)


def _open(path: Path, *, refresh: bool = True):
    """The table at ``path`` (cached per process, brought up to its latest version), or None
    when no table was ever committed there."""
    from deltalake import DeltaTable

    uri = table_uri(path)
    local = not uri.startswith("s3://")
    with _LOCK:
        cached = _TABLES.get(uri)
    if cached is not None:
        dt, version, stamp = cached
        if not local or _log_stamp(path, version) == stamp:
            if refresh:
                dt.update_incremental()
                _cache(uri, path, dt)
            return dt
        _forget(uri)  # the table was deleted (and perhaps made again) since it was opened
    if local and not (Path(path) / "_delta_log").is_dir():
        return None
    try:
        dt = DeltaTable(uri, storage_options=_storage_options(uri))
    except Exception as exc:  # deltalake raises its own TableNotFoundError or OSError
        if type(exc).__name__ == "TableNotFoundError":
            return None
        raise KoobillError(f"cannot read the lake table {uri}: {exc}") from None
    _cache(uri, path, dt)
    return dt


def is_table(path: Path) -> bool:
    """True when a table was ever committed at ``path``."""
    return _open(path) is not None


def partition_files(path: Path, prefix: str) -> dict[str, list[str]]:
    """``{partition value: [file URI, ...]}`` of the table's current version (empty when there
    is no table)."""
    dt = _open(path)
    return {} if dt is None else _partition_files(dt, path, prefix)


def _partition_files(dt, path: Path, prefix: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    mark = f"/{prefix}="
    for uri in _file_uris(dt):
        i = uri.rfind(mark)
        if i < 0:
            raise KoobillError(f"lake table {table_uri(path)}: file {uri} is outside a partition")
        value = uri[i + len(mark) :].split("/", 1)[0]
        out.setdefault(value, []).append(uri)
    return out


def _file_uris(dt) -> list[str]:
    """The table's data files as plain paths or ``s3://`` URIs: delta-rs percent-encodes them
    (a space is ``%20``, a brace ``%7B``), and so decodes a table path it is given (a data dir
    whose path holds a literal ``%xx`` is not a path delta-rs can open)."""
    return [unquote(u) for u in dt.file_uris()]


def local_file(uri: str) -> Path:
    """A local path DuckDB can read for the data file ``uri`` (fetched once from object
    storage into the mirror; data files are immutable)."""
    if not uri.startswith("s3://"):
        return Path(uri)
    from pipelines import objectstore

    return objectstore.fetch_immutable(uri)


def _schema_with(schema: pa.Schema, prefix: str) -> pa.Schema:
    """The table's schema: the file's, plus the partition column as a string when the file
    does not carry it (Delta requires partition columns in the schema)."""
    if prefix in schema.names:
        return schema
    return schema.append(pa.field(prefix, pa.string()))


def _retention_hours() -> int:
    """Hours a file the log removed is kept before a vacuum deletes it (0: at once)."""
    from pipelines.env import settings

    return settings().lake_retention_hours


def _add(path: Path, rel: str, file: Path, partition: dict[str, str]):
    """Place ``file`` at ``rel`` in the table (see :func:`_place`) and return its Delta
    ``AddAction`` and its Arrow schema."""
    from deltalake.transaction import AddAction

    meta = pq.read_metadata(file)
    size = os.path.getsize(file)
    _place(path, rel, Path(file))
    stats = json.dumps({"numRecords": meta.num_rows})
    add = AddAction(rel, size, partition, int(time.time() * 1000), True, stats)
    return add, meta.schema.to_arrow_schema()


def _create(uri: str, schema: pa.Schema, add, props, partition_by: list[str] | None) -> None:
    """The table's first commit (fails if another writer created it meanwhile)."""
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    create_table_with_add_actions(
        uri,
        Schema.from_arrow(schema),
        [add],
        mode="error",
        partition_by=partition_by,
        configuration=TABLE_PROPERTIES,
        storage_options=_storage_options(uri),
        commit_properties=props,
    )


# A checkpoint (the table's state in one Parquet file) every 10 commits instead of Delta's
# default 100: opening a table reads its latest checkpoint and the commits after it, and every
# koobill command opens a dozen tables in a fresh process (65 commits: 16 ms a table; 5 ms
# from a checkpoint). The log keeps every commit (delta-rs would otherwise delete the commits
# older than 30 days behind a checkpoint): it is the lake's history, and recovery reads it.
CHECKPOINT_INTERVAL = 10
TABLE_PROPERTIES = {
    "delta.checkpointInterval": str(CHECKPOINT_INTERVAL),
    "delta.enableExpiredLogCleanup": "false",
}


def _set_properties(path: Path, uri: str, dt) -> None:
    """Give a table made by an earlier koobill the current properties (one commit, once); a
    failure only leaves the table as it was. ``dt`` is up to date."""
    if all(dt.metadata().configuration.get(k) == v for k, v in TABLE_PROPERTIES.items()):
        return
    try:
        dt.alter.set_table_properties(
            TABLE_PROPERTIES, commit_properties=_commit_properties("table properties")
        )
        _cache(uri, path, dt)
    except Exception:  # noqa: BLE001  (an optimisation: another writer's commit may race it)
        _forget(uri)


def commit_file(
    path: Path,
    prefix: str,
    value: str,
    file: Path,
    *,
    what: str = "",
    run: str | None = None,
    vacuum: bool = True,
) -> bool:
    """Make ``file`` (a Parquet file written for this commit) the whole content of partition
    ``prefix=value`` of the table at ``path``, in one Delta transaction. Returns True when the
    table is to be vacuumed: the commit replaced files of the partition, or it is the table's
    every CHECKPOINT_INTERVAL-th version (files a killed writer left unvacuumed are deleted
    then), or removed files are kept ``lake_retention_hours``.

    The file is moved (local) or uploaded (object storage) to a new, uniquely named data file
    of the table first; only the log entry makes it visible. ``run`` names the commit in the
    log (``koobill_run``: the commits of one lake partition share it); ``vacuum=False`` keeps
    the replaced file until the caller vacuums (:func:`vacuum`). Other commits are not
    vacuumed: a vacuum lists every file of the table, to delete none."""
    from deltalake.exceptions import CommitFailedError

    path = Path(path)
    rel = f"{prefix}={value}/part-{uuid.uuid4().hex}.parquet"
    add, schema = _add(path, rel, file, {prefix: value})
    schema = _schema_with(schema, prefix)
    uri = table_uri(path)
    props = _commit_properties(what or f"{prefix}={value}", run)
    replaced = False
    try:
        dt = _open(path)
        if dt is None:
            _create(uri, schema, add, props, [prefix])
        else:
            replaced = value in _partition_files(dt, path, prefix)
            dt.create_write_transaction(
                [add],
                mode="overwrite",
                schema=schema,
                partition_by=[prefix],
                partition_filters=[(prefix, "=", value)],
                commit_properties=props,
            )
    except CommitFailedError as exc:
        _forget(uri)
        raise LakeConflict(
            f"another writer committed to {uri} first; this commit of {prefix}={value} was "
            f"not made ({exc}). Run the command again."
        ) from None
    except Exception as exc:
        _forget(uri)
        if type(exc).__name__ == "DeltaError" and "already exists" in str(exc):
            raise LakeConflict(
                f"another writer created {uri} first; this commit of {prefix}={value} was not "
                "made. Run the command again."
            ) from None
        raise
    sweep = False
    if dt is not None:
        with contextlib.suppress(Exception):  # (optimisations: the data commit has landed)
            dt.update_incremental()  # the handle was at the version before the data commit
            _set_properties(path, uri, dt)
            sweep = dt.version() % CHECKPOINT_INTERVAL == 0
    due = replaced or sweep or bool(_retention_hours())
    if vacuum and due:
        _vacuum(path)
    return due


def append_file(path: Path, file: Path, *, what: str = "") -> None:
    """Add ``file`` to the unpartitioned, append-only table at ``path`` in one transaction
    (concurrent appends do not conflict)."""
    path = Path(path)
    add, schema = _add(path, f"part-{uuid.uuid4().hex}.parquet", file, {})
    uri = table_uri(path)
    props = _commit_properties(what or "append")
    dt = _open(path)
    if dt is None:
        try:
            _create(uri, schema, add, props, None)
            return
        except Exception as exc:
            if "already exists" not in str(exc):
                raise
            _forget(uri)
            dt = _open(path)
    dt.create_write_transaction([add], mode="append", schema=schema, commit_properties=props)


def table_files(path: Path) -> list[str]:
    """Every data file URI of the table's current version (empty when there is no table)."""
    dt = _open(path)
    return [] if dt is None else sorted(_file_uris(dt))


def delete_partition(
    path: Path,
    prefix: str,
    value: str,
    *,
    what: str = "",
    run: str | None = None,
    vacuum: bool = True,
) -> bool:
    """Remove partition ``prefix=value`` from the table at ``path`` (a commit of the table's
    log); False when the table has no such partition."""
    if value not in partition_files(path, prefix):
        return False
    dt = _open(path)
    dt.delete(
        f"{prefix} = '{_literal(value)}'",
        commit_properties=_commit_properties(what or "delete", run),
    )
    if vacuum:
        _vacuum(path)
    return True


def last_run(path: Path) -> tuple[int, str] | None:
    """``(version, koobill_run)`` of the table's latest commit that changed its data (vacuums
    and property changes excluded from "changed"; a restore names the run it went back to);
    None when no such commit is in the log's recent history."""
    for limit in (3, 20):  # the latest commits first: reading the log costs a file a commit
        for h in history(path, limit):
            op = h.get("operation", "")
            if op.startswith("VACUUM") or op == "SET TBLPROPERTIES":
                continue
            run = h.get("koobill_run")
            return (int(h["version"]), run) if run else None
    return None


def runs(path: Path, limit: int = 50) -> set[str]:
    """The ``koobill_run`` names of the table's recent commits."""
    return {h["koobill_run"] for h in history(path, limit) if h.get("koobill_run")}


def restore(path: Path, version: int, run: str) -> None:
    """Bring the table back to ``version`` (a Delta ``RESTORE``: its files come back, later
    ones are removed), naming ``run``, the run of that version, in the log."""
    dt = _open(path)
    dt.restore(version, commit_properties=_commit_properties(f"restore to version {version}", run))


def vacuum(path: Path) -> None:
    """Delete the files the table's log has removed (see :func:`_vacuum`)."""
    _vacuum(path)


def history(path: Path, limit: int | None = None) -> list[dict]:
    """The table's commits, newest first (``version``, ``timestamp``, ``operation``, ...)."""
    dt = _open(path)
    return [] if dt is None else dt.history(limit)


def _literal(value: str) -> str:
    """A partition value in a Delta predicate: koobill's values are dates and months, checked
    by their patterns before they get here; a quote is refused, never escaped."""
    if "'" in value or "\\" in value:
        raise KoobillError(f"invalid lake partition value {value!r}")
    return value


def _commit_properties(what: str, run: str | None = None):
    from deltalake import CommitProperties

    from pipelines import __version__

    meta = {"koobill": what, "koobill_version": __version__, "pid": os.getpid()}
    if run:
        meta["koobill_run"] = run
    return CommitProperties(custom_metadata=meta)


def _place(path: Path, rel: str, file: Path) -> None:
    """Put the data file where the table expects it, before the log entry names it: moved into
    the table's folder (on object storage, the mirror's copy) and uploaded when remote."""
    from pipelines.files import fsync_dir, fsync_file

    dst = path / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(file, dst)
    except OSError:  # another file system (a scratch folder elsewhere)
        shutil.copyfile(file, dst)
    fsync_file(dst)
    fsync_dir(dst.parent)
    if _remote(dst) is not None:
        from pipelines import objectstore

        objectstore.upload(dst)


def _vacuum(path: Path) -> None:
    """Delete the files this table's log has removed (never untracked files: those may be
    another writer's, about to be committed), keeping them ``lake_retention_hours``."""
    dt = _open(path)
    hours = _retention_hours()
    removed = dt.vacuum(retention_hours=hours, dry_run=False, enforce_retention_duration=False)
    if removed and _remote(Path(path)) is not None:
        for rel in removed:  # the mirror's copies of the removed files
            local = Path(path) / rel
            with contextlib.suppress(OSError):
                local.unlink()


def _forget(uri: str) -> None:
    with _LOCK:
        _TABLES.pop(uri, None)


def reset_cache() -> None:
    """Forget every opened table (tests; a process that changes data dir)."""
    with _LOCK:
        _TABLES.clear()
