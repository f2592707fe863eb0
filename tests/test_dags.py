"""The Airflow DAGs: integrity, schedules in Asia/Shanghai, the deadline alert, and real runs.

Airflow reads its configuration when it is first imported, so this module imports airflow only
inside fixtures and tests, after the ``airflow_env`` fixture has pointed ``AIRFLOW_HOME`` at a
migrated SQLite database. Under pytest-xdist every worker would otherwise migrate and run the
pipeline on its own: the Airflow home, the data dir and the pipeline results are shared by the
workers of a session, built once under a file lock (the pattern the xdist docs recommend), and
every test that writes to the metadata database holds the same lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
DAG_IDS = {"koobill_daily", "koobill_month_close", "koobill_exports"}
HEAVY = ("pandas", "duckdb", "pyarrow", "great_expectations")

# The small world the DAG runs work on: the first landing date ever ingested is 2025-01-29, so
# closing January needs 2025-01-29..2025-02-04 (the cutoff) ingested.
FIRST_DAY = dt.date(2025, 1, 29)
CUTOFF = dt.date(2025, 2, 4)
MONTH = "2025-01"
DAILY_LOGICAL = dt.datetime(2025, 2, 4, 17, 30, tzinfo=dt.UTC)  # 01:30 Beijing, 2025-02-05
CLOSE_LOGICAL = dt.datetime(2025, 2, 4, 18, 0, tzinfo=dt.UTC)  # 02:00 Beijing, 2025-02-05

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory, worker_id) -> Path:
    """A folder shared by every xdist worker of this session (the session's own with one)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "koobill_dags"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def airflow_env(shared_dir: Path) -> Iterator[dict]:
    """Point Airflow at a migrated SQLite home before anything imports airflow."""
    home = shared_dir / "airflow_home"
    data = shared_dir / "data"
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        # parse-time knobs of the DAG files: fail fast instead of sitting out retry delays, and a
        # start date before the 2025 logical dates used here (else runs get no task instances)
        "KOOBILL_RETRIES": "0",
        "KOOBILL_START_DATE": "2024-01-01",
        # one partner per mapped export task: the two partners make two mapped task instances
        "KOOBILL_EXPORT_BATCH_SIZE": "1",
    }
    if "airflow" in sys.modules:
        from airflow import settings

        if Path(settings.AIRFLOW_HOME) != home:
            pytest.fail(
                f"airflow was imported before the test env was set ({settings.AIRFLOW_HOME})"
            )
    lock = shared_dir / "lock"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        # as Airflow does for the DAG processor and the workers: the DAG files import
        # koobill_common from their folder
        mp.syspath_prepend(str(DAGS))
        with _locked(lock):
            if not (home / ".migrated").exists():
                home.mkdir(exist_ok=True)
                proc = subprocess.run(
                    [sys.executable, "-m", "airflow", "db", "migrate"],
                    env=os.environ.copy(),
                    capture_output=True,
                    text=True,
                    check=False,
                )
                assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
                (home / ".migrated").touch()
        yield {"home": home, "data": data, "lock": lock, "shared": shared_dir}


