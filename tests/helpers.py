"""Small helpers shared by the tests: write landing files, build rows, run an ingest, read the
lake and the warehouse back.

Import them as ``from helpers import ...`` (tests/ is on sys.path through conftest.py) or
``from tests.helpers import ...``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# --- landing files -----------------------------------------------------------------------------


def _json_value(v) -> str:
    """JSON text of one value; a Decimal is written as a JSON *number* with its exact digits."""
    if isinstance(v, Decimal):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def jsonl_line(row: dict) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {_json_value(v)}" for k, v in row.items()) + "}"


def _columns(rows: list[dict], columns: list[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    out: list[str] = []
    for r in rows:
        out += [k for k in r if k not in out]
    return out


def _csv_cell(v) -> str:
    s = "" if v is None else str(v)
    if any(ch in s for ch in ',"\r\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s


def land(
    data_dir: Path,
    feed: str,
    day: str,
    rows: list[dict],
    fmt: str = "csv",
    name: str | None = None,
    columns: list[str] | None = None,
    bom: bool = False,
    newline: str = "\n",
) -> Path:
    """Write ``rows`` as one landing file ``landing/<feed>/<day>/<name>`` and return its path.

    ``fmt`` is csv, jsonl or parquet. ``columns`` fixes the header (default: the union of the
    rows' keys, in order); a CSV cell of None is empty. In JSONL a Decimal value is written as a
    JSON number (exact digits), anything else through ``json.dumps``. In Parquet every column is
    text unless the values are Decimals (decimal128) or datetimes.
    """
    folder = Path(data_dir) / "landing" / feed / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (name or f"{feed}.{fmt}")
    cols = _columns(rows, columns)
    if fmt == "csv":
        lines = [",".join(_csv_cell(c) for c in cols)]
        lines += [",".join(_csv_cell(r.get(c)) for c in cols) for r in rows]
        text = newline.join(lines) + newline
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    elif fmt == "jsonl":
        path.write_text("".join(jsonl_line(r) + newline for r in rows), encoding="utf-8")
    elif fmt == "parquet":
        data = {c: [r.get(c) for r in rows] for c in cols}
        arrays = {}
        for c, vals in data.items():
            if any(isinstance(v, Decimal) for v in vals):
                arrays[c] = pa.array(vals, type=pa.decimal128(38, 6))
            elif any(isinstance(v, dt.datetime) for v in vals):
                arrays[c] = pa.array(vals, type=pa.timestamp("us", tz="UTC"))
            else:
                arrays[c] = pa.array([None if v is None else str(v) for v in vals], pa.string())
        pq.write_table(pa.table(arrays), path)
    else:
        raise ValueError(fmt)
    return path


def land_bytes(data_dir: Path, feed: str, day: str, name: str, content: bytes | str) -> Path:
    """Write a landing file with exactly ``content`` (for damaged or odd files)."""
    folder = Path(data_dir) / "landing" / feed / day
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --- rows with sensible defaults ---------------------------------------------------------------

DAY = "2026-11-10"  # a landing date in the middle of a month: only November is open


def partner(pid: str = "P1", **kw) -> dict:
    return {
        "partner_id": pid,
        "partner_name": f"Partner {pid}",
        "currency": "CNY",
        "tax_rate": "0.06",
        "discount_rate": "0.1",
        **kw,
    }


def price(sku: str = "S1", **kw) -> dict:
    return {
        "sku_code": sku,
        "unit": "hour",
        "unit_price": "2.5",
        "currency": "CNY",
        "effective_from": "2026-01-01T00:00:00+08:00",
        "effective_to": "",
        **kw,
    }


def order(rid: str = "o1", **kw) -> dict:
    return {
        "record_id": rid,
        "order_id": f"ord-{rid}",
        "partner_id": "P1",
        "customer_id": "C1",
        "customer_name": "Customer One",
        "product_id": "PR1",
        "product_name": "Product One",
        "sku_code": "S1",
        "region": "cn-north-4",
        "order_type": "NEW",
        "official_amount": "100",
        "discount_amount": "10",
        "amount": "90",
        "currency": "CNY",
        "event_time": "2026-11-09T10:00:00+08:00",
        **kw,
    }


def usage(rid: str = "u1", **kw) -> dict:
    if "usage_start" in kw and "usage_end" not in kw:
        kw["usage_end"] = kw["usage_start"]
    return {
        "record_id": rid,
        "partner_id": "P1",
        "customer_id": "C1",
        "customer_name": "Customer One",
        "product_id": "PR1",
        "product_name": "Product One",
        "sku_code": "S1",
        "region": "cn-north-4",
        "resource_id": f"res-{rid}",
        "usage_start": "2026-11-09T10:00:00+08:00",
        "usage_end": "2026-11-09T11:00:00+08:00",
        "quantity": "2",
        "unit": "hour",
        **kw,
    }


def adjustment(rid: str = "a1", **kw) -> dict:
    return {
        "record_id": rid,
        "partner_id": "P1",
        "customer_id": "C1",
        "product_id": "PR1",
        "amount": "-5",
        "currency": "CNY",
        "bill_month": "2026-11",
        "reason": "compensation",
        **kw,
    }


def coupon(rid: str = "c1", **kw) -> dict:
    return {
        "record_id": rid,
        "coupon_id": f"cp-{rid}",
        "partner_id": "P1",
        "amount": "20",
        "currency": "CNY",
        "bill_month": "2026-11",
        **kw,
    }


def payment(rid: str = "pay1", **kw) -> dict:
    return {
        "record_id": rid,
        "partner_id": "P1",
        "amount": "100",
        "currency": "CNY",
        "paid_at": "2026-11-09T10:00:00+08:00",
        "method": "bank",
        "reference": "ref",
        **kw,
    }


ROW = {
    "orders": order,
    "usage": usage,
    "adjustments": adjustment,
    "coupons": coupon,
    "payments": payment,
    "partners": partner,
    "prices": price,
}


def land_reference(
    data_dir: Path,
    day: str = DAY,
    partners: list[dict] | None = None,
    prices: list[dict] | None = None,
) -> None:
    """Land a partners snapshot (default: P1 in CNY) and a price list (default: S1)."""
    land(data_dir, "partners", day, partners or [partner()])
    land(data_dir, "prices", day, prices or [price()])


# --- running and reading back ------------------------------------------------------------------


def ingest(data_dir: Path, day: str = DAY, share: float | None = 1.0, allow_empty: bool = False):
    """Run the ingest of ``day``; ``share`` is passed as max_quarantine_share (1.0: tests with
    many bad rows are not stopped by the quarantine-share gate); ``allow_empty`` records a date
    no feed has a folder for."""
    from pipelines.ingest import ingest_date

    return ingest_date(data_dir, day, max_quarantine_share=share, allow_empty=allow_empty)


def lake_path(data_dir: Path, day: str, name: str) -> Path:
    """The local path of the lake's current ``<name>`` file of ingest partition ``day`` (a path
    that does not exist when that member has no file for the day)."""
    from pipelines import lake

    return lake.at(Path(data_dir) / "lake" / "ingest" / f"landing_date={day}") / f"{name}.parquet"


def committed(partition: Path) -> bool:
    """Whether the lake partition ``.../lake/<table>/<prefix>=<value>`` is committed (listed)."""
    from pipelines import lake

    partition = Path(partition)
    prefix, value = partition.name.split("=", 1)
    return lake.partition(partition.parent, prefix, value) is not None


def commit_lake_files(partition: Path, files: dict[str, Path | pa.Table]) -> None:
    """Commit ``{member: parquet file or arrow table}`` as one version of a lake partition
    (``.../lake/<table>/<prefix>=<value>``) through the lake's real commit path."""
    from pipelines import lake

    vdir = lake.new_version_dir(Path(partition))
    for name, src in files.items():
        dst = vdir / f"{name}.parquet"
        if isinstance(src, pa.Table):
            pq.write_table(src, dst)
        else:
            dst.write_bytes(Path(src).read_bytes())
    lake.commit_version(Path(partition), vdir)


