"""koobill_daily: ingest yesterday's landing date (Beijing time) and refresh the estimates.

Only wiring lives here: the work is ``pipelines.ingest.ingest_date``, imported inside the task
so that parsing this file never loads pandas, DuckDB, pyarrow or Great Expectations.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable, dag, task

TIMEZONE = "Asia/Shanghai"
ESTIMATES = Asset(name="koobill_estimates", uri="koobill://estimates")

# Parse-time settings (plain strings, no I/O). Run-time settings such as KOOBILL_DATA_DIR are
# read inside the task.
START_DATE = pendulum.parse(os.environ.get("KOOBILL_START_DATE", "2026-01-01"), tz=TIMEZONE)
RETRIES = int(os.environ.get("KOOBILL_RETRIES", "3"))

DOC_MD = """
### koobill_daily

Every day at **01:30 Asia/Shanghai** ingests the landing date of the previous Beijing day
(every feed under `<data-dir>/landing/<feed>/<YYYY-MM-DD>/`) and refreshes the estimates of
every month open on that date (`estimates` table in `warehouse.duckdb`).

* Landing date = `calendar.previous_beijing_day(logical_date)`: the run of 2025-02-05 01:30
  Beijing ingests 2025-02-04, which is also the cutoff of January: the month close (02:00 on
  the 5th) finds it ingested.
* Idempotent: rerunning (clearing) a run replaces the landing date's partition, so the
  warehouse ends up the same. `catchup=True` backfills missed days in order
  (`max_active_runs=1`: one DuckDB writer at a time).
* Emits the asset `koobill://estimates` (extra: `landing_date`).
* Data dir: `$KOOBILL_DATA_DIR` (default `./data`), read when the task runs.
"""


@dag(
    dag_id="koobill_daily",
    schedule=CronTriggerTimetable("30 1 * * *", timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=True,
    max_active_runs=1,
    default_args={
        "owner": "koobill",
        "retries": RETRIES,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
    },
    tags=["koobill", "billing", "ingest"],
    doc_md=DOC_MD,
)
def koobill_daily():
    @task(outlets=[ESTIMATES])
    def ingest(*, logical_date=None, outlet_events=None) -> dict:
        """Ingest the previous Beijing day of the run and refresh the open months' estimates."""
        from pipelines.calendar import previous_beijing_day
        from pipelines.config import resolve_data_dir
        from pipelines.ingest import ingest_date, print_ingest_result

        if logical_date is None:
            raise ValueError("koobill_daily needs a logical date: trigger it with one")
        day = previous_beijing_day(logical_date).isoformat()
        data_dir = resolve_data_dir(None)
        print(f"koobill: ingesting landing date {day} of {data_dir}")
        result = ingest_date(data_dir, day, progress=print)
        print_ingest_result(result, echo=print)
        outlet_events[ESTIMATES].extra = {"landing_date": day}
        return {
            "landing_date": day,
            "rows_read": sum(st.total("rows_read") for st in result.feeds.values()),
            "quarantined": sum(st.total("quarantined") for st in result.feeds.values()),
            "estimates": len(result.estimates),
        }

    ingest()


koobill_daily()
