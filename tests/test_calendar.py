"""Table-driven tests of the pure calendar rules (spec section 1) at month, year and leap edges."""

from __future__ import annotations

import datetime as dt

import pytest

from pipelines import calendar as cal

D = dt.date
UTC = dt.UTC
BJ = cal.BEIJING


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def bj(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=BJ)


@pytest.mark.parametrize(
    ("record_month", "landing", "expected"),
    [
        # the cutoff of M is the 4th of M+1: landed on the 4th -> still M, on the 5th -> M+1
        ("2025-01", D(2025, 2, 4), "2025-01"),
        ("2025-01", D(2025, 2, 5), "2025-02"),
        ("2025-01", D(2025, 1, 31), "2025-01"),
        # landed before its own month (at most 1 day early): its own month
        ("2025-02", D(2025, 1, 31), "2025-02"),
        # year edge
        ("2024-12", D(2025, 1, 4), "2024-12"),
        ("2024-12", D(2025, 1, 5), "2025-01"),
        ("2025-01", D(2024, 12, 31), "2025-01"),
        # leap year: February 2024 has 29 days, the cutoff is still March 4th
        ("2024-02", D(2024, 2, 29), "2024-02"),
        ("2024-02", D(2024, 3, 4), "2024-02"),
        ("2024-02", D(2024, 3, 5), "2024-03"),
        # very late: billed in the earliest month whose cutoff is on or after the landing date
        ("2024-11", D(2025, 1, 4), "2024-12"),
        ("2024-11", D(2025, 1, 5), "2025-01"),
        ("2023-02", D(2024, 3, 1), "2024-02"),
    ],
)
def test_bill_month(record_month: str, landing: dt.date, expected: str) -> None:
    assert cal.bill_month(record_month, landing) == expected


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (D(2025, 2, 1), ["2025-01", "2025-02"]),
        (D(2025, 2, 4), ["2025-01", "2025-02"]),
        (D(2025, 2, 5), ["2025-02"]),
        (D(2025, 1, 31), ["2025-01"]),
        (D(2025, 1, 4), ["2024-12", "2025-01"]),
        (D(2025, 1, 5), ["2025-01"]),
        (D(2024, 2, 29), ["2024-02"]),
        (D(2024, 3, 4), ["2024-02", "2024-03"]),
        (D(2024, 3, 5), ["2024-03"]),
    ],
)
def test_open_months(day: dt.date, expected: list[str]) -> None:
    assert cal.open_months(day) == expected


@pytest.mark.parametrize(
    ("month", "cutoff", "close_date"),
    [
        ("2025-01", D(2025, 2, 4), D(2025, 2, 5)),
        ("2024-02", D(2024, 3, 4), D(2024, 3, 5)),
        ("2025-02", D(2025, 3, 4), D(2025, 3, 5)),
        ("2024-12", D(2025, 1, 4), D(2025, 1, 5)),
        ("2025-11", D(2025, 12, 4), D(2025, 12, 5)),
    ],
)
def test_cutoff_and_close_date(month: str, cutoff: dt.date, close_date: dt.date) -> None:
    assert cal.cutoff(month) == cutoff
    assert cal.close_date(month) == close_date


