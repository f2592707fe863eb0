"""Atomic, idempotent writes to the lake and a single-writer lock on the data dir.

The lake is made of Delta Lake tables (:mod:`pipelines.delta`). A lake table such as
``lake/ingest`` (one partition per landing date) or ``lake/bills`` (per bill month) is a folder
of *member* tables, one per file kind (``lake/ingest/usage``, ``lake/bills/bill_lines``, ...),
all partitioned by the same key. A writer writes a partition's files into a staging folder
(``<table>/.staging/``), then commits each as that partition of its member table, one Delta
transaction each, the marker member last (``MARKERS``): the partition is listed from then on.
A crash leaves the previous version in place and a staging folder the next commit removes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# Re-exported: the errors live in pipelines.errors, the atomic file writes in pipelines.files.
from pipelines import delta, objectstore
from pipelines.errors import DataDirError, KoobillError, LockBusy, say_lock_wait
from pipelines.files import atomic_path as _atomic_path
from pipelines.files import fsync_dir

__all__ = [
    "DataDirError",
    "KoobillError",
    "LockBusy",
    "append_export_history",
    "atomic_path",
    "clean_orphans",
    "at",
    "commit_version",
    "data_dir_lock",
    "fsync_dir",
    "lock_wait_s",
    "memory_limit",
    "drop_partition",
    "recover",
    "recover_all",
    "export_history_files",
    "members",
    "new_version_dir",
    "partition",
    "partitions",
]


def lock_wait_s() -> float:
    """``$KOOBILL_LOCK_WAIT_S``: how long a command waits for the writer lock (default 600)."""
    from pipelines.env import settings

    return settings().lock_wait_s


def memory_limit() -> str:
    """``$KOOBILL_MEMORY_LIMIT``: DuckDB's memory limit of an ingest (default 2GB)."""
    from pipelines.env import settings

    return settings().memory_limit


@contextlib.contextmanager
def data_dir_lock(root: Path, *, wait_s: float = 0.0, what: str = "a command") -> Iterator[None]:
    """Hold the data dir's writer lock; wait up to ``wait_s`` seconds, then fail clearly.

    ``root`` must be a data dir (:func:`pipelines.config.require_data_dir`): the lock file is
    never created anywhere else, and the root is never created here. On object storage the
    lock is a lease object in the bucket (``.koobill.lock``, created with a conditional write),
    held besides the mirror's own lock, so writers on several machines take turns; the
    writer's working copy of the warehouse is brought up to the bucket's published one."""
    remote = objectstore.remote_of(root)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_local_lock(root, wait_s=wait_s, what=what))
        if remote is not None:
            stack.enter_context(objectstore.remote_lock(remote, what, wait_s))
            from pipelines.warehouse import pull_published

            pull_published(root)
        else:
            upgrade_legacy(root)
        recover_all(root)  # a writer killed between two members' commits
        yield


def upgrade_legacy(root: Path) -> int:
    """Move a lake written by koobill before the Delta tables (a symlink per partition to a
    folder under ``.versions/``, one Parquet file per export run) into Delta tables, once,
    under the writer lock; returns the partitions moved. The rows stay as they were."""
    lake_dir = Path(root) / "lake"
    moved = 0
    if not lake_dir.is_dir():
        return 0
    for table_dir in sorted(p for p in lake_dir.iterdir() if p.is_dir()):
        for link in sorted(p for p in table_dir.iterdir() if p.is_symlink()):
            if "=" in link.name and link.exists():
                vdir = new_version_dir(link)
                for f in link.resolve().iterdir():
                    if f.suffix == ".parquet":
                        shutil.copyfile(f, vdir / f.name)
                commit_version(link, vdir)  # refuses a partition without its marker file
                moved += 1
            link.unlink()
        shutil.rmtree(table_dir / ".versions", ignore_errors=True)
    history = lake_dir / "export_history"
    legacy = not (history / "_delta_log").exists()
    runs = sorted(history.glob("*.parquet")) if legacy else []
    for f in runs:  # one file per export run, in run order
        staged = staging_dir(f.parent) / f.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, staged)
        append_export_history(root, staged, f.stem)
    return moved + len(runs)