# The partition key of each partitioned lake table.
LAKE_PREFIX = {"ingest": "landing_date", "bills": "bill_month", "reconcile": "bill_month"}


def partition_digest(partition: Path) -> dict[str, str]:
    """``{<member>.parquet: digest}`` of a committed lake partition as a reader sees it (empty
    when the partition is not committed)."""
    from pipelines import lake

    partition = Path(partition)
    table = partition.parent
    prefix, value = partition.name.split("=", 1)
    part = lake.partition(table, prefix, value)
    if part is None:
        return {}
    out = {}
    for member in lake.members(table):
        f = part / f"{member}.parquet"
        if f.exists():
            out[f"{member}.parquet"] = file_digest(f)
    return out


def lake_digest(lake_dir: Path, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """What a reader sees in the lake: the digest of every committed partition's member files
    by ``<table>/<prefix>=<value>/<member>.parquet`` (an unpartitioned table, the export
    history: ``<table>/<n>`` over its files' sorted digests). A path holding any of ``skip``
    is left out."""
    from pipelines import delta, lake

    out: dict[str, str] = {}
    lake_dir = Path(lake_dir)
    if not lake_dir.is_dir():
        return out
    for table in sorted(p for p in lake_dir.iterdir() if p.is_dir() and p.name[0] != "."):
        if any(s in table.name for s in skip):
            continue
        if (table / "_delta_log").is_dir():
            files = [delta.local_file(u) for u in delta.table_files(table)]
            digests = sorted(file_digest(f) for f in files)
            out.update({f"{table.name}/{i}": d for i, d in enumerate(digests)})
            continue
        prefix = LAKE_PREFIX[table.name]
        for value, _part in lake.partitions(table, prefix):
            rel = f"{table.name}/{prefix}={value}"
            for name, digest in partition_digest(table / f"{prefix}={value}").items():
                if not any(s in f"{rel}/{name}" for s in skip):
                    out[f"{rel}/{name}"] = digest
    return out


def lake_state(table_dir: Path) -> dict[str, tuple[int, list[str]]]:
    """``{member: (Delta table version, current data files)}`` of a lake table: equal before
    and after a command exactly when the command made no new commit to it."""
    from pipelines import delta

    out: dict[str, tuple[int, list[str]]] = {}
    if not Path(table_dir).is_dir():
        return out
    for member in sorted(p.name for p in Path(table_dir).iterdir() if (p / "_delta_log").is_dir()):
        path = Path(table_dir) / member
        out[member] = (len(delta.history(path)) - 1, delta.table_files(path))
    return out


def lake_rows(data_dir: Path, day: str, name: str) -> list[dict]:
    return pq.read_table(lake_path(data_dir, day, name)).to_pylist()


def lake_by_id(data_dir: Path, day: str, feed: str) -> dict[str, dict]:
    return {r["record_id"]: r for r in lake_rows(data_dir, day, feed)}


def quarantined(data_dir: Path, day: str, feed: str | None = None) -> list[dict]:
    rows = lake_rows(data_dir, day, "quarantine")
    return [r for r in rows if feed is None or r["feed"] == feed]


def file_counts(data_dir: Path, day: str) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """{(feed, file): (rows_read, accepted, quarantined, duplicates)} from files.parquet."""
    return {
        (r["feed"], r["file"]): (r["rows_read"], r["accepted"], r["quarantined"], r["duplicates"])
        for r in lake_rows(data_dir, day, "files")
    }


def warehouse(data_dir: Path, query: str, params: list | None = None) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(Path(data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def file_digest(p: Path) -> str:
    """sha256 of a file's bytes; for the lake's usage record files (written in the order the
    parallel engine yields rows: the same rows on every run, not the same order), sha256 of
    their rows sorted by file and row."""
    if "landing_date=" in p.as_posix() and (
        p.name == "usage.parquet" or p.parent.parent.name == "usage"
    ):
        t = pq.read_table(p)
        t = t.sort_by([("_file", "ascending"), ("_row", "ascending")])
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        return "rows:" + hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --- the command line --------------------------------------------------------------------------

DATA_DIR_LINE = re.compile(
    r"koobill: data dir (/[^\n]*) \(from (--data-dir|\$KOOBILL_DATA_DIR|default \./data|argument)\)\n"
)


def after_data_dir_line(out: str) -> str:
    """A command's output after the line naming its data dir, which every command that uses a
    data dir prints first (on stderr); fails if that line is not there."""
    m = DATA_DIR_LINE.match(out)
    assert m, f"no 'koobill: data dir ...' line first:\n{out}"
    return out[m.end() :]
