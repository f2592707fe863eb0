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
    NUMERIC_DETAIL_COLUMNS,
    neutralise,
    plain_decimal,
)


def write_csv(bill: Bill, tmp: Path) -> int:
    """Write the details of ``bill`` at ``tmp``; returns the number of bill lines."""
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
