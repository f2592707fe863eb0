"""English and Simplified Chinese: the gettext catalogs (loaded from the .po files at start, no
build step) and money and date formats per locale, with Babel."""

from __future__ import annotations

import datetime as dt
import functools
import io
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal
from babel.support import NullTranslations, Translations

LOCALES = {"en": "en_US", "zh": "zh_CN"}
DEFAULT = "en"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
TZ_LABEL = {"en": "Beijing time (UTC+08:00)", "zh": "北京时间 (UTC+08:00)"}


@functools.cache
def translations(lang: str) -> NullTranslations:
    po = LOCALE_DIR / LOCALES.get(lang, "") / "LC_MESSAGES" / "messages.po"
    if lang == DEFAULT or not po.exists():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=LOCALES[lang])
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(fp=buf)


def negotiate(accept_language: str | None) -> str:
    """The best of our languages for an Accept-Language header (English if none fits)."""
    prefs: list[tuple[float, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag:
            prefs.append((-q, i, tag.strip().lower()))  # type: ignore[arg-type]
    for _q, _i, tag in sorted(prefs):
        base = tag.split("-")[0]
        if base in LOCALES:
            return base
    return DEFAULT


class Formatter:
    """Labels, money and dates in one language; handed to every template as ``t``."""

    def __init__(self, lang: str):
        self.lang = lang if lang in LOCALES else DEFAULT
        self.locale = Locale.parse(LOCALES[self.lang])
        self._t = translations(self.lang)
        self.tz_label = TZ_LABEL[self.lang]

    def __call__(self, text: str, **kw) -> str:
        out = self._t.gettext(text)
        return out % kw if kw else out

    def money(self, value, currency: str | None) -> str:
        """Thousands separators, 2 places, the currency (Decimal in, never float)."""
        amount = value if isinstance(value, Decimal) else Decimal(str(value or 0))
        # half away from zero, as the bills round (Babel alone would round half to even)
        amount = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        if not currency:
            return format_decimal(amount, format="#,##0.00", locale=self.locale)
        return format_currency(
            amount, currency, format="¤#,##0.00", locale=self.locale, currency_digits=False
        )

    def number(self, value) -> str:
        if value is None:
            return ""
        return format_decimal(value, locale=self.locale)

    def date(self, value: dt.date | None) -> str:
        return format_date(value, format="medium", locale=self.locale) if value else ""

    def datetime(self, value: dt.datetime | None) -> str:
        """A timestamp in Beijing time, with the zone shown."""
        if value is None:
            return ""
        from pipelines.web.data import beijing

        local = beijing(value)
        return (
            format_datetime(local.replace(tzinfo=None), format="medium", locale=self.locale)
            + " (UTC+08:00)"
        )

    def month(self, month: str) -> str:
        year, mon = month.split("-")
        if self.lang == "zh":
            return f"{year}年{int(mon)}月"
        return format_date(dt.date(int(year), int(mon), 1), format="MMM yyyy", locale=self.locale)
