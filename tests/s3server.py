"""A local S3 server for the object storage tests: moto's ``moto_server`` from the venv.

``s3_server`` (session) starts one on 127.0.0.1 at a free port and yields its endpoint URL;
``s3_env`` points the standard AWS variables at it, creates a fresh bucket and yields
``s3://<bucket>/data``. tests/conftest.py imports both, so any test can ask for them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
HOST = "127.0.0.1"


def moto_available() -> bool:
    """Whether the venv has moto's server (``moto[server]``, installed by `make install`)."""
    return MOTO_SERVER.is_file() and os.access(MOTO_SERVER, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _answers(endpoint: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    try:
        with opener.open(f"{endpoint}/moto-api/", timeout=1):
            return True
    except OSError:
        return False


def start(timeout_s: float = 30) -> tuple[subprocess.Popen, str]:
    """Start a moto server; return it and its endpoint once it answers."""
    for _ in range(3):  # the free port may be taken between the probe and the bind
        port = _free_port()
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [str(MOTO_SERVER), "-H", HOST, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://{HOST}:{port}"
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if _answers(endpoint):
                return proc, endpoint
            time.sleep(0.1)
        stop(proc)
        log.seek(0)
        output = log.read().decode(errors="replace")[-2000:]
    raise RuntimeError(f"{MOTO_SERVER} did not start; its output:\n{output}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session."""
    if not moto_available():
        pytest.skip(f"no moto server at {MOTO_SERVER}: run `make install`")
    proc, endpoint = start()
    try:
        yield endpoint
    finally:
        stop(proc)


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """``s3://<fresh bucket>/data`` on the moto server: the AWS variables point at it (and
    nothing else of the machine's AWS setup applies), the mirror is under ``tmp_path``."""
    from pipelines import objectstore

    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    nowhere = str(tmp_path / "no-aws-config")
    for name, value in {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
        "KOOBILL_CACHE_DIR": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, ",".join(filter(None, [os.environ.get(name), HOST])))
    objectstore.reset()
    bucket = f"koobill-test-{secrets.token_hex(6)}"
    objectstore.client().create_bucket(Bucket=bucket)
    try:
        yield f"s3://{bucket}/data"
    finally:
        with contextlib.suppress(Exception):
            objectstore.reset()


def download_data_dir(data_dir: str, dest: Path, skip: tuple[str, ...] = ()) -> Path:
    """A plain copy of a data dir on object storage (every object but the lock and those under
    ``skip``): the bucket is a data dir as it is (Delta logs hold relative paths)."""
    from pipelines import objectstore

    bucket, prefix = objectstore.parse_uri(data_dir)
    s3 = objectstore.client()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", ()):
            rel = item["Key"][len(prefix) + 1 :]
            if rel.endswith("/") or rel == ".koobill.lock" or rel.startswith(skip):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    return dest
