"""Debian's Chromium for the browser tests (Playwright's own browser download is not used):
where it is, the flags it runs with here, and one skip message when it is missing.

``from chromium import CHROMIUM, ARGS, require_chromium`` (tests/ is on sys.path)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KOOBILL_CHROMIUM", "/usr/bin/chromium")
# headless as root, and nothing that reaches for the network on its own
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def require_chromium() -> None:
    """Skip the calling test module, saying what to run, when Chromium is not installed."""
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: run `apt-get install -y chromium` (as root) "
            "or set KOOBILL_CHROMIUM, then rerun",
            allow_module_level=True,
        )
