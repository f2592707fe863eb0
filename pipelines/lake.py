"""Atomic, idempotent writes to the lake and a single-writer lock on the data dir.

A partition (one landing date, one bill month) is a folder committed as a whole: its files are
written into a fresh version folder under ``<table>/.versions/``, then a symlink named after the
partition is swapped to it with one atomic ``rename``. A reader sees the old partition or the new
one, never half of either; a crash leaves the previous version in place and an orphan folder
that the next commit removes.
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
from pipelines.errors import DataDirError, KoobillError, LockBusy
from pipelines.files import atomic_path as _atomic_path
from pipelines.files import fsync_dir, fsync_file

__all__ = [
    "DataDirError",
    "KoobillError",
    "LockBusy",
    "atomic_path",
    "clean_orphans",
    "commit_version",
    "data_dir_lock",
    "fsync_dir",
    "lock_wait_s",
    "memory_limit",
    "new_version_dir",
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
    never created anywhere else, and the root is never created here."""
    from pipelines.config import require_data_dir

    root = require_data_dir(root)
    path = root / ".koobill.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KoobillError(f"cannot open the lock file {path}: {exc.strerror or exc}") from None
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = ""
                    with contextlib.suppress(OSError):
                        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
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


def new_version_dir(partition: Path) -> Path:
    """A fresh, empty folder to write the next version of ``partition`` into."""
    versions = partition.parent / ".versions"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    path = versions / f"{partition.name}.{stamp}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        versions.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except OSError as exc:
        raise KoobillError(
            f"cannot write under {versions}: {exc.strerror or exc}; nothing was changed"
        ) from None
    return path


def commit_version(partition: Path, version_dir: Path) -> None:
    """Atomically make ``version_dir`` the content of ``partition`` and drop the old version."""
    if partition.exists() and not partition.is_symlink():
        raise KoobillError(f"{partition} is not a koobill partition link; refusing to replace it")
    old = Path(os.readlink(partition)) if partition.is_symlink() else None
    try:
        for f in version_dir.iterdir():
            fsync_file(f)
        final = version_dir.with_suffix("")  # strip ".tmp": the folder is complete
        os.rename(version_dir, final)
        fsync_dir(final.parent)
        tmp_link = partition.parent / f".{partition.name}.{uuid.uuid4().hex[:8]}.link"
        os.symlink(os.path.relpath(final, partition.parent), tmp_link)
        os.replace(tmp_link, partition)  # the atomic switch
    except OSError as exc:
        raise KoobillError(
            f"cannot commit {partition}: {exc.strerror or exc}; the previous version stays"
        ) from None
    fsync_dir(partition.parent)
    if old is not None:
        old_abs = (partition.parent / old).resolve()
        if old_abs != final.resolve():
            shutil.rmtree(old_abs, ignore_errors=True)
    clean_orphans(partition.parent)


def clean_orphans(table_dir: Path) -> None:
    """Remove version folders no partition link points to (left by a crash)."""
    versions = table_dir / ".versions"
    if not versions.is_dir():
        return
    live = set()
    for link in table_dir.iterdir():
        if link.is_symlink():
            live.add((table_dir / os.readlink(link)).resolve())
        elif link.name.startswith(".") and link.name.endswith(".link"):
            link.unlink(missing_ok=True)
    for v in versions.iterdir():
        if v.resolve() not in live:
            shutil.rmtree(v, ignore_errors=True)


def partitions(table_dir: Path, prefix: str) -> list[tuple[str, Path]]:
    """Committed partitions of a table: ``[(value, folder)]`` sorted by value."""
    if not table_dir.is_dir():
        return []
    out = []
    for link in table_dir.iterdir():
        if link.name.startswith(prefix + "=") and link.is_symlink() and link.exists():
            out.append((link.name.split("=", 1)[1], link))
    return sorted(out)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """:func:`pipelines.files.atomic_path` for a file under a data dir whose lock the caller
    holds: temp files of the same target left by a killed run are removed."""
    with _atomic_path(path, clean_stale=True) as tmp:
        yield tmp
