"""A data dir on S3-compatible object storage (``s3://bucket/prefix``): its URIs, the S3 client,
the local mirror, file transfers and a lease lock.

The code works on a local folder, the *mirror* of the data dir (:func:`mount`:
``$KOOBILL_CACHE_DIR/s3/<bucket>/<prefix>``), a cache. Lake tables are Delta tables at their
``s3://`` URIs (deltalake, with :func:`delta_storage_options`); plain files (landing files,
exports, quality reports, the published DuckDB file) are copied between the mirror and the
bucket here. The bucket is the truth: :func:`sync_down` replaces a mirror file that differs.

Endpoint, credentials and region come from the standard AWS variables (boto3 reads them; see
docs/configuration.md). A failure of the store becomes a :class:`~pipelines.errors.KoobillError`
naming the object and the reason. boto3 is imported on first use only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.errors import KoobillError, LockBusy, say_lock_wait
from pipelines.files import atomic_path, write_text

__all__ = [
    "client",
    "delete",
    "delta_storage_options",
    "download",
    "ensure_local",
    "exists",
    "fetch_immutable",
    "is_remote",
    "list_keys",
    "mirror_of",
    "mount",
    "parse_uri",
    "put_if_absent",
    "remote_lock",
    "remote_of",
    "reset",
    "sync_down",
    "upload",
]

SCHEME = "s3://"
DEFAULT_REGION = "us-east-1"
DEFAULT_CACHE = Path("~/.cache/koobill")
LOCK_NAME = ".koobill.lock"  # the lease object at the data dir's prefix (the local one: lake.py)
STATE_DIR = ".koobill"  # in a bucket's mirror: the etags of what was downloaded
ETAGS = "objectstore-etags.json"
MULTIPART_BYTES = 64 * 1024 * 1024  # above this an upload is multipart (still all or nothing)
SYNC_WORKERS = 8

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d+\.\d+\.\d+\.\d+")
_BAD_KEY_CHAR = re.compile(r"[\x00-\x1f\x7f\\?#]")
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")
_BAD_CREDENTIALS = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
)

_lock = threading.RLock()
_clients: dict[tuple[tuple[str, str], ...], Any] = {}
_mounts: dict[Path, str] = {}  # mirror folder -> the s3 URI it mirrors


# --------------------------------------------------------------------------- URIs


def is_remote(data_dir: str | os.PathLike) -> bool:
    """True for a data dir on object storage: a string starting with ``s3://`` (any case)."""
    return isinstance(data_dir, str) and data_dir[: len(SCHEME)].lower() == SCHEME


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``; a :class:`KoobillError` says what is
    wrong with a URI koobill cannot use."""
    if not is_remote(uri):
        raise KoobillError(f"{uri!r} is not an object storage URI: expected s3://bucket/prefix")
    uri = SCHEME + uri[len(SCHEME) :]  # S3:// as s3://
    bucket, _, rest = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise KoobillError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
    if not _BUCKET.fullmatch(bucket) or _IPV4.fullmatch(bucket) or _odd_dots(bucket):
        raise KoobillError(
            f"invalid bucket name {bucket!r} in {uri!r}: 3-63 lowercase letters, digits, dots "
            "and hyphens, starting and ending with a letter or digit"
        )
    key = rest.strip("/")
    if key:
        _check_key(uri, key)
    return bucket, key


def _odd_dots(bucket: str) -> bool:
    return ".." in bucket or ".-" in bucket or "-." in bucket


def _check_key(uri: str, key: str) -> None:
    bad = _BAD_KEY_CHAR.search(key)
    if bad:
        raise KoobillError(f"invalid key in {uri!r}: the character {bad.group()!r} is not allowed")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise KoobillError(
            f"invalid key in {uri!r}: empty, '.' and '..' path segments are not allowed"
        )
    if len(key.encode()) > 1024:
        raise KoobillError(f"invalid key in {uri[:80]!r}...: longer than 1024 bytes")


def _uri(bucket: str, key: str) -> str:
    return f"{SCHEME}{bucket}/{key}" if key else f"{SCHEME}{bucket}"


def _join(key: str, rel: str) -> str:
    return f"{key}/{rel}" if key else rel


# --------------------------------------------------------------------------- the client


def client() -> Any:
    """The boto3 S3 client of the AWS environment as set now, cached per environment: path-style
    addressing (a local server works), region ``AWS_REGION``, ``AWS_DEFAULT_REGION``, the
    profile's, else ``us-east-1``."""
    from pipelines.env import aws_environment

    environ = aws_environment()
    key = tuple(sorted(environ.items()))
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _new_client(environ)
            _clients.clear()  # one entry: the environment changes rarely (tests)
            _clients[key] = found
    return found


