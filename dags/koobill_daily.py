"""koobill_daily: wait for yesterday's landing date (Beijing time), ingest it, refresh the
estimates.

Only wiring lives here: the work is ``pipelines.ingest.ingest_date``, imported inside the tasks
so that parsing this file never loads pandas, DuckDB, pyarrow or Great Expectations.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import CronTriggerTimetable, PokeReturnValue, dag, task
from koobill_common import (
    ESTIMATES,
    TAGS,
    TIMEZONE,
    default_args,
    end_date,
    env_setting,
    positive,
    start_date,
)

# Parse-time settings (plain strings, no I/O). Run-time settings such as KOOBILL_DATA_DIR are
# read inside the task.
# How long the run waits for its landing date to arrive, and how often it looks.
LANDING_WAIT = dt.timedelta(
    hours=env_setting(
        "KOOBILL_LANDING_WAIT_H", 6.0, positive, "a number of hours, more than 0", "6"
    )
)
LANDING_POKE = dt.timedelta(
    seconds=env_setting(
        "KOOBILL_LANDING_POKE_S", 300.0, positive, "a number of seconds, more than 0", "300"
    )
)

DOC_MD = """
### koobill_daily

Every day at **01:30 Asia/Shanghai** ingests the landing date of the previous Beijing day
(every feed under `<data-dir>/landing/<feed>/<YYYY-MM-DD>/`) and refreshes the estimates of
every month open on that date (`estimates` table in `warehouse.duckdb`).

* Landing date = `calendar.previous_beijing_day(logical_date)`: the run of 2025-02-05 01:30
  Beijing ingests 2025-02-04, which is also the cutoff of January: the month close (02:00 on
  the 5th) finds it ingested.
* `wait_for_landing_date` (a sensor in reschedule mode: it frees its worker slot between
  looks) waits until the date is *present*, i.e. at least one feed has a folder
  `<data-dir>/landing/<feed>/<date>/`: the upstream export may arrive after 01:30. It looks
  every `$KOOBILL_LANDING_POKE_S` seconds (default 300) for up to `$KOOBILL_LANDING_WAIT_H`
  hours (default 6, so until about 07:30 Beijing), then **fails** (sensor timeout, no retry):
  the run is red, `ingest` does not run, and nothing is recorded for the date; the month
  close then lists it as missing. When the files land late, clear the run; a date that truly
  had no data is recorded by hand with `koobill ingest --date D --allow-empty` (the failed run
  can then be marked success: clearing it would wait for a folder again).
* `ingest` runs `pipelines.ingest.ingest_date` on the date. A misconfigured data dir (no
  `landing/`) fails both tasks at once, with the path.
* Idempotent: rerunning (clearing) a run replaces the landing date's partition, so the
  warehouse ends up the same. `catchup=True` backfills missed days in order
  (`max_active_runs=1`: one DuckDB writer at a time).
* Emits the asset `koobill://estimates` (extra: `landing_date`).
* Data dir: `$KOOBILL_DATA_DIR` (default `./data`), read when the task runs.
"""


@dag(
    dag_id="koobill_daily",
    schedule=CronTriggerTimetable("30 1 * * *", timezone=TIMEZONE),
    start_date=start_date(),
    end_date=end_date(),
    catchup=True,
    max_active_runs=1,
    default_args=default_args(),
    tags=[*TAGS, "ingest"],
    doc_md=DOC_MD,
)
def koobill_daily():
    @task.sensor(poke_interval=LANDING_POKE, timeout=LANDING_WAIT, mode="reschedule")
    def wait_for_landing_date(*, logical_date=None) -> PokeReturnValue:
        """Done when the run's landing date is present (a feed has a folder for it)."""
        from pipelines.calendar import previous_beijing_day
        from pipelines.config import require_data_dir
        from pipelines.ingest import landing_date_present

        if logical_date is None:
            raise ValueError("koobill_daily needs a logical date: trigger it with one")
        day = previous_beijing_day(logical_date).isoformat()
        data_dir = require_data_dir(None)  # a wrong data dir fails now, not after hours
        if landing_date_present(data_dir, day):
            print(f"koobill: landing date {day} is present under {data_dir / 'landing'}")
            return PokeReturnValue(is_done=True, xcom_value=day)
        hours = LANDING_WAIT.total_seconds() / 3600
        print(
            f"koobill: landing date {day} is not present yet: no feed has a folder "
            f"{data_dir / 'landing'}/<feed>/{day}/. Looking again in "
            f"{LANDING_POKE.total_seconds():.0f} s; the run fails once it has waited "
            f"{hours:g} h ($KOOBILL_LANDING_WAIT_H)."
        )
        return PokeReturnValue(is_done=False)

    @task(outlets=[ESTIMATES])
    def ingest(day: str, *, outlet_events=None) -> dict:
        """Ingest the landing date and refresh the open months' estimates."""
        from pipelines.config import require_data_dir
        from pipelines.ingest import ingest_date, print_ingest_result

        data_dir = require_data_dir(None)
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

    ingest(wait_for_landing_date())


koobill_daily()
