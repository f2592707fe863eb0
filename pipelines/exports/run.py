"""The export run: check the request, take the data dir's writer lock, load the bills, write
each partner's files, record them in ``export_history`` and publish the warehouse."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

from pipelines.config import Paths, require_data_dir
from pipelines.env import settings as env_settings
from pipelines.errors import KoobillError
from pipelines.exports.bill import Bill
from pipelines.exports.common import (
    FORMATS,
    KIND,
    check_formats,
    check_month,
    check_partner,
    file_names,
    safe_target,
)
from pipelines.exports.history import ExportFile, mark_superseded, record, size_text


def _write_csv(bill: Bill, tmp: Path) -> int:
    from pipelines.exports.csv import write_csv

    return write_csv(bill, tmp)


def _write_parquet(bill: Bill, tmp: Path) -> int:
    from pipelines.exports.parquet import write_parquet

    return write_parquet(bill, tmp)


def _write_xlsx(bill: Bill, tmp: Path) -> int:
    from pipelines.exports.xlsx import write_xlsx

    return write_xlsx(bill, tmp)


def _write_pdf(bill: Bill, tmp: Path) -> int:
    from pipelines.exports.pdf import write_pdf

    return write_pdf(bill, tmp)


# each writes one complete file at ``tmp`` and returns its row count
WRITERS: dict[str, Callable[[Bill, Path], int]] = {
    "pdf": _write_pdf,
    "xlsx": _write_xlsx,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


@dataclass
class ExportResult:
    data_dir: Path
    month: str
    export_run_id: str
    files: list[ExportFile] = field(default_factory=list)
    history_path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def partners(self) -> list[str]:
        return sorted({f.partner_id for f in self.files})


def export_month(
    data_dir: str | Path | None,
    month: str,
    *,
    partner: str | Sequence[str] | None = None,
    formats: Sequence[str] = FORMATS,
    version: int | None = None,
    lock_wait_s: float | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Write the finance exports of ``month`` for every partner with a bill (or ``partner``: one
    partner id or several, e.g. a batch of Airflow's mapped exports, which then takes the writer
    lock and publishes the warehouse once for the whole batch).

    Exports the current closed version of each bill, or ``version`` (then recorded with the
    status that version has, e.g. superseded). Raises KoobillError if the month has no bills or
    the partner has none.

    The partners' files are written by ``workers`` processes (default: $KOOBILL_EXPORT_WORKERS,
    else one per core once there are enough bills to pay for starting them); each partner's
    files are written whole by one process, and this one records them all, in partner order."""
    from pipelines.lake import data_dir_lock

    root = require_data_dir(data_dir)
    check_month(month)
    fmts = check_formats(formats)
    if partner is not None:
        for p in [partner] if isinstance(partner, str) else partner:
            check_partner(p)
    _require_warehouse(root, month)
    started = datetime.now(UTC)
    result = ExportResult(root, month, f"{started:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}")
    if lock_wait_s is None:  # like ingest and close: $KOOBILL_LOCK_WAIT_S, else 10 minutes
        lock_wait_s = env_settings().lock_wait_s
    with data_dir_lock(root, wait_s=lock_wait_s, what=f"export {month}"):
        _export_locked(root, result, partner, version, fmts, workers)
        if result.files:
            from pipelines.warehouse import publish

            publish(root)
        mark_superseded(root, month)
    return result


def _require_warehouse(root: Path, month: str) -> None:
    from pipelines import objectstore
    from pipelines.warehouse import work_path

    published = objectstore.refresh(Paths(root).warehouse)  # object storage: the bucket's
    if not (work_path(root).exists() or published.exists()):
        raise KoobillError(
            f"month {month} not closed: no warehouse at {Paths(root).warehouse}. "
            f"Run `koobill close --month {month}` first."
        )


def _export_locked(
    root: Path,
    result: ExportResult,
    partner: str | Sequence[str] | None,
    version: int | None,
    fmts: list[str],
    workers: int | None,
) -> None:
    """Load the bills, write their files and record them (the caller holds the lock)."""
    from pipelines.exports.loader import load_bills
    from pipelines.settings import load_settings
    from pipelines.warehouse import open_warehouse

    errors: list[BaseException] = []
    con = open_warehouse(root)
    try:
        settings = load_settings(root)
        documents = bool({"pdf", "xlsx"} & set(fmts))
        if documents:
            result.warnings += _settings_warnings(root, settings)
        bills = load_bills(
            con, result.month, partner, version, settings=settings, documents=documents
        )
        pooled = [f for f in fmts if f in FORMATS]
        try:
            if pooled:
                for files, error in _write_all(root, result.export_run_id, bills, pooled, workers):
                    result.files += files
                    if error is not None:
                        errors.append(error)
            if "focus" in fmts:
                for bill in bills:
                    result.files += _write_focus(root, result.export_run_id, con, bill, settings)
        finally:
            # whatever reached the disk is on record, even if a file failed
            if result.files:
                result.history_path = record(root, con, result.export_run_id, result.files)
    finally:
        con.close()
    if errors:  # the other partners' files are written and recorded; the first error is told
        raise errors[0]


def _write_focus(root: Path, run_id: str, con, bill: Bill, settings) -> list[ExportFile]:
    """The FOCUS 1.2 dataset of one bill (Parquet and CSV), written in this process: it reads
    the bill's lines and usage records from the warehouse."""
    from pipelines.focus import write_focus

    folder = safe_target(root, bill.partner_id, bill.month, "focus").parent
    files = []
    for kind, fmt, path, rows in write_focus(
        con, bill.header, folder, issuer=settings.issuer.name, root=root
    ):
        digest, size = _sha256(path)
        files.append(
            _export_file(root, run_id, bill, f"focus-{fmt}", kind, fmt, path, rows, digest, size)
        )
    return files