@pytest.fixture(scope="session")
def dagbag(airflow_env):
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture(scope="session")
def production_dagbag(airflow_env):
    """The DAGs as parsed with their built-in defaults (no test overrides)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    with mock.patch.dict(os.environ):
        os.environ.pop("KOOBILL_RETRIES", None)
        os.environ.pop("KOOBILL_START_DATE", None)
        os.environ.pop("KOOBILL_EXPORT_BATCH_SIZE", None)
        bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS)
    assert not bag.import_errors, bag.import_errors
    return bag


def _ti_states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _run(dag, **kwargs):
    """``dag.test()`` a run and insist every task instance ran and succeeded."""
    from pipelines.demo import dag_test_deadline_fix

    with dag_test_deadline_fix():
        dr = dag.test(**kwargs)
    states = _ti_states(dr)
    assert states and set(states.values()) == {"success"}, (dag.dag_id, states)
    assert str(dr.state) == "success"
    return dr


def _rows(con, query: str, params: list | None = None) -> list[list[str]]:
    return [[str(v) for v in row] for row in con.execute(query, params or []).fetchall()]


def _snapshot(data: Path) -> dict[str, list[list[str]]]:
    from pipelines.warehouse import open_warehouse

    con = open_warehouse(data, read_only=True)
    try:
        return {
            "estimates": _rows(con, "select * from estimates order by all"),
            "quarantine": _rows(con, "select * from quarantine order by all"),
            "ingest_files": _rows(con, "select * from ingest_files order by all"),
            "payments": _rows(con, "select * from payments order by all"),
        }
    finally:
        con.close()


@pytest.fixture(scope="session")
def pipeline(airflow_env, dagbag) -> dict:
    """Once per session: land a small world, run the three DAGs on it, record what happened.

    Landing dates 2025-01-29..2025-02-03 are ingested directly; the cutoff 2025-02-04 through
    ``koobill_daily`` (twice, to check a rerun changes nothing), then ``koobill_month_close``
    closes January and ``koobill_exports`` exports it.
    """
    data: Path = airflow_env["data"]
    results = airflow_env["shared"] / "pipeline.json"
    with _locked(airflow_env["lock"]), mock.patch.dict(os.environ, {"KOOBILL_DATA_DIR": str(data)}):
        if results.exists():
            return json.loads(results.read_text())
        from pipelines.generate import generate
        from pipelines.ingest import ingest_date

        generate(
            data, FIRST_DAY.isoformat(), CUTOFF.isoformat(), usage_rows_per_day=40, n_partners=2
        )
        day = FIRST_DAY
        while day < CUTOFF:
            ingest_date(data, day.isoformat())
            day += dt.timedelta(days=1)

        daily = _run(dagbag.dags["koobill_daily"], logical_date=DAILY_LOGICAL)
        first = _snapshot(data)
        rerun = _run(dagbag.dags["koobill_daily"], logical_date=DAILY_LOGICAL)
        second = _snapshot(data)
        close = _run(dagbag.dags["koobill_month_close"], logical_date=CLOSE_LOGICAL)
        exports = _run(dagbag.dags["koobill_exports"], logical_date=None)
        batches = sorted(
            ti.map_index for ti in exports.get_task_instances() if ti.task_id == "export_batch"
        )
        out = {
            "daily_run_id": daily.run_id,
            "rerun_run_id": rerun.run_id,
            "close_run_id": close.run_id,
            "exports_run_id": exports.run_id,
            "export_map_indexes": batches,
            "first": first,
            "second": second,
        }
        results.write_text(json.dumps(out))
        return out


# --- parsing ------------------------------------------------------------------------------


def test_parsing_the_dags_folder_stays_light(airflow_env) -> None:
    """The DAG files import no pandas, DuckDB, pyarrow, Great Expectations, nor pipelines."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        from airflow.dag_processing.dagbag import BundleDagBag
        bag = BundleDagBag(dag_folder={str(DAGS)!r}, bundle_path=Path({str(DAGS)!r}))
        print(json.dumps({{
            "errors": {{str(k): str(v) for k, v in bag.import_errors.items()}},
            "dags": sorted(bag.dags),
            "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}),
            "pipelines": sorted(m for m in sys.modules if m.split(".")[0] == "pipelines"),
        }}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert set(report["dags"]) == DAG_IDS
    assert report["heavy"] == []
    assert report["pipelines"] == []


def test_dag_integrity(production_dagbag) -> None:
    bag = production_dagbag
    assert set(bag.dags) == DAG_IDS
    for dag_id, dag in bag.dags.items():
        assert "koobill" in dag.tags, dag_id
        assert dag.max_active_runs == 1, dag_id
        assert dag.doc_md and dag_id in dag.doc_md, dag_id
        # Airflow keeps start_date in UTC and the DAG's time zone beside it
        assert dag.timezone.name == "Asia/Shanghai", dag_id
        assert dag.start_date == _utc(2025, 12, 31, 16, 0), dag_id  # 2026-01-01 00:00 Beijing
        assert dag.end_date is None, dag_id  # KOOBILL_END_DATE bounds only replays and tests
        assert dag.default_args["retries"] >= 3, dag_id
        assert dag.default_args["retry_exponential_backoff"] > 1, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, (dag_id, task.task_id)
            assert task.retry_delay >= dt.timedelta(minutes=5), (dag_id, task.task_id)
    assert bag.dags["koobill_daily"].catchup is True
    assert bag.dags["koobill_month_close"].catchup is False
    # the daily run waits for its landing date: a sensor that frees its worker slot between
    # looks, every 5 minutes for 6 hours, then fails; the ingest runs after it
    daily = bag.dags["koobill_daily"]
    sensor = daily.task_dict["wait_for_landing_date"]
    assert sensor.mode == "reschedule"
    assert sensor.poke_interval == 300 and sensor.timeout == 6 * 3600
    assert daily.task_dict["ingest"].upstream_task_ids == {"wait_for_landing_date"}
    # the check waits for the cutoff date with patience; a failing close surfaces quickly
    close = bag.dags["koobill_month_close"]
    assert close.task_dict["check_landing_dates"].retries >= 5
    assert close.task_dict["close"].retries <= 2


def test_assets_wire_close_to_exports(production_dagbag) -> None:
    bag = production_dagbag
    ingest = bag.dags["koobill_daily"].task_dict["ingest"]
    assert [a.uri for a in ingest.outlets] == ["koobill://estimates/"]
    close = bag.dags["koobill_month_close"].task_dict["close"]
    assert [a.uri for a in close.outlets] == ["koobill://bills/"]
    exports = bag.dags["koobill_exports"]
    assert [a.uri for a in exports.timetable.asset_condition.objects] == ["koobill://bills/"]


def _core_timetable(dag):
    """The timetable the scheduler uses: the DAG after a serialization round trip."""
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).timetable


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("dag_id", "earliest", "last_end", "expected_run", "expected_slice"),
    [
        # the daily runs at 01:30 Beijing = 17:30 UTC the day before, and ingests the Beijing
        # day before its own: the UTC date of the run, not the Beijing one
        ("koobill_daily", _utc(2025, 2, 3, 16, 0), None, _utc(2025, 2, 3, 17, 30), "2025-02-03"),
        ("koobill_daily", None, _utc(2025, 2, 3, 17, 30), _utc(2025, 2, 4, 17, 30), "2025-02-04"),
        (
            "koobill_daily",
            None,
            _utc(2024, 12, 30, 17, 30),
            _utc(2024, 12, 31, 17, 30),
            "2024-12-31",
        ),
        ("koobill_daily", None, _utc(2024, 2, 28, 17, 30), _utc(2024, 2, 29, 17, 30), "2024-02-29"),
        # the close runs at 02:00 Beijing on the 5th = 18:00 UTC on the 4th
        (
            "koobill_month_close",
            _utc(2024, 12, 31, 16, 0),
            None,
            _utc(2025, 1, 4, 18, 0),
            "2024-12",
        ),
        ("koobill_month_close", None, _utc(2025, 1, 4, 18, 0), _utc(2025, 2, 4, 18, 0), "2025-01"),
        ("koobill_month_close", None, _utc(2024, 2, 4, 18, 0), _utc(2024, 3, 4, 18, 0), "2024-02"),
        (
            "koobill_month_close",
            None,
            _utc(2024, 11, 4, 18, 0),
            _utc(2024, 12, 4, 18, 0),
            "2024-11",
        ),
        # a start just after 02:00 Beijing on the 5th waits for the next month
        ("koobill_month_close", _utc(2025, 1, 4, 18, 1), None, _utc(2025, 2, 4, 18, 0), "2025-01"),
    ],
)
def test_timetables_run_in_beijing_time(
    production_dagbag, dag_id, earliest, last_end, expected_run, expected_slice
) -> None:
    from airflow.timetables.base import DataInterval, TimeRestriction
    from pendulum import instance

    from pipelines.calendar import month_to_close, previous_beijing_day

    timetable = _core_timetable(production_dagbag.dags[dag_id])
    last = DataInterval(instance(last_end), instance(last_end)) if last_end else None
    info = timetable.next_dagrun_info(
        last_automated_data_interval=last,
        restriction=TimeRestriction(
            earliest=instance(earliest) if earliest else None, latest=None, catchup=True
        ),
    )
    assert info.run_after == expected_run
    assert info.logical_date == expected_run
    if dag_id == "koobill_daily":
        assert previous_beijing_day(info.logical_date).isoformat() == expected_slice
    else:
        assert month_to_close(info.logical_date) == expected_slice


