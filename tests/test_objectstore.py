"""pipelines/objectstore.py against a real S3 server (moto, tests/s3server.py): URIs, the mirror,
uploads and downloads, sync, conditional writes, the lease lock, the errors, and deltalake's
concurrent commits with the storage options it gets."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import objectstore as store
from pipelines.errors import KoobillError, LockBusy

# --------------------------------------------------------------------------- URIs, no server


def test_is_remote() -> None:
    assert store.is_remote("s3://bucket/data")
    assert not store.is_remote("/srv/data")
    assert not store.is_remote(Path("s3://bucket/data"))  # a Path has lost its "//"
    assert store.is_remote("S3://bucket/data")  # the scheme in any case, as AWS tools take it


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://my.bucket-1/data/", ("my.bucket-1", "data")),
        ("s3://bucket//a/b//", ("bucket", "a/b")),
    ],
)
def test_parse_uri(uri: str, expected: tuple[str, str]) -> None:
    assert store.parse_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("/srv/data", "not an object storage URI"),
        ("gs://bucket/data", "not an object storage URI"),
        ("s3://", "names no bucket"),
        ("s3:///data", "names no bucket"),
        ("s3://ab/data", "invalid bucket name 'ab'"),
        ("s3://My_Bucket/data", "invalid bucket name 'My_Bucket'"),
        ("s3://user:secret@bucket/data", "invalid bucket name"),
        ("s3://a..b/data", "invalid bucket name"),
        ("s3://192.168.1.1/data", "invalid bucket name"),
        ("s3://bucket/a/../b", "'..' path segments"),
        ("s3://bucket/a//b", "empty, '.' and '..'"),
        ("s3://bucket/a/./b", "'.'"),
        ("s3://bucket/a\\b", "character '\\\\'"),
        ("s3://bucket/a?versionId=1", "character '?'"),
        ("s3://bucket/a\nb", "character '\\n'"),
    ],
)
def test_bad_uris_are_refused_clearly(uri: str, says: str) -> None:
    with pytest.raises(KoobillError, match=None) as err:
        store.parse_uri(uri)
    assert says in str(err.value)


def test_mount_maps_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOOBILL_CACHE_DIR", str(tmp_path / "cache"))
    store.reset()
    root = store.mount("s3://bucket/team/data/")
    assert root == (tmp_path / "cache" / "s3" / "bucket" / "team" / "data").resolve()
    assert root.is_dir()
    assert store.mirror_of("s3://bucket/team/data/landing/x.csv") == root / "landing" / "x.csv"
    assert store.remote_of(root) == "s3://bucket/team/data"
    assert store.remote_of(root / "landing" / "x.csv") == "s3://bucket/team/data/landing/x.csv"
    assert store.remote_of(root / "a" / ".." / "b") == "s3://bucket/team/data/b"
    assert store.remote_of(root.parent / "other") is None  # beside the mount, not under it
    assert store.remote_of(tmp_path) is None
    with pytest.raises(KoobillError, match="not in the local mirror"):
        store.download(tmp_path / "x.csv")
    store.reset()


# --------------------------------------------------------------------------- files on moto


def _mirror(s3_env: str) -> Path:
    return store.mount(s3_env)


def test_upload_download_round_trip(s3_env: str) -> None:
    root = _mirror(s3_env)
    f = root / "landing" / "usage" / "2026-11-01" / "usage.csv"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"record_id,amount\nr1,1.000001\n")
    etag = store.upload(f)
    assert etag.strip('"')
    assert store.exists(f) and store.exists(f"{s3_env}/landing/usage/2026-11-01/usage.csv")
    assert store.list_keys(root / "landing") == [
        ("usage/2026-11-01/usage.csv", f.stat().st_size, etag)
    ]
    f.unlink()
    assert store.download(f) is True
    assert f.read_bytes() == b"record_id,amount\nr1,1.000001\n"
    assert not list(f.parent.glob(".*.tmp"))  # the temp file became the file
    # by URI too, into the same mirror file
    f.unlink()
    assert store.ensure_local(f"{s3_env}/landing/usage/2026-11-01/usage.csv") == f
    assert f.is_file()


def test_a_big_file_is_uploaded_in_parts(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "MULTIPART_BYTES", 5 * 1024 * 1024)  # S3's smallest part
    root = _mirror(s3_env)
    f = root / "warehouse.duckdb"
    data = os.urandom(11 * 1024 * 1024)
    f.write_bytes(data)
    etag = store.upload(f)
    assert etag.strip('"').endswith("-3")  # a multipart etag: 3 parts
    f.unlink()
    assert store.download(f) and f.read_bytes() == data
    assert store.sync_down(root) == 0  # the etag of the upload was recorded


def test_download_of_a_missing_object_is_false(s3_env: str) -> None:
    root = _mirror(s3_env)
    target = root / "exports" / "nothing.pdf"
    assert store.download(target) is False
    assert not target.exists()
    assert store.exists(target) is False
    assert store.ensure_local(target) == target and not target.exists()
    # a stale mirror file is left as it is
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    assert store.download(target) is False
    assert target.read_bytes() == b"old"


def test_delete_removes_object_and_mirror_file(s3_env: str) -> None:
    root = _mirror(s3_env)
    f = root / "quality" / "report.json"
    f.parent.mkdir(parents=True)
    f.write_text("{}")
    store.upload(f)
    store.delete(f)
    assert not f.exists() and not store.exists(f)
    store.delete(f)  # again: nothing to do, no error


def test_sync_down_fetches_new_and_changed_objects_only(s3_env: str) -> None:
    root = _mirror(s3_env)
    bucket, prefix = store.parse_uri(s3_env)
    s3 = store.client()
    for name in ("a.csv", "b.csv", "sub/c.csv"):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/landing/{name}", Body=name.encode())
    s3.put_object(Bucket=bucket, Key=f"{prefix}/landing/sub/", Body=b"")  # a folder marker
    s3.put_object(Bucket=bucket, Key=f"{prefix}/.koobill.lock", Body=b"{}")  # never mirrored
    landing = root / "landing"
    assert store.sync_down(landing) == 3
    assert (landing / "sub" / "c.csv").read_bytes() == b"sub/c.csv"
    assert store.sync_down(landing) == 0  # nothing changed
    # changed remotely (same size: only the etag tells), new remotely, removed locally
    s3.put_object(Bucket=bucket, Key=f"{prefix}/landing/a.csv", Body=b"A.csv")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/landing/d.csv", Body=b"d")
    (landing / "b.csv").unlink()
    assert store.sync_down(landing) == 3
    assert (landing / "a.csv").read_bytes() == b"A.csv"
    assert (landing / "b.csv").read_bytes() == b"b.csv"
    assert (landing / "d.csv").read_bytes() == b"d"
    # changed locally: the bucket is the truth
    (landing / "d.csv").write_bytes(b"local edit")
    assert store.sync_down(landing) == 1
    assert (landing / "d.csv").read_bytes() == b"d"
    # the whole data dir: the lock object is skipped, the rest is up to date
    assert store.sync_down(root) == 0
    assert not (root / ".koobill.lock").exists()
    # what this mirror uploaded is not downloaded again
    (landing / "e.csv").write_bytes(b"e")
    store.upload(landing / "e.csv")
    assert store.sync_down(landing) == 0


def test_sync_down_refuses_a_key_that_would_escape_the_mirror(s3_env: str) -> None:
    root = _mirror(s3_env)
    bucket, prefix = store.parse_uri(s3_env)
    store.client().put_object(Bucket=bucket, Key=f"{prefix}/landing/../../x", Body=b"x")
    with pytest.raises(KoobillError, match=r"'\.\.' path segments"):
        store.sync_down(root / "landing")


def test_fetch_immutable_downloads_once(s3_env: str) -> None:
    bucket, prefix = store.parse_uri(s3_env)
    key = f"{prefix}/lake/usage/part-00000-1b2c.parquet"
    store.client().put_object(Bucket=bucket, Key=key, Body=b"parquet bytes")
    uri = f"s3://{bucket}/{key}"
    local = store.fetch_immutable(uri)
    assert local == store.mirror_of(uri) and local.read_bytes() == b"parquet bytes"
    store.client().delete_object(Bucket=bucket, Key=key)
    assert store.fetch_immutable(uri).read_bytes() == b"parquet bytes"  # no request made
    with pytest.raises(KoobillError, match="part-00001.parquet: it does not exist"):
        store.fetch_immutable(f"s3://{bucket}/{prefix}/lake/usage/part-00001.parquet")


def test_put_if_absent(s3_env: str) -> None:
    target = f"{s3_env}/claims/2026-11.json"
    assert store.put_if_absent(target, b"first") is True
    assert store.put_if_absent(target, b"second") is False
    assert store.download(target)
    assert store.mirror_of(target).read_bytes() == b"first"


def test_put_if_absent_races_have_one_winner(s3_env: str) -> None:
    target = f"{s3_env}/claims/race.json"
    barrier = threading.Barrier(6)
    results: list[bool] = []

    def claim(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent(target, str(i).encode()))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


# --------------------------------------------------------------------------- the lease lock


def _lock_key(s3_env: str) -> tuple[str, str]:
    bucket, prefix = store.parse_uri(s3_env)
    return bucket, f"{prefix}/.koobill.lock"


def test_remote_lock_is_released_on_exit(s3_env: str) -> None:
    bucket, key = _lock_key(s3_env)
    with store.remote_lock(s3_env, "ingest 2026-11-01", wait_s=0):
        body = json.loads(store.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body["what"] == "ingest 2026-11-01" and body["pid"] == os.getpid()
        assert body["host"] == socket.gethostname()
        assert body["expires_at"] > time.time() + 3500
    assert not store.exists(f"s3://{bucket}/{key}")
    with pytest.raises(RuntimeError), store.remote_lock(s3_env, "close", wait_s=0):
        raise RuntimeError("the block failed")
    assert not store.exists(f"s3://{bucket}/{key}")  # released on an error too


def test_second_holder_waits_then_lock_busy_names_the_holder(s3_env: str) -> None:
    with store.remote_lock(s3_env, "close 2026-10", wait_s=0):
        started = time.monotonic()
        with (
            pytest.raises(LockBusy) as err,
            store.remote_lock(s3_env, "export 2026-10", wait_s=1.2),
        ):
            pass
        assert time.monotonic() - started >= 1.2
    message = str(err.value)
    assert f"{socket.gethostname()} pid {os.getpid()}: close 2026-10" in message
    assert s3_env in message and "export 2026-10 was not started" in message
    assert message.endswith("Wait for it to finish and run again.")


def test_a_waiting_holder_gets_the_lock_when_it_is_released(s3_env: str) -> None:
    got = threading.Event()

    def second() -> None:
        with store.remote_lock(s3_env, "second", wait_s=10):
            got.set()

    with store.remote_lock(s3_env, "first", wait_s=0):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.8)
        assert not got.is_set()
    t.join(10)
    assert got.is_set()


def test_an_expired_lease_is_taken_over(s3_env: str) -> None:
    bucket, key = _lock_key(s3_env)
    dead = {"host": "gone-host", "pid": 1, "what": "ingest", "expires_at": time.time() - 1}
    assert store.put_if_absent(f"s3://{bucket}/{key}", json.dumps(dead).encode())
    with store.remote_lock(s3_env, "close", wait_s=0):
        body = json.loads(store.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        assert body["what"] == "close"
    assert not store.exists(f"s3://{bucket}/{key}")


def test_an_unreadable_lease_expires_after_the_lease_time(s3_env: str) -> None:
    bucket, key = _lock_key(s3_env)
    store.put_if_absent(f"s3://{bucket}/{key}", b"not json")
    with pytest.raises(LockBusy, match="unreadable lock object"):
        with store.remote_lock(s3_env, "close", wait_s=0):
            pass
    with store.remote_lock(s3_env, "close", wait_s=0, lease_s=0):
        pass


class _NoConditionalDelete:
    """The real client, except that a DeleteObject with If-Match is not implemented (as on
    stores without conditional deletes)."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    def delete_object(self, **kw):
        from botocore.exceptions import ClientError

        if "IfMatch" in kw:
            raise ClientError({"Error": {"Code": "NotImplemented"}}, "DeleteObject")
        return self.real.delete_object(**kw)


