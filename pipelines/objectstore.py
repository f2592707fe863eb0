"""Placeholder until the object-store module lands: every data dir is local."""

from __future__ import annotations

from pathlib import Path


def remote_of(path: Path) -> str | None:
    return None


def list_tables(table_dir: Path) -> list[str]:
    raise NotImplementedError


def delta_storage_options() -> dict[str, str]:
    raise NotImplementedError


def fetch_immutable(uri: str) -> Path:
    raise NotImplementedError


def upload(path: Path) -> None:
    raise NotImplementedError
