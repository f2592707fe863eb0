"""The shapes of koobill's identifiers, written once: a month, a date, a partner id, an invoice
number. Everything that checks one (Python, DuckDB SQL, the API's query parameters, the DAGs'
params, the Great Expectations suites) takes it from here.

Each shape comes three ways:

* ``MONTH`` ...: the bare pattern, no anchors, to compose or to pass to a full-match function
  (DuckDB's ``regexp_full_match``);
* ``MONTH_RE`` ...: compiled and anchored with ``\\A ... \\Z``, so ``.match`` and ``.fullmatch``
  both accept the whole string only (``$`` would also accept a trailing newline);
* ``anchored(MONTH)``: ``^(?:...)$`` for JSON Schema style consumers (FastAPI's ``Query``,
  Airflow's ``Param``, Great Expectations' ``match_regex``).

Digits are ``[0-9]``, never ``\\d``: Python's ``\\d`` also matches other scripts' digits
(``２０２６-01`` in full-width digits), which ``int()`` would then read as 2026.

This module uses the standard library only, so a DAG file may import it at parse time.
"""

from __future__ import annotations

import re

__all__ = [
    "DATE",
    "DATE_RE",
    "INVOICE_NO",
    "INVOICE_NO_RE",
    "MONTH",
    "MONTH_RE",
    "PARTNER_ID",
    "PARTNER_ID_RE",
    "anchored",
]

MONTH = r"[0-9]{4}-(?:0[1-9]|1[0-2])"
"""A bill month ``YYYY-MM`` (Huawei's ``bill_cycle``)."""

DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
"""A date's shape ``YYYY-MM-DD``; whether the day exists is :func:`pipelines.calendar.parse_date`'s
business."""

PARTNER_ID = r"[A-Za-z0-9_-]{1,64}"
"""A partner id: 1 to 64 of ``A-Z a-z 0-9 _ -``, so it can name a folder and a file safely.
The page uses the same shape for every id that appears in a path (customer ids too)."""

INVOICE_NO = rf"INV-{PARTNER_ID}-[0-9]{{4}}(?:0[1-9]|1[0-2])(?:-V(?:[2-9]|[1-9][0-9]+))?"
"""``INV-<partner_id>-<YYYYMM>`` and ``-V<n>`` (n >= 2) for a restatement (spec section 5)."""


def anchored(pattern: str) -> str:
    """``pattern`` matching a whole string, as JSON Schema style validators want it."""
    return f"^(?:{pattern})$"


def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"\A(?:{pattern})\Z")


MONTH_RE = _compiled(MONTH)
DATE_RE = _compiled(DATE)
PARTNER_ID_RE = _compiled(PARTNER_ID)
INVOICE_NO_RE = _compiled(INVOICE_NO)
