"""Finance exports of closed bills: the invoice PDF and the bill details (XLSX, CSV, Parquet).

For each partner with a bill for the month, under ``<data-dir>/exports/<partner_id>/<YYYY-MM>/``:

- ``bill-<partner>-<YYYY-MM>-v<n>.pdf``: the bill summary, the invoice document (components,
  the by-product summary with its "Others" area, charts);
- ``bill-details-<partner>-<YYYY-MM>-v<n>.xlsx``: sheets summary, by product, by customer and
  details;
- ``bill-details-<partner>-<YYYY-MM>-v<n>.csv``: one line per bill line, UTF-8 with a BOM (so
  that Excel reads Chinese names right), amounts as plain decimal strings;
- ``bill-details-<partner>-<YYYY-MM>-v<n>.parquet``: one row per bill line, amounts decimal128.

Each file is written to a temporary name in its folder and renamed into place, then recorded in
``export_history``: appended to the lake as ``lake/export_history/<export_run_id>.parquet`` and
inserted into the warehouse table in one transaction. Text cells that a spreadsheet would run
as a formula are prefixed with ``'`` in XLSX and CSV; amounts stay numbers.

Heavy libraries (DuckDB, pyarrow, xlsxwriter, fpdf2, matplotlib) are imported where used, so
importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.config import Paths, check_partner_id, require_data_dir, resolve_data_dir
from pipelines.demo import MARKER as DEMO_MARKER
from pipelines.lake import KoobillError
from pipelines.lake import lock_wait_s as env_lock_wait_s
from pipelines.settings import DEFAULT_PATH as DEFAULT_SETTINGS
from pipelines.settings import load_settings

FORMATS = ("pdf", "xlsx", "csv", "parquet")
EXTRA_FORMATS = ("focus",)  # focus hook: opt-in formats (pipelines/focus.py), not in the default
KIND = {"pdf": "summary", "xlsx": "details", "csv": "details", "parquet": "details"}
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
ASSETS = Path(__file__).resolve().parent / "assets"
FONT_REGULAR = ASSETS / "NotoSansCJKsc-Regular-subset.ttf"
FONT_BOLD = ASSETS / "NotoSansCJKsc-Bold-subset.ttf"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CENT = Decimal("0.01")
ZERO = Decimal("0")

# The details columns (bill_lines), in file order; their Arrow types follow schema.BILL_LINES.
DETAIL_COLUMNS = schema.BILL_LINES.column_names
MONEY_DETAIL_COLUMNS = {"official_amount", "discount_amount", "amount"}
NUMERIC_DETAIL_COLUMNS = {"line_no", "version", "record_count", "quantity"} | MONEY_DETAIL_COLUMNS
COMPONENTS = (
    ("consume_amount", "Consume amount (expenditures)"),
    ("refunds", "Refunds"),
    ("adjustments", "Adjustments"),
    ("coupon_amount", "Coupons deducted"),
    ("tax_amount", "Tax"),
    ("bill_amount", "Bill amount (tax included)"),
    ("amount_due", "Amount due"),
)


class InvalidPartnerId(KoobillError, ValueError):
    """A partner id that cannot safely name a folder."""


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


# ---------------------------------------------------------------------------------------------
# small pure helpers


def round2(value: Decimal) -> Decimal:
    """Round to cents, half away from zero (spec section 4)."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def fmt_amount(value: Decimal | None) -> str:
    """``1234.5`` -> ``'1,234.50'``, from the Decimal (never via float)."""
    if value is None:
        return ""
    return f"{round2(Decimal(value)):,.2f}"


def neutralise(text: Any) -> str:
    """A text cell a spreadsheet will not evaluate: prefix formula-like text with ``'``."""
    s = "" if text is None else str(text)
    return "'" + s if s.startswith(FORMULA_PREFIXES) else s


def plain_decimal(value: Decimal | None) -> str:
    return "" if value is None else format(Decimal(value), "f")


def file_names(partner_id: str, month: str, version: int) -> dict[str, str]:
    """The stable file name of each format."""
    check_partner_id(partner_id)
    out = {"pdf": f"bill-{partner_id}-{month}-v{version}.pdf"}
    for fmt in ("xlsx", "csv", "parquet"):
        out[fmt] = f"bill-details-{partner_id}-{month}-v{version}.{fmt}"
    return out


