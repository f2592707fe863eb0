"""The wiring the koobill DAGs share: time zone, start date, retries, assets, default_args.

Not a DAG file (``.airflowignore`` keeps the DAG processor from parsing it as one): the DAG
files import it (Airflow puts the DAGs folder on ``sys.path``). Parse-time settings only: plain
strings and numbers from the environment, no I/O; ``pipelines`` (pandas, DuckDB, ...) is
imported inside the functions that need it, when a task runs.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import TypeVar

import pendulum
from airflow.sdk import Asset

TIMEZONE = "Asia/Shanghai"
T = TypeVar("T")

# The assets that chain the DAGs: koobill_daily -> estimates; koobill_month_close -> bills,
# which schedules koobill_exports -> exports.
ESTIMATES = Asset(name="koobill_estimates", uri="koobill://estimates")
BILLS = Asset(name="koobill_bills", uri="koobill://bills")
EXPORTS = Asset(name="koobill_exports", uri="koobill://exports")

# A month and a partner id, as the DAGs' params accept them (pipelines validates them again).
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
PARTNER_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

TAGS = ["koobill", "billing"]


def env_setting(name: str, default: T, parse: Callable[[str], T], expected: str, example: str) -> T:
    """The parse-time setting ``$name`` read with ``parse`` (``default`` when unset or blank).

    A value ``parse`` rejects (it raises ValueError) fails the DAG file's import with a message
    naming the variable and the form expected, e.g. ``KOOBILL_RETRIES='three' is not a whole
    number, 0 or more (e.g. 3); fix or unset it``."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse(raw)
    except (ValueError, TypeError, OverflowError):
        raise ValueError(
            f"{name}={raw!r} is not {expected} (e.g. {example}); fix or unset it"
        ) from None


def _date(raw: str) -> pendulum.DateTime:
    """A date YYYY-MM-DD as midnight in Beijing."""
    day = dt.datetime.strptime(raw, "%Y-%m-%d") if len(raw) == 10 else None
    if day is None:
        raise ValueError(raw)
    return pendulum.datetime(day.year, day.month, day.day, tz=TIMEZONE)


def whole(minimum: int) -> Callable[[str], int]:
    """A parser of whole numbers >= ``minimum``."""

    def parse(raw: str) -> int:
        n = int(raw)
        if n < minimum:
            raise ValueError(raw)
        return n

    return parse


def positive(raw: str) -> float:
    """A finite number > 0."""
    x = float(raw)
    if not (0 < x < float("inf")):
        raise ValueError(raw)
    return x


def start_date() -> pendulum.DateTime:
    """The DAGs' start date: ``$KOOBILL_START_DATE`` (YYYY-MM-DD, Beijing), default 2026-01-01."""
    return env_setting(
        "KOOBILL_START_DATE",
        pendulum.datetime(2026, 1, 1, tz=TIMEZONE),
        _date,
        "a date YYYY-MM-DD",
        "2026-01-01",
    )


def end_date() -> pendulum.DateTime | None:
    """The last day the scheduled DAGs run on: ``$KOOBILL_END_DATE`` (YYYY-MM-DD, Beijing; the
    whole day counts), default none. Bounds a replay: with a start date too, unpausing
    ``koobill_daily`` catches up exactly the days between them (``make test-services``)."""
    day = env_setting("KOOBILL_END_DATE", None, _date, "a date YYYY-MM-DD", "2026-01-31")
    return None if day is None else day.end_of("day")


def retries(default: int = 3) -> int:
    """Retries of a task: ``$KOOBILL_RETRIES`` (0 in tests and the demo), else ``default``."""
    return env_setting("KOOBILL_RETRIES", default, whole(0), "a whole number, 0 or more", "3")


def default_args(
    *,
    retries_default: int = 3,
    retry_delay: dt.timedelta = dt.timedelta(minutes=5),
    max_retry_delay: dt.timedelta = dt.timedelta(minutes=30),
) -> dict:
    """The ``default_args`` of every koobill DAG: exponential backoff, a 2-hour ceiling."""
    return {
        "owner": "koobill",
        "retries": retries(retries_default),
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": dt.timedelta(hours=2),
    }


def export_batch_size() -> int:
    """Partners per mapped export task: ``$KOOBILL_EXPORT_BATCH_SIZE`` (default 10)."""
    return env_setting("KOOBILL_EXPORT_BATCH_SIZE", 10, whole(1), "a whole number, 1 or more", "10")


def batched(items: list[str], size: int) -> list[list[str]]:
    """``items`` in consecutive batches of at most ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, not {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


def partners_with_closed_bills(data_dir, month: str) -> list[str]:
    """The partners whose current closed bill of ``month`` is published, sorted.

    The same set ``export_month(data_dir, month)`` exports when no partner is given. Reads the
    published warehouse (read-only; no writer lock)."""
    from pipelines.calendar import parse_month
    from pipelines.warehouse import open_warehouse

    month = parse_month(month)
    con = open_warehouse(data_dir, read_only=True)
    try:
        rows = con.execute(
            "select distinct partner_id from bills where bill_month = ? and status = 'closed'"
            " order by partner_id",
            [month],
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def partner_batches(data_dir, month: str, size: int | None = None) -> list[list[str]]:
    """A month's partners with a closed bill, in batches of ``size`` (``export_batch_size()``)."""
    return batched(partners_with_closed_bills(data_dir, month), size or export_batch_size())
