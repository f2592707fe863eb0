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
import io
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.config import Paths, check_partner_id, require_data_dir, resolve_data_dir
from pipelines.lake import KoobillError

FORMATS = ("pdf", "xlsx", "csv", "parquet")
KIND = {"pdf": "summary", "xlsx": "details", "csv": "details", "parquet": "details"}
MONTH_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
ASSETS = Path(__file__).resolve().parent / "assets"
FONT_REGULAR = ASSETS / "NotoSansCJKsc-Regular-subset.ttf"
FONT_BOLD = ASSETS / "NotoSansCJKsc-Bold-subset.ttf"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CENT = Decimal("0.01")
ZERO = Decimal("0")
MONEY_FORMAT = "#,##0.00"

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
        if f not in FORMATS:
            raise KoobillError(f"unknown export format {f!r}: choose from {', '.join(FORMATS)}")
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


def _display_width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


# ---------------------------------------------------------------------------------------------
# reading the bill


@dataclass
class Bill:
    header: dict[str, Any]
    lines: list[dict[str, Any]]
    estimates: list[tuple[date, Decimal]]

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

    def by_product(self) -> list[dict[str, Any]]:
        """Consumption per product and region, then the "Others" area (refunds, adjustments)."""
        groups: dict[tuple[str, str, str], Decimal] = {}
        refunds = ZERO
        adjustments = ZERO
        for ln in self.lines:
            comp = ln["component"]
            if comp == "consume":
                key = (ln["product_id"] or "", ln["product_name"] or "", ln["region"] or "")
                groups[key] = groups.get(key, ZERO) + ln["amount"]
            elif comp == "refund":
                refunds -= ln["amount"]
            elif comp == "adjustment":
                adjustments += ln["amount"]
        rows = [
            {
                "product_id": k[0],
                "product_name": k[1],
                "region": k[2],
                "consume_amount": round2(v),
                "refunds": ZERO,
                "adjustments": ZERO,
            }
            for k, v in groups.items()
        ]
        rows.sort(key=lambda r: (-r["consume_amount"], r["product_id"], r["region"]))
        rows.append(
            {
                "product_id": "OTHERS",
                "product_name": "Refunds",
                "region": "",
                "consume_amount": ZERO,
                "refunds": round2(refunds),
                "adjustments": ZERO,
            }
        )
        rows.append(
            {
                "product_id": "OTHERS",
                "product_name": "Adjustments",
                "region": "",
                "consume_amount": ZERO,
                "refunds": ZERO,
                "adjustments": round2(adjustments),
            }
        )
        return rows

    def by_customer(self) -> list[dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for ln in self.lines:
            comp = ln["component"]
            if comp not in ("consume", "refund", "adjustment"):
                continue
            cid = ln["customer_id"] or ""
            g = groups.setdefault(
                cid,
                {
                    "customer_id": cid,
                    "customer_name": "",
                    "consume": ZERO,
                    "refund": ZERO,
                    "adjustment": ZERO,
                },
            )
            if ln["customer_name"]:
                g["customer_name"] = ln["customer_name"]
            g[comp] += ln["amount"]
        rows = []
        for g in groups.values():
            consume, refunds, adjustments = (
                round2(g["consume"]),
                round2(-g["refund"]),
                round2(g["adjustment"]),
            )
            rows.append(
                {
                    "customer_id": g["customer_id"],
                    "customer_name": g["customer_name"],
                    "consume_amount": consume,
                    "refunds": refunds,
                    "adjustments": adjustments,
                    "total_amount": consume - refunds + adjustments,
                }
            )
        rows.sort(key=lambda r: (-r["total_amount"], r["customer_id"]))
        return rows

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
    cols = ", ".join(f'"{c}"' for c in schema.BILLS.column_names)
    # a partner has at most one closed version; if a faulty close left two, the newest wins
    rows = _rows(
        con.execute(
            f"select {cols} from bills where {' and '.join(where)} "
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
    return Bill(header, lines, estimates)


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
    import xlsxwriter

    wb = xlsxwriter.Workbook(
        str(tmp),
        {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False},
    )
    closed_at = bill.header.get("closed_at")
    wb.set_properties(
        {
            "title": f"Bill details {bill.partner_id} {bill.month} v{bill.version}",
            "author": "koobill",
            "company": "KooGallery partner bills",
            # a fixed creation date keeps the file identical when exported again
            "created": closed_at.astimezone(UTC).replace(tzinfo=None)
            if isinstance(closed_at, datetime)
            else datetime(2000, 1, 1),
        }
    )
    head = wb.add_format({"bold": True, "bg_color": "#DDE4EE", "border": 1})
    money = wb.add_format({"num_format": MONEY_FORMAT})
    money_bold = wb.add_format({"num_format": MONEY_FORMAT, "bold": True})
    qty = wb.add_format({"num_format": "#,##0.######"})
    integer = wb.add_format({"num_format": "0"})

    def sheet(
        name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], kinds: Sequence[str]
    ) -> None:
        ws = wb.add_worksheet(name)
        widths = [_display_width(h) + 2 for h in headers]
        for c, h in enumerate(headers):
            ws.write_string(0, c, h, head)
        for r, row in enumerate(rows, start=1):
            for c, (value, kind) in enumerate(zip(row, kinds, strict=True)):
                if kind == "text" or kind == "label":
                    s = neutralise(value)
                    ws.write_string(r, c, s, None)
                    widths[c] = max(widths[c], _display_width(s) + 2)
                elif value is None:
                    ws.write_blank(r, c, None)
                elif kind in ("money", "money_bold"):
                    # xlsx stores doubles: convert at the cell only; cents below 1e15 round-trip
                    ws.write_number(
                        r, c, float(value), money_bold if kind == "money_bold" else money
                    )
                    widths[c] = max(widths[c], len(fmt_amount(value)) + 3)
                elif kind == "qty":
                    ws.write_number(r, c, float(value), qty)
                    widths[c] = max(widths[c], len(plain_decimal(value).rstrip("0")) + 3)
                elif kind == "int":
                    ws.write_number(r, c, int(value), integer)
                    widths[c] = max(widths[c], len(str(value)) + 2)
                elif kind == "bool":
                    ws.write_boolean(r, c, bool(value))
        for c, w in enumerate(widths):
            ws.set_column(c, c, min(max(w, 8), 60))
        ws.freeze_panes(1, 0)
        if rows:
            ws.autofilter(0, 0, len(rows), len(headers) - 1)

    h = bill.header
    summary = [
        ("Partner ID", h["partner_id"], None),
        ("Partner name", h.get("partner_name"), None),
        ("Bill month", h["bill_month"], None),
        ("Version", str(h["version"]), None),
        ("Status", h["status"], None),
        ("Currency", h.get("currency"), None),
        ("Invoice number", h.get("invoice_no") or "", None),
        ("Supersedes invoice", h.get("supersedes_invoice_no") or "", None),
        ("Closed at (UTC)", _ts(h.get("closed_at")), None),
        ("Cutoff date", str(h.get("cutoff_date") or ""), None),
        ("Tax rate", _percent(h["tax_rate"]) if h.get("tax_rate") is not None else "", None),
        ("Bill lines", str(len(bill.lines)), None),
    ]
    for name, label in COMPONENTS:
        if name == "coupon_amount":
            summary.append(("Coupons of the month (before the cap)", None, h.get("coupon_total")))
        summary.append((label, None, h[name]))
    sheet("summary", ["Item", "Value", "Amount"], summary, ["label", "text", "money"])

    prod = bill.by_product()
    sheet(
        "by product",
        [
            "Product ID",
            "Product name",
            "Region",
            "Currency",
            "Consume amount",
            "Refunds",
            "Adjustments",
        ],
        [
            (
                p["product_id"],
                p["product_name"],
                p["region"],
                bill.currency,
                p["consume_amount"],
                p["refunds"],
                p["adjustments"],
            )
            for p in prod
        ],
        ["text", "text", "text", "text", "money", "money", "money"],
    )

    cust = bill.by_customer()
    sheet(
        "by customer",
        [
            "Customer ID",
            "Customer name",
            "Currency",
            "Consume amount",
            "Refunds",
            "Adjustments",
            "Total amount",
        ],
        [
            (
                c["customer_id"],
                c["customer_name"],
                bill.currency,
                c["consume_amount"],
                c["refunds"],
                c["adjustments"],
                c["total_amount"],
            )
            for c in cust
        ],
        ["text", "text", "text", "money", "money", "money", "money"],
    )

    kinds = []
    for n, t, _ in schema.BILL_LINES.columns:
        if n in MONEY_DETAIL_COLUMNS:
            kinds.append("money")
        elif n == "quantity":
            kinds.append("qty")
        elif t in ("INTEGER", "BIGINT"):
            kinds.append("int")
        elif t == "BOOLEAN":
            kinds.append("bool")
        else:
            kinds.append("text")
    sheet("details", DETAIL_COLUMNS, [[ln[c] for c in DETAIL_COLUMNS] for ln in bill.lines], kinds)
    wb.close()
    return len(bill.lines)


def _percent(rate: Any) -> str:
    """``Decimal('0.060000')`` -> ``'6%'``."""
    text = format(Decimal(rate) * 100, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# the invoice PDF


def _chart_products(bill: Bill) -> bytes | None:
    """Top products by consumption, a horizontal bar chart as PNG bytes (None if no usage)."""
    rows = [p for p in bill.by_product() if p["product_id"] != "OTHERS" and p["consume_amount"] > 0]
    if not rows:
        return None
    merged: dict[str, Decimal] = {}
    for p in rows:  # one bar per product, all regions together
        label = p["product_name"] or p["product_id"]
        merged[label] = merged.get(label, ZERO) + p["consume_amount"]
    top = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    labels = [(k if len(k) <= 28 else k[:27] + "…") for k, _ in top][::-1]
    values = [v for _, v in top][::-1]
    fig, ax, font = _figure(6.8, 0.9 + 0.32 * len(top))
    # float only for drawing the bars; the printed figures come from the Decimals
    bars = ax.barh(range(len(values)), [float(v) for v in values], color="#3A6EA5")
    ax.set_yticks(range(len(values)), labels, fontproperties=font, fontsize=8)
    for bar, v in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            " " + fmt_amount(v),
            va="center",
            ha="left",
            fontsize=7,
            fontproperties=font,
        )
    ax.set_title(f"Top products by consumption ({bill.currency})", fontproperties=font, fontsize=10)
    ax.margins(x=0.22)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=7)
    return _png(fig)


def _chart_estimates(bill: Bill) -> bytes | None:
    """The month's daily estimate against the final bill (None if no estimates were kept)."""
    if not bill.estimates:
        return None
    h = bill.header
    final_net = h["consume_amount"] - h["refunds"] + h["adjustments"]
    fig, ax, font = _figure(6.8, 2.6)
    days = [d for d, _ in bill.estimates]
    ax.plot(
        days,
        [float(v) for _, v in bill.estimates],
        marker="o",
        markersize=3,
        color="#3A6EA5",
        label="Daily estimate (no tax, no coupons)",
    )
    ax.axhline(
        float(final_net),
        color="#C0504D",
        linestyle="--",
        label=f"Final, before coupons and tax: {fmt_amount(final_net)}",
    )
    ax.axhline(
        float(h["bill_amount"]),
        color="#4F8A3C",
        linestyle=":",
        label=f"Bill amount: {fmt_amount(h['bill_amount'])}",
    )
    ax.set_title(
        f"Estimate of {bill.month} day by day against the bill ({bill.currency})",
        fontproperties=font,
        fontsize=10,
    )
    ax.legend(prop=font, fontsize=7, loc="lower right")
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _figure(w: float, h: float):
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    fig = Figure(figsize=(w, h), dpi=150, layout="constrained")
    ax = fig.subplots()
    return fig, ax, FontProperties(fname=str(FONT_REGULAR), size=8)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _write_pdf(bill: Bill, tmp: Path) -> int:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    h = bill.header
    status = str(h["status"])
    invoice_no = h.get("invoice_no") or ""
    title = "Invoice" if invoice_no else "Bill statement"

    class Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("cjk", "", 7)
            self.set_text_color(110)
            self.cell(
                0,
                5,
                f"{bill.partner_id} · {bill.month} · v{bill.version} · "
                f"page {self.page_no()}/{{nb}}",
                align="C",
            )

    pdf = Doc(orientation="P", unit="mm", format="A4")
    pdf.add_font("cjk", "", str(FONT_REGULAR))
    pdf.add_font("cjk", "B", str(FONT_BOLD))
    # the bold face holds Latin only: CJK text in bold falls back to the regular face
    pdf.set_fallback_fonts(["cjk"], exact_match=False)
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_margins(16, 14, 16)
    closed_at = h.get("closed_at")
    if isinstance(closed_at, datetime):
        pdf.set_creation_date(closed_at)  # same bill, same bytes
    pdf.set_title(f"{title} {invoice_no or bill.partner_id} {bill.month}")
    pdf.set_author("koobill")
    pdf.set_subject(f"KooGallery partner bill {bill.partner_id} {bill.month} v{bill.version}")
    pdf.set_lang("en")
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("cjk", "B", 18)
    pdf.cell(width, 10, f"{title} · {bill.month}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("cjk", "", 12)
    pdf.multi_cell(
        width, 7, h.get("partner_name") or bill.partner_id, new_x="LMARGIN", new_y="NEXT"
    )
    if status != "closed":
        pdf.set_text_color(192, 80, 77)
        pdf.set_font("cjk", "B", 10)
        pdf.cell(
            width,
            6,
            f"SUPERSEDED: version {bill.version} was replaced by a restatement",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_text_color(0)
    supersedes = h.get("supersedes_invoice_no")
    if supersedes:
        pdf.set_font("cjk", "B", 10)
        pdf.cell(
            width,
            6,
            f"This {title.lower()} (version {bill.version}) supersedes invoice {supersedes}",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.ln(2)

    pdf.set_font("cjk", "", 9)
    meta = [
        ("Partner ID", bill.partner_id),
        ("Partner name", h.get("partner_name") or ""),
        ("Bill month", bill.month),
        ("Version", f"{bill.version} ({status})"),
        ("Invoice number", invoice_no or "none (nothing due)"),
        *([("Supersedes invoice", supersedes)] if supersedes else []),
        ("Currency", bill.currency),
        ("Closed at", _ts(closed_at)),
        ("Cutoff date", str(h.get("cutoff_date") or "")),
    ]
    with pdf.table(
        col_widths=(35, 65),
        width=width * 0.62,
        align="LEFT",
        first_row_as_headings=False,
        borders_layout="NONE",
        line_height=5.2,
        text_align=("LEFT", "LEFT"),
    ) as t:
        for k, v in meta:
            row = t.row()
            row.cell(k, style=FontFace(color=(90, 90, 90)))
            row.cell(v)
    pdf.ln(4)

    _heading(pdf, width, "Bill components")
    tax_rate = h.get("tax_rate")
    labels = dict(COMPONENTS)
    if tax_rate is not None:
        labels["tax_amount"] = f"Tax ({_percent(tax_rate)})"
    signs = {"refunds": "−", "coupon_amount": "−"}
    bold = FontFace(emphasis="BOLD")
    with pdf.table(
        col_widths=(70, 12, 30),
        width=width * 0.7,
        align="LEFT",
        text_align=("LEFT", "CENTER", "RIGHT"),
        line_height=6,
        headings_style=FontFace(emphasis="BOLD", fill_color=(221, 228, 238)),
    ) as t:
        head = t.row()
        for text in ("Component", "", f"Amount ({bill.currency})"):
            head.cell(text)
        for name, _ in COMPONENTS:
            row = t.row()
            style = bold if name in ("bill_amount", "amount_due") else None
            row.cell(labels[name], style=style)
            row.cell(signs.get(name, ""))
            row.cell(fmt_amount(h[name]), style=style)
    if h.get("coupon_total") is not None and h["coupon_total"] != h["coupon_amount"]:
        pdf.set_font("cjk", "", 7.5)
        pdf.cell(
            width,
            5,
            f"Coupons of the month {fmt_amount(h['coupon_total'])}; deducted up "
            "to the amount before tax.",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_font("cjk", "", 9)
    pdf.ln(4)

    if pdf.get_y() + 30 > pdf.page_break_trigger:
        pdf.add_page()  # no heading alone at the foot of a page
    _heading(pdf, width, "Expenditure by product")
    prod = bill.by_product()
    pdf.set_font("cjk", "", 8.5)
    with pdf.table(
        col_widths=(58, 38, 30, 30),
        width=width,
        line_height=5,
        text_align=("LEFT", "LEFT", "LEFT", "RIGHT"),
        repeat_headings=1,
        headings_style=FontFace(emphasis="BOLD", fill_color=(221, 228, 238)),
    ) as t:
        head = t.row()
        for text in ("Product", "Product ID", "Region", f"Amount ({bill.currency})"):
            head.cell(text)
        for p in prod:
            if p["product_id"] == "OTHERS":
                continue
            row = t.row()
            row.cell(p["product_name"] or "")
            row.cell(p["product_id"])
            row.cell(p["region"])
            row.cell(fmt_amount(p["consume_amount"]))
        # each product is rounded to the cent on its own (as in expenditure_by_product), so
        # their sum may miss the bill's consume amount by a few cents: show it, to add up
        diff = h["consume_amount"] - sum(
            (p["consume_amount"] for p in prod if p["product_id"] != "OTHERS"), ZERO
        )
        if diff:
            row = t.row()
            row.cell("Rounding (each product is rounded to the cent)", colspan=3)
            row.cell(fmt_amount(diff))
        row = t.row()
        row.cell("Total consumption", colspan=3, style=bold)
        row.cell(fmt_amount(h["consume_amount"]), style=bold)
        others = [p for p in prod if p["product_id"] == "OTHERS"]
        row = t.row()
        row.cell("Others", colspan=4, style=FontFace(emphasis="BOLD", fill_color=(240, 240, 240)))
        for p in others:
            row = t.row()
            amount = p["refunds"] if p["product_name"] == "Refunds" else p["adjustments"]
            sign = "-" if p["product_name"] == "Refunds" and amount else ""
            label = (
                "Refunds (unsubscriptions and changes)"
                if p["product_name"] == "Refunds"
                else "Adjustments"
            )
            row.cell(label, colspan=3)
            row.cell(f"{sign}{fmt_amount(amount)}")
    pdf.ln(2)
    pdf.set_font("cjk", "", 7.5)
    pdf.set_text_color(90)
    pdf.multi_cell(
        width,
        4,
        f"{len(bill.lines)} bill lines; the details are in "
        f"bill-details-{bill.partner_id}-{bill.month}-v{bill.version}.xlsx / .csv / .parquet. "
        "Bill amount = consume amount − refunds + adjustments − coupons + tax; "
        "amount due = max(bill amount, 0).",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_text_color(0)
    pdf.ln(4)
    for png, title, alt in (
        (_chart_products(bill), "Where the month's spend went", "Top products by consumption"),
        (
            _chart_estimates(bill),
            "Daily estimate against the final bill",
            "Daily estimate against the bill",
        ),
    ):
        if png is None:
            continue
        w_px, h_px = _png_size(png)
        img_h = width * 0.95 * h_px / w_px
        if pdf.get_y() + img_h + 10 > pdf.page_break_trigger:
            pdf.add_page()  # keep a chart whole and with its heading
        _heading(pdf, width, title)
        pdf.image(io.BytesIO(png), w=width * 0.95, alt_text=alt)
        pdf.ln(3)
    pdf.output(str(tmp))
    return len(bill.lines)


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _heading(pdf, width: float, text: str) -> None:
    pdf.set_font("cjk", "B", 11)
    pdf.set_text_color(40, 60, 90)
    pdf.cell(width, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0)
    pdf.set_font("cjk", "", 9)


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
        lock_wait_s = float(os.environ.get("KOOBILL_LOCK_WAIT_S", "600"))
    with data_dir_lock(root, wait_s=lock_wait_s, what=f"export {month}"):
        con = open_warehouse(root)
        try:
            headers = _load_bills(con, month, partner, version)
            bills = []
            for header in headers:
                _check_partner(header["partner_id"])  # it names a folder
                bill = _load_bill(con, header)
                bill.reconcile()
                bills.append(bill)
            try:
                for bill in bills:
                    names = file_names(bill.partner_id, month, bill.version)
                    for fmt in fmts:
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