def test_first_scheduled_runs_follow_the_start_date(production_dagbag) -> None:
    from airflow.timetables.base import TimeRestriction

    for dag_id, expected in [
        ("koobill_daily", _utc(2025, 12, 31, 17, 30)),  # 2026-01-01 01:30 Beijing
        ("koobill_month_close", _utc(2026, 1, 4, 18, 0)),  # 2026-01-05 02:00 Beijing
    ]:
        dag = production_dagbag.dags[dag_id]
        info = _core_timetable(dag).next_dagrun_info(
            last_automated_data_interval=None,
            restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True),
        )
        assert info.run_after == expected, dag_id


# --- the deadline alert --------------------------------------------------------------------


def test_deadline_alert_lands_at_noon_beijing_on_the_5th(production_dagbag) -> None:
    from airflow.sdk import DeadlineReference, SyncCallback
    from airflow.timetables.base import DataInterval, TimeRestriction

    dag = production_dagbag.dags["koobill_month_close"]
    (alert,) = dag.deadline
    assert alert.reference == DeadlineReference.DAGRUN_LOGICAL_DATE
    assert isinstance(alert.callback, SyncCallback)
    assert alert.callback.path.endswith("koobill_month_close.close_deadline_missed")
    # every scheduled run of two years, leap February included: logical date + interval is
    # 12:00 Beijing on the 5th
    timetable = _core_timetable(dag)
    last = None
    for _ in range(24):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last,
            restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True),
        )
        due = (info.logical_date + alert.interval).in_timezone("Asia/Shanghai")
        assert (due.day, due.hour, due.minute) == (5, 12, 0), due
        last = DataInterval(info.data_interval.start, info.data_interval.end)


