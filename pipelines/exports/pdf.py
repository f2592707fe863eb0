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
        pdf.multi_cell(left_w, 5.5, s.issuer.name, new_x="LMARGIN", new_y="NEXT", align="L")
        _text(pdf, 8.5, "", GREY)
        lines = [s.issuer.local_name] if s.issuer.local_name else []
        lines += list(s.issuer.address)
        if s.issuer.tax_id:
            lines.append(f"Tax ID: {s.issuer.tax_id}")
        contact = " · ".join(x for x in (s.issuer.email, s.issuer.phone) if x)
        if contact:
            lines.append(contact)
        for ln in lines:
            pdf.multi_cell(left_w, 4.2, ln, new_x="LMARGIN", new_y="NEXT", align="L")
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
    pdf.multi_cell(left_w, 5, rec[0], new_x="LMARGIN", new_y="NEXT", align="L")
    _text(pdf, 8.5)
    for ln in rec[1:]:
        pdf.multi_cell(left_w, 4.3, ln, new_x="LMARGIN", new_y="NEXT", align="L")
    _text(pdf, 8.5, "", GREY)
    partner = f"Partner ID: {bill.partner_id}"
    if bill.header.get("partner_name") and bill.header.get("partner_name") != rec[0]:
        partner += f" · {bill.header['partner_name']}"
    pdf.multi_cell(left_w, 4.3, partner, new_x="LMARGIN", new_y="NEXT", align="L")
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
        pdf.multi_cell(
            pdf.epw,
            5,
            f"This {document_title(bill).lower()} (version {bill.version}) supersedes invoice "
            f"{sup}: it replaces that invoice, which is void. Payments made against {sup} are "
            "applied to the partner's bills as shown below.",
            new_x="LMARGIN",
            new_y="NEXT",
            align="L",
        )
        pdf.ln(2)
    elif bill.version > 1:
        _text(pdf, 9.5, "B", ACCENT)
        pdf.multi_cell(
            pdf.epw,
            5,
            f"Restated bill: version {bill.version} replaces version {bill.version - 1} of "
            f"{bill.month}.",
            new_x="LMARGIN",
            new_y="NEXT",
            align="L",
        )
        pdf.ln(2)
    if not bill.is_current:
        _text(pdf, 10, "B", RED)
        pdf.multi_cell(
            pdf.epw,
            5.5,
            f"SUPERSEDED: version {bill.version} was replaced by a restatement; "
            "this document is void and kept as issued.",
            new_x="LMARGIN",
            new_y="NEXT",
            align="L",
        )
        pdf.ln(2)


def _amount_table(pdf, rows, bold_rows=(), width_ratio=0.72, col_widths=(62, 40, 26)) -> None:
    from fpdf.fonts import FontFace

    bold = FontFace(emphasis="BOLD")
    with pdf.table(
        col_widths=col_widths,
        width=pdf.epw * width_ratio,
        align="LEFT",
        text_align=("LEFT", "LEFT", "RIGHT"),
        line_height=5.6,
        first_row_as_headings=True,
        headings_style=FontFace(emphasis="BOLD", fill_color=HEAD_FILL),
    ) as t:
        for i, (a, b, c) in enumerate(rows):
            row = t.row()
            style = bold if i in bold_rows else None
            row.cell(a, style=style)
            row.cell(b, style=FontFace(color=GREY) if i else None)
            row.cell(c, style=style)


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
        pdf.multi_cell(
            pdf.epw,
            4.6,
            f"The bill amount is {what}: no amount is due and no payment is requested for "
            f"{bill.month}. This statement is not a request for payment.",
            new_x="LMARGIN",
            new_y="NEXT",
            align="L",
        )
        pdf.ln(3)
        return
    if not bill.is_current:
        pdf.ln(1)
        return
    _text(pdf, 9)
    if bill.account is not None and bill.balance_due <= 0:
        pdf.multi_cell(
            pdf.epw,
            4.6,
            f"This invoice is paid in full as of {bill.invoice_date}. Thank you.",
            new_x="LMARGIN",
            new_y="NEXT",
            align="L",
        )
        pdf.ln(3)
        return
    if pdf.get_y() + 32 > pdf.page_break_trigger:
        pdf.add_page()
    _heading(pdf, "How to pay")
    pay = bill.balance_due if bill.account is not None else bill.amount_due
    terms = f" ({s.terms_days} days from the invoice date)" if s is not None else ""
    _text(pdf, 9)
    pdf.multi_cell(
        pdf.epw,
        4.8,
        f"Please pay {fmt_amount(pay)} {bill.currency} by {bill.due_date}{terms}. "
        f"Payment reference: {bill.invoice_no}.",
        new_x="LMARGIN",
        new_y="NEXT",
        align="L",
    )
    account = s.account_for(bill.currency) if s is not None else None
    if account is not None:
        for label, value in account.fields:
            _text(pdf, 8.5, "", GREY)
            pdf.cell(32, 4.6, label)
            _text(pdf, 8.5)
            pdf.multi_cell(pdf.epw - 32, 4.6, value, new_x="LMARGIN", new_y="NEXT", align="L")
        _text(pdf, 8.5, "", GREY)
        pdf.cell(32, 4.6, "Reference")
        _text(pdf, 8.5, "B")
        pdf.cell(pdf.epw - 32, 4.6, str(bill.invoice_no), new_x="LMARGIN", new_y="NEXT")
    if s is not None and s.payment_note:
        _text(pdf, 8, "", GREY)
        pdf.multi_cell(pdf.epw, 4.2, s.payment_note, new_x="LMARGIN", new_y="NEXT", align="L")
    pdf.ln(3)