@contextlib.contextmanager
def _local_lock(root: Path, *, wait_s: float, what: str) -> Iterator[None]:
    """The data dir's lock file, held with ``flock``."""
    from pipelines.config import require_data_dir

    root = require_data_dir(root)
    path = root / ".koobill.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KoobillError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + wait_s
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = ""
                with contextlib.suppress(OSError):
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                if not said and time.monotonic() < deadline:
                    said = True
                    say_lock_wait(what, str(root), holder, wait_s)
                if time.monotonic() >= deadline:
                    raise LockBusy(
                        f"another koobill command holds the lock on {root}"
                        f"{' (' + holder + ')' if holder else ''}; {what} was not started. "
                        "Wait for it to finish and run again."
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {what}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


# The member committed last in each lake table: a partition exists once it has this member, so
# a writer killed between two members' commits leaves the partition listed as before (its old
# marker) or not at all (a first commit), never half-made and listed. The rerun recommits all.
MARKERS = {"ingest": "files", "bills": "bills", "reconcile": "reconciliation"}


def _marker(table_dir: Path) -> str:
    return MARKERS.get(Path(table_dir).name, "")


class Partition:
    """One committed partition of a lake table: ``part / "usage.parquet"`` is the local path of
    member table ``usage``'s file for this partition (fetched from object storage when the data
    dir is remote), or a path that does not exist when that member has no file here."""

    def __init__(self, table_dir: Path, prefix: str, value: str, files: _MemberFiles) -> None:
        self.table_dir = Path(table_dir)
        self.prefix = prefix
        self.value = value
        self.name = f"{prefix}={value}"
        self._files = files

    def __truediv__(self, name: str) -> Path:
        member = name.removesuffix(".parquet")
        uris = self._files.of(member).get(self.value, [])
        if not uris:
            return self.table_dir / member / self.name / ".absent" / name
        if len(uris) > 1:
            raise KoobillError(
                f"lake table {self.table_dir / member}: partition {self.name} has {len(uris)} "
                "files; koobill commits exactly one per partition"
            )
        return delta.local_file(uris[0])

    def uri(self, name: str) -> str | None:
        """The URI of member ``name``'s file in this partition (nothing is fetched), or None."""
        uris = self._files.of(name.removesuffix(".parquet")).get(self.value, [])
        if len(uris) > 1:
            self / name  # noqa: B018  (raises: koobill commits exactly one file per partition)
        return uris[0] if uris else None

    def exists(self) -> bool:
        """A listed partition is committed."""
        return True

    def __repr__(self) -> str:
        return f"Partition({self.table_dir}, {self.name})"


class _MemberFiles:
    """The member tables of one lake table, each read once (lazily) per listing."""

    def __init__(self, table_dir: Path, prefix: str) -> None:
        self.table_dir = Path(table_dir)
        self.prefix = prefix
        self._cache: dict[str, dict[str, list[str]]] = {}

    def of(self, member: str) -> dict[str, list[str]]:
        if member not in self._cache:
            self._cache[member] = delta.partition_files(self.table_dir / member, self.prefix)
        return self._cache[member]

    def members(self) -> list[str]:
        return members(self.table_dir)


def members(table_dir: Path) -> list[str]:
    """The member tables of a lake table (sorted), local or on object storage."""
    table_dir = Path(table_dir)
    remote = objectstore.remote_of(table_dir)
    if remote is not None:
        return objectstore.list_tables(table_dir)
    if not table_dir.is_dir():
        return []
    return sorted(p.name for p in table_dir.iterdir() if (p / "_delta_log").is_dir())


def partitions(table_dir: Path, prefix: str) -> list[tuple[str, Partition]]:
    """Committed partitions of a lake table: ``[(value, partition)]`` sorted by value.

    A partition is committed when the table's marker member has it (the member every commit
    writes last)."""
    table_dir = Path(table_dir)
    files = _MemberFiles(table_dir, prefix)
    marker = _marker(table_dir) or next(iter(members(table_dir)), None)
    if marker is None:
        return []
    values = sorted(files.of(marker))
    return [(v, Partition(table_dir, prefix, v, files)) for v in values]


def partition(table_dir: Path, prefix: str, value: str) -> Partition | None:
    """The committed partition ``prefix=value`` of a lake table, or None."""
    return dict(partitions(table_dir, prefix)).get(value)


def at(partition_path: Path) -> Partition:
    """The partition at ``partition_path`` (``.../<table>/<prefix>=<value>``), committed or not:
    ``at(p) / "bills.parquet"`` is the member's file, or a path that does not exist."""
    prefix, value = Path(partition_path).name.split("=", 1)
    table_dir = Path(partition_path).parent
    return Partition(table_dir, prefix, value, _MemberFiles(table_dir, prefix))


def export_history_files(root: Path) -> list[Path]:
    """The local paths of the export history's files (``lake/export_history``, an append-only
    Delta table: one file per export run)."""
    table = Path(root) / "lake" / "export_history"
    return [delta.local_file(u) for u in delta.table_files(table)]


def append_export_history(root: Path, file: Path, run_id: str) -> None:
    """Append one export run's rows (a Parquet file) to ``lake/export_history``."""
    delta.append_file(Path(root) / "lake" / "export_history", file, what=f"export run {run_id}")


def staging_dir(table_dir: Path) -> Path:
    """The lake table's scratch folder for files being written (never read as the lake)."""
    return Path(table_dir) / ".staging"


def new_version_dir(partition: Path) -> Path:
    """A fresh, empty folder to write the next version of ``partition`` into (its files are
    committed by :func:`commit_version`)."""
    staging = staging_dir(partition.parent)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = staging / f"{partition.name}.{stamp}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        staging.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except OSError as exc:
        raise KoobillError(
            f"cannot write under {staging}: {exc.strerror or exc}; nothing was changed"
        ) from None
    return path


def commit_version(partition: Path, version_dir: Path) -> None:
    """Commit the files of ``version_dir`` (``<member>.parquet`` each) as partition
    ``partition`` (``.../<table>/<prefix>=<value>``) of their member tables: one Delta
    transaction per member, the marker member last, all named by one run id in the log; a
    member the new version lacks has the partition removed. The files the commits replace are
    deleted only once the marker's commit landed.

    A writer stopped between two members' commits (killed, or a commit that failed) leaves
    members ahead of the marker: :func:`recover` (run at once on a failure here, and by the
    next writer under the lock) restores them to the versions the marker's last run left, so
    a partition is always read as one run wrote it."""
    table_dir = partition.parent
    prefix, value = partition.name.split("=", 1)
    files = {f.name.removesuffix(".parquet"): f for f in version_dir.iterdir()}
    bad = [n for n, f in files.items() if not f.name.endswith(".parquet") or not f.is_file()]
    if bad:
        raise KoobillError(f"cannot commit {partition}: unexpected entries {bad} in {version_dir}")
    marker = _marker(table_dir)
    if marker and marker not in files:
        raise KoobillError(f"cannot commit {partition}: the version has no {marker}.parquet")
    what = f"{table_dir.name} {partition.name}"
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
    order = sorted(files, key=lambda n: (n == marker, n))
    gone = sorted(set(members(table_dir)) - set(files))
    removed = []  # the members to vacuum (see delta.commit_file; a new partition removes none)
    try:
        for name in gone:
            if delta.delete_partition(
                table_dir / name, prefix, value, what=what, run=run, vacuum=False
            ):
                removed.append(name)
        for name in order:
            if delta.commit_file(
                table_dir / name, prefix, value, files[name], what=what, run=run, vacuum=False
            ):
                removed.append(name)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            recover(table_dir)
        if isinstance(exc, OSError):
            raise KoobillError(
                f"cannot commit {partition}: {exc.strerror or exc}; the previous version stays"
            ) from None
        raise
    for name in removed:
        delta.vacuum(table_dir / name)
    shutil.rmtree(version_dir, ignore_errors=True)
    clean_orphans(table_dir)


def recover(table_dir: Path) -> list[str]:
    """Undo the commits of a run that did not reach the marker member: each member whose
    latest data commit belongs to a run the marker never committed is restored (Delta
    ``RESTORE``) to the version before it. Returns the members restored. Callers hold the
    writer lock; a table without a marker member is left as it is."""
    table_dir = Path(table_dir)
    marker = _marker(table_dir)
    if not marker or not delta.is_table(table_dir / marker):
        return []
    latest = delta.last_run(table_dir / marker)
    done: set[str] | None = None  # the marker's recent runs, read only when needed
    restored = []
    for name in members(table_dir):
        if name == marker:
            continue
        last = delta.last_run(table_dir / name)
        if last is None or last[0] == 0 or (latest and last[1] == latest[1]):
            continue  # not koobill's, the table's first commit (not listed), or consistent
        if done is None:
            done = delta.runs(table_dir / marker)
        if last[1] in done:
            continue
        version = last[0] - 1
        run = next(  # the run whose data the member goes back to (vacuums name none)
            (
                h["koobill_run"]
                for h in delta.history(table_dir / name)
                if h["version"] <= version and h.get("koobill_run")
            ),
            "",
        )
        delta.restore(table_dir / name, version, run)
        delta.vacuum(table_dir / name)
        restored.append(name)
    return restored


def recover_all(root: Path) -> list[str]:
    """:func:`recover` every lake table with a marker member; returns ``table/member`` names."""
    out = []
    for table in MARKERS:
        table_dir = Path(root) / "lake" / table
        out += [f"{table}/{m}" for m in recover(table_dir)]
    return out


def drop_partition(partition: Path) -> bool:
    """Remove a partition from every member table (marker first, so it stops being listed
    before its members go); False when it was not there."""
    table_dir = partition.parent
    prefix, value = partition.name.split("=", 1)
    marker = _marker(table_dir)
    names = sorted(members(table_dir), key=lambda n: (n != marker, n))
    run = f"drop-{uuid.uuid4().hex[:12]}"
    found = False
    for name in names:
        found |= delta.delete_partition(table_dir / name, prefix, value, what="drop", run=run)
    return found


def clean_orphans(table_dir: Path) -> None:
    """Remove staging folders left by a killed writer (callers hold the writer lock)."""
    staging = staging_dir(table_dir)
    if staging.is_dir():
        for v in staging.iterdir():
            shutil.rmtree(v, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """:func:`pipelines.files.atomic_path` for a file under a data dir whose lock the caller
    holds: temp files of the same target left by a killed run are removed."""
    with _atomic_path(path, clean_stale=True) as tmp:
        yield tmp