def _export_file(
    root: Path, run_id: str, bill: Bill, key: str, kind: str, fmt: str, path: Path, *stats
) -> ExportFile:
    """The export_history record of one file written for ``bill`` (``stats``: rows, sha256,
    bytes)."""
    rows, digest, size = stats
    return ExportFile(
        export_id=f"{run_id}-{bill.partner_id}-{key}",
        partner_id=bill.partner_id,
        bill_month=bill.month,
        version=bill.version,
        bill_status=str(bill.header["status"]),
        kind=kind,
        format=fmt,
        path=path.relative_to(root.resolve()).as_posix(),
        rows=rows,
        bytes=size,
        sha256=digest,
        created_at=datetime.now(UTC),
    )


def _settings_warnings(root: Path, settings) -> list[str]:
    from pipelines.demo import MARKER as DEMO_MARKER
    from pipelines.settings import DEFAULT_PATH as DEFAULT_SETTINGS

    if settings.source == DEFAULT_SETTINGS and not (root / DEMO_MARKER).exists():
        from pipelines import objectstore

        where = objectstore.remote_of(root / "settings.toml") or root / "settings.toml"
        return [
            f"no {where}: the invoices carry the demo issuer and bank "
            "details; copy pipelines/assets/settings.default.toml there and fill in "
            "yours before sending them"
        ]
    return []


def write_partner(
    root: Path, run_id: str, bill: Bill, fmts: Sequence[str]
) -> tuple[list[ExportFile], BaseException | None]:
    """Write every format of one bill, each file whole (a temporary name renamed into place).
    Returns the files written and the error that stopped it, if any (the files written before
    it are on disk and must be recorded)."""
    from pipelines.lake import atomic_path

    files: list[ExportFile] = []
    names = file_names(bill.partner_id, bill.month, bill.version)
    try:
        for fmt in fmts:
            target = safe_target(root, bill.partner_id, bill.month, names[fmt])
            with atomic_path(target) as tmp:
                rows = WRITERS[fmt](bill, tmp)
                digest, size = _sha256(tmp)
            files.append(
                _export_file(root, run_id, bill, fmt, KIND[fmt], fmt, target, rows, digest, size)
            )
    except Exception as exc:
        return files, exc
    return files, None


# a worker process costs about a second of CPU to start (imports, fonts): worth it from this
# many bills per worker
BILLS_PER_WORKER = 10


def worker_count(bills: int, workers: int | None = None) -> int:
    """How many processes write the files of ``bills`` bills."""
    if workers is None:
        workers = env_settings().export_workers
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        workers = min(cores or os.cpu_count() or 1, bills // BILLS_PER_WORKER)
    return max(1, min(int(workers), bills))


def _write_all(
    root: Path, run_id: str, bills: list[Bill], fmts: list[str], workers: int | None
) -> Iterator[tuple[list[ExportFile], BaseException | None]]:
    """Each bill's files written, in the bills' order: in this process, or by a pool of
    processes (spawned: the parent holds DuckDB's and Arrow's threads, which fork would copy
    mid-flight)."""
    n = worker_count(len(bills), workers)
    if n <= 1:
        for bill in bills:
            yield write_partner(root, run_id, bill, fmts)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")
    done = 0
    try:
        from pipelines import objectstore

        uris = [u for u in [objectstore.remote_of(root)] if u]  # workers upload what they write
        with ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=warm_up, initargs=(uris,)
        ) as pool:
            for out in pool.map(
                write_partner, repeat(root), repeat(run_id), bills, repeat(fmts), chunksize=4
            ):
                yield out
                done += 1
    except BrokenProcessPool:
        # a worker died (killed, out of memory, or a __main__ that runs an export again when
        # imported: spawned workers import it); the rest is written here, the same bytes
        for bill in bills[done:]:
            yield write_partner(root, run_id, bill, fmts)


def warm_up(mounts: list[str] | None = None) -> None:
    """Import the writers and parse the fonts once, before the first bill; mount the data
    dir's object storage (``mounts``: its s3:// URI) so that the files written are uploaded."""
    from fpdf import FPDF

    from pipelines import objectstore

    for uri in mounts or []:
        objectstore.mount(uri)

    import pipelines.exports.csv
    import pipelines.exports.parquet
    import pipelines.exports.pdf
    import pipelines.exports.xlsx  # noqa: F401
    from pipelines.exports.fonts import add_fonts

    add_fonts(FPDF())


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def print_export_result(result: ExportResult, echo: Callable[[str], Any] = print) -> None:
    """Files written, with rows and bytes."""
    n = len(result.files)
    echo(
        f"exported {n} file{'s' if n != 1 else ''} of {result.month} for "
        f"{len(result.partners)} partner{'s' if len(result.partners) != 1 else ''} "
        f"(export run {result.export_run_id})"
    )
    for w in result.warnings:
        echo(f"warning: {w}")
    if not result.files:
        return
    width = max(len(f.path) for f in result.files)
    for f in result.files:
        status = "" if f.bill_status == "closed" else f"  [{f.bill_status}]"
        echo(f"  {f.path:<{width}}  {f.rows:>7} rows  {size_text(f.bytes):>9}{status}")
    if result.history_path is not None:
        echo(f"recorded in export_history ({_rel(result.history_path, result.data_dir)})")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