def _products(pdf, bill: Bill) -> None:
    from fpdf.fonts import FontFace

    if pdf.get_y() + 30 > pdf.page_break_trigger:
        pdf.add_page()  # no heading alone at the foot of a page
    _heading(pdf, "Expenditure by product")
    h = bill.header
    groups = product_groups(bill)
    bold = FontFace(emphasis="BOLD")
    grey = FontFace(color=GREY)
    _text(pdf, 8.5)
    with pdf.table(
        col_widths=(62, 40, 28, 30),
        width=pdf.epw,
        line_height=4.8,
        text_align=("LEFT", "LEFT", "LEFT", "RIGHT"),
        repeat_headings=1,
        headings_style=FontFace(emphasis="BOLD", fill_color=HEAD_FILL),
    ) as t:
        head = t.row()
        for text in ("Product", "Product ID", "Region", f"Amount ({bill.currency})"):
            head.cell(text)
        for g in groups:
            name = g["product_name"] or g["product_id"]
            if len(g["rows"]) == 1:
                row = t.row()
                row.cell(name)
                row.cell(g["product_id"], style=grey)
                row.cell(g["rows"][0]["region"] or "")
                row.cell(fmt_amount(g["subtotal"]))
                continue
            for r in g["rows"]:
                row = t.row()
                first = r is g["rows"][0]
                row.cell(name if first else "", style=None)
                row.cell(g["product_id"] if first else "", style=grey)
                row.cell(r["region"] or "")
                row.cell(fmt_amount(r["consume_amount"]))
            row = t.row()
            row.cell(f"Subtotal {name}", colspan=3, style=bold)
            row.cell(fmt_amount(g["subtotal"]), style=bold)
        # each row is rounded to the cent on its own (as in expenditure_by_product), so their
        # sum may miss the bill's consume amount by a few cents: show it, to add up
        diff = h["consume_amount"] - sum((g["subtotal"] for g in groups), ZERO)
        if diff:
            row = t.row()
            row.cell("Rounding (each row is rounded to the cent)", colspan=3)
            row.cell(fmt_amount(diff))
        row = t.row()
        row.cell("Total consumption", colspan=3, style=bold)
        row.cell(fmt_amount(h["consume_amount"]), style=bold)
        row = t.row()
        row.cell("Others", colspan=4, style=FontFace(emphasis="BOLD", fill_color=(240, 240, 240)))
        row = t.row()
        row.cell("Refunds (unsubscriptions and changes)", colspan=3)
        row.cell(fmt_amount(-h["refunds"]))
        row = t.row()
        row.cell("Adjustments", colspan=3)
        row.cell(fmt_amount(h["adjustments"]))
        row = t.row()
        row.cell("Total before coupons and tax", colspan=3, style=bold)
        row.cell(fmt_amount(h["consume_amount"] - h["refunds"] + h["adjustments"]), style=bold)
    pdf.ln(1.5)
    _text(pdf, 7.5, "", GREY)
    pdf.multi_cell(
        pdf.epw,
        4,
        f"{len(bill.lines)} bill lines; the details are in "
        f"bill-details-{bill.partner_id}-{bill.month}-v{bill.version}.xlsx / .csv / .parquet. "
        "Refunds and coupons are shown as negative amounts. Bill amount = consume amount + "
        "refunds + adjustments + coupons + tax; amount due = max(bill amount, 0).",
        new_x="LMARGIN",
        new_y="NEXT",
        align="L",
    )
    pdf.ln(3)


def _charts(pdf, bill: Bill) -> None:
    """The charts that earn their place. Side by side under one heading in the space left on
    the page (shrunk a little if need be); when that space is too small, on a page of their
    own, one above the other at full width, so that no page holds a lone small chart."""
    shown = _render_charts(bill, 4.2, 3.0)
    if not shown:
        return
    gap = 4
    w = (pdf.epw - gap) / 2 if len(shown) == 2 else pdf.epw * 0.62
    wpx, hpx = shown[0][0].size
    img_h = w * hpx / wpx
    room = pdf.page_break_trigger - pdf.get_y() - 9  # the heading takes 8 mm
    if room >= img_h * 0.6:
        if room < img_h:
            w, img_h = w * room / img_h, room
        _heading(pdf, "Charts")
        y = pdf.get_y()
        for i, (image, alt) in enumerate(shown):
            pdf.image(image, x=pdf.l_margin + i * (w + gap), y=y, w=w, alt_text=alt)
        pdf.set_y(y + img_h + 2)
        return
    pdf.add_page()
    _heading(pdf, "Charts")
    w = pdf.epw * 0.92
    for image, alt in _render_charts(bill, 7.0, 4.6):
        pdf.image(image, x=pdf.l_margin + (pdf.epw - w) / 2, w=w, alt_text=alt)
        pdf.ln(4)


def _render_charts(bill: Bill, w: float, h: float) -> list[tuple[Any, str]]:
    from pipelines.exports import charts

    head = bill.header
    net = head["consume_amount"] - head["refunds"] + head["adjustments"]
    pair = [
        (
            charts.products_chart(product_groups(bill), bill.currency, w, h),
            "Top products by consumption",
        ),
        (
            charts.estimates_chart(
                bill.estimates, net, head["bill_amount"], bill.month, bill.currency, w, h
            ),
            "Daily estimate against the bill",
        ),
    ]
    return [(image, alt) for image, alt in pair if image is not None]
