"""Pure calendar rules of the spec (section 1): Beijing days, bill months, cutoffs.

Timestamps are stored in UTC; every day and month boundary is computed in UTC+08:00
(Asia/Shanghai has no daylight saving).
"""

from __future__ import annotations

import datetime as dt

from pipelines.patterns import DATE_RE, MONTH_RE

BEIJING = dt.timezone(dt.timedelta(hours=8), name="Asia/Shanghai")
CUTOFF_DAY = 4  # the cutoff of month M is the 4th day of M+1
CLOSE_DAY = 5  # bills of M are generated on the 5th of M+1


class DateError(ValueError):
    """A date or month argument that is not a real calendar date or month."""


def parse_date(value: str | dt.date) -> dt.date:
    """Parse ``YYYY-MM-DD`` strictly (a real calendar date)."""
    if isinstance(value, dt.datetime):
        raise DateError(f"expected a date, got a datetime: {value!r}")
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str) or not DATE_RE.fullmatch(value):
        raise DateError(f"invalid date {value!r}: expected YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise DateError(f"invalid date {value!r}: no such calendar day") from None


def parse_month(value: str) -> str:
    """Validate ``YYYY-MM`` and return it."""
    if not isinstance(value, str) or not MONTH_RE.fullmatch(value):
        raise DateError(f"invalid month {value!r}: expected YYYY-MM")
    return value


def month_of(day: dt.date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def first_day(month: str) -> dt.date:
    parse_month(month)
    return dt.date(int(month[:4]), int(month[5:7]), 1)


def add_months(month: str, n: int) -> str:
    d = first_day(month)
    idx = d.year * 12 + (d.month - 1) + n
    return f"{idx // 12:04d}-{idx % 12 + 1:02d}"


def last_day(month: str) -> dt.date:
    return first_day(add_months(month, 1)) - dt.timedelta(days=1)


def cutoff(month: str) -> dt.date:
    """The cutoff of ``month``: the 4th day of the following month."""
    return first_day(add_months(month, 1)).replace(day=CUTOFF_DAY)


def close_date(month: str) -> dt.date:
    """The Beijing date on which the bill of ``month`` is generated (and counts as closed)."""
    return first_day(add_months(month, 1)).replace(day=CLOSE_DAY)


def bill_month(record_month: str, landing_date: dt.date) -> str:
    """The month a record is billed in: max(its own month, month of landing date - 4 days)."""
    landed = month_of(landing_date - dt.timedelta(days=CUTOFF_DAY))
    return max(record_month, landed)


def open_months(day: dt.date) -> list[str]:
    """Months whose estimate is refreshed as of ``day``: its month, and the previous
    month while ``day`` is on or before that month's cutoff. Oldest first."""
    current = month_of(day)
    previous = add_months(current, -1)
    return [previous, current] if day <= cutoff(previous) else [current]


def landing_window(month: str) -> tuple[dt.date, dt.date]:
    """First and last landing dates that can carry records billed in ``month``: from the day
    before the month starts (records may be dated up to 1 day after landing) to its cutoff."""
    return first_day(month) - dt.timedelta(days=1), cutoff(month)


def beijing_midnight(day: dt.date) -> dt.datetime:
    """The instant a Beijing date starts (China has kept UTC+8 without daylight saving since
    1991)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=BEIJING)


def beijing_date(ts: dt.datetime) -> dt.date:
    if ts.tzinfo is None:
        raise ValueError("naive datetime: an offset is required")
    return ts.astimezone(BEIJING).date()


def previous_beijing_day(logical_date: dt.datetime) -> dt.date:
    """The landing date a daily run ingests: the Beijing day before the run's logical date."""
    return beijing_date(logical_date) - dt.timedelta(days=1)


def month_to_close(logical_date: dt.datetime) -> str:
    """The month a monthly run closes: the Beijing month before the run's logical date."""
    return add_months(month_of(beijing_date(logical_date)), -1)


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def format_date_ranges(days: list[str]) -> str:
    """Collapse ``YYYY-MM-DD`` dates into readable runs: ``2025-02-01..2025-02-03, 2025-02-05``."""
    parsed = sorted({parse_date(d) for d in days})
    runs: list[tuple[dt.date, dt.date]] = []
    for d in parsed:
        if runs and d - runs[-1][1] == dt.timedelta(days=1):
            runs[-1] = (runs[-1][0], d)
        else:
            runs.append((d, d))
    return ", ".join(
        a.isoformat() if a == b else f"{a.isoformat()}..{b.isoformat()}" for a, b in runs
    )
