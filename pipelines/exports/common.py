"""What every part of the exports shares: the formats and file names, the checks of a month, a
partner and a format, the path of an export file, and the small formatting rules of money and
of text cells."""

from __future__ import annotations

import re
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.config import Paths, check_partner_id
from pipelines.errors import KoobillError
from pipelines.patterns import MONTH_RE
from pipelines.schema import EXPORT_FORMATS as FORMATS

EXTRA_FORMATS = schema.EXTRA_EXPORT_FORMATS  # opt-in: "focus", the FOCUS 1.2 dataset
KIND = {"pdf": "summary", "xlsx": "details", "csv": "details", "parquet": "details"}
ASSETS = Path(__file__).resolve().parent.parent / "assets"
FONT_REGULAR = ASSETS / "NotoSansCJKsc-Regular-subset.ttf"
FONT_BOLD = ASSETS / "NotoSansCJKsc-Bold-subset.ttf"
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CENT = Decimal("0.01")
ZERO = Decimal("0")

# The details columns (bill_lines), in file order; their Arrow types follow schema.BILL_LINES.
DETAIL_COLUMNS = schema.BILL_LINES.column_names
MONEY_DETAIL_COLUMNS = {"official_amount", "discount_amount", "amount"}
NUMERIC_DETAIL_COLUMNS = {"line_no", "version", "record_count", "quantity"} | MONEY_DETAIL_COLUMNS
COMPONENT_LABELS = {
    "consume_amount": "Consume amount (expenditures)",
    "refunds": "Refunds",
    "adjustments": "Adjustments",
    "coupon_amount": "Coupons deducted",
    "tax_amount": "Tax",
    "bill_amount": "Bill amount (tax included)",
    "amount_due": "Amount due",
}
COMPONENTS = tuple((c, COMPONENT_LABELS[c]) for c in schema.BILL_COMPONENTS)


class InvalidPartnerId(KoobillError, ValueError):
    """A partner id that cannot safely name a folder."""


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


def check_partner(partner_id: str) -> str:
    try:
        return check_partner_id(partner_id)
    except ValueError as exc:
        raise InvalidPartnerId(str(exc)) from None


def check_month(month: str) -> str:
    if not isinstance(month, str) or not MONTH_RE.fullmatch(month):
        raise KoobillError(f"invalid month {month!r}: expected YYYY-MM")
    return month


def check_formats(formats: Iterable[str]) -> list[str]:
    out: list[str] = []
    for f in formats:
        f = str(f).strip().lower()
        if f not in FORMATS + EXTRA_FORMATS:
            raise KoobillError(
                f"unknown export format {f!r}: choose from {', '.join(FORMATS + EXTRA_FORMATS)}"
            )
        if f not in out:
            out.append(f)
    if not out:
        raise KoobillError("no export format given")
    return out


def safe_target(root: Path, partner_id: str, month: str, name: str) -> Path:
    """The final path of an export file, refused unless it stays under <data-dir>/exports/."""
    check_partner(partner_id)
    base = Paths(root).exports.resolve()
    target = (base / partner_id / month / name).resolve()
    if not target.is_relative_to(base / partner_id):
        raise KoobillError(f"export path {target} escapes {base / partner_id}; refusing to write")
    return target


def arrow_type(duck_type: str):
    """The Arrow type of a column type of ``pipelines.schema``."""
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


def rows_of(cur) -> list[dict[str, Any]]:
    """A DuckDB cursor's rows as dicts."""
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