@pytest.mark.parametrize(
    ("logical_date", "expected"),
    [
        # the daily run fires at 01:30 Beijing = 17:30 UTC the day before: UTC and UTC+8
        # disagree on the date, and the Beijing one wins
        (utc(2025, 2, 4, 17, 30), D(2025, 2, 4)),
        (bj(2025, 2, 5, 1, 30), D(2025, 2, 4)),
        # just either side of Beijing midnight
        (utc(2025, 2, 4, 15, 59, 59), D(2025, 2, 3)),
        (utc(2025, 2, 4, 16, 0), D(2025, 2, 4)),
        # year edge: 2025-01-01 01:30 Beijing ingests New Year's Eve
        (utc(2024, 12, 31, 17, 30), D(2024, 12, 31)),
        (utc(2024, 12, 31, 12, 0), D(2024, 12, 30)),
        # leap day: 2024-03-01 01:30 Beijing ingests Feb 29th; 2024-02-29 ingests the 28th
        (utc(2024, 2, 29, 17, 30), D(2024, 2, 29)),
        (utc(2024, 2, 28, 17, 30), D(2024, 2, 28)),
        (utc(2023, 2, 28, 17, 30), D(2023, 2, 28)),
        # month edge
        (utc(2025, 4, 30, 17, 30), D(2025, 4, 30)),
        # other offsets are converted, not read literally
        (
            dt.datetime(2025, 2, 4, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            D(2025, 2, 4),
        ),
    ],
)
def test_previous_beijing_day(logical_date: dt.datetime, expected: dt.date) -> None:
    assert cal.previous_beijing_day(logical_date) == expected


def test_previous_beijing_day_accepts_pendulum() -> None:
    pendulum = pytest.importorskip("pendulum")
    run = pendulum.datetime(2025, 3, 1, 1, 30, tz="Asia/Shanghai")
    assert cal.previous_beijing_day(run) == D(2025, 2, 28)
    assert cal.previous_beijing_day(run.in_timezone("UTC")) == D(2025, 2, 28)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        cal.previous_beijing_day(dt.datetime(2025, 2, 5, 1, 30))
    with pytest.raises(ValueError, match="naive"):
        cal.month_to_close(dt.datetime(2025, 2, 5, 2, 0))


@pytest.mark.parametrize(
    ("logical_date", "expected"),
    [
        # the close runs at 02:00 Beijing on the 5th = 18:00 UTC on the 4th
        (utc(2025, 2, 4, 18, 0), "2025-01"),
        (bj(2025, 2, 5, 2, 0), "2025-01"),
        # year edge: in UTC it is still December, in Beijing already January
        (utc(2025, 1, 4, 18, 0), "2024-12"),
        (utc(2024, 12, 31, 16, 0), "2024-12"),
        (utc(2024, 12, 31, 15, 59), "2024-11"),
        # leap year
        (utc(2024, 3, 4, 18, 0), "2024-02"),
        (utc(2024, 2, 29, 16, 0), "2024-02"),
        (utc(2024, 2, 29, 15, 59), "2024-01"),
    ],
)
def test_month_to_close(logical_date: dt.datetime, expected: str) -> None:
    assert cal.month_to_close(logical_date) == expected


@pytest.mark.parametrize(
    ("month", "first", "last"),
    [
        ("2025-01", D(2024, 12, 31), D(2025, 2, 4)),
        ("2024-03", D(2024, 2, 29), D(2024, 4, 4)),
        ("2023-03", D(2023, 2, 28), D(2023, 4, 4)),
        ("2024-12", D(2024, 11, 30), D(2025, 1, 4)),
        ("2024-02", D(2024, 1, 31), D(2024, 3, 4)),
    ],
)
def test_landing_window(month: str, first: dt.date, last: dt.date) -> None:
    assert cal.landing_window(month) == (first, last)


@pytest.mark.parametrize(
    ("month", "n", "expected"),
    [
        ("2024-12", 1, "2025-01"),
        ("2025-01", -1, "2024-12"),
        ("2024-02", 12, "2025-02"),
        ("2025-03", -14, "2024-01"),
        ("2024-06", 0, "2024-06"),
    ],
)
def test_add_months(month: str, n: int, expected: str) -> None:
    assert cal.add_months(month, n) == expected


@pytest.mark.parametrize(
    ("month", "first", "last"),
    [
        ("2024-02", D(2024, 2, 1), D(2024, 2, 29)),
        ("2023-02", D(2023, 2, 1), D(2023, 2, 28)),
        ("2000-02", D(2000, 2, 1), D(2000, 2, 29)),
        ("1900-02", D(1900, 2, 1), D(1900, 2, 28)),
        ("2024-12", D(2024, 12, 1), D(2024, 12, 31)),
    ],
)
def test_first_and_last_day(month: str, first: dt.date, last: dt.date) -> None:
    assert cal.first_day(month) == first
    assert cal.last_day(month) == last


def test_date_range() -> None:
    assert cal.date_range(D(2024, 2, 27), D(2024, 3, 1)) == [
        D(2024, 2, 27),
        D(2024, 2, 28),
        D(2024, 2, 29),
        D(2024, 3, 1),
    ]
    assert cal.date_range(D(2024, 12, 31), D(2025, 1, 1)) == [D(2024, 12, 31), D(2025, 1, 1)]
    assert cal.date_range(D(2025, 1, 1), D(2025, 1, 1)) == [D(2025, 1, 1)]
    assert cal.date_range(D(2025, 1, 2), D(2025, 1, 1)) == []


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (utc(2024, 12, 31, 16, 0), D(2025, 1, 1)),
        (utc(2024, 12, 31, 15, 59, 59), D(2024, 12, 31)),
        (utc(2024, 2, 28, 16, 0), D(2024, 2, 29)),
    ],
)
def test_beijing_date(ts: dt.datetime, expected: dt.date) -> None:
    assert cal.beijing_date(ts) == expected


@pytest.mark.parametrize("bad", ["2025-13", "2025-00", "2025-1", "202501", "", "2025-01-01"])
def test_parse_month_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        cal.parse_month(bad)


@pytest.mark.parametrize("bad", ["2025-02-30", "2025-2-1", "20250201", "2023-02-29"])
def test_parse_date_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        cal.parse_date(bad)


def test_parse_date_refuses_datetime() -> None:
    with pytest.raises(ValueError):
        cal.parse_date(dt.datetime(2025, 1, 1, 0, 0))
    assert cal.parse_date("2024-02-29") == D(2024, 2, 29)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ([], ""),
        (["2025-02-05"], "2025-02-05"),
        (
            ["2025-02-01", "2025-02-02", "2025-02-03", "2025-02-05"],
            "2025-02-01..2025-02-03, 2025-02-05",
        ),
        (["2024-02-28", "2024-02-29", "2024-03-01"], "2024-02-28..2024-03-01"),
        (["2025-01-01", "2024-12-31", "2025-01-01"], "2024-12-31..2025-01-01"),
        (["2023-02-28", "2023-03-01"], "2023-02-28..2023-03-01"),
    ],
)
def test_format_date_ranges(days: list[str], expected: str) -> None:
    assert cal.format_date_ranges(days) == expected
