"""koobill_exports: write the finance exports of a month as soon as its bills are published.

Scheduled on the asset ``koobill://bills`` (emitted by ``koobill_month_close``), so it runs
when bills are published instead of polling. The work is ``pipelines.exports.export_month``,
imported inside the task.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import Asset, Param, dag, task

TIMEZONE = "Asia/Shanghai"
BILLS = Asset(name="koobill_bills", uri="koobill://bills")
EXPORTS = Asset(name="koobill_exports", uri="koobill://exports")

START_DATE = pendulum.parse(os.environ.get("KOOBILL_START_DATE", "2026-01-01"), tz=TIMEZONE)
RETRIES = int(os.environ.get("KOOBILL_RETRIES", "3"))

DOC_MD = """
### koobill_exports

Runs when `koobill_month_close` publishes bills (asset `koobill://bills`) and writes, per
partner, the bill summary PDF, the XLSX and CSV details and Parquet under
`<data-dir>/exports/<partner_id>/<YYYY-MM>/`, each recorded in `export_history`.

Which month(s):

1. the `month` param of a manual run, if set;
2. else the `month` of every triggering `koobill://bills` event (two closes before one export
   run export both months);
3. else (manual run without param) the month of the latest `koobill://bills` event;
4. else the Beijing month before the run date.

Formats: `$KOOBILL_EXPORT_FORMATS` (comma-separated, default: all). Data dir:
`$KOOBILL_DATA_DIR`.
"""


def months_to_export(
    param_month: str | None,
    triggering_extras: list[dict],
    latest_extra: dict | None,
    run_date: dt.datetime | None,
) -> list[str]:
    """Pick the month(s) to export; see the DAG doc for the order of precedence."""
    from pipelines.calendar import month_to_close, parse_month

    if param_month:
        return [parse_month(param_month)]
    months = sorted({parse_month(e["month"]) for e in triggering_extras if e.get("month")})
    if months:
        return months
    if latest_extra and latest_extra.get("month"):
        return [parse_month(latest_extra["month"])]
    if run_date is None:
        raise ValueError("no month to export: set the month param")
    return [month_to_close(run_date)]


@dag(
    dag_id="koobill_exports",
    schedule=[BILLS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "koobill",
        "retries": RETRIES,
        "retry_delay": dt.timedelta(minutes=5),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
        "execution_timeout": dt.timedelta(hours=2),
    },
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-(0[1-9]|1[0-2])$",
            description="Closed month YYYY-MM to export (default: the month just published)",
        ),
        "partner": Param(
            None,
            type=["null", "string"],
            pattern=r"^[A-Za-z0-9_-]{1,64}$",
            description="Only this partner (default: every partner of the month)",
        ),
    },
    tags=["koobill", "billing", "exports"],
    doc_md=DOC_MD,
)
def koobill_exports():
    @task(inlets=[BILLS], outlets=[EXPORTS])
    def export(
        *,
        params=None,
        dag_run=None,
        triggering_asset_events=None,
        inlet_events=None,
        outlet_events=None,
    ) -> list[str]:
        """Export every partner's bill of the month(s) just published."""
        from pipelines.config import require_data_dir
        from pipelines.exports import export_month, print_export_result

        params = params or {}
        triggering = list(triggering_asset_events.get(BILLS, [])) if triggering_asset_events else []
        latest = None
        if not triggering and not params.get("month") and inlet_events is not None:
            events = inlet_events[BILLS]
            latest = events[-1].extra if len(events) else None
        run_date = (dag_run.logical_date or dag_run.run_after) if dag_run is not None else None
        months = months_to_export(
            params.get("month"), [dict(e.extra or {}) for e in triggering], latest, run_date
        )

        data_dir = require_data_dir(None)
        kwargs = {}
        if raw_formats := os.environ.get("KOOBILL_EXPORT_FORMATS", "").strip():
            kwargs["formats"] = [f.strip() for f in raw_formats.split(",") if f.strip()]
        files = 0
        for month in months:
            print(f"koobill: exporting {month} under {data_dir / 'exports'}")
            result = export_month(data_dir, month, partner=params.get("partner"), **kwargs)
            print_export_result(result, echo=print)
            files += len(result.files)
        outlet_events[EXPORTS].extra = {"months": months, "files": files}
        return months

    export()


koobill_exports()
