"""Server-side SVG charts (no script, no CDN): bars for months and products, a line for the
open month's estimate day by day. Amounts stay Decimal until they become pixel positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from markupsafe import Markup, escape

W, H = 560, 220
PAD_L, PAD_R, PAD_T, PAD_B = 96, 12, 12, 42


def _scale(values: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    lo = min([Decimal(0), *values])
    hi = max([Decimal(0), *values])
    if hi == lo:
        hi = lo + 1
    return lo, hi


def _y(v: Decimal, lo: Decimal, hi: Decimal) -> float:
    return float(PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B))


def _frame(title: str, body: list[str], lo: Decimal, hi: Decimal, fmt: Callable) -> Markup:
    zero = _y(Decimal(0), lo, hi)
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{PAD_L}" y1="{zero:.1f}" x2="{W - PAD_R}" y2="{zero:.1f}"/>',
        f'<text class="tick" x="{PAD_L - 4}" y="{PAD_T + 4}" text-anchor="end">'
        f"{escape(fmt(hi))}</text>",
    ]
    if lo < 0:
        parts.append(
            f'<text class="tick" x="{PAD_L - 4}" y="{H - PAD_B}" text-anchor="end">'
            f"{escape(fmt(lo))}</text>"
        )
    parts += body
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(title: str, items: Sequence[tuple[str, Decimal]], fmt: Callable[[Decimal], str]) -> Markup:
    """Vertical bars, one per (label, amount); negative amounts hang below the axis."""
    if not items:
        return Markup("")
    values = [Decimal(v or 0) for _, v in items]
    lo, hi = _scale(values)
    slot = (W - PAD_L - PAD_R) / len(items)
    bar_w = max(2.0, slot * 0.7)
    zero = _y(Decimal(0), lo, hi)
    body = []
    for i, ((label, _), v) in enumerate(zip(items, values, strict=True)):
        x = PAD_L + i * slot + (slot - bar_w) / 2
        y = _y(v, lo, hi)
        top, height = (y, zero - y) if v >= 0 else (zero, y - zero)
        short = label if len(label) <= 14 else label[:13] + "…"
        body.append(
            f'<rect class="bar{" neg" if v < 0 else ""}" x="{x:.1f}" y="{top:.1f}" '
            f'width="{bar_w:.1f}" height="{max(height, 0.5):.1f}">'
            f"<title>{escape(label)}: {escape(fmt(v))}</title></rect>"
            f'<text class="label" x="{x + bar_w / 2:.1f}" y="{H - PAD_B + 14}" '
            f'text-anchor="middle">{escape(short)}</text>'
        )
    return _frame(title, body, lo, hi, fmt)


def line(
    title: str, points: Sequence[tuple[str, Decimal]], fmt: Callable[[Decimal], str]
) -> Markup:
    """A line through (label, amount) points, labels under the first, middle and last."""
    if not points:
        return Markup("")
    values = [Decimal(v or 0) for _, v in points]
    lo, hi = _scale(values)
    n = len(points)
    step = (W - PAD_L - PAD_R) / max(n - 1, 1)
    xy = [(PAD_L + i * step, _y(v, lo, hi)) for i, v in enumerate(values)]
    body = [
        '<polyline class="line" fill="none" points="'
        + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        + '"/>'
    ]
    for (x, y), (label, _), v in zip(xy, points, values, strict=True):
        body.append(
            f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="3">'
            f"<title>{escape(label)}: {escape(fmt(v))}</title></circle>"
        )
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        body.append(
            f'<text class="label" x="{xy[i][0]:.1f}" y="{H - PAD_B + 14}" '
            f'text-anchor="{anchor}">{escape(points[i][0])}</text>'
        )
    return _frame(title, body, lo, hi, fmt)


def hbars(
    title: str, items: Sequence[tuple[str, Decimal]], fmt: Callable[[Decimal], str]
) -> Markup:
    """Horizontal bars with their labels and amounts: for many long names (products)."""
    if not items:
        return Markup("")
    label_w, value_w, row = 170, 110, 24
    height = PAD_T + row * len(items) + 4
    values = [Decimal(v or 0) for _, v in items]
    top = max([abs(v) for v in values] + [Decimal(1)])
    span = W - label_w - value_w - PAD_R
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {height}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for i, ((label, _), v) in enumerate(zip(items, values, strict=True)):
        y = PAD_T + i * row
        w = max(float(abs(v) / top) * span, 0.5)
        short = label if len(label) <= 20 else label[:19] + "…"
        parts.append(
            f'<text class="label" x="{label_w - 6}" y="{y + 15}" text-anchor="end">'
            f"{escape(short)}</text>"
            f'<rect class="bar{" neg" if v < 0 else ""}" x="{label_w}" y="{y + 4}" '
            f'width="{w:.1f}" height="{row - 8}"><title>{escape(label)}: {escape(fmt(v))}</title>'
            f'</rect><text class="tick" x="{label_w + w + 4:.1f}" y="{y + 15}">'
            f"{escape(fmt(v))}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
