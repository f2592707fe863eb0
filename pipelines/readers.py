"""Read landing files (CSV, JSONL, Parquet) into one table per feed.

Every record read becomes one staging-shaped row: ``_file``, ``_row`` (1-based record number in
the file, header excluded), ``_error`` (a parse-level problem: the row is quarantined with it),
``_error_code`` (its reason code: ``unreadable_record``, ``ragged_record`` or ``invalid_utf8``)
and ``_raw`` (the record's text where the parse failed), plus the feed's columns as VARCHAR.
Stored as they are, or passed through a ``wrap`` SELECT first: the ingest types the records and
applies the typing rules as they are read (``rules.typed_rows``), so a day is held once, typed.
Rows read by DuckDB's CSV reader are numbered by position (``staging_source``).

CSV goes through DuckDB's parallel reader. Only a file the fast reader rejects rows of (ragged
rows, bad quoting, invalid UTF-8) is re-read by Python's csv module, so that every record keeps
its exact number and gets its own reason. JSONL is parsed by Python's json module with numbers
kept as their source text (a JSON number must never pass through a float). Files are streamed
in batches; memory stays bounded whatever the file size.
"""

from __future__ import annotations

import codecs
import csv
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.config import FEEDS, FILE_SUFFIXES
from pipelines.db import glob_escape, render
from pipelines.errors import KoobillError

BATCH = 200_000
MAX_RAW = 4000  # characters of a raw record kept in quarantine
MAX_FIELD = 10_000_000  # the longest CSV record either reader accepts (DuckDB max_line_size)


class FileError(KoobillError):
    """A landing file that cannot be read as a whole; the ingest of its date stops."""

    def __init__(self, path: Path, problem: str):
        shown = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(f"{shown}: {problem}")
        self.path = path
        self.problem = problem


def staging_columns(feed: str) -> list[str]:
    return ["_file", "_row", "_error", "_error_code", "_raw"] + [c.name for c in FEEDS[feed]]


Wrap = Callable[[str], str]  # a staging-shaped SELECT -> the SELECT whose rows are stored


def _empty_source(feed: str) -> str:
    cols = ["null::varchar as _file", "null::bigint as _row", "null::varchar as _error"]
    cols += ["null::varchar as _error_code"]
    cols += ["null::varchar as _raw"] + [f'null::varchar as "{c.name}"' for c in FEEDS[feed]]
    return f"select {', '.join(cols)} limit 0"


def create_staging(
    con: duckdb.DuckDBPyConnection, feed: str, table: str, wrap: Wrap | None = None
) -> None:
    """The table the records of ``feed`` are read into: the staging columns as they are, or,
    with ``wrap``, whatever ``wrap`` makes of them (the ingest types them as they are read,
    so a big file is never held as text)."""
    src = _empty_source(feed)
    con.execute(
        f"create or replace temp table {table} as {wrap(src) if wrap else src} with no data"
    )
    con.execute(f"create or replace temp table {table}_bases (_file varchar, _base bigint)")


def staging_source(table: str, where: str = "") -> str:
    """The staging rows (those meeting ``where``, over alias ``s``) with every record's number:
    rows read by DuckDB's CSV reader carry a NULL ``_row`` and are numbered by their position
    from their file's first row."""
    return (
        f"(select s.* replace (coalesce(s._row, s.rowid - b._base + 1) as _row) "
        f"from {table} s left join {table}_bases b on b._file = s._file and s._row is null"
        f"{' where ' + where if where else ''})"
    )


def landing_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """The readable files of a landing folder in name order, and the ones koobill ignores."""
    if not folder.is_dir():
        return [], []
    files, ignored = [], []
    for p in sorted(folder.iterdir(), key=lambda p: p.name):
        if p.name.startswith("."):
            continue
        if p.suffix.lower() in FILE_SUFFIXES:
            files.append(p)  # a folder or a dangling link named like data fails in load_file
        else:
            ignored.append(p)
    return files, ignored