def test_without_conditional_deletes_the_lock_reads_then_deletes(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.client()
    monkeypatch.setattr(store, "client", lambda: _NoConditionalDelete(real))
    bucket, key = _lock_key(s3_env)
    dead = {"host": "gone-host", "pid": 1, "what": "ingest", "expires_at": time.time() - 1}
    store.put_if_absent(f"s3://{bucket}/{key}", json.dumps(dead).encode())
    with store.remote_lock(s3_env, "close", wait_s=0):  # taken over
        with pytest.raises(LockBusy, match="close"):
            with store.remote_lock(s3_env, "export", wait_s=0):
                pass
    assert not store.exists(f"s3://{bucket}/{key}")  # released


def test_a_taken_over_holder_does_not_release_the_new_lease(s3_env: str) -> None:
    bucket, key = _lock_key(s3_env)
    with ExitStack() as first:
        first.enter_context(store.remote_lock(s3_env, "slow close", wait_s=0, lease_s=0.2))
        time.sleep(0.3)
        with ExitStack() as second:
            second.enter_context(store.remote_lock(s3_env, "ingest", wait_s=0))
            with pytest.raises(KoobillError, match="expired while slow close ran") as err:
                first.close()
            assert "taken over by" in str(err.value) and "ingest" in str(err.value)
            body = json.loads(store.client().get_object(Bucket=bucket, Key=key)["Body"].read())
            assert body["what"] == "ingest"  # the new holder's lease is still there
    assert not store.exists(f"s3://{bucket}/{key}")


# --------------------------------------------------------------------------- errors


def test_missing_bucket_is_a_clear_error(s3_env: str) -> None:
    uri = "s3://koobill-no-such-bucket-7f3a/data/landing/x.csv"
    for call in (store.download, store.exists, store.ensure_local):
        with pytest.raises(KoobillError, match="bucket koobill-no-such-bucket-7f3a does not exist"):
            call(uri)
    with pytest.raises(KoobillError, match="bucket koobill-no-such-bucket-7f3a does not exist"):
        store.list_keys("s3://koobill-no-such-bucket-7f3a/data")
    with pytest.raises(KoobillError, match="bucket koobill-no-such-bucket-7f3a does not exist"):
        store.put_if_absent(uri, b"x")


def test_unreachable_endpoint_is_a_clear_error(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(KoobillError) as err:
        store.exists(f"{s3_env}/landing/x.csv")
    assert f"cannot reach the object store at http://127.0.0.1:{port}" in str(err.value)
    assert f"{s3_env}/landing/x.csv" in str(err.value)


def test_no_credentials_is_a_clear_error(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(KoobillError, match="no credentials: set AWS_ACCESS_KEY_ID"):
        store.download(f"{s3_env}/landing/x.csv")


def test_upload_of_a_missing_file_names_it(s3_env: str) -> None:
    root = _mirror(s3_env)
    with pytest.raises(KoobillError, match=r"cannot upload .*nothing\.csv"):
        store.upload(root / "nothing.csv")


# --------------------------------------------------------------------------- deltalake


def test_delta_storage_options(s3_env: str, s3_server: str, monkeypatch) -> None:
    assert store.delta_storage_options() == {
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ALLOW_HTTP": "true",
        "conditional_put": "etag",
    }
    monkeypatch.setenv("AWS_S3_LOCKING_PROVIDER", "dynamodb")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://storage.example.com")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert store.delta_storage_options() == {
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "https://storage.example.com",
    }


def test_racing_delta_overwrites_have_one_winner(s3_env: str) -> None:
    from deltalake import DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    options = store.delta_storage_options()
    uri = f"{s3_env}/lake/bills"
    write_deltalake(uri, pa.table({"amount": ["0.000000"]}), storage_options=options)
    # same base version, one after the other: deterministic
    first, second = (
        DeltaTable(uri, storage_options=options),
        DeltaTable(uri, storage_options=options),
    )
    write_deltalake(first, pa.table({"amount": ["1.000001"]}), mode="overwrite")
    with pytest.raises(CommitFailedError):
        write_deltalake(second, pa.table({"amount": ["2.000002"]}), mode="overwrite")
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1
    assert table.to_pyarrow_table().to_pydict() == {"amount": ["1.000001"]}

    # and two threads racing from the same base version
    tables = [DeltaTable(uri, storage_options=options) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def overwrite(i: int) -> None:
        barrier.wait()
        try:
            write_deltalake(tables[i], pa.table({"amount": [f"{i}.5"]}), mode="overwrite")
            outcome[f"{i}.5"] = "won"
        except CommitFailedError:
            outcome[f"{i}.5"] = "lost"

    threads = [threading.Thread(target=overwrite, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcome.values()) == ["lost", "won"]
    winner = next(k for k, v in outcome.items() if v == "won")
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 2
    assert table.to_pyarrow_table().to_pydict() == {"amount": [winner]}
