"""The export history: every file written is a row of ``export_history``, appended to the lake
(``lake/export_history/<export_run_id>.parquet``, one file per run) and to the warehouse table
in one transaction; listing reads the lake, so it never waits for a writer. A restatement
marks the exports of the superseded versions (``mark_superseded``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.config import Paths, resolve_data_dir
from pipelines.errors import KoobillError
from pipelines.exports.common import (
    arrow_type,
    check_month,
    check_partner,
    file_names,
    rows_of,
    safe_target,
)


@dataclass(frozen=True)
class ExportFile:
    export_id: str
    partner_id: str
    bill_month: str
    version: int
    bill_status: str
    kind: str
    format: str
    path: str  # relative to the data dir
    rows: int
    bytes: int
    sha256: str
    created_at: datetime

    def as_row(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in schema.EXPORT_HISTORY.column_names}


def _history_table(files: Sequence[ExportFile]):
    import pyarrow as pa

    fields = [pa.field(n, arrow_type(t)) for n, t, _ in schema.EXPORT_HISTORY.columns]
    cols = schema.EXPORT_HISTORY.column_names
    return pa.Table.from_pylist([f.as_row() for f in files], schema=pa.schema(fields)).select(cols)


def record(root: Path, con, run_id: str, files: Sequence[ExportFile]) -> Path:
    """Append the run's rows to the lake (one Parquet file per run, one commit of the Delta table
    ``lake/export_history``), then to the warehouse; returns the table's folder."""
    import pyarrow.parquet as pq

    from pipelines.lake import append_export_history, staging_dir

    staging = staging_dir(Paths(root).lake / "export_history")
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / f"{run_id}.parquet"
    try:
        pq.write_table(_history_table(files), path)
        append_export_history(root, path, run_id)
    finally:
        path.unlink(missing_ok=True)  # moved into the table unless the commit failed
    cols = schema.EXPORT_HISTORY.column_names
    placeholders = ", ".join("?" for _ in cols)
    con.execute("begin transaction")
    try:
        con.executemany(
            f"insert into export_history ({', '.join(cols)}) values ({placeholders})",
            [[f.as_row()[c] for c in cols] for f in files],
        )
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise
    return Paths(root).lake / "export_history"


def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n_f = n / 1024
        if n_f < 1024 or unit == "GB":
            return f"{n_f:.1f} {unit}"
        n = int(n_f)
    return f"{n} B"


def list_exports(
    data_dir: str | Path | None, *, partner: str | None = None, month: str | None = None
) -> list[dict[str, Any]]:
    """The export history, newest first, read from the lake (``lake/export_history``).

    Reads the lake rather than warehouse.duckdb so that listing never waits for, or blocks,
    a writer."""
    import duckdb

    from pipelines.db import file_list

    root = resolve_data_dir(data_dir)
    if partner is not None:
        check_partner(partner)
    if month is not None:
        check_month(month)
    from pipelines.lake import export_history_files

    files = export_history_files(root)
    if not files:
        return []
    where, params = [], []
    if partner is not None:
        where.append("partner_id = ?")
        params.append(partner)
    if month is not None:
        where.append("bill_month = ?")
        params.append(month)
    cols = ", ".join(f'"{c}"' for c in schema.EXPORT_HISTORY.column_names)
    con = duckdb.connect(":memory:")
    try:
        con.execute("set TimeZone = 'UTC'")
        cur = con.execute(
            f"select {cols} from read_parquet({file_list(files)}) "
            f"{'where ' + ' and '.join(where) if where else ''} "
            "order by created_at desc, partner_id, bill_month, format",
            params,
        )
        rows = rows_of(cur)
        status = bill_statuses(con, root, sorted({r["bill_month"] for r in rows}))
    finally:
        con.close()
    for r in rows:
        # the recorded status is the one the version had when the file was written; what the
        # file is now follows the published bills (a later restatement supersedes it)
        r["status_at_export"] = r["bill_status"]
        now = status.get((r["partner_id"], r["bill_month"], r["version"]))
        if now is not None:
            r["bill_status"], r["superseded_by"] = now
        else:
            r["superseded_by"] = None
    return rows


