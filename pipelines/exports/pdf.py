"""The invoice document, ``bill-<partner>-<YYYY-MM>-v<n>.pdf``.

What an accountant receiving it expects: the issuer (the marketplace operator, from the
settings file, ``pipelines.settings``), the recipient (the partner's legal name, address, tax
id and billing e-mail as the bill carries them from the partner snapshot, or the partner name
alone), the invoice number, the invoice date (the bill's publication date: the Beijing date of
``closed_at``), the due date (invoice date + the payment terms), the bill's own components, the
payments applied to it and the balance as of the invoice date (the Amount Due pane's
oldest-bill-first settlement, ``pipelines.amount_due``), the bank details with the invoice
number as payment reference, the invoice a restated version replaces, and for a bill with
nothing due (zero or negative) a statement that says so instead of asking for money. The
facts it shares with the workbook come from ``pipelines.exports.document``.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pipelines.exports.bill import Bill
from pipelines.exports.common import ZERO, fmt_amount
from pipelines.exports.document import (
    document_title,
    product_groups,
    recipient_lines,
    settlement,
    signed_components,
)
from pipelines.exports.fonts import add_fonts

INK = (33, 37, 41)
GREY = (100, 100, 100)
ACCENT = (40, 60, 90)
HEAD_FILL = (221, 228, 238)
RED = (176, 48, 44)


# ---------------------------------------------------------------------------------------------
# the PDF


def write_pdf(bill: Bill, tmp: Path) -> int:
    """Write the invoice document of ``bill`` at ``tmp``; returns the number of bill lines."""
    from fpdf import FPDF

    h = bill.header
    s = bill.settings
    title = document_title(bill)
    ref = bill.invoice_no or f"{bill.partner_id} {bill.month} v{bill.version}"

    class Doc(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("cjk", "", 7)
            self.set_text_color(*GREY)
            who = s.issuer.name if s is not None else "koobill"
            self.cell(
                0,
                5,
                f"{who} · {title} {ref} · page {self.page_no()}/{{nb}}",
                align="C",
            )

    pdf = Doc(orientation="P", unit="mm", format="A4")
    add_fonts(pdf)  # the CJK family, parsed once per process
    # the bold face holds Latin only: CJK text in bold falls back to the regular face
    pdf.set_fallback_fonts(["cjk"], exact_match=False)
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_margins(16, 14, 16)
    closed_at = h.get("closed_at")
    if isinstance(closed_at, datetime):
        pdf.set_creation_date(closed_at)  # same bill, same bytes
    pdf.set_title(f"{title} {ref} {bill.month}")
    pdf.set_author(s.issuer.name if s is not None else "koobill")
    pdf.set_subject(f"KooGallery partner bill {bill.partner_id} {bill.month} v{bill.version}")
    pdf.set_lang("en")
    pdf.add_page()

    _header(pdf, bill, title)
    _notices(pdf, bill)
    _components(pdf, bill)
    _payment(pdf, bill)
    _products(pdf, bill)
    _charts(pdf, bill)
    pdf.output(str(tmp))
    return len(bill.lines)


def _text(pdf, size: float, style: str = "", color=INK) -> None:
    pdf.set_font("cjk", style, size)
    pdf.set_text_color(*color)


def _heading(pdf, text: str) -> None:
    _text(pdf, 10.5, "B", ACCENT)
    pdf.cell(pdf.epw, 6.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(*HEAD_FILL)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + pdf.epw, pdf.get_y())
    pdf.ln(1.5)
    _text(pdf, 9)


# ---------------------------------------------------------------------------------------------
# text and tables, placed by hand: widths measured once per string (a process-wide cache), a
# line broken only when it does not fit, and written with ``text()`` (fpdf2's ``cell()`` and
# ``multi_cell()`` cost 0.07 and 0.25 ms each; a bill prints a few hundred strings)

_WIDTHS: dict[tuple[str, float, str], float] = {}
PAD = 1.0  # mm of padding left and right of a table cell's text
RULE = (226, 231, 238)
SUBTOTAL_FILL = (243, 246, 250)
OTHERS_FILL = (236, 236, 236)


def _runs(pdf, text: str) -> list[tuple[str, str]]:
    """``text`` as (style, run) pieces: the bold face holds Latin only, so in bold text the
    other characters are written in the regular face (as fpdf2's fallback fonts would)."""
    style = pdf.font_style
    if not style or text.isascii():
        return [(style, text)]
    out: list[tuple[str, str]] = []
    for ch in text:
        st = style if ord(ch) < 0x2E80 else ""
        if out and out[-1][0] == st:
            out[-1] = (st, out[-1][1] + ch)
        else:
            out.append((st, ch))
    return out


def _width(pdf, text: str) -> float:
    """The width of ``text`` in the current font and size, in mm."""
    key = (pdf.font_style, pdf.font_size_pt, text)
    w = _WIDTHS.get(key)
    if w is None:
        if len(_WIDTHS) > 200_000:
            _WIDTHS.clear()
        runs = _runs(pdf, text)
        if len(runs) == 1 and runs[0][0] == pdf.font_style:
            w = pdf.get_string_width(text)
        else:
            keep, size = pdf.font_style, pdf.font_size_pt
            w = 0.0
            for style, run in runs:
                pdf.set_font("cjk", style, size)
                w += pdf.get_string_width(run)
            pdf.set_font("cjk", keep, size)
        _WIDTHS[key] = w
    return w


def _put(pdf, x: float, baseline: float, text: str) -> None:
    """``text`` with its left end at ``x`` on ``baseline`` (bold falls back as in ``_runs``)."""
    if not text:
        return
    runs = _runs(pdf, text)
    if len(runs) == 1 and runs[0][0] == pdf.font_style:
        pdf.text(x, baseline, text)
        return
    keep, size = pdf.font_style, pdf.font_size_pt
    for style, run in runs:
        pdf.set_font("cjk", style, size)
        pdf.text(x, baseline, run)
        x += _width(pdf, run)
    pdf.set_font("cjk", keep, size)


def _wrap(pdf, text: str, w: float) -> list[str]:
    """``text`` broken into lines no wider than ``w`` (at spaces, else between characters, as
    for CJK text); one line when it fits, which is nearly always."""
    out: list[str] = []
    for para in text.split("\n"):
        if _width(pdf, para) <= w:
            out.append(para)
            continue
        line = ""
        for word in para.split(" "):
            cand = f"{line} {word}" if line else word
            if _width(pdf, cand) <= w:
                line = cand
                continue
            if line:
                out.append(line)
                line = ""
            # a word wider than the line: break it between characters
            for ch in word:
                if line and _width(pdf, line + ch) > w:
                    out.append(line)
                    line = ""
                line += ch
        out.append(line)
    return out


def _baseline(pdf, y: float, line_h: float) -> float:
    return y + line_h / 2 + 0.3 * pdf.font_size


def _para(pdf, w: float, line_h: float, text: str, align: str = "L", x: float | None = None):
    """A paragraph of ``text`` at the current position (or at ``x``), wrapped to ``w``; the
    position moves to the line under it, at the left margin."""
    pad = pdf.c_margin
    x = (pdf.l_margin if x is None else x) + pad
    w -= 2 * pad
    for ln in _wrap(pdf, text, w):
        if pdf.get_y() + line_h > pdf.page_break_trigger:
            pdf.add_page()
        y = pdf.get_y()
        tx = x + w - _width(pdf, ln) if align == "R" else x
        _put(pdf, tx, _baseline(pdf, y, line_h), ln)
        pdf.set_y(y + line_h)
    pdf.set_x(pdf.l_margin)


class _Table:
    """A table drawn by hand: fixed column widths, a heading row (repeated on a new page), rows
    of cells (text, columns spanned, style) one line high unless a text needs more lines."""

    def __init__(self, pdf, widths, aligns, line_h: float, head=None) -> None:
        self.pdf = pdf
        self.widths = list(widths)
        self.aligns = aligns
        self.line_h = line_h
        self.head = head
        self.size = pdf.font_size_pt
        self.x = pdf.l_margin
        if head is not None:
            self._row(head, "B", HEAD_FILL)

    def row(self, cells, style: str = "", fill=None, keep: int = 0) -> None:
        """``cells``: (text, span, grey) tuples, or plain strings; ``keep``: how many one-line
        rows after it must share its page (a section's label is never alone at a page foot)."""
        self._row(cells, style, fill, keep)

    def _row(self, cells, style: str, fill, keep: int = 0) -> None:
        pdf = self.pdf
        pdf.set_font("cjk", style, self.size)
        placed = []
        col = 0
        for cell in cells:
            text, span, grey = (cell, 1, False) if isinstance(cell, str) else cell
            w = sum(self.widths[col : col + span])
            placed.append((col, w, _wrap(pdf, text, w - 2 * PAD), grey))
            col += span
        lines = max(len(p[2]) for p in placed)
        h = self.line_h * lines
        if pdf.get_y() + h + keep * self.line_h > pdf.page_break_trigger:
            pdf.add_page()
            if self.head is not None and cells is not self.head:
                self._row(self.head, "B", HEAD_FILL)
                pdf.set_font("cjk", style, self.size)
        y = pdf.get_y()
        total_w = sum(self.widths)
        if fill is not None:
            pdf.set_fill_color(*fill)
            pdf.rect(self.x, y, total_w, h, style="F")
        for col, w, texts, grey in placed:
            cx = self.x + sum(self.widths[:col])
            align = self.aligns[col]
            pdf.set_text_color(*(GREY if grey else INK))
            if grey:  # a note: regular, grey
                pdf.set_font("cjk", "", self.size)
            for i, ln in enumerate(texts):
                base = _baseline(pdf, y + i * self.line_h, self.line_h)
                tx = cx + w - PAD - _width(pdf, ln) if align == "R" else cx + PAD
                _put(pdf, tx, base, ln)
            if grey:
                pdf.set_font("cjk", style, self.size)
        pdf.set_text_color(*INK)
        pdf.set_draw_color(*RULE)
        pdf.set_line_width(0.2)
        pdf.line(self.x, y + h, self.x + total_w, y + h)
        pdf.set_xy(pdf.l_margin, y + h)


def _header(pdf, bill: Bill, title: str) -> None:
    """Issuer (left) and the document's title and key facts (right); then Bill to (left) and
    the amount box (right)."""
    left_w = pdf.epw * 0.55
    right_x = pdf.l_margin + left_w + 4
    right_w = pdf.epw - left_w - 4
    _issuer_and_facts(pdf, bill, title, left_w, right_x, right_w)
    _bill_to_and_amount(pdf, bill, left_w, right_x, right_w)


def _issuer_and_facts(pdf, bill: Bill, title: str, left_w, right_x, right_w) -> None:
    s = bill.settings
    top = pdf.get_y()

    # issuer
    if s is not None:
        _text(pdf, 11, "B")
        _para(pdf, left_w, 5.5, s.issuer.name)
        _text(pdf, 8.5, "", GREY)
        lines = [s.issuer.local_name] if s.issuer.local_name else []
        lines += list(s.issuer.address)
        if s.issuer.tax_id:
            lines.append(f"Tax ID: {s.issuer.tax_id}")
        contact = " · ".join(x for x in (s.issuer.email, s.issuer.phone) if x)
        if contact:
            lines.append(contact)
        for ln in lines:
            _para(pdf, left_w, 4.2, ln)
    left_end = pdf.get_y()

    # title and facts
    pdf.set_xy(right_x, top)
    _text(pdf, 20, "B", ACCENT)
    pdf.cell(right_w, 9, title.upper(), align="R", new_x="LEFT", new_y="NEXT")
    if bill.amount_due <= 0:
        _text(pdf, 9, "B", GREY)
        pdf.cell(right_w, 5, "No amount due", align="R", new_x="LEFT", new_y="NEXT")
    pdf.ln(1)
    facts = [
        ("Invoice No.", bill.invoice_no or "none (nothing due)"),
        ("Invoice date", str(bill.invoice_date or "")),
    ]
    if bill.due_date is not None:
        facts.append(("Due date", str(bill.due_date)))
    facts += [
        ("Bill month", bill.month),
        ("Version", f"{bill.version} ({bill.header.get('status')})"),
        ("Currency", bill.currency),
    ]
    for k, v in facts:
        pdf.set_x(right_x)
        _text(pdf, 8.5, "", GREY)
        pdf.cell(right_w * 0.45, 4.6, k, align="R")
        _text(pdf, 8.5, "B" if k in ("Invoice No.", "Due date") else "")
        pdf.cell(right_w * 0.55, 4.6, v, align="R", new_x="LEFT", new_y="NEXT")
    pdf.set_y(max(left_end, pdf.get_y()) + 5)


def _bill_to_and_amount(pdf, bill: Bill, left_w, right_x, right_w) -> None:
    top = pdf.get_y()
    _text(pdf, 7.5, "B", GREY)
    pdf.cell(left_w, 4.5, "BILL TO", new_x="LMARGIN", new_y="NEXT")
    rec = recipient_lines(bill)
    _text(pdf, 10, "B")
    _para(pdf, left_w, 5, rec[0])
    _text(pdf, 8.5)
    for ln in rec[1:]:
        _para(pdf, left_w, 4.3, ln)
    _text(pdf, 8.5, "", GREY)
    partner = f"Partner ID: {bill.partner_id}"
    if bill.header.get("partner_name") and bill.header.get("partner_name") != rec[0]:
        partner += f" · {bill.header['partner_name']}"
    _para(pdf, left_w, 4.3, partner)
    left_end = pdf.get_y()

    box_h = 24
    pdf.set_fill_color(*HEAD_FILL) if bill.amount_due > 0 else pdf.set_fill_color(235, 235, 235)
    pdf.rect(right_x, top, right_w, box_h, style="F")
    pdf.set_xy(right_x + 3, top + 2.5)
    if bill.amount_due > 0:
        label = f"Balance due ({bill.currency})" if bill.account is not None else "Amount due"
        amount = bill.balance_due if bill.account is not None else bill.amount_due
        _text(pdf, 8.5, "", GREY)
        pdf.cell(right_w - 6, 4.5, label, new_x="LEFT", new_y="NEXT")
        _text(pdf, 17, "B")
        pdf.cell(
            right_w - 6, 9, f"{fmt_amount(amount)} {bill.currency}", new_x="LEFT", new_y="NEXT"
        )
        _text(pdf, 8.5, "", GREY)
        if amount <= 0:
            note = f"Paid in full as of {bill.invoice_date}"
        elif bill.due_date is not None:
            note = f"Due by {bill.due_date}"
        else:
            note = ""
        pdf.cell(right_w - 6, 4.5, note, new_x="LEFT", new_y="NEXT")
    else:
        _text(pdf, 8.5, "", GREY)
        pdf.cell(right_w - 6, 4.5, f"Bill amount ({bill.currency})", new_x="LEFT", new_y="NEXT")
        _text(pdf, 17, "B")
        pdf.cell(
            right_w - 6,
            9,
            f"{fmt_amount(bill.header['bill_amount'])} {bill.currency}",
            new_x="LEFT",
            new_y="NEXT",
        )
        _text(pdf, 8.5, "B", GREY)
        pdf.cell(right_w - 6, 4.5, "No amount due · nothing to pay", new_x="LEFT", new_y="NEXT")
    pdf.set_y(max(left_end, top + box_h) + 5)


def _notices(pdf, bill: Bill) -> None:
    """A restated version names the invoice it replaces; a superseded version says so."""
    sup = bill.supersedes_invoice_no
    if sup:
        _text(pdf, 9.5, "B", ACCENT)
        _para(
            pdf,
            pdf.epw,
            5,
            f"This {document_title(bill).lower()} (version {bill.version}) supersedes invoice "
            f"{sup}: it replaces that invoice, which is void. Payments made against {sup} are "
            "applied to the partner's bills as shown below.",
        )
        pdf.ln(2)
    elif bill.version > 1:
        _text(pdf, 9.5, "B", ACCENT)
        _para(
            pdf,
            pdf.epw,
            5,
            f"Restated bill: version {bill.version} replaces version {bill.version - 1} of "
            f"{bill.month}.",
        )
        pdf.ln(2)
    if not bill.is_current:
        _text(pdf, 10, "B", RED)
        _para(
            pdf,
            pdf.epw,
            5.5,
            f"SUPERSEDED: version {bill.version} was replaced by a restatement; "
            "this document is void and kept as issued.",
        )
        pdf.ln(2)


def _amount_table(pdf, rows, bold_rows=(), width_ratio=0.72, col_widths=(62, 40, 26)) -> None:
    """A heading row and rows of (label, note, amount): the note grey, the amount right."""
    total = pdf.epw * width_ratio
    scale = total / sum(col_widths)
    t = _Table(
        pdf,
        [c * scale for c in col_widths],
        ("L", "L", "R"),
        5.6,
        head=list(rows[0]),
    )
    for i, (a, b, c) in enumerate(rows[1:], start=1):
        bold = i in bold_rows
        t.row([(a, 1, False), (b, 1, True), (c, 1, False)], "B" if bold else "")


def _components(pdf, bill: Bill) -> None:
    _heading(pdf, "Bill components")
    rows = [("Component", "", f"Amount ({bill.currency})")]
    rows += [(label, "", fmt_amount(v)) for label, v in signed_components(bill)]
    rows.append(("Bill amount (tax included)", "", fmt_amount(bill.header["bill_amount"])))
    h = bill.header
    if h.get("coupon_total") is not None and h["coupon_total"] != h["coupon_amount"]:
        rows[4] = (
            rows[4][0],
            f"of {fmt_amount(h['coupon_total'])}, capped",
            rows[4][2],
        )
    _text(pdf, 9)
    _amount_table(pdf, rows, bold_rows=(len(rows) - 1,))
    pdf.ln(3)


def _payment(pdf, bill: Bill) -> None:
    """Payments applied and the balance as of the invoice date, then how to pay."""
    if pdf.get_y() + 45 > pdf.page_break_trigger:
        pdf.add_page()
    _heading(pdf, "Amount due and payments")
    rows = [("", "", f"Amount ({bill.currency})")]
    for label, note, v in settlement(bill):
        if bill.amount_due <= 0 and label in ("Payments Applied", "Balance Due"):
            continue  # nothing due: nothing to apply payments to
        rows.append((label, note or "", fmt_amount(v)))
    bold = tuple(i for i, r in enumerate(rows) if r[0] in ("Amount Due", "Balance Due"))
    _text(pdf, 9)
    _amount_table(pdf, rows, bold_rows=bold, width_ratio=1, col_widths=(52, 80, 30))
    pdf.ln(2)
    s = bill.settings
    if bill.amount_due <= 0:
        _text(pdf, 9)
        what = "negative" if bill.header["bill_amount"] < 0 else "zero"
        _para(
            pdf,
            pdf.epw,
            4.6,
            f"The bill amount is {what}: no amount is due and no payment is requested for "
            f"{bill.month}. This statement is not a request for payment.",
        )
        pdf.ln(3)
        return
    if not bill.is_current:
        pdf.ln(1)
        return
    _text(pdf, 9)
    if bill.account is not None and bill.balance_due <= 0:
        _para(
            pdf, pdf.epw, 4.6, f"This invoice is paid in full as of {bill.invoice_date}. Thank you."
        )
        pdf.ln(3)
        return
    if pdf.get_y() + 32 > pdf.page_break_trigger:
        pdf.add_page()
    _heading(pdf, "How to pay")
    pay = bill.balance_due if bill.account is not None else bill.amount_due
    terms = f" ({s.terms_days} days from the invoice date)" if s is not None else ""
    _text(pdf, 9)
    _para(
        pdf,
        pdf.epw,
        4.8,
        f"Please pay {fmt_amount(pay)} {bill.currency} by {bill.due_date}{terms}. "
        f"Payment reference: {bill.invoice_no}.",
    )
    account = s.account_for(bill.currency) if s is not None else None
    if account is not None:
        for label, value in account.fields:
            _text(pdf, 8.5, "", GREY)
            pdf.cell(32, 4.6, label)
            _text(pdf, 8.5)
            _para(pdf, pdf.epw - 32, 4.6, value, x=pdf.l_margin + 32)
        _text(pdf, 8.5, "", GREY)
        pdf.cell(32, 4.6, "Reference")
        _text(pdf, 8.5, "B")
        pdf.cell(pdf.epw - 32, 4.6, str(bill.invoice_no), new_x="LMARGIN", new_y="NEXT")
    if s is not None and s.payment_note:
        _text(pdf, 8, "", GREY)
        _para(pdf, pdf.epw, 4.2, s.payment_note)
    pdf.ln(3)


def _products(pdf, bill: Bill) -> None:
    if pdf.get_y() + 30 > pdf.page_break_trigger:
        pdf.add_page()  # no heading alone at the foot of a page
    _heading(pdf, "Expenditure by product")
    h = bill.header
    groups = product_groups(bill)
    _text(pdf, 8.5)
    scale = pdf.epw / 160
    t = _Table(
        pdf,
        [c * scale for c in (62, 40, 28, 30)],
        ("L", "L", "L", "R"),
        4.8,
        head=["Product", "Product ID", "Region", f"Amount ({bill.currency})"],
    )
    for g in groups:
        name = g["product_name"] or g["product_id"]
        if len(g["rows"]) == 1:
            t.row(
                [
                    (name, 1, False),
                    (g["product_id"], 1, True),
                    (g["rows"][0]["region"] or "", 1, False),
                    (fmt_amount(g["subtotal"]), 1, False),
                ]
            )
            continue
        for r in g["rows"]:
            first = r is g["rows"][0]
            t.row(
                [
                    (name if first else "", 1, False),
                    (g["product_id"] if first else "", 1, True),
                    (r["region"] or "", 1, False),
                    (fmt_amount(r["consume_amount"]), 1, False),
                ]
            )
        t.row(
            [(f"Subtotal {name}", 3, False), (fmt_amount(g["subtotal"]), 1, False)],
            "B",
            SUBTOTAL_FILL,
        )
    # each row is rounded to the cent on its own (as in expenditure_by_product), so their
    # sum may miss the bill's consume amount by a few cents: show it, to add up
    diff = h["consume_amount"] - sum((g["subtotal"] for g in groups), ZERO)
    if diff:
        t.row(
            [("Rounding (each row is rounded to the cent)", 3, False), (fmt_amount(diff), 1, False)]
        )
    t.row(
        [("Total consumption", 3, False), (fmt_amount(h["consume_amount"]), 1, False)],
        "B",
        SUBTOTAL_FILL,
    )
    t.row([("Others", 4, False)], "B", OTHERS_FILL, keep=3)
    t.row(
        [("Refunds (unsubscriptions and changes)", 3, False), (fmt_amount(-h["refunds"]), 1, False)]
    )
    t.row([("Adjustments", 3, False), (fmt_amount(h["adjustments"]), 1, False)])
    t.row(
        [
            ("Total before coupons and tax", 3, False),
            (fmt_amount(h["consume_amount"] - h["refunds"] + h["adjustments"]), 1, False),
        ],
        "B",
        SUBTOTAL_FILL,
    )
    pdf.ln(1.5)
    _text(pdf, 7.5, "", GREY)
    _para(
        pdf,
        pdf.epw,
        4,
        f"{len(bill.lines)} bill lines; the details are in "
        f"bill-details-{bill.partner_id}-{bill.month}-v{bill.version}.xlsx / .csv / .parquet. "
        "Refunds and coupons are shown as negative amounts. Bill amount = consume amount + "
        "refunds + adjustments + coupons + tax; amount due = max(bill amount, 0).",
    )
    pdf.ln(3)


def _charts(pdf, bill: Bill) -> None:
    """The charts that earn their place, drawn as vector shapes. Side by side under one
    heading in the space left on the page (a little lower if need be); when that space is too
    small, on a page of their own, one above the other at full width, so that no page holds a
    lone small chart."""
    shown = _chart_jobs(bill)
    if not shown:
        return
    gap = 6
    w = (pdf.epw - gap) / 2 if len(shown) == 2 else pdf.epw * 0.62
    h = w * 3.0 / 4.2
    room = pdf.page_break_trigger - pdf.get_y() - 9  # the heading takes 8 mm
    if room >= h * 0.6:
        h = min(h, room)
        _heading(pdf, "Charts")
        y = pdf.get_y()
        for i, draw in enumerate(shown):
            draw(pdf, pdf.l_margin + i * (w + gap), y, w, h)
        pdf.set_y(y + h + 2)
        return
    pdf.add_page()
    _heading(pdf, "Charts")
    w = pdf.epw * 0.92
    h = w * 4.6 / 7.0
    for draw in shown:
        y = pdf.get_y()
        draw(pdf, pdf.l_margin + (pdf.epw - w) / 2, y, w, h)
        pdf.set_y(y + h + 6)


def _chart_jobs(bill: Bill) -> list[Any]:
    """The charts of ``bill`` that say something, each a ``draw(pdf, x, y, w, h)``."""
    from pipelines.exports import charts

    head = bill.header
    net = head["consume_amount"] - head["refunds"] + head["adjustments"]
    jobs = []
    top = charts.products_data(product_groups(bill))
    if top is not None:
        jobs.append(
            lambda pdf, x, y, w, h: charts.products_chart(pdf, top, bill.currency, x, y, w, h)
        )
    est = charts.estimates_data(bill.estimates)
    if est is not None:
        jobs.append(
            lambda pdf, x, y, w, h: charts.estimates_chart(
                pdf, est, net, head["bill_amount"], bill.month, bill.currency, x, y, w, h
            )
        )
    return jobs