def _deadlines(run_id: str):
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(Deadline.deadline_time, Deadline.missed)
            .join(DagRun, Deadline.dagrun_id == DagRun.id)
            .where(DagRun.run_id == run_id, DagRun.dag_id == "koobill_month_close")
        ).all()
    return [(r.deadline_time, r.missed) for r in rows]


def _close_run_succeeding_now(logical_date: dt.datetime) -> str:
    """Replay the scheduler: create a scheduled close run from the DAG serialized in the
    database, let its tasks succeed now, and let ``DagRun.update_state`` finish the run (which
    prunes the deadlines the run beat). Returns the run id."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    DagBundlesManager().sync_bundles_to_db()
    bag = BundleDagBag(dag_folder=str(DAGS), bundle_path=DAGS, bundle_name="dags-folder")
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        dag = DBDagBag().get_latest_version_of_dag("koobill_month_close", session=session)
        run_id = DagRun.generate_run_id(
            run_type=DagRunType.SCHEDULED, logical_date=logical_date, run_after=logical_date
        )
        dr = dag.create_dagrun(
            run_id=run_id,
            logical_date=logical_date,
            data_interval=(logical_date, logical_date),
            run_after=logical_date,
            run_type=DagRunType.SCHEDULED,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            session=session,
        )
        session.flush()
        assert [d.deadline_time for d in dr.deadlines] == [logical_date + dt.timedelta(hours=10)], (
            "the run was created without its deadline"
        )
        tis = dr.get_task_instances(session=session)
        assert len(tis) == 3
        for ti in tis:
            ti.set_state(TaskInstanceState.SUCCESS, session=session)
        session.flush()
        dr.dag = dag
        dr.update_state(session=session)
        assert dr.state == DagRunState.SUCCESS
    return run_id


def test_no_deadline_alert_when_the_close_is_on_time(airflow_env) -> None:
    """A run that succeeds before 12:00 Beijing leaves no pending deadline behind."""
    on_time = _utc(2099, 12, 4, 18, 0)  # the close of 2099-11; due 2099-12-05 12:00 Beijing
    with _locked(airflow_env["lock"]):
        run_id = _close_run_succeeding_now(on_time)
        assert _deadlines(run_id) == []


def test_deadline_alert_fires_when_the_close_is_late(airflow_env, tmp_path, monkeypatch) -> None:
    """A close of February 2024 that only succeeds now, long after 12:00 Beijing on March 5th.

    The deadline stays pending; the scheduler's pass over expired deadlines is replayed as it
    does it (``handle_miss`` queues the callback with its context), then the callback is run
    the way the executor's callback runner runs it. It must write the alert.
    """
    import structlog
    from airflow.models.dagrun import DagRun
    from airflow.models.deadline import Deadline
    from airflow.sdk.execution_time.callback_supervisor import execute_callback
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pipelines.config import init_data_dir

    monkeypatch.setenv("KOOBILL_DATA_DIR", str(init_data_dir(tmp_path / "data")))
    late = _utc(2024, 3, 4, 18, 0)  # 2024-03-05 02:00 Beijing: closes the leap February
    due = _utc(2024, 3, 5, 4, 0)  # 12:00 Beijing
    with _locked(airflow_env["lock"]):
        run_id = _close_run_succeeding_now(late)
        assert _deadlines(run_id) == [(due, False)]
        with create_session() as session:
            expired = session.scalars(
                select(Deadline)
                .join(DagRun, Deadline.dagrun_id == DagRun.id)
                .where(Deadline.deadline_time < dt.datetime.now(dt.UTC))
                .where(~Deadline.missed)
                .where(DagRun.run_id == run_id)
            ).all()
            assert len(expired) == 1
            expired[0].handle_miss(session)
            callback = dict(expired[0].callback.data)
        assert _deadlines(run_id) == [(due, True)]
    ok, error = execute_callback(
        callback["path"],
        callback["kwargs"],
        "koobill_month_close.py",
        str(DAGS),
        structlog.get_logger(),
    )
    assert ok, error
    (line,) = (
        (tmp_path / "data" / "alerts" / "close_deadline_missed.jsonl").read_text().splitlines()
    )
    alert = json.loads(line)
    assert alert["alert"] == "close_deadline_missed"
    assert alert["month"] == "2024-02"
    assert alert["dag_id"] == "koobill_month_close"
    assert alert["run_id"] == run_id
    assert dt.datetime.fromisoformat(alert["deadline_time"]) == due


# --- real runs ------------------------------------------------------------------------------


def _warehouse(airflow_env):
    from pipelines.warehouse import open_warehouse

    return open_warehouse(airflow_env["data"], read_only=True)


def _asset_events(dag_id: str) -> list[tuple[str, dict, str]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetModel.uri, AssetEvent.extra, AssetEvent.source_run_id)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == dag_id)
            .order_by(AssetEvent.id)
        ).all()
    return [(r.uri, dict(r.extra), r.source_run_id) for r in rows]


def test_daily_run_ingests_the_previous_beijing_day(pipeline, airflow_env) -> None:
    con = _warehouse(airflow_env)
    try:
        partners = {
            r[0] for r in con.execute("select distinct partner_id from estimates").fetchall()
        }
        as_of_cutoff = con.execute(
            "select partner_id, bill_month from estimates where as_of_date = ? order by all",
            [CUTOFF],
        ).fetchall()
        dates = [
            r[0] for r in con.execute("select distinct landing_date from ingest_files").fetchall()
        ]
    finally:
        con.close()
    assert len(partners) == 2
    # the run of 2025-02-05 01:30 Beijing ingested 2025-02-04, when January and February are open
    assert as_of_cutoff == sorted((p, m) for p in partners for m in ("2025-01", "2025-02"))
    assert CUTOFF in dates
    with _locked(airflow_env["lock"]):
        events = _asset_events("koobill_daily")
    assert (
        "koobill://estimates/",
        {"landing_date": "2025-02-04"},
        pipeline["daily_run_id"],
    ) in events


def test_rerunning_a_daily_run_changes_nothing(pipeline) -> None:
    assert pipeline["rerun_run_id"] != pipeline["daily_run_id"]
    assert pipeline["first"]["estimates"], "the daily run wrote no estimates"
    assert pipeline["second"] == pipeline["first"]


def test_month_close_publishes_the_bills(pipeline, airflow_env) -> None:
    con = _warehouse(airflow_env)
    try:
        bills = con.execute(
            "select partner_id, version, status, bill_amount, amount_due from bills"
            " where bill_month = ? order by partner_id",
            [MONTH],
        ).fetchall()
        partners = con.execute("select count(distinct partner_id) from estimates").fetchone()[0]
    finally:
        con.close()
    assert len(bills) == partners == 2
    assert {(b[1], b[2]) for b in bills} == {(1, "closed")}
    assert all(b[4] == max(b[3], 0) for b in bills)
    with _locked(airflow_env["lock"]):
        events = _asset_events("koobill_month_close")
    ours = [(uri, extra) for uri, extra, run_id in events if run_id == pipeline["close_run_id"]]
    assert len(ours) == 1
    assert ours[0][0] == "koobill://bills/"
    assert ours[0][1]["month"] == MONTH


def test_exports_run_exports_the_month_just_published(pipeline, airflow_env) -> None:
    data: Path = airflow_env["data"]
    con = _warehouse(airflow_env)
    try:
        rows = con.execute(
            "select partner_id, format, path, bytes from export_history where bill_month = ?",
            [MONTH],
        ).fetchall()
        partners = {r[0] for r in con.execute("select partner_id from bills").fetchall()}
    finally:
        con.close()
    assert {r[0] for r in rows} == partners
    for partner in partners:
        assert {r[1] for r in rows if r[0] == partner} == {"pdf", "xlsx", "csv", "parquet"}
    for _, _, path, size in rows:
        assert (data / path).stat().st_size == size
        assert Path(data / path).parent == data / "exports" / Path(path).parent.parent.name / MONTH
    with _locked(airflow_env["lock"]):
        events = _asset_events("koobill_exports")
    ours = [extra for _, extra, run_id in events if run_id == pipeline["exports_run_id"]]
    assert ours == [{"months": [MONTH], "files": len(rows)}]
    # fanned out: one mapped task instance per batch of one partner
    assert pipeline["export_map_indexes"] == list(range(len(partners)))


def test_exports_fan_out_over_partner_batches(production_dagbag) -> None:
    dag = production_dagbag.dags["koobill_exports"]
    assert dag.task_dict["export_batch"].upstream_task_ids == {"plan"}
    assert dag.task_dict["summarize"].upstream_task_ids == {"export_batch"}
    assert [a.uri for a in dag.task_dict["summarize"].outlets] == ["koobill://exports/"]
    from koobill_common import batched

    assert batched(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert batched([], 3) == []
    with pytest.raises(ValueError):
        batched(["a"], 0)


def test_summarize_reads_the_mapped_results_without_probing_past_the_end(dagbag) -> None:
    """Airflow hands ``summarize`` a lazy sequence of the batches' results; iterating it asks
    for item after item until one is missing, which logs "XCom not found ... offset=N" as an
    error on every run. ``summarize`` must read exactly the items there are."""
    from collections.abc import Sequence

    class Results(Sequence):
        def __init__(self, items):
            self.items, self.past_the_end = items, []

        def __len__(self):
            return len(self.items)

        def __getitem__(self, key):
            if isinstance(key, int) and key >= len(self.items):
                self.past_the_end.append(key)
            return self.items[key]

    done = Results(
        [
            {"month": MONTH, "partners": ["a"], "files": 4},
            {"month": MONTH, "partners": ["b"], "files": 4},
        ]
    )
    outlet_events = mock.MagicMock()
    task = dagbag.dags["koobill_exports"].task_dict["summarize"]
    assert task.python_callable(done, outlet_events=outlet_events) == [MONTH]
    assert outlet_events.__getitem__.return_value.extra == {"months": [MONTH], "files": 8}
    assert done.past_the_end == []


@pytest.mark.parametrize(
    ("name", "raw", "says"),
    [
        ("KOOBILL_START_DATE", "2026-02-30", "a date YYYY-MM-DD"),
        ("KOOBILL_START_DATE", "1 Jan 2026", "a date YYYY-MM-DD"),
        ("KOOBILL_END_DATE", "2026-13-01", "a date YYYY-MM-DD"),
        ("KOOBILL_RETRIES", "three", "a whole number, 0 or more"),
        ("KOOBILL_RETRIES", "-1", "a whole number, 0 or more"),
        ("KOOBILL_LANDING_WAIT_H", "six", "a number of hours, more than 0"),
        ("KOOBILL_LANDING_WAIT_H", "0", "a number of hours, more than 0"),
        ("KOOBILL_LANDING_POKE_S", "-5", "a number of seconds, more than 0"),
        ("KOOBILL_LANDING_POKE_S", "inf", "a number of seconds, more than 0"),
    ],
)
def test_a_bad_parse_time_variable_is_named(airflow_env, monkeypatch, name, raw, says) -> None:
    """Parsing a DAG file with a bad parse-time variable fails naming it and the form wanted."""
    import importlib.util

    monkeypatch.setenv(name, raw)
    # koobill_daily reads the common settings (start, end, retries) and its landing wait, poke
    spec = importlib.util.spec_from_file_location("bad_koobill_daily", DAGS / "koobill_daily.py")
    with pytest.raises(ValueError) as err:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert str(err.value).startswith(f"{name}={raw!r} is not {says} (e.g. ")
    assert str(err.value).endswith("; fix or unset it")


def test_parse_time_variables_unset_or_blank_take_their_defaults(airflow_env, monkeypatch):
    import pendulum
    from koobill_common import end_date, export_batch_size, retries, start_date

    for name in ("KOOBILL_START_DATE", "KOOBILL_RETRIES", "KOOBILL_EXPORT_BATCH_SIZE"):
        monkeypatch.setenv(name, " ")
    monkeypatch.delenv("KOOBILL_END_DATE", raising=False)
    assert start_date() == pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai")
    assert end_date() is None and retries(6) == 6 and export_batch_size() == 10
    monkeypatch.setenv("KOOBILL_END_DATE", "2025-01-31")
    assert end_date() == pendulum.datetime(2025, 1, 31, tz="Asia/Shanghai").end_of("day")
    # the batch size is read when `plan` runs
    monkeypatch.setenv("KOOBILL_EXPORT_BATCH_SIZE", "0")
    with pytest.raises(
        ValueError, match=r"^KOOBILL_EXPORT_BATCH_SIZE='0' is not a whole number, 1"
    ):
        export_batch_size()


def test_partner_batches_are_the_partners_with_a_closed_bill(pipeline, airflow_env) -> None:
    from koobill_common import partner_batches

    con = _warehouse(airflow_env)
    try:
        partners = [
            r[0]
            for r in con.execute(
                "select distinct partner_id from bills where bill_month = ? order by 1", [MONTH]
            ).fetchall()
        ]
    finally:
        con.close()
    assert partner_batches(airflow_env["data"], MONTH, 1) == [[p] for p in partners]
    assert partner_batches(airflow_env["data"], MONTH, 10) == [partners]
    assert partner_batches(airflow_env["data"], "2024-07", 10) == []


def test_close_check_lists_the_missing_landing_dates(pipeline, dagbag, airflow_env, monkeypatch):
    """February's cutoff is 2025-03-04 and nothing after 2025-02-04 has landed."""
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(airflow_env["data"]))
    check = dagbag.dags["koobill_month_close"].task_dict["check_landing_dates"]
    with pytest.raises(RuntimeError, match=r"28 landing date\(s\).*2025-02-05\.\.2025-03-04$"):
        check.python_callable("2025-02")
    assert check.python_callable(MONTH) == MONTH


