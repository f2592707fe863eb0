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
    """An empty koobill data dir; $KOOBILL_DATA_DIR points at it and the lock never waits."""
    d = tmp_path / "data"
    d.mkdir()
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(d))
    monkeypatch.setenv("KOOBILL_LOCK_WAIT_S", "0")
    return d


@pytest.fixture(scope="module")
def no_feed_suites():
    """Skip the Great Expectations suites of accepted feed rows (``quality.validate_feed``:
    tested on their own, and seconds per ingest) while keeping every ingest rule and the
    quarantine-share gate. Yields the real ``validate_feed`` (None while quality.py is absent)
    so that a test can put it back with ``monkeypatch.setattr``."""
    try:
        from pipelines import quality
    except ImportError:
        yield None
        return
    real = quality.validate_feed
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quality, "validate_feed", lambda *a, **k: None)
        yield real
