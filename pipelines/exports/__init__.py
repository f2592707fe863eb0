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

The modules, one job each:

- ``run``: the export run (checks, lock, load, write on every core, record, publish);
- ``loader``: the bills from the warehouse, with the rows of the analysts' views;
- ``bill``: one bill version as the documents show it;
- ``csv``, ``parquet``, ``xlsx``, ``pdf``: one writer per format; ``document``: the facts the
  PDF and the XLSX share; ``charts``: the invoice's charts; ``fonts``: the PDF's CJK font,
  parsed once per process and subset once per set of glyphs;
- ``history``: ``export_history`` (record, list, the status of each exported version);
- ``common``: formats, file names, checks, money and text-cell formatting.

Heavy libraries (DuckDB, pyarrow, xlsxwriter, fpdf2) are imported where used, so
importing this package is cheap.
"""

from pipelines.exports.bill import Bill
from pipelines.exports.common import (
    FONT_BOLD,
    FONT_REGULAR,
    FORMATS,
    ZERO,
    InvalidPartnerId,
    file_names,
    fmt_amount,
    neutralise,
    round2,
)
from pipelines.exports.history import (
    ExportFile,
    bill_statuses,
    list_exports,
    mark_superseded,
    print_exports,
    refresh_export_status,
)
from pipelines.exports.run import ExportResult, export_month, print_export_result

__all__ = [
    "FONT_BOLD",
    "FONT_REGULAR",
    "FORMATS",
    "ZERO",
    "Bill",
    "ExportFile",
    "ExportResult",
    "InvalidPartnerId",
    "bill_statuses",
    "export_month",
    "file_names",
    "fmt_amount",
    "list_exports",
    "mark_superseded",
    "neutralise",
    "print_export_result",
    "print_exports",
    "refresh_export_status",
    "round2",
]
