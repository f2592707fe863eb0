"""koobill_month_close: close the previous month on the 5th, alert if not done by 12:00 Beijing.

Only wiring lives here: the work is ``pipelines.close`` (check, stage, validate with Great
Expectations, publish), imported inside the tasks so that parsing this file stays light.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

from airflow.sdk import (
    CronTriggerTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    SyncCallback,
    dag,
    task,
)
from koobill_common import (
    BILLS,
    MONTH_PATTERN,
    TAGS,
    TIMEZONE,
    default_args,
    end_date,
    retries,
    start_date,
)

# The run of the 5th is triggered at 02:00 Beijing; its logical date is that trigger time, so
# logical date + 10 hours is 12:00 Beijing on the 5th, the time the bills are due (spec 1).
CLOSE_CRON = "0 2 5 * *"
DEADLINE_AFTER_LOGICAL_DATE = dt.timedelta(hours=10)

RETRIES = retries(6)

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
date. A run that is not a scheduled one and was *made* after its deadline (a manual close of
an old month, a backfill, the demo's replay of a past month) was never due at that time: the
callback logs that at info level and raises no alert. A scheduled run always alerts, even one
made late because the scheduler was down at 02:00.

`catchup=False` on purpose: closing is a finance event. If the scheduler was down on the 5th,
the latest missed run still starts when it comes back; older months are closed deliberately
(`koobill close --month YYYY-MM` or a manual run with the `month` param).
"""


def _instant(value) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def made_after_its_deadline(dag_run: dict, deadline_time) -> bool:
    """True for a run that is not a scheduled one and was made after its own deadline.

    A run is made when it is queued (``queued_at``; a manual run, a backfill's runs), else at
    its ``run_after`` (``dag.test()`` makes its runs running, at ``run_after`` = now). Such a
    run replays a past month: it was never due at that time, so a missed deadline says
    nothing. A scheduled run is never excused."""
    if dag_run.get("run_type") in (None, "scheduled"):
        return False
    made = _instant(dag_run.get("queued_at")) or _instant(dag_run.get("run_after"))
    due = _instant(deadline_time)
    return made is not None and due is not None and made > due


def close_deadline_missed(context: dict | None = None, **kwargs) -> None:
    """Deadline-alert callback: the month close had not succeeded by 12:00 Beijing.

    Runs in the executor (``SyncCallback``) with a small context: ``dag_run`` (as JSON) and
    ``deadline`` (``id``, ``deadline_time``). Logs an error and appends one JSON line to
    ``<data-dir>/alerts/close_deadline_missed.jsonl``, unless the run replays the past (see
    :func:`made_after_its_deadline`): then one info line says why there is no alert.
    """
    from pipelines.calendar import month_to_close
    from pipelines.config import resolve_data_dir

    context = context or {}
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    if made_after_its_deadline(dag_run, deadline.get("deadline_time")):
        log.info(
            "koobill: no deadline alert for run %s: it is a %s run made at %s, after its deadline"
            " %s (a replay or a late manual close of a past month, not a close that ran late)",
            dag_run.get("dag_run_id") or dag_run.get("run_id"),
            dag_run.get("run_type"),
            dag_run.get("run_after"),
            deadline.get("deadline_time"),
        )
        return
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
    start_date=start_date(),
    end_date=end_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(
        retries_default=6,
        retry_delay=dt.timedelta(minutes=10),
        max_retry_delay=dt.timedelta(hours=1),
    ),
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=MONTH_PATTERN,
            description="Month YYYY-MM to close (default: the month before the logical date)",
        ),
    },
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=DEADLINE_AFTER_LOGICAL_DATE,
        callback=SyncCallback(close_deadline_missed),
        name="bills_published_by_noon_beijing",
    ),
    tags=[*TAGS, "close"],
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
