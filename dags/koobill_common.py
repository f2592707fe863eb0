"""The wiring the koobill DAGs share: time zone, start date, retries, assets, default_args.

Not a DAG file (``.airflowignore`` keeps the DAG processor from parsing it as one): the DAG
files import it (Airflow puts the DAGs folder on ``sys.path``). Parse-time settings only: plain
strings and numbers from the environment, no I/O; ``pipelines`` (pandas, DuckDB, ...) is
imported inside the functions that need it, when a task runs.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Asset

TIMEZONE = "Asia/Shanghai"

# The assets that chain the DAGs: koobill_daily -> estimates; koobill_month_close -> bills,
# which schedules koobill_exports -> exports.
ESTIMATES = Asset(name="koobill_estimates", uri="koobill://estimates")
BILLS = Asset(name="koobill_bills", uri="koobill://bills")
EXPORTS = Asset(name="koobill_exports", uri="koobill://exports")

# A month and a partner id, as the DAGs' params accept them (pipelines validates them again).
MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"
PARTNER_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

TAGS = ["koobill", "billing"]


def start_date() -> pendulum.DateTime:
    """The DAGs' start date: ``$KOOBILL_START_DATE`` (YYYY-MM-DD, Beijing), default 2026-01-01."""
    return pendulum.parse(os.environ.get("KOOBILL_START_DATE", "2026-01-01"), tz=TIMEZONE)


def end_date() -> pendulum.DateTime | None:
    """The last day the scheduled DAGs run on: ``$KOOBILL_END_DATE`` (YYYY-MM-DD, Beijing; the
    whole day counts), default none. Bounds a replay: with a start date too, unpausing
    ``koobill_daily`` catches up exactly the days between them (``make test-services``)."""
    raw = os.environ.get("KOOBILL_END_DATE", "").strip()
    if not raw:
        return None
    return pendulum.parse(raw, tz=TIMEZONE).end_of("day")


def retries(default: int = 3) -> int:
    """Retries of a task: ``$KOOBILL_RETRIES`` (0 in tests and the demo), else ``default``."""
    return int(os.environ.get("KOOBILL_RETRIES", str(default)))


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
    raw = os.environ.get("KOOBILL_EXPORT_BATCH_SIZE", "10")
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"KOOBILL_EXPORT_BATCH_SIZE must be a whole number >= 1, not {raw!r}")
    return size


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
