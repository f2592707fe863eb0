"""koobill_exports: write the finance exports of a month as soon as its bills are published.

Scheduled on the asset ``koobill://bills`` (emitted by ``koobill_month_close``), so it runs
when bills are published instead of polling. The work is ``pipelines.exports.export_month``,
imported inside the tasks, fanned out over batches of partners (dynamic task mapping), so that
the batches spread over the Celery workers.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag, get_current_context, task
from koobill_common import (
    BILLS,
    EXPORTS,
    MONTH_PATTERN,
    PARTNER_PATTERN,
    TAGS,
    default_args,
    partner_batches,
    start_date,
)

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

Tasks:

1. `plan`: the month(s), and each month's partners with a closed bill (or the `partner`
   param) in batches of `$KOOBILL_EXPORT_BATCH_SIZE` partners (default 10);
2. `export_batch`, mapped over the batches (one task instance per batch, spread over the
   workers): `export_month(..., partner=batch)`: one call for the batch (one writer lock and one
   publication; its partners' files are written on every core of the worker). The files are the
   ones a single `koobill export --month M` writes, byte for byte;
3. `summarize`: emits the asset `koobill://exports` once, with extra `{"months", "files"}`.

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


def _formats() -> dict:
    """``formats=`` for ``export_month`` from ``$KOOBILL_EXPORT_FORMATS`` (default: the
    four finance formats; ``focus`` may be added). Read when the task runs, through the
    package's settings (a bad value is an error naming the variable)."""
    from pipelines.env import settings

    formats = settings().export_formats
    return {"formats": list(formats)} if formats else {}


@dag(
    dag_id="koobill_exports",
    schedule=[BILLS],
    start_date=start_date(),
    catchup=False,
    max_active_runs=1,
    default_args=default_args(),
    params={
        "month": Param(
            None,
            type=["null", "string"],
            pattern=MONTH_PATTERN,
            description="Closed month YYYY-MM to export (default: the month just published)",
        ),
        "partner": Param(
            None,
            type=["null", "string"],
            pattern=PARTNER_PATTERN,
            description="Only this partner (default: every partner of the month)",
        ),
    },
    tags=[*TAGS, "exports"],
    doc_md=DOC_MD,
)
def koobill_exports():
    @task(inlets=[BILLS])
    def plan(
        *,
        params=None,
        dag_run=None,
        triggering_asset_events=None,
        inlet_events=None,
    ) -> list[dict]:
        """The month(s) to export and their partners in batches: one mapped task per batch."""
        from pipelines.config import require_data_dir

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
        batches = []
        for month in months:
            if params.get("partner"):
                month_batches = [[params["partner"]]]
            else:
                month_batches = partner_batches(data_dir, month)
            if not month_batches:
                raise RuntimeError(f"month {month} has no closed bill to export in {data_dir}")
            batches += [{"month": month, "partners": b} for b in month_batches]
            print(
                f"koobill: {month}: {sum(len(b) for b in month_batches)} partner(s) in "
                f"{len(month_batches)} batch(es)"
            )
        return batches

    @task(map_index_template="{{ koobill_batch }}")
    def export_batch(batch: dict) -> dict:
        """Export the bills of one batch of partners of one month."""
        from pipelines.config import require_data_dir
        from pipelines.exports import export_month, print_export_result

        month, partners, files = batch["month"], batch["partners"], 0
        # the name of this mapped task instance in the UI, e.g. "2026-10 ptn-a..ptn-j"
        get_current_context()["koobill_batch"] = f"{month} {partners[0]}..{partners[-1]}"
        data_dir = require_data_dir(None)
        print(f"koobill: exporting {month} for {', '.join(partners)} under {data_dir / 'exports'}")
        # one call for the batch: one writer lock, one publication, the files on every core
        result = export_month(data_dir, month, partner=partners, **_formats())
        print_export_result(result, echo=print)
        files += len(result.files)
        return {"month": month, "partners": partners, "files": files}

    @task(outlets=[EXPORTS])
    def summarize(done: list[dict], *, outlet_events=None) -> list[str]:
        """One asset event for the whole run: the months exported and the files written."""
        # One slice read of the mapped results. Iterating Airflow's lazy XCom sequence instead
        # fetches item after item until one is missing, so every run logged an
        # "XCom not found ... offset=<number of batches>" error for the probe past the end.
        done = list(done[:])
        months = sorted({d["month"] for d in done})
        files = sum(d["files"] for d in done)
        print(f"koobill: {files} file(s) for {len(done)} batch(es) of {', '.join(months)}")
        outlet_events[EXPORTS].extra = {"months": months, "files": files}
        return months

    summarize(export_batch.expand(batch=plan()))


koobill_exports()
