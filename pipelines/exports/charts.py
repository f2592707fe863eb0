"""The invoice's charts, drawn as vector shapes on the PDF page (rectangles, lines, text in the
bundled CJK face): where the month's spend went, and the daily estimate against the bill. A
chart is drawn only when it says something a table does not (two or more products; two or more
estimates). Floats are used for placing shapes only; every printed amount comes from the
Decimals.

Drawing them with fpdf2 directly (instead of rasterising a matplotlib figure) costs about a
millisecond a chart, prints sharp at any zoom, and its text is real text (searchable, copyable).
"""

from __future__ import annotations

import math
from datetime import date
from decimal import Decimal
from typing import Any

from pipelines.exports.common import fmt_amount

BLUE, RED, GREEN = (58, 110, 165), (192, 80, 77), (79, 138, 60)
INK = (33, 37, 41)
GREY = (100, 100, 100)
GRID = (225, 228, 233)
AXIS = (150, 150, 150)
TITLE_PT, LABEL_PT, SMALL_PT = 8.5, 7.0, 6.5
PT = 25.4 / 72  # mm per point


def products_data(groups: list[dict[str, Any]]) -> list[tuple[str, Decimal]] | None:
    """The top products by consumption (all regions together), or None when fewer than two."""
    top = [g for g in groups if g["subtotal"] > 0][:8]
    if len(top) < 2:
        return None
    return [(g["product_name"] or g["product_id"], g["subtotal"]) for g in top]


def estimates_data(estimates: list[tuple[Any, Decimal]]) -> list[tuple[Any, Decimal]] | None:
    return list(estimates) if len(estimates) >= 2 else None


def products_chart(pdf, top, currency: str, x: float, y: float, w: float, h: float) -> None:
    """A horizontal bar chart of ``top`` (label, amount) in the box (x, y, w, h), in mm."""
    body_y = _title(pdf, f"Top products by consumption ({currency})", x, y, w)
    labels = [_short(name) for name, _ in top]
    amounts = [fmt_amount(v) for _, v in top]
    _font(pdf, LABEL_PT)
    label_w = min(max(pdf.get_string_width(s) for s in labels), w * 0.42)
    _font(pdf, SMALL_PT)
    amount_w = max(pdf.get_string_width(s) for s in amounts) + 1.5
    left = x + label_w + 2
    right = x + w - amount_w
    axis_h = 4.0
    bottom = y + h - axis_h
    top_v = max(float(v) for _, v in top)
    ticks = _ticks(0.0, top_v, 3)
    hi = max(ticks[-1], top_v) or 1.0

    def px(v: float) -> float:
        return left + (right - left) * v / hi

    # the grid, behind the bars, with its amounts under the axis
    pdf.set_line_width(0.15)
    pdf.set_draw_color(*GRID)
    _font(pdf, SMALL_PT, GREY)
    for t in ticks:
        tx = px(t)
        if t:
            pdf.line(tx, body_y, tx, bottom)
        _text_at(pdf, tx, bottom + 1.2 + SMALL_PT * PT, _thousands(t), "C")
    slot = (bottom - body_y) / len(top)
    bar_h = min(slot * 0.68, 6.0)
    pdf.set_fill_color(*BLUE)
    for i, ((_, v), label, amount) in enumerate(zip(top, labels, amounts, strict=True)):
        cy = body_y + slot * (i + 0.5)
        bw = max(px(float(v)) - left, 0.3)
        pdf.rect(left, cy - bar_h / 2, bw, bar_h, style="F")
        _font(pdf, LABEL_PT, INK)
        _text_at(pdf, left - 1.5, cy + LABEL_PT * PT * 0.35, label, "R", max_w=label_w)
        _font(pdf, SMALL_PT, INK)
        _text_at(pdf, left + bw + 1, cy + SMALL_PT * PT * 0.35, amount, "L")
    pdf.set_draw_color(*AXIS)
    pdf.set_line_width(0.25)
    pdf.line(left, body_y, left, bottom)
    pdf.line(left, bottom, right, bottom)