def bill_statuses(
    con, root: Path, months: Sequence[str]
) -> dict[tuple[str, str, int], tuple[str, str | None]]:
    """(partner_id, bill_month, version) -> (status now, the invoice, or version, of the
    partner's current bill when this one is superseded), from the published lake bills."""
    from pipelines.db import parquet

    out: dict[tuple[str, str, int], tuple[str, str | None]] = {}
    for m in months:
        from pipelines.lake import at

        f = at(Paths(root).bills_dir(m)) / "bills.parquet"
        if not f.exists():
            continue
        for pid, ver, st, cur_inv, cur_ver in con.execute(
            f"""select partner_id, version, status,
                   max(invoice_no) filter (where status = 'closed')
                     over (partition by partner_id),
                   max(version) filter (where status = 'closed') over (partition by partner_id)
            from {parquet(f)}"""
        ).fetchall():
            succ = None
            if st == "superseded":
                succ = cur_inv or (f"version {cur_ver}" if cur_ver is not None else None)
            out[(pid, m, int(ver))] = (st, succ)
    return out


def refresh_export_status(con) -> int:
    """Set ``export_history.bill_status`` in the warehouse to the status each exported bill
    version has now (a restatement supersedes it); returns the rows changed. The lake's export
    records keep the status at export time (``exports list`` shows both)."""
    row = con.execute(
        """update export_history as e set bill_status = b.status
        from bills as b
        where b.partner_id = e.partner_id and b.bill_month = e.bill_month
          and b.version = e.version and e.bill_status is distinct from b.status"""
    ).fetchone()
    return int(row[0]) if row else 0


def mark_superseded(data_dir: str | Path | None, month: str) -> list[Path]:
    """Mark the exports of superseded bill versions of ``month``: their ``export_history``
    rows in the warehouse get ``bill_status`` superseded, and each export folder holding such
    files gets a ``SUPERSEDED.txt`` note naming them and the invoice that supersedes them. The
    files keep their names (their paths are on record in ``export_history``). Callers hold the
    writer lock. Returns the notes written or rewritten."""
    import duckdb

    from pipelines.warehouse import open_warehouse, publish

    root = resolve_data_dir(data_dir)
    check_month(month)
    wh = open_warehouse(root)
    try:
        changed = refresh_export_status(wh)
    finally:
        wh.close()
    if changed:
        publish(root)
    con = duckdb.connect(":memory:")
    try:
        status = bill_statuses(con, root, [month])
    finally:
        con.close()
    by_partner: dict[str, list[tuple[int, str | None]]] = {}
    for (pid, _m, ver), (st, succ) in status.items():
        if st == "superseded":
            by_partner.setdefault(pid, []).append((ver, succ))
    written = []
    for pid in sorted(by_partner):
        try:
            folder = safe_target(root, pid, month, "SUPERSEDED.txt").parent
        except KoobillError:
            continue
        if not folder.is_dir():
            continue
        lines = []
        for ver, succ in sorted(by_partner[pid]):
            present = [n for n in file_names(pid, month, ver).values() if (folder / n).exists()]
            if present:
                by = f"superseded by {succ}" if succ else "superseded (no current bill)"
                lines.append(f"version {ver}: {by}")
                lines += [f"  {n}" for n in present]
        if not lines:
            continue
        text = (
            f"Bill {pid} {month}: the files below belong to superseded versions of the bill.\n"
            "Use the files of the current version; these are kept as issued.\n\n"
            + "\n".join(lines)
            + "\n"
        )
        note = folder / "SUPERSEDED.txt"
        if note.exists() and note.read_text(encoding="utf-8") == text:
            continue
        from pipelines.lake import atomic_path

        with atomic_path(note) as tmp:
            tmp.write_text(text, encoding="utf-8")
        written.append(note)
    return written


def print_exports(rows: Sequence[dict[str, Any]], echo: Callable[[str], Any] = print) -> None:
    """The export history as a table finance can read."""
    if not rows:
        echo("no exports recorded")
        return
    headers = [
        "created_at (UTC)",
        "partner",
        "month",
        "version",
        "status",
        "kind",
        "format",
        "rows",
        "size",
        "path",
        "sha256",
    ]
    table = [
        [
            r["created_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(r["created_at"], datetime)
            else str(r["created_at"]),
            r["partner_id"],
            r["bill_month"],
            f"v{r['version']}",
            r["bill_status"] + (f" by {r['superseded_by']}" if r.get("superseded_by") else ""),
            r["kind"],
            r["format"],
            str(r["rows"]),
            size_text(int(r["bytes"])),
            r["path"],
            r["sha256"][:12],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(headers)]
    right = {"version", "rows", "size"}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in right else c.ljust(w)
            for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    echo(line(headers))
    echo(line(["-" * w for w in widths]))
    for row in table:
        echo(line(row))
    echo(f"{len(rows)} file{'s' if len(rows) != 1 else ''}")
