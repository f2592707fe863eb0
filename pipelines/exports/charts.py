"""The invoice's charts, as images (PIL): where the month's spend went, and the daily estimate
against the bill. A chart is drawn only when it says something a table does not (two or more
products; two or more estimates). Floats are used for drawing only; every printed figure comes
from the Decimals."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pipelines.exports.common import FONT_REGULAR, fmt_amount

BLUE, RED, GREEN = "#3A6EA5", "#C0504D", "#4F8A3C"


def _figure(w: float, h: float):
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties

    fig = Figure(figsize=(w, h), dpi=150, layout="constrained")
    ax = fig.subplots()
    return fig, ax, FontProperties(fname=str(FONT_REGULAR), size=8)


def _thousands(ax, axis: str) -> None:
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _pos: f"{v:,.0f}")
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_formatter(fmt)


def _image(fig):
    """The figure drawn, as a PIL image: the pixels ``savefig(format="png")`` would encode,
    without encoding a PNG that the PDF writer would only decode again (it stores the pixels
    deflated, not the PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    return Image.frombuffer(
        "RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1
    )


def products_chart(groups: list[dict[str, Any]], currency: str, w: float, h: float) -> Any:
    """Top products by consumption (all regions together), a horizontal bar chart."""
    top = [g for g in groups if g["subtotal"] > 0][:8]
    if len(top) < 2:
        return None
    labels = [_short(g["product_name"] or g["product_id"]) for g in top][::-1]
    values = [g["subtotal"] for g in top][::-1]
    fig, ax, font = _figure(w, h)
    bars = ax.barh(range(len(values)), [float(v) for v in values], color=BLUE)
    ax.set_yticks(range(len(values)), labels, fontproperties=font, fontsize=7)
    for bar, v in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            " " + fmt_amount(v),
            va="center",
            ha="left",
            fontsize=6.5,
            fontproperties=font,
        )
    ax.set_title(f"Top products by consumption ({currency})", fontproperties=font, fontsize=9)
    ax.margins(x=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(axis="x", labelsize=6.5)
    _thousands(ax, "x")
    ax.xaxis.set_major_locator(_locator(3))
    return _image(fig)


def estimates_chart(
    estimates: list[tuple[Any, Decimal]],
    net: Decimal,
    bill_amount: Decimal,
    month: str,
    currency: str,
    w: float,
    h: float,
) -> Any:
    """The month's daily estimate against the bill; one reference line when the bill equals
    the estimate's final basis (no tax, no coupons), else two."""
    if len(estimates) < 2:
        return None
    fig, ax, font = _figure(w, h)
    days = [d for d, _ in estimates]
    ax.plot(
        days,
        [float(v) for _, v in estimates],
        marker="o",
        markersize=2.5,
        color=BLUE,
        label="Daily estimate (no tax, no coupons)",
    )
    if net == bill_amount:
        ax.axhline(
            float(bill_amount),
            color=GREEN,
            linestyle="--",
            label=f"Bill: {fmt_amount(bill_amount)}",
        )
    else:
        ax.axhline(
            float(net), color=RED, linestyle="--", label=f"Before coupons, tax: {fmt_amount(net)}"
        )
        ax.axhline(
            float(bill_amount), color=GREEN, linestyle=":", label=f"Bill: {fmt_amount(bill_amount)}"
        )
    ax.set_title(
        f"Daily estimate of {month} against the bill ({currency})", fontproperties=font, fontsize=9
    )
    ax.legend(prop=font, fontsize=6.5, loc="lower right", frameon=False)
    ax.tick_params(labelsize=6.5)
    _thousands(ax, "y")
    import matplotlib.dates as mdates

    span = max((max(days) - min(days)).days, 1)
    ax.xaxis.set_major_locator(mdates.DayLocator(interval=max(1, -(-span // 5))))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.spines[["top", "right"]].set_visible(False)
    return _image(fig)


def _locator(n: int):
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(nbins=n, min_n_ticks=2)


def _short(text: str, n: int = 22) -> str:
    width = 0
    out = ""
    for ch in text:
        width += 2 if ord(ch) > 0x2E7F else 1
        if width > n:
            return out + "…"
        out += ch
    return out
