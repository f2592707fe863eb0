"""tests/services: the production shape on real services (PostgreSQL, Redis, Celery workers).

Run by ``make test-services`` (which sets ``KOOBILL_TEST_SERVICES=1``), not by ``make test``:
they start a whole Airflow deployment and take minutes.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KOOBILL_TEST_SERVICES") == "1":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL, Redis and minutes: run `make test-services`")
    for item in items:
        if "tests/services/" in item.nodeid or item.nodeid.startswith("services/"):
            item.add_marker(skip)
