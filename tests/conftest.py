"""Shared fixtures. Helpers live in tests/helpers.py (``from helpers import land, ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
for p in (str(_TESTS), str(_TESTS.parent)):  # `import helpers` and `import tests.helpers`
    if p not in sys.path:
        sys.path.insert(0, p)


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty koobill data dir, as `koobill init` makes it (landing/<feed>/ for every feed);
    $KOOBILL_DATA_DIR points at it and the lock never waits."""
    from pipelines.config import init_data_dir

    d = init_data_dir(tmp_path / "data")
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(d))
    monkeypatch.setenv("KOOBILL_LOCK_WAIT_S", "0")
    return d


# A local S3 server (moto) and an s3:// data dir on it, for the object storage tests.
from s3server import s3_env, s3_server  # noqa: E402, F401