def load_file(
    con: duckdb.DuckDBPyConnection,
    feed: str,
    path: Path,
    table: str,
    progress: Callable[[str], None] | None = None,
    wrap: Wrap | None = None,
) -> int:
    """Append every record of ``path`` to the staging ``table``; return the records read."""
    try:
        st = path.stat()
    except OSError as exc:
        raise FileError(path, f"cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise FileError(path, "is a folder, not a file: land the data files themselves")
    if not stat.S_ISREG(st.st_mode):
        raise FileError(path, "is not a regular file (a pipe, socket or device is never read)")
    size = st.st_size
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        raise FileError(path, "the file name is not valid UTF-8: rename the file") from None
    suffix = path.suffix.lower()
    if size == 0:
        what = (
            "a header row"
            if suffix == ".csv"
            else ("one JSON object" if suffix == ".jsonl" else "a Parquet footer")
        )
        raise FileError(path, f"the file is empty (0 bytes); expected at least {what}")
    try:
        into = _Into(con, table, wrap)
        if suffix == ".csv":
            return _load_csv(con, feed, path, into, progress)
        if suffix == ".jsonl":
            return _load_jsonl(con, feed, path, into)
        return _load_parquet(con, feed, path, into)
    except FileError:
        raise
    except OSError as exc:
        raise FileError(path, f"cannot be read ({exc.strerror or exc})") from None
    except duckdb.Error as exc:
        raise FileError(path, f"cannot be read: {str(exc).splitlines()[0]}") from None


class _Into:
    """Where read records go: ``insert`` takes a staging-shaped SELECT."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, wrap: Wrap | None):
        self.con, self.table, self.wrap = con, table, wrap

    def insert(self, source: str, params: dict) -> int:
        sql = self.wrap(source) if self.wrap else source
        return int(self.con.execute(f"insert into {self.table} {sql}", params).fetchone()[0])


# --- CSV -------------------------------------------------------------------------------------


def _csv_header(feed: str, path: Path) -> list[str]:
    with open(path, "rb") as fh:
        head = fh.readline(1 << 20)
    if head.startswith(codecs.BOM_UTF8):
        head = head[len(codecs.BOM_UTF8) :]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise FileError(path, "the header row is not valid UTF-8") from None
    header = next(csv.reader([text.rstrip("\r\n")]), [])
    header = [h.strip() for h in header]
    _check_header(feed, path, header)
    return header


def _check_header(feed: str, path: Path, header: list[str]) -> None:
    if not header or header == [""]:
        raise FileError(path, "the header row is empty")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise FileError(path, f"duplicate column names in the header: {', '.join(dupes)}")
    missing = [c.name for c in FEEDS[feed] if c.required and c.name not in header]
    if missing:
        raise FileError(path, f"missing required column(s) for feed '{feed}': {', '.join(missing)}")


def _select_list(feed: str, present: list[str]) -> str:
    out = []
    for c in FEEDS[feed]:
        out.append(f'"{c.name}"' if c.name in present else f'null::varchar as "{c.name}"')
    return ", ".join(out)


def _load_csv(con, feed, path, into: _Into, progress) -> int:
    header = _csv_header(feed, path)
    if progress and path.stat().st_size > 50 << 20:
        progress(f"  reading {path.name} ({path.stat().st_size / 1e6:,.0f} MB)")
    con.execute("drop table if exists _csv_rejects")
    con.execute("drop table if exists _csv_scans")
    table = into.table
    n = into.insert(
        render("ingest/read_csv", columns=_select_list(feed, header)),
        {
            "file": path.name,
            "path": glob_escape(path),
            "column_types": dict.fromkeys(header, "VARCHAR"),
            "max_line_size": MAX_FIELD,
        },
    )
    rejects = con.execute("select count(*) from _csv_rejects").fetchone()[0]
    if rejects:
        # exact per-record numbering and reasons for a damaged file
        con.execute(f"delete from {table} where _file = ? and _row is null", [path.name])
        return _load_csv_python(con, feed, path, into, header)
    first, last = con.execute(
        f"select min(rowid), max(rowid) from {table} where _file = ? and _row is null",
        [path.name],
    ).fetchone()
    if n and last - first + 1 != n:  # an append is contiguous; never number rows wrongly
        raise KoobillError(f"internal error: the rows of {path} were not staged contiguously")
    if n:
        con.execute(f"insert into {table}_bases values (?, ?)", [path.name, first])
    return int(n)


def _load_csv_python(con, feed, path, into: _Into, header) -> int:
    names = [c.name for c in FEEDS[feed]]
    index = {h: i for i, h in enumerate(header)}
    width = len(header)
    total = 0
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fh:
        first = fh.read(1)
        if first != "\ufeff":
            fh.seek(0)
        csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD))
        consumed: list[str] = []  # the source lines of the record being read (its raw text)

        def lines() -> Iterator[str]:
            for line in fh:
                consumed.append(line)
                yield line

        reader = csv.reader(lines(), strict=True)
        try:
            next(reader)  # header
        except (csv.Error, StopIteration):
            return 0
        batch: list[list] = []
        row = 0
        while True:
            consumed.clear()
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # the record is quarantined; the reader resumes at the next line, so the rows
                # after a bad quote are still read (and counted) one by one
                row += 1
                raw = "".join(consumed).rstrip("\r\n")
                raw = raw.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                batch.append(
                    _bad(path, row, "unreadable_record", f"malformed CSV record: {exc}", raw)
                )
                continue
            row += 1
            if not rec:
                row -= 1  # a blank line is not a record
                continue
            text = ",".join(rec)
            if any("\udc80" <= ch <= "\udcff" for ch in text):
                raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                batch.append(_bad(path, row, "invalid_utf8", "the record is not valid UTF-8", raw))
            elif len(rec) != width:
                batch.append(
                    _bad(
                        path,
                        row,
                        "ragged_record",
                        f"expected {width} fields, found {len(rec)}",
                        text,
                    )
                )
            else:
                batch.append(
                    [path.name, row, None, None, None]
                    + [rec[index[n]] if n in index else None for n in names]
                )
            if len(batch) >= BATCH:
                total += _flush(con, feed, into, batch)
                batch = []
        total += _flush(con, feed, into, batch)
    return total


def _bad(path: Path, row: int, code: str, reason: str, raw: str) -> list:
    """A record that cannot be parsed: quarantined with ``reason`` and its reason ``code``."""
    return [path.name, row, reason, code, raw[:MAX_RAW]]


def _flush(con, feed, into: _Into, batch) -> int:
    if not batch:
        return 0
    cols = staging_columns(feed)
    width = len(cols)
    rows = [r + [None] * (width - len(r)) for r in batch]
    data = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    schema = pa.schema([(c, pa.int64() if c == "_row" else pa.string()) for c in cols])
    arrow = pa.Table.from_pydict(data, schema=schema)
    con.register("_batch", arrow)
    try:
        into.insert("select * from _batch", {})
    finally:
        con.unregister("_batch")
    return len(rows)


# --- JSONL -----------------------------------------------------------------------------------


def _json_value(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False)


def _iter_lines(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from fh


def _load_jsonl(con, feed, path, into: _Into) -> int:
    names = [c.name for c in FEEDS[feed]]
    required = {c.name for c in FEEDS[feed] if c.required}
    seen_keys: set[str] = set()
    objects = 0
    total = 0
    batch: list[list] = []
    row = 0
    for lineno, raw in enumerate(_iter_lines(path), start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if not raw.strip():
            continue  # blank lines are not records
        row = lineno  # a JSONL record is numbered by its line: what a user finds in an editor
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            batch.append(
                _bad(
                    path,
                    row,
                    "invalid_utf8",
                    "the line is not valid UTF-8",
                    raw.decode("utf-8", "replace").rstrip("\r\n"),
                )
            )
            continue
        try:
            obj = json.loads(text, parse_float=str, parse_int=str, parse_constant=str)
        except json.JSONDecodeError as exc:
            batch.append(
                _bad(
                    path,
                    row,
                    "unreadable_record",
                    f"not valid JSON ({exc.msg} at column {exc.colno})",
                    text.rstrip("\r\n"),
                )
            )
            continue
        if not isinstance(obj, dict):
            batch.append(
                _bad(
                    path,
                    row,
                    "unreadable_record",
                    "the line is not a JSON object",
                    text.rstrip("\r\n"),
                )
            )
            continue
        objects += 1
        seen_keys.update(obj.keys())
        batch.append([path.name, row, None, None, None] + [_json_value(obj.get(n)) for n in names])
        if len(batch) >= BATCH:
            total += _flush(con, feed, into, batch)
            batch = []
    total += _flush(con, feed, into, batch)
    if objects and not required <= seen_keys:
        missing = sorted(required - seen_keys)
        con.execute(f"delete from {into.table} where _file = ?", [path.name])
        raise FileError(path, f"missing required column(s) for feed '{feed}': {', '.join(missing)}")
    return total


# --- Parquet ---------------------------------------------------------------------------------

_FLOAT_TYPES = ("FLOAT", "DOUBLE", "REAL")


def _load_parquet(con, feed, path, into: _Into) -> int:
    src = {"path": glob_escape(path)}
    q = "describe select * from read_parquet($path, file_row_number = true)"
    types = {name: typ for name, typ, *_ in con.execute(q, src).fetchall()}
    header = [n for n in types if n != "file_row_number"]
    _check_header(feed, path, header)
    for c in FEEDS[feed]:
        if c.kind in ("money", "qty", "rate") and c.name in types:
            if types[c.name].upper() in _FLOAT_TYPES:
                raise FileError(
                    path,
                    f"column '{c.name}' is {types[c.name]}: amounts must be DECIMAL or text "
                    "(binary floating point cannot carry exact money)",
                )
    select = []
    for c in FEEDS[feed]:
        if c.name not in types:
            select.append(f'null::varchar as "{c.name}"')
        elif types[c.name].upper().startswith("TIMESTAMP WITH TIME ZONE"):
            select.append(f"strftime(\"{c.name}\", '%Y-%m-%dT%H:%M:%S.%f') || 'Z' as \"{c.name}\"")
        else:
            select.append(f'cast("{c.name}" as varchar) as "{c.name}"')
    return into.insert(
        render("ingest/read_parquet", columns=", ".join(select)), {"file": path.name, **src}
    )


__all__ = [
    "FileError",
    "create_staging",
    "landing_files",
    "load_file",
    "staging_columns",
    "staging_source",
]
