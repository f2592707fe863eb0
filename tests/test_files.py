"""The one atomic-write helper (pipelines/files.py): a file is replaced whole or not at all, a
failed write leaves the old file and no temp file, and the error names the file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipelines import files, lake
from pipelines.errors import KoobillError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_replaces_the_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.json"  # the folder is made
    files.write_text(target, "one")
    files.write_text(target, "two")
    assert target.read_text() == "two"
    assert leftovers(target.parent) == []


def test_a_secret_is_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    files.write_bytes(target, b"s3cret", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "bill.csv"
    files.write_text(target, "old")
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("the writer died")
    assert target.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_an_os_error_names_the_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    (target / "inside").mkdir(parents=True)  # a folder where the file should go: even root fails
    with pytest.raises(KoobillError, match=f"cannot write {target}: "):
        files.write_text(target, "new")
    assert (target / "inside").is_dir()
    assert leftovers(tmp_path) == []


def test_the_writer_may_use_any_library_that_takes_a_path(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = tmp_path / "t.parquet"
    with files.atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".t.parquet.")
        pq.write_table(pa.table({"a": [1, 2]}), str(tmp))
    assert pq.read_table(target).column("a").to_pylist() == [1, 2]


def test_stale_temp_files_of_the_same_target_only_are_cleaned(tmp_path: Path) -> None:
    target = tmp_path / "a[1]*.csv"  # glob characters in the name match only themselves
    (tmp_path / ".a[1]*.csv.dead0001.tmp").write_text("left by a killed run")
    (tmp_path / ".a1x.csv.dead0002.tmp").write_text("another target's")
    files.write_text(target, "x")
    assert leftovers(tmp_path) == [".a1x.csv.dead0002.tmp", ".a[1]*.csv.dead0001.tmp"]
    files.write_text(target, "y", clean_stale=True)
    assert leftovers(tmp_path) == [".a1x.csv.dead0002.tmp"]
    # lake.atomic_path is the data dir's flavour: its callers hold the lock, so it cleans
    (tmp_path / ".a[1]*.csv.dead0003.tmp").write_text("left by a killed run")
    with lake.atomic_path(target) as tmp:
        tmp.write_text("z")
    assert leftovers(tmp_path) == [".a1x.csv.dead0002.tmp"] and target.read_text() == "z"


def test_create_bytes_creates_once(tmp_path: Path) -> None:
    target = tmp_path / "session-secret"
    assert files.create_bytes(target, b"first", mode=0o600) is True
    assert files.create_bytes(target, b"second", mode=0o600) is False
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(tmp_path) == []


def test_the_old_names_still_import() -> None:
    from pipelines.lake import DataDirError, KoobillError, LockBusy, fsync_dir

    assert issubclass(DataDirError, KoobillError) and issubclass(LockBusy, KoobillError)
    assert fsync_dir is files.fsync_dir