def _check_partner(partner_id: str) -> str:
    try:
        return check_partner_id(partner_id)
    except ValueError as exc:
        raise InvalidPartnerId(str(exc)) from None


def _check_month(month: str) -> str:
    if not isinstance(month, str) or not MONTH_RE.match(month):
        raise KoobillError(f"invalid month {month!r}: expected YYYY-MM")
    return month


def _check_formats(formats: Iterable[str]) -> list[str]:
    out: list[str] = []
    for f in formats:
        f = str(f).strip().lower()
        if f not in FORMATS + EXTRA_FORMATS:  # focus hook: EXTRA_FORMATS
            raise KoobillError(
                f"unknown export format {f!r}: choose from {', '.join(FORMATS + EXTRA_FORMATS)}"
            )
        if f not in out:
            out.append(f)
    if not out:
        raise KoobillError("no export format given")
    return out


def _safe_target(root: Path, partner_id: str, month: str, name: str) -> Path:
    """The final path of an export file, refused unless it stays under <data-dir>/exports/."""
    _check_partner(partner_id)
    base = Paths(root).exports.resolve()
    target = (base / partner_id / month / name).resolve()
    if not target.is_relative_to(base / partner_id):
        raise KoobillError(f"export path {target} escapes {base / partner_id}; refusing to write")
    return target


# ---------------------------------------------------------------------------------------------
# reading the bill


@dataclass
class Bill:
    """One bill version as its documents show it: the bills row, its lines, the rows of the
    analysts' views (``expenditure_by_product``, ``expenditure_by_customer``) for it, the
    Amount Due pane as of the invoice date and the invoice settings."""

    header: dict[str, Any]
    lines: list[dict[str, Any]]
    estimates: list[tuple[date, Decimal]]
    products: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    account: Any = None  # pipelines.amount_due.AmountDue as of invoice_date (current versions)
    settings: Any = None  # pipelines.settings.Settings

    @property
    def partner_id(self) -> str:
        return self.header["partner_id"]

    @property
    def month(self) -> str:
        return self.header["bill_month"]

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def currency(self) -> str:
        return self.header.get("currency") or ""

    @property
    def invoice_no(self) -> str | None:
        return self.header.get("invoice_no") or None

    @property
    def supersedes_invoice_no(self) -> str | None:
        """The invoice this version replaces (bills.supersedes_invoice_no, when present)."""
        return self.header.get("supersedes_invoice_no") or None

    @property
    def is_current(self) -> bool:
        return str(self.header.get("status")) == "closed"

    @property
    def invoice_date(self) -> date | None:
        """The publication date: the Beijing date of ``closed_at``."""
        closed_at = self.header.get("closed_at")
        if isinstance(closed_at, datetime):
            from pipelines.calendar import beijing_date

            return beijing_date(closed_at)
        return None

    @property
    def due_date(self) -> date | None:
        """Invoice date + the payment terms; None when nothing is due."""
        if self.invoice_date is None or self.settings is None or not self.amount_due > 0:
            return None
        return self.invoice_date + timedelta(days=self.settings.terms_days)

    @property
    def amount_due(self) -> Decimal:
        return Decimal(self.header.get("amount_due") or 0)

    @property
    def pane_row(self) -> dict[str, Any] | None:
        """This bill's row of the Amount Due pane as of the invoice date, if it counts then."""
        if self.account is None:
            return None
        for b in self.account.bills:
            if b["bill_month"] == self.month and int(b["version"]) == self.version:
                return b
        return None

    @property
    def paid_amount(self) -> Decimal:
        """Payments applied to this bill as of the invoice date (oldest bill first)."""
        row = self.pane_row
        return round2(Decimal(row["paid_amount"])) if row is not None else ZERO

    @property
    def balance_due(self) -> Decimal:
        return self.amount_due - self.paid_amount

    def reconcile(self) -> None:
        """Refuse to publish a bill whose lines do not reproduce its components to the cent."""
        sums = {"consume": ZERO, "refund": ZERO, "adjustment": ZERO}
        for ln in self.lines:
            if ln["component"] in sums:
                sums[ln["component"]] += ln["amount"]
        checks = [
            ("consume_amount", round2(sums["consume"])),
            ("refunds", round2(-sums["refund"])),
            ("adjustments", round2(sums["adjustment"])),
        ]
        bad = [
            f"{name} {self.header[name]} != lines {got}"
            for name, got in checks
            if Decimal(self.header[name] or 0) != got
        ]
        if bad:
            raise KoobillError(
                f"bill {self.partner_id} {self.month} v{self.version}: bill lines do not "
                f"reproduce the bill ({'; '.join(bad)}); not exported"
            )


