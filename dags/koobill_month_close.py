"""koobill_month_close: close the previous month on the 5th, alert if not done by 12:00 Beijing.

Only wiring lives here: the work is ``pipelines.close`` (check, stage, validate with Great
Expectations, publish), imported inside the tasks so that parsing this file stays light.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os

import pendulum
from airflow.sdk import (
    Asset,
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    SyncCallback,
    dag,
    task,
)

TIMEZONE = "Asia/Shanghai"
BILLS = Asset(name="koobill_bills", uri="koobill://bills")

# The run of the 5th is triggered at 02:00 Beijing; its logical date is that trigger time, so
# logical date + 10 hours is 12:00 Beijing on the 5th, the time the bills are due (spec 1).
CLOSE_CRON = "0 2 5 * *"
DEADLINE_AFTER_LOGICAL_DATE = dt.timedelta(hours=10)

START_DATE = pendulum.parse(os.environ.get("KOOBILL_START_DATE", "2026-01-01"), tz=TIMEZONE)
RETRIES = int(os.environ.get("KOOBILL_RETRIES", "6"))

log = logging.getLogger(__name__)

DOC_MD = """
### koobill_month_close

On the **5th at 02:00 Asia/Shanghai** closes the previous Beijing month
(`calendar.month_to_close(logical_date)`; a manual run may set the `month` param instead).

1. `check_landing_dates`: every landing date from the 1st of the month (or the first date ever
   ingested, if later) through the cutoff (the 4th) must be ingested. Otherwise the task fails
   listing the missing dates and **retries with exponential backoff** (6 retries, about 10,
   20, 40 minutes and then hourly, plus Airflow's jitter: until about 07:00): the daily run of
   01:30 that ingests the cutoff date may still be running, or a late file may be re-landed.
2. `close`: `pipelines.close.close_month` stages the bills, validates them with the Great
   Expectations suite and publishes them (nothing half-made is published; a failing suite
   fails the task with its report). Closing a closed month changes nothing. Emits the asset
   `koobill://bills` with extra `{"month": "YYYY-MM"}`, which triggers `koobill_exports`.

**Deadline alert**: the bills are due by **12:00 Beijing on the 5th**. An Airflow deadline
alert (reference: the run's logical date, 02:00 Beijing, plus 10 hours) fires if the run has
not succeeded by then, whether it is still running, retrying or has failed; a run that succeeds
in time has its deadline pruned. The callback (`close_deadline_missed`, a `SyncCallback` run by
the executor) logs an error and appends a JSON line to
`<data-dir>/alerts/close_deadline_missed.jsonl`. A manual run is due 10 hours after its logical
date.

`catchup=False` on purpose: closing is a finance event. If the scheduler was down on the 5th,
the latest missed run still starts when it comes back; older months are closed deliberately
(`koobill close --month YYYY-MM` or a manual run with the `month` param).
"""


def close_deadline_missed(context: dict | None = None, **kwargs) -> None:
    """Deadline-alert callback: the month close had not succeeded by 12:00 Beijing.

    Runs in the executor (``SyncCallback``) with a small context: ``dag_run`` (as JSON) and
    ``deadline`` (``id``, ``deadline_time``). Logs an error and appends one JSON line to
    ``<data-dir>/alerts/close_deadline_missed.jsonl``.
    """
    from pipelines.calendar import month_to_close
    from pipelines.config import resolve_data_dir

    context = context or {}
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    logical_date = dag_run.get("logical_date")
    conf = dag_run.get("conf") or {}
    month = conf.get("month")
    if not month and logical_date:
        month = month_to_close(dt.datetime.fromisoformat(str(logical_date).replace("Z", "+00:00")))
    deadline_time = deadline.get("deadline_time")
    alert = {
        "alert": "close_deadline_missed",
        "dag_id": dag_run.get("dag_id"),
        "run_id": dag_run.get("dag_run_id") or dag_run.get("run_id"),
        "month": month,
        "logical_date": str(logical_date) if logical_date else None,
        "deadline_time": str(deadline_time) if deadline_time else None,
        "state": dag_run.get("state"),
        "raised_at": dt.datetime.now(dt.UTC).isoformat(),
        **{k: v for k, v in kwargs.items() if isinstance(v, (str, int, float, bool))},
    }
    log.error(
        "koobill: the bills of %s were not published by 12:00 Beijing (deadline %s, run %s)",
        month,
        alert["deadline_time"],
        alert["run_id"],
    )
    root = resolve_data_dir(None)
    if not (root / "landing").is_dir():  # never create folders outside a data dir
        log.error("koobill: %s is not a data dir; alert not written there: %s", root, alert)
        return
    alerts_dir = root / "alerts"
    alerts_dir.mkdir(exist_ok=True)
    with open(alerts_dir / "close_deadline_missed.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(alert, sort_keys=True) + "\n")


@dag(
    dag_id="koobill_month_close",
    schedule=CronTriggerTimetable(CLOSE_CRON, timezone=TIMEZONE),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "koobill",
        "retries": RETRIES,
        "retry_delay": dt.timedelta(minutes=10),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(hours=1),
        "execution_timeout": dt.timedelta(hours=2),
    },
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Month YYYY-MM to close (default: the month before the logical date)",
        ),
    },
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=DEADLINE_AFTER_LOGICAL_DATE,
        callback=SyncCallback(close_deadline_missed),
        name="bills_published_by_noon_beijing",
    ),
    tags=["koobill", "billing", "close"],
    doc_md=DOC_MD,
)
def koobill_month_close():
    @task
    def resolve_month(*, logical_date=None, params=None) -> str:
        """The month this run closes: the `month` param, else the Beijing month before the run."""
        from pipelines.calendar import month_to_close, parse_month

        if params and params.get("month"):
            return parse_month(params["month"])
        if logical_date is None:
            raise ValueError("koobill_month_close needs a logical date or the month param")
        return month_to_close(logical_date)

    @task
    def check_landing_dates(month: str) -> str:
        """Fail (and retry) while a landing date through the cutoff has not been ingested."""
        from pipelines.calendar import cutoff, format_date_ranges
        from pipelines.close import missing_dates
        from pipelines.config import require_data_dir

        missing = missing_dates(require_data_dir(None), month)
        if missing:
            raise RuntimeError(
                f"cannot close {month}: {len(missing)} landing date(s) through the cutoff "
                f"{cutoff(month).isoformat()} not ingested yet: {format_date_ranges(missing)}"
            )
        print(f"koobill: every landing date of {month} through {cutoff(month)} is ingested")
        return month

    # A failing quality suite is deterministic: retry little (a retry covers e.g. a busy
    # warehouse file), so the failure reaches people well before the noon deadline.
    @task(outlets=[BILLS], retries=min(RETRIES, 2))
    def close(month: str, *, outlet_events=None) -> dict:
        """Stage, validate (Great Expectations) and publish the bills of the month."""
        from pipelines.close import close_month, print_close_result
        from pipelines.config import require_data_dir

        result = close_month(require_data_dir(None), month, echo=print)
        print_close_result(result, echo=print)
        extra = {"month": month, "version": result.version, "changed": result.changed}
        outlet_events[BILLS].extra = extra
        return {**extra, "bills": len(result.bills)}

    close(check_landing_dates(resolve_month()))


koobill_month_close()
