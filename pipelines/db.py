"""DuckDB connections, koobill's SQL files, and the one way lake paths reach DuckDB.

Three rules every query follows:

- SQL lives in ``sql/`` (installed as the package ``pipelines.sql``) and is read with
  ``sql(name)``; a missing file fails loudly.
- Values (dates, months, limits, paths) are bound parameters (``$name``) or, inside a view,
  session variables set from parameters (``set variable x = $x``; the view reads
  ``getvariable('x')``). Nothing read from input or the environment is formatted into SQL.
- Where SQL must vary by feed (its columns, its rule predicates), the file has ``{{ name }}``
  placeholders that ``render`` fills with identifiers and predicates generated from
  ``config.FEEDS``, never with values.

DuckDB expands ``*``, ``?``, ``[...]`` and ``{...}`` in every path it reads, including bound
ones: every path read goes through ``glob_escape`` (``lake_files`` does it for a list).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import duckdb

from pipelines.errors import KoobillError


def _sql_dir() -> Path:
    """The folder of package ``pipelines.sql``: the repository's ``sql/`` in a checkout or an
    editable install, ``pipelines/sql`` in a wheel."""
    try:
        d = Path(str(resources.files("pipelines.sql")))
    except ModuleNotFoundError:  # a checkout on sys.path that was never installed
        d = Path(__file__).resolve().parent.parent / "sql"
    if not (d / "bills.sql").is_file():
        raise RuntimeError(f"koobill's SQL files are missing (looked in {d})")
    return d


SQL_DIR = _sql_dir()


def connect(
    path: str | Path = ":memory:",
    *,
    read_only: bool = False,
    threads: int | None = None,
    storage_version: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A connection in UTC (timestamps are stored in UTC; Beijing boundaries are explicit).
    ``storage_version``: the storage format of a database file this creates (``v1.2.0``)."""
    if str(path) != ":memory:" and not read_only:
        database_path(path)
    config = {"storage_compatibility_version": storage_version} if storage_version else {}
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    con.execute("set TimeZone = 'UTC'")
    con.execute("set preserve_insertion_order = true")
    con.execute("set enable_progress_bar = false")  # koobill prints its own progress
    if threads:
        con.execute("set threads = $n", {"n": int(threads)})
    return con


def database_path(path: str | Path) -> str:
    """The path to give DuckDB for a database file it writes (connect, ATTACH), checked.

    DuckDB names a database's write-ahead log by inserting ``.wal`` before the first ``?`` of
    its path (it reads ``?`` as the start of options; it resolves links and relative paths
    first, so no alias avoids it): a database under a folder such as ``a?b`` fails on its
    first commit, after the lake was written. Say so before anything is written."""
    if "?" in str(Path(path).resolve()):
        raise KoobillError(
            f"{Path(path).parent} holds a '?': DuckDB cannot keep a database there (it would "
            "write its log under another folder). Move the data dir to a path without '?'."
        )
    return str(path)


def limit_memory(con: duckdb.DuckDBPyConnection, limit: str, spill_dir: Path) -> None:
    """DuckDB's memory limit (an amount such as ``2GB``, validated by the caller and again by
    DuckDB) and the folder it spills to, both bound as parameters."""
    con.execute("set temp_directory = $dir", {"dir": str(spill_dir)})
    con.execute("set memory_limit = $limit", {"limit": limit})


def create_temp(
    con: duckdb.DuckDBPyConnection,
    name: str,
    query: str,
    params: dict | None = None,
    *,
    view: bool = False,
) -> None:
    """Materialise ``query`` as the temp table ``name`` (or define it as a temp view: a view
    takes no parameters)."""
    kind = "view" if view else "table"
    con.execute(f"create or replace temp {kind} {ident(name)} as\n{query}", params)


@functools.cache
def sql(name: str) -> str:
    """The text of ``sql/<name>.sql`` (``name`` may name a folder: ``ingest/estimates``)."""
    path = SQL_DIR.joinpath(*f"{name}.sql".split("/"))
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RuntimeError(
            f"koobill's SQL file {path} is missing: the installation is incomplete"
        ) from None


_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def render(name: str, **parts: str) -> str:
    """``sql(name)`` with each ``{{ part }}`` replaced by ``parts[part]``.

    Only for SQL *structure* generated from ``config.FEEDS`` (table and column names, rule
    predicates): a value is always a bound parameter. Every placeholder must be given and
    every part must be used, so a typo fails loudly."""
    return fill(sql(name), f"sql/{name}.sql", **parts)


def fill(text: str, where: str, **parts: str) -> str:
    """``text`` (a template read from ``where``) with each ``{{ part }}`` replaced, as
    ``render`` does for koobill's own SQL files."""
    used = set(_PLACEHOLDER.findall(text))
    if used != set(parts):
        raise KeyError(f"{where}: placeholders {sorted(used)} but parts given {sorted(parts)}")
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], text)


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def quote_path(path: str | Path) -> str:
    """A file path as a SQL string literal. Only for the few statements DuckDB cannot prepare
    (a view's definition): everywhere else the path is a bound parameter."""
    return "'" + str(path).replace("'", "''") + "'"


def glob_escape(path: str | Path) -> str:
    """``path`` as a DuckDB glob pattern that matches exactly that path.

    DuckDB expands ``*``, ``?``, ``[...]`` and ``{...}`` in the paths it reads, so a data dir
    under a folder named ``gx[1]`` would read ``gx1``'s files: each such character becomes a
    one-character class (``[[]``, ``[*]``, ...), which matches only itself."""
    return re.sub(r"[\[*?{}]", lambda m: f"[{m.group(0)}]", str(path))


def lake_files(paths: Path | Iterable[Path]) -> list[str]:
    """Paths to bind as ``read_parquet($files)``'s list, each matching only itself."""
    files = [paths] if isinstance(paths, str | Path) else list(paths)
    return [glob_escape(p) for p in files]


def file_list(paths: list[Path]) -> str:
    """A SQL list literal of file paths for read_parquet([...]), each matching only itself
    (for a view's definition, which cannot take parameters)."""
    return "[" + ", ".join(quote_path(p) for p in lake_files(paths)) + "]"


def parquet(paths: Path | list[Path], **options: bool) -> str:
    """``read_parquet(...)`` over lake files, as literal SQL (for a view's definition). Hive
    partitioning is off: a partition's values are in the files, and a folder name (such as a
    version folder) must never override them."""
    files = paths if isinstance(paths, list) else [paths]
    opts = {"hive_partitioning": False, **options}
    extra = "".join(f", {k}={str(bool(v)).lower()}" for k, v in opts.items())
    return f"read_parquet({file_list(files)}{extra})"