def estimates_chart(
    pdf,
    estimates: list[tuple[Any, Decimal]],
    net: Decimal,
    bill_amount: Decimal,
    month: str,
    currency: str,
    x: float,
    y: float,
    w: float,
    h: float,
) -> None:
    """The month's daily estimate against the bill, a line chart in the box (x, y, w, h); one
    reference line when the bill equals the estimate's final basis (no tax, no coupons), else
    two."""
    body_y = _title(pdf, f"Daily estimate of {month} against the bill ({currency})", x, y, w)
    refs: list[tuple[str, Decimal, tuple[int, int, int], tuple[float, float]]]
    if net == bill_amount:
        refs = [(f"Bill: {fmt_amount(bill_amount)}", bill_amount, GREEN, (1.6, 1.0))]
    else:
        refs = [
            (f"Before coupons, tax: {fmt_amount(net)}", net, RED, (1.6, 1.0)),
            (f"Bill: {fmt_amount(bill_amount)}", bill_amount, GREEN, (0.5, 0.7)),
        ]
    values = [float(v) for _, v in estimates] + [float(v) for _, v, _, _ in refs]
    ticks = _ticks(min(values), max(values), 4)
    lo, hi = min(ticks[0], min(values)), max(ticks[-1], max(values))
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    _font(pdf, SMALL_PT)
    tick_w = max(pdf.get_string_width(_thousands(t)) for t in ticks)
    left = x + tick_w + 2
    right = x + w - 1.5
    axis_h = 4.0
    bottom = y + h - axis_h
    days = [d for d, _ in estimates]
    first, last = min(days), max(days)
    span = max((last - first).days, 1)

    def px(d: date) -> float:
        return left + (right - left) * ((d - first).days / span)

    def py(v: float) -> float:
        return bottom - (bottom - body_y) * (v - lo) / (hi - lo)

    # the grid and the amounts on the left
    pdf.set_line_width(0.15)
    _font(pdf, SMALL_PT, GREY)
    for t in ticks:
        ty = py(t)
        pdf.set_draw_color(*GRID)
        pdf.line(left, ty, right, ty)
        _text_at(pdf, left - 1.2, ty + SMALL_PT * PT * 0.35, _thousands(t), "R")
    # the dates under the axis: about five
    step = max(1, -(-span // 5))
    for i in range(0, span + 1, step):
        d = date.fromordinal(first.toordinal() + i)
        _text_at(pdf, px(d), bottom + 1.2 + SMALL_PT * PT, f"{d:%m-%d}", "C")
    # the reference lines, dashed, then the estimate with its points
    pdf.set_line_width(0.35)
    for _, v, color, (dash, gap) in refs:
        pdf.set_draw_color(*color)
        pdf.set_dash_pattern(dash=dash, gap=gap)
        pdf.line(left, py(float(v)), right, py(float(v)))
    pdf.set_dash_pattern()
    pts = [(px(d), py(float(v))) for d, v in estimates]
    pdf.set_draw_color(*BLUE)
    pdf.set_line_width(0.4)
    pdf.polyline(pts)
    pdf.set_fill_color(*BLUE)
    r = 0.45
    for cx, cy in pts:
        pdf.rect(cx - r, cy - r, 2 * r, 2 * r, style="F")
    pdf.set_draw_color(*AXIS)
    pdf.set_line_width(0.25)
    pdf.line(left, body_y, left, bottom)
    pdf.line(left, bottom, right, bottom)
    # the legend, lower right inside the plot, on a white ground
    legend = [("Daily estimate (no tax, no coupons)", BLUE, None)] + [
        (label, color, dg) for label, _, color, dg in refs
    ]
    _font(pdf, SMALL_PT, INK)
    row_h = SMALL_PT * PT + 1.0
    lw = max(pdf.get_string_width(s) for s, _, _ in legend) + 8
    lx = right - lw - 1
    ly = bottom - row_h * len(legend) - 1.5
    pdf.set_fill_color(255, 255, 255)
    pdf.rect(lx - 0.5, ly - 0.5, lw + 1, row_h * len(legend) + 1, style="F")
    for i, (label, color, dg) in enumerate(legend):
        cy = ly + row_h * (i + 0.5)
        pdf.set_draw_color(*color)
        pdf.set_line_width(0.4 if dg is None else 0.35)
        if dg is not None:
            pdf.set_dash_pattern(dash=dg[0], gap=dg[1])
        pdf.line(lx, cy, lx + 6, cy)
        pdf.set_dash_pattern()
        _text_at(pdf, lx + 7.5, cy + SMALL_PT * PT * 0.35, label, "L")


# ---------------------------------------------------------------------------------------------


def _font(pdf, size: float, color=None) -> None:
    pdf.set_font("cjk", "", size)
    if color is not None:
        pdf.set_text_color(*color)


def _title(pdf, text: str, x: float, y: float, w: float) -> float:
    """The chart's title, centred on its box; returns where the plot starts."""
    _font(pdf, TITLE_PT, INK)
    _text_at(pdf, x + w / 2, y + TITLE_PT * PT, _fit(pdf, text, w), "C")
    return y + TITLE_PT * PT + 3.0


def _text_at(pdf, x: float, baseline: float, text: str, align: str, max_w: float = 0) -> None:
    """``text`` on ``baseline``, its left end, centre or right end at ``x`` (L, C, R)."""
    if max_w:
        text = _fit(pdf, text, max_w)
    tw = pdf.get_string_width(text)
    if align == "R":
        x -= tw
    elif align == "C":
        x -= tw / 2
    pdf.text(x, baseline, text)


def _fit(pdf, text: str, w: float) -> str:
    """``text``, cut with an ellipsis if it is wider than ``w`` (a chart's label: the table
    above prints the name whole)."""
    if pdf.get_string_width(text) <= w:
        return text
    while text and pdf.get_string_width(text + "…") > w:
        text = text[:-1]
    return text + "…"


def _ticks(lo: float, hi: float, n: int) -> list[float]:
    """About ``n`` round values spanning lo..hi (1, 2, 2.5 or 5 times a power of ten)."""
    lo, hi = min(lo, hi), max(lo, hi)
    span = hi - lo or abs(hi) or 1.0
    raw = span / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    out = []
    v = start
    while v < hi + step * 0.999:
        out.append(round(v, 10))
        v += step
    return out


def _thousands(v: float) -> str:
    text = f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:,.1f}"
    return "0" if text in ("-0", "-0.0") else text


def _short(text: str, n: int = 22) -> str:
    width = 0
    out = ""
    for ch in text:
        width += 2 if ord(ch) > 0x2E7F else 1
        if width > n:
            return out + "…"
        out += ch
    return out
