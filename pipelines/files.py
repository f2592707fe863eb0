"""Atomic file writes: the one way koobill replaces a file.

A file is written to a temporary name in its own folder, flushed and fsynced, renamed over the
target (``os.replace``, atomic on POSIX), and the folder is fsynced so the rename survives a
crash. A reader sees the old file or the new one, never a part; a failed or killed write leaves
the old file in place (and at worst a ``.<name>.<random>.tmp`` beside it, which the next write
of the same target with ``clean_stale=True`` removes).

Whole partitions (a folder of files) are committed by :mod:`pipelines.lake`, on top of this.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import KoobillError

__all__ = ["atomic_path", "create_bytes", "fsync_dir", "fsync_file", "write_bytes", "write_text"]


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable; best effort where the file
    system cannot fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a written (and closed) file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"


@contextlib.contextmanager
def atomic_path(path: Path, *, clean_stale: bool = False, mirror: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write (with any library that
    takes a path); on success it becomes ``path`` atomically and durably.

    ``clean_stale`` removes temp files of the same target left by a killed run: only for
    callers that hold a lock over every writer of ``path`` (the data dir's lock). An
    ``OSError`` (no space, permission denied) becomes a :class:`KoobillError` naming ``path``;
    the old file stays.

    Under the local mirror of a data dir on object storage, the file is then uploaded to its
    object (one PUT: the object changes whole), unless ``mirror`` is False (the object store's
    own downloads and state)."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise KoobillError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    if clean_stale:
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink(missing_ok=True)
    if mirror:
        from pipelines import objectstore

        objectstore.upload_if_mirrored(path)


def write_bytes(
    path: Path, data: bytes, *, mode: int = 0o666, clean_stale: bool = False, mirror: bool = True
) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`). The file is created
    with ``mode`` less the process umask (as ``open`` does) and never exists with other
    permissions: a secret written with ``mode=0o600`` is never readable by others."""
    with atomic_path(path, clean_stale=clean_stale, mirror=mirror) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def write_text(
    path: Path,
    text: str,
    *,
    mode: int = 0o666,
    clean_stale: bool = False,
    encoding="utf-8",
    mirror: bool = True,
) -> None:
    """:func:`write_bytes` of ``text`` encoded (UTF-8 by default)."""
    write_bytes(path, text.encode(encoding), mode=mode, clean_stale=clean_stale, mirror=mirror)


def create_bytes(path: Path, data: bytes, *, mode: int = 0o666) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it.

    The file appears whole or not at all (written to a temp file, then hard-linked to its
    name, which fails if another process created it first): a concurrent reader never sees
    it empty. For files made once and then only read, such as a secret key."""
    path = Path(path)
    tmp = _temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    except OSError as exc:
        raise KoobillError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
