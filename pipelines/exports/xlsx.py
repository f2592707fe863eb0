"""The bill details workbook (``bill-details-<partner>-<YYYY-MM>-v<n>.xlsx``).

Sheets ``summary``, ``by product``, ``by customer`` and ``details``:

- amounts are numbers with the places they carry: 2 for the published components and the
  views' rows (``#,##0.00``), 6 for the bill lines (``#,##0.000000``);
- the documents' sign convention: refunds and coupons are negative amounts, so every amount
  column of ``summary``, ``by product`` and ``by customer`` adds up across and down (the views
  and tables keep the spec's positive ``refunds``); ``details`` lists the lines as stored
  (coupon lines positive, before the cap) with the exact total of each component;
- ``by product`` and ``by customer`` are the rows of the analysts' views
  ``expenditure_by_product`` and ``expenditure_by_customer`` for the bill, in the views' order;
- every sheet ends with a totals row that equals the bill (with a rounding row when rows
  rounded to the cent one by one miss it by a few cents; in ``details`` the exact sums of the
  lines, which round to the bill's components);
- numbers, dates and percentages are typed cells; headers are Title Case; text that a
  spreadsheet would run as a formula is prefixed with ``'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

from pipelines import schema
from pipelines.exports import document as doc
from pipelines.exports.bill import Bill
from pipelines.exports.common import (
    FORMULA_PREFIXES,
    MONEY_DETAIL_COLUMNS,
    neutralise,
    round2,
)

MONEY_2 = "#,##0.00"
MONEY_6 = "#,##0.000000"
QTY = "#,##0.######"
DATE = "yyyy-mm-dd"
PARTNER_LEVEL = "(partner-level)"
ZERO = Decimal(0)
_WORDS = {"id": "ID", "sku": "SKU", "no": "No."}
# data cells straight into xlsxwriter's cell table (_Book._column_writer), and their XML in one
# write each (_worksheet_class); False: xlsxwriter's public calls and its own Worksheet
FAST_CELLS = True


def title(name: str) -> str:
    """``customer_id`` -> ``Customer ID``: the one header style of every sheet."""
    return " ".join(_WORDS.get(w, w.capitalize()) for w in name.split("_"))


def _display_width(text: str) -> int:
    if text.isascii():  # most cells: one column a character
        return len(text)
    return sum(2 if ord(ch) > 0x2E7F else 1 for ch in text)


@cache
def _worksheet_class() -> type:
    """xlsxwriter's Worksheet, writing the XML of its shared-string and number cells (nearly
    every cell of a workbook) in one formatted write each. ``Worksheet._write_cell`` builds a
    list of attributes and escapes each value for every cell; a cell reference and a format's
    index never need escaping. The bytes are xlsxwriter's own (``tests/test_exports.py``
    compares them); any other cell, or a worksheet in constant-memory mode, takes
    ``Worksheet._write_cell``."""
    from xlsxwriter.utility import xl_rowcol_to_cell_fast
    from xlsxwriter.worksheet import CellNumberTuple, CellStringTuple, Worksheet

    class _Worksheet(Worksheet):
        def _write_cell(self, row: int, col: int, cell) -> None:
            kind = cell.__class__
            if self.constant_memory or (
                kind is not CellStringTuple and kind is not CellNumberTuple
            ):
                return super()._write_cell(row, col, cell)
            fmt = cell.format
            if not fmt:  # the row's format, else the column's, as Worksheet._write_cell
                info = self.row_info.get(row)
                if info is not None and info.row_format:
                    fmt = info.row_format
                elif col in self.col_info:
                    fmt = self.col_info[col].column_format
            s = f' s="{fmt._get_xf_index()}"' if fmt else ""
            ref = xl_rowcol_to_cell_fast(row, col)
            if kind is CellStringTuple:
                self.fh.write(f'<c r="{ref}"{s} t="s"><v>{cell.string}</v></c>')
            else:
                self.fh.write(f'<c r="{ref}"{s}><v>{cell.number:.16G}</v></c>')
            return None

    return _Worksheet


class _Book:
    def __init__(self, path: Path, bill: Bill) -> None:
        import xlsxwriter

        self.wb = xlsxwriter.Workbook(
            str(path),
            # not in_memory: it would save a few temporary files but changes the zip's bytes
            {
                "in_memory": True,
                "strings_to_formulas": False,
                "strings_to_urls": False,
                "strings_to_numbers": False,
            },
        )
        closed_at = bill.header.get("closed_at")
        self.wb.set_properties(
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
        f = self.wb.add_format
        self.fmt = {
            "head": f({"bold": True, "bg_color": "#DDE4EE", "border": 1}),
            "money2": f({"num_format": MONEY_2}),
            "money6": f({"num_format": MONEY_6}),
            "qty": f({"num_format": QTY}),
            "int": f({"num_format": "0"}),
            "date": f({"num_format": DATE, "align": "left"}),
            "pct": f({"num_format": "0.00%", "align": "left"}),
            "pct0": f({"num_format": "0%", "align": "left"}),
            "bold": f({"bold": True, "top": 1}),
            "money2_bold": f({"num_format": MONEY_2, "bold": True, "top": 1}),
            "money6_bold": f({"num_format": MONEY_6, "bold": True, "top": 1}),
            "note": f({"italic": True, "font_color": "#595959"}),
            "int_left": f({"num_format": "0", "align": "left"}),
        }

    def sheet(
        self,
        name: str,
        headers: Sequence[str],
        rows: Sequence[Sequence[Any]],
        kinds: Sequence[str],
        totals: Sequence[Sequence[Any]] = (),
    ) -> None:
        """One sheet: a header row, the data rows (typed by ``kinds``: text, money2, money6,
        qty, int, bool, date, pct, auto) and, after them, the totals rows (bold)."""
        if len(kinds) != len(headers):
            raise ValueError(f"sheet {name}: {len(headers)} headers for {len(kinds)} columns")
        ws = self.wb.add_worksheet(name, worksheet_class=_worksheet_class() if FAST_CELLS else None)
        widths = [_display_width(h) + 2 for h in headers]
        for c, h in enumerate(headers):
            ws.write_string(0, c, h, self.fmt["head"])
        r = 0
        # the data rows, the bulk of a workbook (a bill's lines): one writer a column, chosen
        # once; numbers' widths from each column's extremes, once at the end. Straight into
        # the cell table unless the rows go past Excel's last (xlsxwriter drops those itself)
        direct = FAST_CELLS and not ws.constant_memory and len(rows) + len(totals) < ws.xls_rowmax
        writers = [self._column_writer(ws, kind, direct) for kind in kinds]
        lo = [0.0] * len(kinds)
        hi = [0.0] * len(kinds)
        for r, row in enumerate(rows, start=1):
            wrote = False
            for c, value in enumerate(row):
                if value is None or value == "":
                    continue  # a blank cell without a format: xlsxwriter writes nothing
                wrote = True
                got = writers[c](r, c, value)
                if got is None:  # a money cell: its width later
                    v = float(value)
                    if v < lo[c]:
                        lo[c] = v
                    elif v > hi[c]:
                        hi[c] = v
                elif got > widths[c]:
                    widths[c] = got
            if wrote and direct:
                # the sheet's extent, as a write would record it (the header row, as wide as
                # the data, has recorded the columns)
                ws._check_dimensions(r, 0)
        for c, kind in enumerate(kinds):
            if kind in ("money2", "money6"):
                places = 2 if kind == "money2" else 6
                widths[c] = max(widths[c], *(len(f"{v:,.{places}f}") + 3 for v in (lo[c], hi[c])))
        for row in totals:
            r += 1
            for c, (value, kind) in enumerate(zip(row, kinds, strict=True)):
                widths[c] = max(widths[c], self._write(ws, r, c, value, kind, bold=True))
        for c, w in enumerate(widths):
            ws.set_column(c, c, min(max(w, 8), 60))
        ws.freeze_panes(1, 0)
        if rows:
            ws.autofilter(0, 0, len(rows), len(headers) - 1)

    def _column_writer(self, ws, kind: str, direct: bool = False):
        """A writer of the non-null data cells of a column of ``kind``: ``(r, c, value)`` ->
        the width the cell needs, or None for a money cell (sized from the column's range).
        The same cells as ``_write``, without choosing the kind at each one.

        ``direct``: text, number and boolean cells go straight into the worksheet's cell
        table, as ``write_string``, ``write_number`` and ``write_boolean`` would store them (a
        shared string's index, a number or 0/1, and the format), without their argument
        checks: the row is in range (the caller records it with ``_check_dimensions``), a text
        within half of Excel's limit (a longer one takes ``write_string``, which truncates) and
        a money, quantity or count a finite decimal. Nearly every cell of a workbook is written
        this way, for a third of the cost; ``tests/test_exports.py`` checks that the bytes are
        the public path's."""
        # xlsxwriter's cell records (its version is pinned in requirements/lock.txt)
        from xlsxwriter.worksheet import CellBooleanTuple, CellNumberTuple, CellStringTuple

        table, write_string, write_number = ws.table, ws.write_string, ws.write_number
        if kind == "text":
            shared, longest = ws.str_table._get_shared_string_index, ws.xls_strmax // 2
            wide: dict[str, int] = {}

            def text(r: int, c: int, value: Any) -> int:
                s = value if isinstance(value, str) else str(value)
                if s.startswith(FORMULA_PREFIXES):
                    s = "'" + s
                if direct and len(s) <= longest:
                    table[r][c] = CellStringTuple(shared(s), None)
                else:
                    write_string(r, c, s)
                if s.isascii():
                    return len(s) + 2
                w = wide.get(s)  # CJK names repeat down a column: measured once
                if w is None:
                    w = wide[s] = _display_width(s) + 2
                return w

            return text
        if kind in ("money2", "money6"):
            money = self.fmt[kind]

            def amount(r: int, c: int, value: Any) -> None:
                f = float(value)
                if direct and f - f == 0:  # finite: xlsxwriter refuses NaN and infinities
                    table[r][c] = CellNumberTuple(f, money)
                else:
                    write_number(r, c, f, money)

            return amount
        if kind == "qty":
            qty = self.fmt["qty"]
            sizes: dict[Any, int] = {}

            def quantity(r: int, c: int, value: Any) -> int:
                f = float(value)
                if direct and f - f == 0:
                    table[r][c] = CellNumberTuple(f, qty)
                else:
                    write_number(r, c, f, qty)
                w = sizes.get(value)
                if w is None:
                    w = sizes[value] = len(format(Decimal(value).normalize(), "f")) + 3
                return w

            return quantity
        if kind == "int":
            ints = self.fmt["int"]

            def integer(r: int, c: int, value: Any) -> int:
                if direct:
                    table[r][c] = CellNumberTuple(int(value), ints)
                else:
                    write_number(r, c, int(value), ints)
                return len(str(value)) + 2

            return integer
        if kind == "bool":
            write_boolean = ws.write_boolean

            def boolean(r: int, c: int, value: Any) -> int:
                if direct:
                    table[r][c] = CellBooleanTuple(1 if value else 0, None)
                else:
                    write_boolean(r, c, bool(value))
                return 7

            return boolean
        return lambda r, c, value: self._write(ws, r, c, value, kind)

    def _write(self, ws, r: int, c: int, value: Any, kind: str, bold: bool = False) -> int:
        """Write one typed cell; returns the width it needs."""
        fmt = self.fmt
        if kind == "auto":  # the summary's Value column: whatever the value is
            kind = (
                "int"
                if isinstance(value, int) and not isinstance(value, bool)
                else "date"
                if isinstance(value, date)
                else "pct"
                if isinstance(value, doc.Rate)
                else "text"
            )
            if kind == "int":
                ws.write_number(r, c, value, fmt["int_left"])
                return len(str(value)) + 2
        if value is None or (kind != "text" and value == ""):
            if bold:
                ws.write_blank(r, c, None, fmt["bold"])
            else:
                ws.write_blank(r, c, None)
            return 0
        if kind == "text":
            s = neutralise(value)
            ws.write_string(r, c, s, fmt["bold"] if bold else None)
            return _display_width(s) + 2
        if kind in ("money2", "money6"):
            # xlsx stores doubles: converted at the cell only; 6 places below 10^9 round-trip
            ws.write_number(r, c, float(value), fmt[kind + "_bold" if bold else kind])
            places = 2 if kind == "money2" else 6
            return len(f"{Decimal(value):,.{places}f}") + 3
        if kind == "qty":
            ws.write_number(r, c, float(value), fmt["qty"])
            return len(format(Decimal(value).normalize(), "f")) + 3
        if kind == "int":
            ws.write_number(r, c, int(value), fmt["int"])
            return len(str(value)) + 2
        if kind == "bool":
            ws.write_boolean(r, c, bool(value))
            return 7
        if kind == "date":
            ws.write_datetime(r, c, datetime(value.year, value.month, value.day), fmt["date"])
            return 12
        if kind == "pct":
            rate = Decimal(value.value if isinstance(value, doc.Rate) else value)
            whole = (rate * 100) == (rate * 100).to_integral_value()
            ws.write_number(r, c, float(rate), fmt["pct0" if whole else "pct"])
            return 9
        raise ValueError(kind)

    def close(self) -> None:
        self.wb.close()


def write_xlsx(bill: Bill, tmp: Path) -> int:
    """Write the workbook of ``bill`` at ``tmp``; returns the number of bill lines."""
    book = _Book(tmp, bill)
    _summary(book, bill)
    _by_product(book, bill)
    _by_customer(book, bill)
    _details(book, bill)
    from pipelines.recon_report import xlsx_sheet  # recon hook

    xlsx_sheet(book, bill)  # recon hook: the reconciliation sheet
    book.close()
    return len(bill.lines)


def _summary(book: _Book, bill: Bill) -> None:
    rows: list[tuple[str, Any, Any]] = [(k, v, None) for k, v in doc.facts(bill)]
    components = doc.signed_components(bill)
    rows += [(label, None, amount) for label, amount in components]
    totals: list[tuple[str, Any, Any]] = [
        ("Bill Amount (Tax Included)", "sum of the amounts above", bill.header["bill_amount"])
    ]
    after: list[tuple[str, Any, Any]] = [
        (label, note, amount) for label, note, amount in doc.settlement(bill)
    ]
    coupon_total = bill.header.get("coupon_total")
    if coupon_total is not None and coupon_total != bill.header["coupon_amount"]:
        after.append(
            (
                "Coupons of the Month (Before the Cap)",
                "deducted up to the amount before tax",
                coupon_total,
            )
        )
    book.sheet(
        "summary",
        ["Item", "Value", f"Amount ({bill.currency})"],
        rows,
        ["text", "auto", "money2"],
        totals=totals + [("", None, None)] + after if after else totals,
    )


def _by_product(book: _Book, bill: Bill) -> None:
    rows = [
        (
            p["product_id"],
            p["product_name"],
            p["region"],
            p["currency"],
            p["consume_amount"],
            -p["refunds"],
            p["adjustments"],
        )
        for p in bill.products
    ]
    h = bill.header
    rounding = h["consume_amount"] - sum((p["consume_amount"] for p in bill.products), ZERO)
    totals = []
    if rounding:
        totals.append(
            ("", "Rounding (each row is rounded to the cent)", None, None, rounding, None, None)
        )
    totals.append(
        ("Total", "", None, bill.currency, h["consume_amount"], -h["refunds"], h["adjustments"])
    )
    book.sheet(
        "by product",
        [
            "Product ID",
            "Product Name",
            "Region",
            "Currency",
            "Consume Amount",
            "Refunds",
            "Adjustments",
        ],
        rows,
        ["text", "text", "text", "text", "money2", "money2", "money2"],
        totals,
    )


def _by_customer(book: _Book, bill: Bill) -> None:
    rows = [
        (
            c["customer_id"] or PARTNER_LEVEL,
            c["customer_name"],
            c["currency"],
            c["consume_amount"],
            -c["refunds"],
            c["adjustments"],
            c["total_amount"],
        )
        for c in bill.customers
    ]
    h = bill.header
    net = h["consume_amount"] - h["refunds"] + h["adjustments"]
    want = (h["consume_amount"], -h["refunds"], h["adjustments"], net)
    got = [sum((Decimal(r[i]) for r in rows), ZERO) for i in range(3, 7)]
    totals = []
    diff = [w - g for w, g in zip(want, got, strict=True)]
    if any(diff):
        totals.append(
            ("", "Rounding (each row is rounded to the cent)", None, *(d or None for d in diff))
        )
    totals.append(("Total", "", bill.currency, *want))
    book.sheet(
        "by customer",
        [
            "Customer ID",
            "Customer Name",
            "Currency",
            "Consume Amount",
            "Refunds",
            "Adjustments",
            "Total Amount",
        ],
        rows,
        ["text", "text", "text", "money2", "money2", "money2", "money2"],
        totals,
    )


def _details(book: _Book, bill: Bill) -> None:
    cols = schema.BILL_LINES.column_names
    kinds = []
    for n, t, _ in schema.BILL_LINES.columns:
        if n in MONEY_DETAIL_COLUMNS:
            kinds.append("money6")
        elif n == "quantity":
            kinds.append("qty")
        elif t in ("INTEGER", "BIGINT"):
            kinds.append("int")
        elif t == "BOOLEAN":
            kinds.append("bool")
        else:
            kinds.append("text")
    rows = [[ln[c] for c in cols] for ln in bill.lines]
    # per component, the exact sum of its lines, which rounds to the bill's component
    totals = []
    h = bill.header
    for comp, label, published in (
        ("consume", "Total consume", h["consume_amount"]),
        ("refund", "Total refunds", -h["refunds"]),
        ("adjustment", "Total adjustments", h["adjustments"]),
        ("coupon", "Total coupons (before the cap)", h.get("coupon_total")),
    ):
        exact = sum((ln["amount"] for ln in bill.lines if ln["component"] == comp), ZERO)
        if published is None:
            continue
        row: list[Any] = [None] * len(cols)
        row[cols.index("component")] = label
        row[cols.index("amount")] = exact
        row[cols.index("record_count")] = sum(
            (ln["record_count"] or 0 for ln in bill.lines if ln["component"] == comp), 0
        )
        row[cols.index("description")] = (
            f"rounds to {round2(exact):,.2f} = the bill's {doc.COMPONENT_TITLES[comp]}"
        )
        totals.append(row)
    book.sheet("details", [title(c) for c in cols], rows, kinds, totals)