@pytest.mark.parametrize(
    ("param", "triggering", "latest", "run_date", "expected"),
    [
        ("2024-12", [{"month": "2025-01"}], None, None, ["2024-12"]),
        (
            None,
            [{"month": "2025-02"}, {"month": "2025-01"}, {"month": "2025-02"}],
            None,
            None,
            ["2025-01", "2025-02"],
        ),
        (None, [], {"month": "2025-01"}, _utc(2025, 3, 1), ["2025-01"]),
        (None, [{}], None, _utc(2025, 2, 28, 16, 0), ["2025-02"]),  # 2025-03-01 in Beijing
        (None, [], None, _utc(2025, 2, 28, 15, 59), ["2025-01"]),
    ],
)
def test_months_to_export(airflow_env, param, triggering, latest, run_date, expected) -> None:
    months_to_export = runpy.run_path(str(DAGS / "koobill_exports.py"))["months_to_export"]
    assert months_to_export(param, triggering, latest, run_date) == expected


# --- waiting for the landing date -------------------------------------------------------------


def test_landing_sensor_looks_for_a_feed_folder_of_the_date(
    pipeline, dagbag, airflow_env, tmp_path, monkeypatch
) -> None:
    """The sensor's poke: done (handing the date to the ingest) once a feed has a folder for
    the run's landing date; not yet before; a data dir that is no data dir fails at once."""
    from pipelines.lake import DataDirError

    poke = dagbag.dags["koobill_daily"].task_dict["wait_for_landing_date"].python_callable
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(airflow_env["data"]))
    done = poke(logical_date=DAILY_LOGICAL)
    assert done.is_done and done.xcom_value == CUTOFF.isoformat()
    later = DAILY_LOGICAL + dt.timedelta(days=30)  # ingests 2025-03-06: nothing landed
    assert not poke(logical_date=later).is_done
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(DataDirError, match="does not exist"):
        poke(logical_date=DAILY_LOGICAL)
    assert not (tmp_path / "typo").exists()


