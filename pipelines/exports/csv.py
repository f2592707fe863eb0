"""``bill-details-<partner>-<YYYY-MM>-v<n>.csv``: one line per bill line, UTF-8 with a BOM (so
that Excel reads Chinese names right), CRLF line ends, amounts as plain decimal strings, text
that a spreadsheet would run as a formula prefixed with ``'``."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.exports.bill import Bill
from pipelines.exports.common import (
    DETAIL_COLUMNS,
    FORMULA_PREFIXES,
    NUMERIC_DETAIL_COLUMNS,
    neutralise,
    plain_decimal,
)


def write_csv(bill: Bill, tmp: Path) -> int:
    """Write the details of ``bill`` at ``tmp``; returns the number of bill lines."""
    columns = [(c, _number if c in NUMERIC_DETAIL_COLUMNS else _text) for c in DETAIL_COLUMNS]
    with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(DETAIL_COLUMNS)
        w.writerows([conv(ln[c]) for c, conv in columns] for ln in bill.lines)
    return len(bill.lines)


def _number(value: Any) -> str:
    """A numeric column's cell: a Decimal as plain digits (never an exponent)."""
    if value is None:
        return ""
    return plain_decimal(value) if isinstance(value, Decimal) else str(value)


def _text(value: Any) -> str:
    """Any other column's cell: formula-like text neutralised, a boolean as true/false."""
    if value.__class__ is str and not value.startswith(FORMULA_PREFIXES):
        return value  # most cells: plain text, as it is
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return neutralise(value)
