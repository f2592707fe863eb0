"""warehouse.duckdb: the analysts' serving layer, rebuilt from the lake at any time.

Each pipeline step commits its Parquet partition first, then replaces the same partition in the
warehouse inside one transaction. ``rebuild`` recreates every table from the lake.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import duckdb

from pipelines import schema
from pipelines.config import Paths, resolve_data_dir
from pipelines.db import connect, parquet, sql
from pipelines.lake import partitions

TABLES = [t for t in schema.PUBLIC if t.kind == "table"]
# (lake table folder, partition prefix, file name in the partition, warehouse table, key column)
LAKE_SOURCES = [
    ("ingest", "landing_date", "quarantine.parquet", "quarantine", "landing_date"),
    ("ingest", "landing_date", "files.parquet", "ingest_files", "landing_date"),
    ("ingest", "landing_date", "payments.parquet", "payments", "landing_date"),
    ("ingest", "landing_date", "estimates.parquet", "estimates", "as_of_date"),
    ("bills", "bill_month", "bills.parquet", "bills", "bill_month"),
    ("bills", "bill_month", "bill_lines.parquet", "bill_lines", "bill_month"),
]
VIEWS = ["amount_due", "expenditure_by_product", "expenditure_by_customer"]


def open_warehouse(root: Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    paths = Paths(root)
    if read_only and not paths.warehouse.exists():
        con = connect(":memory:")
    else:
        con = _connect_waiting(paths.warehouse, read_only)
    if not read_only:
        ensure_schema(con)
    return con


def _connect_waiting(path: Path, read_only: bool, wait_s: float = 30.0):
    """Open the warehouse; while another process holds it (an analyst's session), retry for
    ``wait_s`` seconds, then fail with what to do. The lake is the truth either way."""
    import time

    from pipelines.lake import KoobillError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise KoobillError(
                    f"{path} is held by another process (an open DuckDB session?): "
                    f"{str(exc).splitlines()[0]}. The lake is committed; close that session "
                    "and run `koobill rebuild-warehouse` (or rerun this command)."
                ) from None
            time.sleep(0.5)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create missing public tables and (re)create the views."""
    for t in TABLES:
        con.execute(t.ddl())
    con.execute("create table if not exists _meta (key varchar primary key, value varchar)")
    for name in VIEWS:
        path = Path(__file__).resolve().parent.parent / "sql" / f"{name}.sql"
        if path.exists():
            con.execute(f"create or replace view {name} as\n{sql(name)}")


def replace_partition(
    con: duckdb.DuckDBPyConnection, table: str, key: str, value: str, files: Iterable[Path]
) -> None:
    """Delete ``table``'s rows where ``key`` = ``value`` and insert the rows of ``files``.

    Runs inside the caller's transaction; columns are matched by name so the lake may carry
    extra columns."""
    cols = ", ".join(f'"{c}"' for c in schema_of(table).column_names)
    con.execute(f"delete from {table} where {key}::varchar = ?", [value])
    files = [f for f in files if f.exists()]
    if files:
        con.execute(f"insert into {table} ({cols}) select {cols} from {parquet(files)}")


def schema_of(table: str) -> schema.Table:
    for t in schema.PUBLIC:
        if t.name == table:
            return t
    raise KeyError(table)


def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("insert or replace into _meta values (?, ?)", [key, value])


def sync_partition(root: Path, lake_table: str, value: str) -> None:
    """Replace one lake partition's rows in every warehouse table fed by it, atomically."""
    paths = Paths(root)
    prefix = next(pf for lt, pf, *_ in LAKE_SOURCES if lt == lake_table)
    part = paths.lake / lake_table / f"{prefix}={value}"
    con = open_warehouse(root)
    try:
        con.execute("begin transaction")
        for lt, _prefix, fname, table, key in LAKE_SOURCES:
            if lt == lake_table:
                replace_partition(con, table, key, value, [part / fname])
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    finally:
        con.close()


def set_latest_landing_date(root: Path) -> None:
    """Record the latest committed landing date (the as-of date of ``amount_due``)."""
    dates = [v for v, _ in partitions(Paths(root).ingest, "landing_date")]
    con = open_warehouse(root)
    try:
        if dates:
            set_meta(con, "latest_landing_date", dates[-1])
    finally:
        con.close()


def rebuild(data_dir: str | Path | None = None) -> None:
    """Recreate warehouse.duckdb from the lake (written to a temporary file, then renamed),
    holding the data dir's writer lock."""
    import os

    from pipelines.lake import data_dir_lock

    root = resolve_data_dir(data_dir)
    with data_dir_lock(
        root, wait_s=float(os.environ.get("KOOBILL_LOCK_WAIT_S", "600")), what="rebuild-warehouse"
    ):
        _rebuild(root)


def _rebuild(root: Path) -> None:
    paths = Paths(root)
    tmp = paths.warehouse.with_name(".warehouse.rebuild.duckdb")
    tmp.unlink(missing_ok=True)
    con = connect(tmp)
    try:
        ensure_schema(con)
        for lt, prefix, fname, table, _key in LAKE_SOURCES:
            files = [
                p / fname for _, p in partitions(paths.lake / lt, prefix) if (p / fname).exists()
            ]
            if files:
                cols = ", ".join(f'"{c}"' for c in schema_of(table).column_names)
                con.execute(f"insert into {table} ({cols}) select {cols} from {parquet(files)}")
        hist = sorted((paths.lake / "export_history").glob("*.parquet"))
        if hist:
            cols = ", ".join(f'"{c}"' for c in schema.EXPORT_HISTORY.column_names)
            con.execute(f"insert into export_history ({cols}) select {cols} from {parquet(hist)}")
        latest = [v for v, _ in partitions(paths.ingest, "landing_date")]
        if latest:
            set_meta(con, "latest_landing_date", latest[-1])
        con.execute("checkpoint")
    finally:
        con.close()
    tmp.replace(paths.warehouse)
    Path(str(tmp) + ".wal").unlink(missing_ok=True)