def _reschedules(ti_id) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(
            select(func.count()).select_from(TaskReschedule).where(TaskReschedule.ti_id == ti_id)
        )


def test_daily_run_fails_when_its_landing_date_never_arrives(pipeline, airflow_env) -> None:
    """A real run of koobill_daily (dag.test) for a landing date that never lands, parsed with
    a 2-second wait: the sensor reschedules itself, times out and fails the run; the ingest
    never runs and nothing is recorded for the date, so the close still sees it missing."""
    from airflow.dag_processing.dagbag import DagBag

    from pipelines.close import missing_dates

    data: Path = airflow_env["data"]
    logical = _utc(2025, 2, 9, 17, 30)  # 2025-02-10 01:30 Beijing: ingests 2025-02-09
    day = "2025-02-09"
    impatient = {
        "KOOBILL_LANDING_WAIT_H": str(2 / 3600),
        "KOOBILL_LANDING_POKE_S": "1",
        "KOOBILL_DATA_DIR": str(data),
    }
    with _locked(airflow_env["lock"]), mock.patch.dict(os.environ, impatient):
        bag = DagBag(dag_folder=str(DAGS / "koobill_daily.py"))
        dag = bag.dags["koobill_daily"]
        assert dag.task_dict["wait_for_landing_date"].timeout == 2
        from pipelines.demo import dag_test_deadline_fix

        with dag_test_deadline_fix():
            dr = dag.test(logical_date=logical)
        states = _ti_states(dr)
        tis = {ti.task_id: ti for ti in dr.get_task_instances()}
        tries = {task_id: ti.try_number for task_id, ti in tis.items()}
        reschedules = _reschedules(tis["wait_for_landing_date"].id)
    assert str(dr.state) == "failed"
    assert reschedules >= 1  # it gave its slot back between looks before timing out
    assert states == {"wait_for_landing_date": "failed", "ingest": "upstream_failed"}
    assert tries["wait_for_landing_date"] == 1  # a timeout is not retried
    from pipelines import lake

    assert lake.partition(data / "lake" / "ingest", "landing_date", day) is None
    assert day in missing_dates(data, "2025-02")