def _new_client(environ: dict[str, str]) -> Any:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    options: dict[str, Any] = {"s3": {"addressing_style": "path"}, "connect_timeout": 10}
    if not {"AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE"} & environ.keys():
        options["retries"] = {"mode": "standard", "max_attempts": 3}
    # Checksum headers only where S3 requires them: other S3-compatible stores refuse some.
    if "AWS_REQUEST_CHECKSUM_CALCULATION" not in environ:
        options["request_checksum_calculation"] = "when_required"
    if "AWS_RESPONSE_CHECKSUM_VALIDATION" not in environ:
        options["response_checksum_validation"] = "when_required"
    try:
        session = boto3.session.Session()
        region = environ.get("AWS_REGION") or session.region_name or DEFAULT_REGION
        return session.client("s3", region_name=region, config=Config(**options))
    except BotoCoreError as exc:
        raise KoobillError(f"cannot set up the object store client: {exc}") from None


def reset() -> None:
    """Forget the cached client and the mounts (tests)."""
    with _lock:
        _clients.clear()
        _mounts.clear()


def _endpoint() -> str:
    with contextlib.suppress(Exception):
        return str(client().meta.endpoint_url)
    return "the AWS endpoint"


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _failure(exc: Exception, action: str, bucket: str, key: str) -> KoobillError:
    """The :class:`KoobillError` of a botocore error while doing ``action`` on an object."""
    from botocore import exceptions as bx

    where = _uri(bucket, key)
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return KoobillError(
            f"cannot {action} {where}: no credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(exc, bx.ConnectionError | bx.HTTPClientError):
        return KoobillError(
            f"cannot {action} {where}: cannot reach the object store at {_endpoint()} ({exc}); "
            "check AWS_ENDPOINT_URL and the network"
        )
    if not isinstance(exc, bx.ClientError):
        return KoobillError(f"cannot {action} {where}: {exc}")
    code, message = _code(exc), exc.response.get("Error", {}).get("Message", "")
    if code == "NoSuchBucket":
        return _no_bucket(action, bucket, key)
    if code in _BAD_CREDENTIALS:
        return KoobillError(
            f"cannot {action} {where}: the object store at {_endpoint()} refused the credentials "
            f"({code}); check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return KoobillError(
            f"cannot {action} {where}: access denied; the credentials may not {action} it"
        )
    if code in ("NotImplemented", "501"):
        return KoobillError(
            f"cannot {action} {where}: the object store at {_endpoint()} does not support this "
            f"request ({message or code}); koobill needs conditional writes (If-None-Match)"
        )
    return KoobillError(f"cannot {action} {where}: the object store answered {code}: {message}")


def _no_bucket(action: str, bucket: str, key: str) -> KoobillError:
    return KoobillError(
        f"cannot {action} {_uri(bucket, key)}: bucket {bucket} does not exist at {_endpoint()}; "
        "create it or fix the data dir URI"
    )


@contextlib.contextmanager
def _store_errors(action: str, bucket: str, key: str) -> Iterator[None]:
    """Turn boto3's and botocore's errors into a :class:`KoobillError` naming the object."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise _failure(exc, action, bucket, key) from None
    except Boto3Error as exc:  # upload_file's S3UploadFailedError
        raise KoobillError(f"cannot {action} {_uri(bucket, key)}: {exc}") from None


def _call(action: str, bucket: str, method: str, *, absent: tuple = (), **kw: Any) -> Any:
    """``client().<method>(Bucket=bucket, **kw)``; None when the error code is in ``absent``."""
    from botocore.exceptions import ClientError

    with _store_errors(action, bucket, kw.get("Key", kw.get("Prefix", ""))):
        try:
            return getattr(client(), method)(Bucket=bucket, **kw)
        except ClientError as exc:
            if _code(exc) in absent:
                return None
            raise


def _require_bucket(action: str, bucket: str, key: str) -> None:
    """Raise when the bucket does not exist (a HEAD's 404 says nothing about which is missing)."""
    if _call(action, bucket, "head_bucket", absent=(*_NOT_FOUND, "NoSuchBucket")) is None:
        raise _no_bucket(action, bucket, key)


def delta_storage_options() -> dict[str, str]:
    """deltalake's ``storage_options`` for tables at ``s3://`` URIs: the endpoint (and
    ``AWS_ALLOW_HTTP`` for an ``http://`` one), the region, and commits made safe for
    concurrent writers by conditional writes (``conditional_put: etag``) unless
    ``AWS_S3_LOCKING_PROVIDER`` chooses a lock. deltalake reads the credentials itself."""
    from pipelines.env import aws_environment

    environ = aws_environment()
    options = {"AWS_REGION": str(client().meta.region_name or DEFAULT_REGION)}
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.lower().startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if "AWS_S3_LOCKING_PROVIDER" not in environ:
        options["conditional_put"] = "etag"
    return options


# --------------------------------------------------------------------------- the mirror


def cache_root() -> Path:
    """``$KOOBILL_CACHE_DIR``, else ``~/.cache/koobill``, absolute."""
    from pipelines.env import settings

    return (settings().cache_dir or DEFAULT_CACHE).expanduser().resolve()


def mirror_of(uri: str) -> Path:
    """The local path of an s3 URI (object or prefix): ``<cache>/s3/<bucket>/<key>``."""
    bucket, key = parse_uri(uri)
    base = cache_root() / "s3" / bucket
    return base / key if key else base


def mount(uri: str) -> Path:
    """Create and remember the mirror folder of an s3 data dir; return it."""
    bucket, key = parse_uri(uri)
    root = mirror_of(uri)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KoobillError(
            f"cannot create {root}, the local mirror of {uri}: {exc.strerror or exc}; "
            "set KOOBILL_CACHE_DIR to a writable folder"
        ) from None
    with _lock:
        _mounts[root] = _uri(bucket, key)
    return root


def remote_of(path: str | os.PathLike) -> str | None:
    """The s3 URI of a local path under a mounted mirror (the deepest mount); None otherwise."""
    path = Path(os.path.abspath(path))
    with _lock:
        mounts = sorted(_mounts.items(), key=lambda item: len(item[0].parts), reverse=True)
    for root, uri in mounts:
        if path == root:
            return uri
        if path.is_relative_to(root):
            rel = path.relative_to(root).as_posix()
            return f"{uri}/{rel}"
    return None


@dataclass(frozen=True)
class _Object:
    """An object and its file in the mirror."""

    bucket: str
    key: str
    local: Path

    @property
    def uri(self) -> str:
        return _uri(self.bucket, self.key)

    @property
    def base(self) -> Path:
        """The bucket's mirror folder (where the etags are kept)."""
        depth = len(self.key.split("/")) if self.key else 0
        return self.local.parents[depth - 1] if depth else self.local

    def child(self, rel: str) -> _Object:
        key = _join(self.key, rel)
        _check_key(_uri(self.bucket, key), key)
        return _Object(self.bucket, key, self.local / rel)


def _object(target: str | os.PathLike) -> _Object:
    """The object of an s3 URI or of a path under a mounted mirror."""
    if is_remote(target):
        bucket, key = parse_uri(str(target))
        return _Object(bucket, key, mirror_of(str(target)))
    uri = remote_of(target)
    if uri is None:
        raise KoobillError(
            f"{target} is not in the local mirror of a data dir on object storage "
            "(mount its s3:// URI first)"
        )
    bucket, key = parse_uri(uri)
    return _Object(bucket, key, Path(os.path.abspath(target)))


def _file(target: str | os.PathLike) -> _Object:
    obj = _object(target)
    if not obj.key:
        raise KoobillError(f"{obj.uri} is a bucket, not an object")
    return obj


@contextlib.contextmanager
def _etags(base: Path) -> Iterator[dict[str, list]]:
    """The ``{key: [etag, size]}`` last downloaded or uploaded in a bucket's mirror, locked
    against other threads and processes; written back on exit when changed. A lost or
    unreadable file only means downloading again."""
    state = base / STATE_DIR
    try:
        state.mkdir(parents=True, exist_ok=True)
        lock = open(state / (ETAGS + ".lock"), "a")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise KoobillError(f"cannot write in {state}: {exc.strerror or exc}") from None
    with _lock, lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = state / ETAGS
        try:
            known = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        known = known if isinstance(known, dict) else {}
        before = dict(known)
        yield known
        if known != before:
            write_text(path, json.dumps(known, sort_keys=True, indent=0), mirror=False)


def _record(obj: _Object, etag: str, size: int) -> None:
    with _etags(obj.base) as known:
        known[obj.key] = [etag, size]


# --------------------------------------------------------------------------- files


def upload(path: str | os.PathLike) -> str:
    """Put the mirror file of ``path`` (a mirror path or an s3 URI) at its object; return the
    new etag. One PUT (multipart above 64 MiB): the object changes only once complete."""
    obj = _file(path)
    try:
        size = obj.local.stat().st_size
    except OSError as exc:
        raise KoobillError(f"cannot upload {obj.local}: {exc.strerror or exc}") from None
    if size <= MULTIPART_BYTES:
        with _read(obj.local) as fh:
            etag = _call("upload", obj.bucket, "put_object", Key=obj.key, Body=fh)["ETag"]
    else:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES
        )
        with _store_errors("upload", obj.bucket, obj.key):
            client().upload_file(str(obj.local), obj.bucket, obj.key, Config=config)
        etag = _call("upload", obj.bucket, "head_object", Key=obj.key)["ETag"]
    _record(obj, etag, size)
    return etag


def upload_if_mirrored(path: str | os.PathLike) -> str | None:
    """Upload a file just written under a mounted mirror, unless it is local state (any part
    of its path under the mount starts with ``.``: ``.koobill/``, the lock, temp files); None
    for any other path."""
    path = Path(os.path.abspath(path))
    with _lock:
        roots = [r for r in _mounts if path.is_relative_to(r)]
    if not roots:
        return None
    rel = path.relative_to(max(roots, key=lambda r: len(r.parts))).parts
    if any(part.startswith(".") for part in rel):
        return None
    return upload(path)


def etag(path: str | os.PathLike) -> str | None:
    """The object's etag; None when it does not exist."""
    head = _head(_file(path))
    return None if head is None else head["ETag"]


def is_current(path: str | os.PathLike) -> bool:
    """Whether the mirror file of ``path`` is the object as last downloaded or uploaded (same
    etag); False when either is missing."""
    obj = _file(path)
    head = _head(obj)
    if head is None or not obj.local.is_file():
        return False
    with _etags(obj.base) as known:
        return known.get(obj.key, [None])[0] == head["ETag"]


@contextlib.contextmanager
def _read(path: Path) -> Iterator[Any]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise KoobillError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield fh


def download(path: str | os.PathLike) -> bool:
    """Copy the object of ``path`` to its mirror file (atomically: a temp file, then a rename);
    False, and the mirror file left as it is, when there is no such object."""
    obj = _file(path)
    got = _get(obj)
    if got is None:
        return False
    _record(obj, *got)
    return True


def _get(obj: _Object) -> tuple[str, int] | None:
    """Download an object to its mirror file: its (etag, size), or None when it does not exist."""
    resp = _call("download", obj.bucket, "get_object", Key=obj.key, absent=("NoSuchKey",))
    if resp is None:
        return None
    size = 0
    with (
        _store_errors("download", obj.bucket, obj.key),
        atomic_path(obj.local, mirror=False) as tmp,
        open(tmp, "wb") as fh,
    ):
        for chunk in resp["Body"].iter_chunks(1 << 20):
            fh.write(chunk)
            size += len(chunk)
    if size != resp["ContentLength"]:  # pragma: no cover - botocore checks it too
        raise KoobillError(
            f"cannot download {obj.uri}: got {size} of {resp['ContentLength']} bytes"
        )
    return resp["ETag"], size


def exists(path: str | os.PathLike) -> bool:
    """Whether the object of ``path`` exists (a missing bucket is an error, not False)."""
    obj = _file(path)
    return _head(obj) is not None


def _head(obj: _Object) -> dict | None:
    resp = _call("read", obj.bucket, "head_object", Key=obj.key, absent=_NOT_FOUND)
    if resp is None:
        _require_bucket("read", obj.bucket, obj.key)
    return resp


def list_keys(path_prefix: str | os.PathLike) -> list[tuple[str, int, str]]:
    """``(path relative to the prefix, size, etag)`` of every object under a folder's prefix,
    sorted (folder marker keys ending in ``/`` left out)."""
    return _list(_object(path_prefix))


def _list(obj: _Object) -> list[tuple[str, int, str]]:
    prefix = obj.key + "/" if obj.key else ""
    out = []
    with _store_errors("list", obj.bucket, prefix):
        pages = client().get_paginator("list_objects_v2").paginate(Bucket=obj.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                if not item["Key"].endswith("/"):
                    out.append((item["Key"][len(prefix) :], item["Size"], item["ETag"]))
    return sorted(out)


def list_dirs(path_prefix: str | os.PathLike) -> list[str]:
    """The names of the "folders" directly under a folder's prefix (common prefixes), sorted."""
    obj = _object(path_prefix)
    prefix = obj.key + "/" if obj.key else ""
    out = []
    with _store_errors("list", obj.bucket, prefix):
        pages = client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=obj.bucket, Prefix=prefix, Delimiter="/"):
            for item in page.get("CommonPrefixes", ()):
                out.append(item["Prefix"][len(prefix) :].rstrip("/"))
    return sorted(out)


def list_tables(table_dir: str | os.PathLike) -> list[str]:
    """The Delta tables directly under a lake table's folder (those with a ``_delta_log``)."""
    return [d for d in list_dirs(table_dir) if "_delta_log" in list_dirs(Path(table_dir) / d)]


def delete(path: str | os.PathLike) -> None:
    """Delete the object of ``path`` and its mirror file (either may be missing already)."""
    obj = _file(path)
    _call("delete", obj.bucket, "delete_object", Key=obj.key)
    try:
        obj.local.unlink(missing_ok=True)
    except OSError as exc:
        raise KoobillError(f"cannot delete {obj.local}: {exc.strerror or exc}") from None
    with _etags(obj.base) as known:
        known.pop(obj.key, None)


def _ours(rel: str) -> bool:
    """Whether a relative key is koobill's own state (lock, etags), never mirrored."""
    parts = rel.split("/")
    return STATE_DIR in parts or parts[-1] == LOCK_NAME


def sync_down(path_dir: str | os.PathLike) -> int:
    """Download every object under a folder's prefix whose mirror file is missing, or whose
    size or etag differs from the last download; return how many were fetched. Mirror files
    with no object are left alone; a locally changed file is replaced (the bucket is the
    truth)."""
    return _sync_down(path_dir)[0]


def _sync_down(path_dir: str | os.PathLike) -> tuple[int, set[str]]:
    """:func:`sync_down`, and the relative paths of the objects listed (one listing)."""
    folder = _object(path_dir)
    with _etags(folder.base) as known:
        seen = dict(known)
    todo = []
    listed = _list(folder)
    for rel, size, etag in listed:
        if _ours(rel):
            continue
        obj = folder.child(rel)
        if seen.get(obj.key) != [etag, size] or _size(obj.local) != size:
            todo.append(obj)
    with ThreadPoolExecutor(min(SYNC_WORKERS, len(todo) or 1)) as pool:
        got = list(pool.map(_get, todo))
    fetched = {obj.key: [*g] for obj, g in zip(todo, got, strict=True) if g is not None}
    with _etags(folder.base) as known:
        known.update(fetched)
    return len(fetched), {rel for rel, _size, _etag in listed}


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def ensure_local(path: str | os.PathLike) -> Path:
    """The mirror file of ``path``, downloaded first when it is missing locally (it is still
    missing when the object is too)."""
    obj = _file(path)
    if not obj.local.exists():
        download(obj.uri)
    return obj.local


# ------------------------------------------------- the same call for a local or a mirrored path


def display(path: str | os.PathLike) -> str:
    """How to name a path to a user: its ``s3://`` URI under a mounted mirror (the mirror is a
    cache, the bucket is where the file is), else the path itself."""
    return remote_of(path) or str(path)


def pull_dir(path: str | os.PathLike) -> Path:
    """A folder about to be read (a landing folder): under a mounted mirror, made exactly the
    bucket's: its objects synced down, and the mirror's files with no object removed (the
    bucket is the truth: a file deleted upstream, or dropped into one machine's mirror by
    hand, is not read). Any other path is returned as it is."""
    path = Path(path)
    if remote_of(path) is None:
        return path
    _fetched, keys = _sync_down(path)
    if path.is_dir():
        for f in sorted(path.rglob("*"), reverse=True):
            rel = f.relative_to(path).as_posix()
            if f.is_file() and rel not in keys and not _ours(rel):
                f.unlink(missing_ok=True)
            elif f.is_dir() and not any(f.iterdir()):
                f.rmdir()
        if not any(path.iterdir()):
            path.rmdir()  # no such folder in the bucket
    return path


def subdirs(path: str | os.PathLike) -> list[str]:
    """The names of the folders directly under ``path`` (on object storage, its common
    prefixes), sorted."""
    path = Path(path)
    if remote_of(path) is not None:
        return list_dirs(path)
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def local_copy(path: str | os.PathLike) -> Path:
    """A file about to be read: under a mounted mirror, downloaded when missing locally; any
    other path is returned as it is."""
    path = Path(path)
    if remote_of(path) is not None:
        return ensure_local(path)
    return path


def push_dir(path: str | os.PathLike) -> int:
    """A folder just written under a mounted mirror: upload its files (not hidden ones) and
    delete the objects under its prefix that no longer have a file; return files uploaded.
    A no-op for any other path."""
    path = Path(path)
    if remote_of(path) is None:
        return 0
    local = {
        p.relative_to(path).as_posix(): p
        for p in (path.rglob("*") if path.is_dir() else [])
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
    }
    for rel, _size, _etag in list_keys(path):
        if rel not in local and not any(x.startswith(".") for x in rel.split("/")):
            delete(path / rel)
    for p in local.values():
        upload(p)
    return len(local)


_REFRESHED: dict[Path, float] = {}


def refresh(path: str | os.PathLike, *, every_s: float = 2.0) -> Path:
    """A file other machines may replace (the published database, the page's accounts, the
    invoice settings): under a mounted mirror, make the mirror's copy the object's, checking at
    most every ``every_s`` seconds per process: downloaded when it changed, removed when the
    object is gone. When the store cannot be reached, the copy at hand is used (a warning on
    stderr) if there is one. Any other path is returned as it is."""
    import time

    path = Path(path)
    if remote_of(path) is None:
        return path
    now = time.monotonic()
    with _lock:
        last = _REFRESHED.get(path)
        if last is not None and now - last < every_s:
            return path
        _REFRESHED[path] = now
    try:
        if not is_current(path) and not download(path):
            path.unlink(missing_ok=True)  # no such object (any more)
    except KoobillError as exc:
        if not path.exists():
            raise
        print(f"koobill: warning: {exc}; using the copy from earlier", file=sys.stderr)
    return path


def fetch_immutable(uri: str) -> Path:
    """The mirror file of an object that never changes (a Delta data file, named by a uuid):
    downloaded once, then read from the mirror."""
    obj = _file(uri)
    if obj.local.is_file():
        return obj.local
    if _get(obj) is None:
        _require_bucket("download", obj.bucket, obj.key)
        raise KoobillError(
            f"cannot download {obj.uri}: it does not exist (a data file of a Delta table that "
            "was removed, e.g. by a vacuum)"
        )
    return obj.local


# --------------------------------------------------------------------------- conditional writes


def put_if_absent(path: str | os.PathLike, data: bytes) -> bool:
    """Create the object of ``path`` holding ``data`` unless it exists (S3 ``If-None-Match``);
    True when this call created it."""
    return _create(_file(path), data) is not None


def _create(obj: _Object, data: bytes) -> str | None:
    """Put ``data`` at a new object: its etag, or None when the object exists."""
    from botocore.exceptions import ClientError

    for attempt in range(5):
        with _store_errors("create", obj.bucket, obj.key):
            try:
                return client().put_object(
                    Bucket=obj.bucket, Key=obj.key, Body=data, IfNoneMatch="*"
                )["ETag"]
            except ClientError as exc:
                if _code(exc) == "PreconditionFailed":
                    return None
                if _code(exc) != "ConditionalRequestConflict":  # S3: a concurrent write, retry
                    raise
        time.sleep(0.1 * (attempt + 1))
    return None


def _delete_if(obj: _Object, etag: str) -> bool:
    """Delete the object if its etag is still ``etag`` (S3 ``If-Match``); whether it did.

    A store that does not implement a conditional delete gets a read-then-delete instead: a
    small window in which a new holder's lease could be removed."""
    from botocore.exceptions import ClientError

    with _store_errors("delete", obj.bucket, obj.key):
        try:
            client().delete_object(Bucket=obj.bucket, Key=obj.key, IfMatch=etag)
            return True
        except ClientError as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", *_NOT_FOUND):
                return False
            if code not in ("NotImplemented", "501"):
                raise
    head = _head(obj)
    if head is None or head["ETag"] != etag:
        return False
    _call("delete", obj.bucket, "delete_object", Key=obj.key)
    return True


@contextlib.contextmanager
def remote_lock(root_uri: str, what: str, wait_s: float, lease_s: float = 3600) -> Iterator[None]:
    """Hold the lease lock of an s3 data dir (``<prefix>/.koobill.lock``) while the block runs.

    Created with a conditional write; a lease past its ``expires_at``, or taken on this machine
    by a process that died, is taken over (deleted if unchanged, then created again). A lease held by another waits up to ``wait_s`` seconds,
    then raises :class:`LockBusy` naming the holder. On exit the lease is deleted if it is
    still ours; when it expired and was taken over meanwhile, a :class:`KoobillError` says so.
    Expiry is judged by the clock of the waiting machine."""
    bucket, prefix = parse_uri(root_uri)
    key = _join(prefix, LOCK_NAME)
    obj = _Object(bucket, key, mirror_of(_uri(bucket, key)))
    etag = _acquire(obj, root_uri, what, wait_s, lease_s)
    try:
        yield
    except BaseException:
        with contextlib.suppress(KoobillError):  # the block's error matters more
            _delete_if(obj, etag)
        raise
    if not _delete_if(obj, etag):
        held = _read_lease(obj, lease_s)
        holder = f" by {_holder(held[0])}" if held else ""
        raise KoobillError(
            f"the lock on {root_uri} expired while {what} ran and was taken over{holder}: "
            f"{what} finished, but another command may have written at the same time"
        )


def _acquire(obj: _Object, root_uri: str, what: str, wait_s: float, lease_s: float) -> str:
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        etag = _create(obj, _lease(what, lease_s))
        if etag is not None:
            return etag
        held = _read_lease(obj, lease_s)
        if held is None:
            continue  # released meanwhile
        info, held_etag = held
        if (float(info["expires_at"]) <= time.time() or _holder_died(info)) and _delete_if(
            obj, held_etag
        ):
            continue  # an expired or orphaned lease removed: try to create ours again
        left = deadline - time.monotonic()
        if not said and left > 0:
            said = True
            say_lock_wait(what, root_uri, _holder(info), wait_s)
        if left <= 0:
            raise LockBusy(
                f"another koobill command holds the lock on {root_uri} ({_holder(info)}); "
                f"{what} was not started. Wait for it to finish and run again."
            )
        time.sleep(min(0.5, left))


def _holder_died(info: dict) -> bool:
    """A lease taken on this machine by a process that no longer runs (killed: it could not
    release it); a lease of another machine is judged by its expiry only."""
    if info.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        return False
    return False


def _lease(what: str, lease_s: float) -> bytes:
    now = time.time()
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "what": what,
            "acquired_at": now,
            "expires_at": now + lease_s,
        }
    ).encode()


def _read_lease(obj: _Object, lease_s: float) -> tuple[dict, str] | None:
    """The lease's content and etag; None when there is none. An unreadable lease expires
    ``lease_s`` after it was written."""
    resp = _call("read the lock", obj.bucket, "get_object", Key=obj.key, absent=("NoSuchKey",))
    if resp is None:
        return None
    with _store_errors("read the lock", obj.bucket, obj.key):
        raw = resp["Body"].read()
    try:
        info = json.loads(raw)
        float(info["expires_at"])
    except (ValueError, TypeError, KeyError):
        info = {"what": "unreadable lock object"}
        info["expires_at"] = resp["LastModified"].timestamp() + lease_s
    return info, resp["ETag"]


def _holder(info: dict) -> str:
    until = dt.datetime.fromtimestamp(float(info["expires_at"]), dt.UTC)
    who = f"{info.get('host', '?')} pid {info.get('pid', '?')}: " if "host" in info else ""
    return f"{who}{info.get('what', '?')}, lease until {until:%Y-%m-%d %H:%M:%S} UTC"
