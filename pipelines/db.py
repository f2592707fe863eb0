"""DuckDB connections with the settings every koobill query relies on."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb


def _sql_dir() -> Path:
    """The repository's ``sql/`` (a checkout or an editable install), else the copy a wheel
    installs as ``pipelines/sql``."""
    here = Path(__file__).resolve().parent
    for d in (here.parent / "sql", here / "sql"):
        if (d / "bills.sql").is_file():
            return d
    raise RuntimeError(f"koobill's SQL files are missing (looked in {here.parent / 'sql'})")


SQL_DIR = _sql_dir()


def connect(
    path: str | Path = ":memory:", *, read_only: bool = False, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection in UTC (timestamps are stored in UTC; Beijing boundaries are explicit)."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("set TimeZone = 'UTC'")
    con.execute("set preserve_insertion_order = true")
    con.execute("set enable_progress_bar = false")  # koobill prints its own progress
    if threads:
        con.execute(f"set threads = {int(threads)}")
    return con


def sql(name: str) -> str:
    """The text of ``sql/<name>.sql``."""
    return (SQL_DIR / f"{name}.sql").read_text(encoding="utf-8")


def quote_path(path: str | Path) -> str:
    """A file path as a SQL string literal (paths cannot be bound as parameters in COPY)."""
    return "'" + str(path).replace("'", "''") + "'"


def glob_escape(path: str | Path) -> str:
    """``path`` as a DuckDB glob pattern that matches exactly that path.

    DuckDB expands ``*``, ``?``, ``[...]`` and ``{...}`` in the paths it reads, so a data dir
    under a folder named ``gx[1]`` would read ``gx1``'s files: each such character becomes a
    one-character class (``[[]``, ``[*]``, ...), which matches only itself."""
    return re.sub(r"[\[*?{}]", lambda m: f"[{m.group(0)}]", str(path))


def file_list(paths: list[Path]) -> str:
    """A SQL list literal of file paths for read_parquet([...]), each matching only itself."""
    return "[" + ", ".join(quote_path(glob_escape(p)) for p in paths) + "]"


def parquet(paths: Path | list[Path], **options: bool) -> str:
    """``read_parquet(...)`` over lake files. Hive partitioning is off: a partition's values are
    in the files, and a folder name (such as a version folder) must never override them."""
    files = paths if isinstance(paths, list) else [paths]
    opts = {"hive_partitioning": False, **options}
    extra = "".join(f", {k}={str(v).lower()}" for k, v in opts.items())
    return f"read_parquet({file_list(files)}{extra})"