def test_deadline_alert_writes_nothing_outside_a_data_dir(airflow_env, tmp_path, monkeypatch):
    callback = runpy.run_path(str(DAGS / "koobill_month_close.py"))["close_deadline_missed"]
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(tmp_path / "typo"))
    callback({"dag_run": {"dag_id": "koobill_month_close", "conf": {"month": "2025-01"}}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("run_type", "queued_at", "run_after", "excused"),
    [
        # the scheduler was down at 02:00 and made the run at 14:00: still a missed deadline
        ("scheduled", "2025-02-05T06:00:00Z", "2025-02-04T18:00:00Z", False),
        # a manual close triggered before the deadline that had not succeeded by then
        ("manual", "2025-02-05T01:00:00Z", "2025-02-05T01:00:00Z", False),
        # the demo's dag.test() replay of a past month: made weeks after its deadline
        ("manual", None, "2025-03-01T09:00:00Z", True),
        # a backfill of an old month: queued long after its deadline
        ("backfill", "2025-06-01T00:00:00Z", "2025-02-04T18:00:00Z", True),
    ],
)
def test_runs_made_after_their_deadline_raise_no_alert(
    airflow_env, tmp_path, monkeypatch, run_type, queued_at, run_after, excused
) -> None:
    """A replay of a past month is not a close that ran late: no [error], no alert line."""
    from pipelines.config import init_data_dir

    module = runpy.run_path(str(DAGS / "koobill_month_close.py"))
    due = "2025-02-05T04:00:00Z"  # 12:00 Beijing on the 5th
    dag_run = {
        "dag_id": "koobill_month_close",
        "dag_run_id": f"{run_type}__x",
        "run_type": run_type,
        "queued_at": queued_at,
        "run_after": run_after,
        "logical_date": "2025-02-04T18:00:00Z",
        "conf": {},
        "state": "success",
    }
    assert module["made_after_its_deadline"](dag_run, due) is excused
    monkeypatch.setenv("KOOBILL_DATA_DIR", str(init_data_dir(tmp_path / "data")))
    module["close_deadline_missed"]({"dag_run": dag_run, "deadline": {"deadline_time": due}})
    alerts = tmp_path / "data" / "alerts" / "close_deadline_missed.jsonl"
    assert alerts.exists() is not excused