def _rows(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _load_bills(con, month: str, partner: str | None, version: int | None) -> list[dict]:
    """The bill headers to export: the current closed version of each partner (or ``version``)."""
    total = con.execute("select count(*) from bills where bill_month = ?", [month]).fetchone()[0]
    if total == 0:
        raise KoobillError(
            f"month {month} not closed: no bills in the warehouse. "
            f"Run `koobill close --month {month}` first."
        )
    where = ["bill_month = ?"]
    params: list[Any] = [month]
    if version is None:
        where.append("status = 'closed'")
    else:
        where.append("version = ?")
        params.append(int(version))
    if partner is not None:
        where.append("partner_id = ?")
        params.append(partner)
    # every column, so that columns added to bills (supersedes_invoice_no) are read if present
    # a partner has at most one closed version; if a faulty close left two, the newest wins
    rows = _rows(
        con.execute(
            f"select * from bills where {' and '.join(where)} "
            "qualify row_number() over (partition by partner_id order by version desc) = 1 "
            "order by partner_id",
            params,
        )
    )
    if not rows:
        what = f"version {version} of the bill" if version is not None else "closed bill"
        who = f"partner {partner} has no" if partner is not None else "there is no"
        raise KoobillError(f"{who} {what} for {month}; nothing exported")
    return rows


def _load_bill(con, header: dict[str, Any]) -> Bill:
    cols = ", ".join(f'"{c}"' for c in DETAIL_COLUMNS)
    key = [header["partner_id"], header["bill_month"], header["version"]]
    lines = _rows(
        con.execute(
            f"select {cols} from bill_lines where partner_id = ? and bill_month = ? and version = ? "
            "order by line_no",
            key,
        )
    )
    estimates: list[tuple[date, Decimal]] = [
        (r[0], r[1])
        for r in con.execute(
            "select as_of_date, estimate_amount from estimates "
            "where partner_id = ? and bill_month = ? and estimate_amount is not null "
            "order by as_of_date",
            key[:2],
        ).fetchall()
    ]
    if "supersedes_invoice_no" not in header:
        # before bills carried the column: the invoice of the partner's previous version
        prev = con.execute(
            "select invoice_no from bills where partner_id = ? and bill_month = ? "
            "and version < ? order by version desc limit 1",
            key,
        ).fetchone()
        header = {**header, "supersedes_invoice_no": prev[0] if prev else None}
    return Bill(
        header,
        lines,
        estimates,
        products=_view_rows(con, "expenditure_by_product", header),
        customers=_view_rows(con, "expenditure_by_customer", header),
    )


def _account(root: Path, bill: Bill):
    """The partner's Amount Due pane as of the invoice date (None for a superseded version,
    which the pane no longer shows, or a bill without a closing time)."""
    if not bill.is_current or bill.invoice_date is None:
        return None
    from pipelines.amount_due import amount_due

    return amount_due(root, bill.partner_id, as_of=bill.invoice_date)


def _view_rows(con, view: str, header: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of an analysts' view (``sql/<view>.sql``) for one bill version, in the view's
    order. The views show the current bills; for a superseded version the same SQL is run over
    that version's bill and lines alone, in a scratch database."""
    key = [header["partner_id"], header["bill_month"]]
    if str(header.get("status")) == "closed":
        return _rows(
            con.execute(f"select * from {view} where partner_id = ? and bill_month = ?", key)
        )
    import duckdb

    from pipelines.db import sql

    where = "where partner_id = ? and bill_month = ? and version = ?"
    params = [*key, header["version"]]
    bills_t = con.sql(f"select * from bills {where}", params=params).to_arrow_table()
    lines_t = con.sql(f"select * from bill_lines {where}", params=params).to_arrow_table()
    scratch = duckdb.connect(":memory:")
    try:
        scratch.execute("set TimeZone = 'UTC'")
        scratch.register("src_bills", bills_t)
        scratch.register("src_lines", lines_t)
        scratch.execute(
            "create table bills as select * replace ('closed' as status) from src_bills"
        )
        scratch.execute("create table bill_lines as select * from src_lines")
        return _rows(scratch.execute(sql(view)))
    finally:
        scratch.close()


# ---------------------------------------------------------------------------------------------
# writers: each writes one complete file at ``tmp`` and returns its row count


def _write_csv(bill: Bill, tmp: Path) -> int:
    import csv

    with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(DETAIL_COLUMNS)
        for ln in bill.lines:
            w.writerow([_csv_value(c, ln[c]) for c in DETAIL_COLUMNS])
    return len(bill.lines)


def _csv_value(col: str, value: Any) -> str:
    if value is None:
        return ""
    if col in NUMERIC_DETAIL_COLUMNS:
        return plain_decimal(value) if isinstance(value, Decimal) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return neutralise(value)


def _arrow_type(duck_type: str):
    import pyarrow as pa

    t = duck_type.upper()
    m = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", t)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    return {
        "VARCHAR": pa.string(),
        "INTEGER": pa.int32(),
        "BIGINT": pa.int64(),
        "BOOLEAN": pa.bool_(),
        "DATE": pa.date32(),
        "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    }[t]


def _write_parquet(bill: Bill, tmp: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field(n, _arrow_type(t)) for n, t, _ in schema.BILL_LINES.columns]
    meta = {
        "koobill.kind": "bill details",
        "partner_id": bill.partner_id,
        "bill_month": bill.month,
        "version": str(bill.version),
        "bill_status": str(bill.header["status"]),
        "currency": bill.currency,
        "supersedes_invoice_no": bill.header.get("supersedes_invoice_no"),
    }
    for name, _label in COMPONENTS:
        meta[name] = plain_decimal(bill.header[name])
    arrow_schema = pa.schema(fields, metadata={k: v for k, v in meta.items() if v is not None})
    arrays = {n: [ln[n] for ln in bill.lines] for n in DETAIL_COLUMNS}
    table = pa.Table.from_pydict(arrays, schema=arrow_schema)
    pq.write_table(table, tmp, compression="zstd")
    return table.num_rows


def _write_xlsx(bill: Bill, tmp: Path) -> int:
    from pipelines.workbook import write_xlsx

    return write_xlsx(bill, tmp)


def _write_pdf(bill: Bill, tmp: Path) -> int:
    from pipelines.invoice import write_pdf

    return write_pdf(bill, tmp)


WRITERS: dict[str, Callable[[Bill, Path], int]] = {
    "pdf": _write_pdf,
    "xlsx": _write_xlsx,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


# ---------------------------------------------------------------------------------------------
# the export run


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def export_month(
    data_dir: str | Path | None,
    month: str,
    *,
    partner: str | None = None,
    formats: Sequence[str] = FORMATS,
    version: int | None = None,
    lock_wait_s: float | None = None,
) -> ExportResult:
    """Write the finance exports of ``month`` for every partner with a bill (or ``partner``).

    Exports the current closed version of each bill, or ``version`` (then recorded with the
    status that version has, e.g. superseded). Raises KoobillError if the month has no bills or
    the partner has none."""
    from pipelines.lake import atomic_path, data_dir_lock
    from pipelines.warehouse import open_warehouse

    root = require_data_dir(data_dir)
    _check_month(month)
    fmts = _check_formats(formats)
    if partner is not None:
        _check_partner(partner)
    from pipelines.warehouse import work_path

    if not (work_path(root).exists() or Paths(root).warehouse.exists()):
        raise KoobillError(
            f"month {month} not closed: no warehouse at {Paths(root).warehouse}. "
            f"Run `koobill close --month {month}` first."
        )
    started = datetime.now(UTC)
    run_id = f"{started:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
    result = ExportResult(root, month, run_id)
    if lock_wait_s is None:  # like ingest and close: $KOOBILL_LOCK_WAIT_S, else 10 minutes
        lock_wait_s = env_lock_wait_s()
    with data_dir_lock(root, wait_s=lock_wait_s, what=f"export {month}"):
        con = open_warehouse(root)
        try:
            headers = _load_bills(con, month, partner, version)
            settings = load_settings(root)
            documents = bool({"pdf", "xlsx"} & set(fmts))
            if (
                documents
                and settings.source == DEFAULT_SETTINGS
                and not (root / DEMO_MARKER).exists()
            ):
                result.warnings.append(
                    f"no {root / 'settings.toml'}: the invoices carry the demo issuer and bank "
                    "details; copy pipelines/assets/settings.default.toml there and fill in "
                    "yours before sending them"
                )
            bills = []
            for header in headers:
                _check_partner(header["partner_id"])  # it names a folder
                bill = _load_bill(con, header)
                bill.reconcile()
                bill.settings = settings
                if documents:
                    bill.account = _account(root, bill)
                bills.append(bill)
            try:
                for bill in bills:
                    names = file_names(bill.partner_id, month, bill.version)
                    for fmt in fmts:
                        if fmt == "focus":  # focus hook: the FOCUS 1.2 dataset, two files
                            from pipelines.focus import write_focus

                            folder = _safe_target(root, bill.partner_id, month, "focus").parent
                            for kind, ffmt, path, rows in write_focus(
                                con, bill.header, folder, issuer=settings.issuer.name, root=root
                            ):
                                digest, size = _sha256(path)
                                result.files.append(
                                    ExportFile(
                                        export_id=f"{run_id}-{bill.partner_id}-focus-{ffmt}",
                                        partner_id=bill.partner_id,
                                        bill_month=month,
                                        version=bill.version,
                                        bill_status=str(bill.header["status"]),
                                        kind=kind,
                                        format=ffmt,
                                        path=path.relative_to(root.resolve()).as_posix(),
                                        rows=rows,
                                        bytes=size,
                                        sha256=digest,
                                        created_at=datetime.now(UTC),
                                    )
                                )
                            continue  # end of the focus hook
                        target = _safe_target(root, bill.partner_id, month, names[fmt])
                        with atomic_path(target) as tmp:
                            rows = WRITERS[fmt](bill, tmp)
                            digest, size = _sha256(tmp)
                        result.files.append(
                            ExportFile(
                                export_id=f"{run_id}-{bill.partner_id}-{fmt}",
                                partner_id=bill.partner_id,
                                bill_month=month,
                                version=bill.version,
                                bill_status=str(bill.header["status"]),
                                kind=KIND[fmt],
                                format=fmt,
                                path=target.relative_to(root.resolve()).as_posix(),
                                rows=rows,
                                bytes=size,
                                sha256=digest,
                                created_at=datetime.now(UTC),
                            )
                        )
            finally:
                # whatever reached the disk is on record, even if a later file failed
                if result.files:
                    result.history_path = _record(root, con, run_id, result.files)
        finally:
            con.close()
        if result.files:
            from pipelines.warehouse import publish

            publish(root)
        mark_superseded(root, month)
    return result


def _history_table(files: Sequence[ExportFile]):
    import pyarrow as pa

    fields = [pa.field(n, _arrow_type(t)) for n, t, _ in schema.EXPORT_HISTORY.columns]
    cols = schema.EXPORT_HISTORY.column_names
    return pa.Table.from_pylist([f.as_row() for f in files], schema=pa.schema(fields)).select(cols)


def _record(root: Path, con, run_id: str, files: Sequence[ExportFile]) -> Path:
    """Append the run's rows to the lake (one Parquet file per run), then to the warehouse."""
    import pyarrow.parquet as pq

    from pipelines.lake import atomic_path

    path = Paths(root).lake / "export_history" / f"{run_id}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(_history_table(files), tmp)
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
    return path


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
        echo(f"  {f.path:<{width}}  {f.rows:>7} rows  {_size(f.bytes):>9}{status}")
    if result.history_path is not None:
        echo(f"recorded in export_history ({_rel(result.history_path, result.data_dir)})")


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _size(n: int) -> str:
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
        _check_partner(partner)
    if month is not None:
        _check_month(month)
    files = sorted((Paths(root).lake / "export_history").glob("*.parquet"))
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
        rows = _rows(cur)
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
        f = Paths(root).bills_dir(m) / "bills.parquet"
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
    _check_month(month)
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
            folder = _safe_target(root, pid, month, "SUPERSEDED.txt").parent
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
            r["format"],
            str(r["rows"]),
            _size(int(r["bytes"])),
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
