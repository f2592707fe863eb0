"""One source for each shape (pipelines/patterns.py) and for the bill's components
(pipelines/schema.py): Python, DuckDB and the JSON Schema form agree on every case, and a
trailing newline or another script's digits never pass (issue #15 point 5)."""

from __future__ import annotations

import re
import subprocess
import sys

import duckdb
import pytest

from pipelines import patterns, schema
from pipelines.calendar import DateError, parse_date, parse_month
from pipelines.config import check_partner_id

MONTHS = [
    ("2026-01", True),
    ("2026-12", True),
    ("0001-10", True),
    ("2026-13", False),
    ("2026-00", False),
    ("2026-1", False),
    ("202601", False),
    ("2026-01\n", False),
    (" 2026-01", False),
    ("２０２６-01", False),  # full-width digits: Python's \\d would take them
    ("2026-01-01", False),
    ("", False),
]
PARTNER_IDS = [
    ("ptn-yunqi", True),
    ("P_1", True),
    ("A" * 64, True),
    ("A" * 65, False),
    ("", False),
    ("../etc", False),
    ("P1\n", False),
    ("a b", False),
    ("é", False),
    ("P1/x", False),
]
INVOICES = [
    ("INV-ptn-yunqi-202610", True),
    ("INV-P1-202611-V2", True),
    ("INV-P1-202611-V10", True),
    ("INV-P1-202611-V1", False),  # version 1 has no suffix
    ("INV-P1-202611-V0", False),
    ("INV-P1-202611-V02", False),
    ("INV-P1-202613", False),
    ("INV-P1-2026-11", False),
    ("INV-P1-202611\n", False),
]
DATES = [("2026-02-28", True), ("2026-2-28", False), ("2026-02-28\n", False)]

CASES = [
    (patterns.MONTH, patterns.MONTH_RE, MONTHS),
    (patterns.PARTNER_ID, patterns.PARTNER_ID_RE, PARTNER_IDS),
    (patterns.INVOICE_NO, patterns.INVOICE_NO_RE, INVOICES),
    (patterns.DATE, patterns.DATE_RE, DATES),
]


@pytest.mark.parametrize("bare, compiled, cases", CASES)
def test_python_duckdb_and_json_schema_agree(bare: str, compiled: re.Pattern, cases) -> None:
    con = duckdb.connect()
    anchored = re.compile(patterns.anchored(bare))
    for text, ok in cases:
        assert bool(compiled.match(text)) is ok, text  # .match is exact too
        assert bool(compiled.fullmatch(text)) is ok, text
        sql = con.execute("select regexp_full_match($1, $2)", [text, bare]).fetchone()[0]
        assert sql is ok, text
        # JSON Schema validators search with the anchored form; Python's `$` also accepts a
        # final newline, which the consumers that use it (Rust's regex in FastAPI, ...) do not
        if not text.endswith("\n"):
            assert bool(anchored.search(text)) is ok, text


@pytest.mark.parametrize("text, ok", MONTHS)
def test_parse_month(text: str, ok: bool) -> None:
    if ok:
        assert parse_month(text) == text
    else:
        with pytest.raises(DateError):
            parse_month(text)


@pytest.mark.parametrize("text", ["2026-02-30", "2026-02-28\n", "２０２６-02-28"])
def test_parse_date_refuses(text: str) -> None:
    with pytest.raises(DateError):
        parse_date(text)


@pytest.mark.parametrize("text, ok", PARTNER_IDS)
def test_check_partner_id(text: str, ok: bool) -> None:
    if ok:
        assert check_partner_id(text) == text
    else:
        with pytest.raises(ValueError, match="invalid partner id"):
            check_partner_id(text)


def test_the_bill_components_are_columns_of_bills_in_their_order() -> None:
    columns = schema.BILLS.column_names
    positions = [columns.index(c) for c in schema.BILL_COMPONENTS]
    assert positions == sorted(positions)


def test_the_export_formats_are_what_export_history_documents() -> None:
    (meaning,) = [m for n, _, m in schema.EXPORT_HISTORY.columns if n == "format"]
    assert meaning.split(" | ") == list(schema.EXPORT_FORMATS)


def test_the_patterns_module_imports_only_the_standard_library() -> None:
    """So that a DAG file may import it when Airflow parses it."""
    code = (
        "import sys; before = set(sys.modules); import pipelines.patterns;"
        "new = {m.split('.')[0] for m in set(sys.modules) - before};"
        "print(sorted(new - set(sys.stdlib_module_names) - {'pipelines'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "target, goes_to",
    [("/bills?month=2026-10", "/bills?month=2026-10"), ("/", "/"), ("/bills\n", "/")],
)
def test_the_sign_in_redirect_takes_a_whole_path_only(target: str, goes_to: str) -> None:
    from pipelines.web.pages import _safe_next

    assert _safe_next(target) == goes_to
