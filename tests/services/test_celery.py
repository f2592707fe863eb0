"""The production shape, for real: Airflow with the CeleryExecutor on PostgreSQL and Redis, two
Celery workers, the data dir on object storage, the DAGs triggered through the REST API and run
by the scheduler.

One scenario (``make test-services``; about 6 to 10 minutes on 2 cores):

1. a local S3 server (moto, on 127.0.0.1) is started with a fresh bucket; a week of landing
   dates (2025-01-29..2025-02-04, the cutoff of January 2025) is generated into two data dirs:
   ``s3://<bucket>/data`` for the Celery deployment, and a local one for an embedded run of the
   ``koobill`` CLI (ingest every day, close, export) that runs meanwhile. Each component of the
   deployment keeps its own local mirror of the bucket, as on machines of its own;
2. ``deploy/celery/airflow-celery.sh all`` starts the API server, scheduler, DAG processor,
   triggerer and two Celery workers on a fresh database ``koobill_airflow_test`` and Redis
   database 11 (both emptied first), on ports of their own (18080, ...);
3. the DAGs' start and end dates bound that week (``KOOBILL_START_DATE`` 2025-01-30,
   ``KOOBILL_END_DATE`` 2025-02-05), so unpausing ``koobill_daily`` through the REST API makes
   the scheduler run exactly its seven runs (catchup), one after the other; then the close of
   January is triggered through the REST API; it publishes the bills, whose asset event
   triggers ``koobill_exports``, mapped over batches of one partner;
4. every bill and bill line equals the embedded run's (but for the times they were closed),
   and so do the CSV and Parquet exports, byte for byte; the PDF and XLSX carry the closing
   time, so the mapped exports are compared byte for byte with one embedded ``koobill export``
   of the same closed bills (a plain copy of the bucket is a data dir); the task instances
   record both workers' host names, and each worker's own log shows the tasks it received;
   everything the deployment wrote is in the bucket (Delta tables, exports, the analysts'
   database), read back here through a mirror of this test's own.

Every process the deployment started is stopped at the end, whatever happened (the launcher
also stops by itself if this test process dies).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LAUNCHER = REPO / "deploy" / "celery" / "airflow-celery.sh"
FIRST = dt.date(2025, 1, 29)
CUTOFF = dt.date(2025, 2, 4)
MONTH = "2025-01"
BEIJING = dt.timezone(dt.timedelta(hours=8))
API_PORT = 18080
DB = "koobill_airflow_test"
REDIS_DB = 11
WORKERS = {"koobill-worker-1", "koobill-worker-2"}
# whole-scenario ceilings (generous for a busy 2-core machine; the test normally takes minutes)
START_TIMEOUT_S = 300
RUN_TIMEOUT_S = 600

pytestmark = pytest.mark.slow


def _days() -> list[dt.date]:
    return [FIRST + dt.timedelta(days=i) for i in range((CUTOFF - FIRST).days + 1)]


def _services_or_fail(env: dict) -> None:
    proc = subprocess.run(
        ["bash", str(LAUNCHER), "check"], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            "make test-services needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379:\n"
            + proc.stdout
            + proc.stderr,
            pytrace=False,
        )


def _reset_services(env: dict) -> None:
    """A fresh metadata database and an empty Redis database for this run."""
    pg = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
    subprocess.run(
        ["psql", *pg, "-d", "postgres", "-qc", f"drop database if exists {DB} with (force)"],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(["createdb", *pg, DB], check=True, env=env, capture_output=True)
    import redis

    redis.Redis.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}").flushdb()


def _embedded_run(data: Path, log: Path) -> subprocess.Popen:
    """The reference: the koobill CLI on its own copy of the landing data, in the background."""
    k = f'"{BIN / "koobill"}" --data-dir "{data}"'
    steps = [f"{k} ingest --quiet --date {d.isoformat()}" for d in _days()]
    steps += [f"{k} close --month {MONTH}", f"{k} export --month {MONTH}"]
    return subprocess.Popen(
        ["bash", "-ec", "\n".join(steps)],
        stdout=open(log, "wb"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class Api:
    """The Airflow REST API of the deployment, as an operator's script would use it."""

    def __init__(self, base: str):
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def login(self, password: str) -> None:
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})[
            "access_token"
        ]


def _wait(what: str, probe, timeout: float, launcher: subprocess.Popen, state: Path):
    """Poll ``probe`` until it returns a truthy value; fail with the components' logs if the
    deployment stopped or the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if launcher.poll() is not None:
            pytest.fail(f"the deployment stopped while waiting for {what}:\n{_logs(state)}")
        try:
            value = probe()
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{_logs(state)}")
        time.sleep(3)


def _logs(state: Path, lines: int = 15) -> str:
    out = []
    for log in sorted(state.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name} ---\n" + "\n".join(tail))
    return "\n".join(out)


def _stop(launcher: subprocess.Popen, state: Path) -> None:
    """Stop the launcher (it stops its components), then anything a pid file still names."""
    if launcher.poll() is None:
        os.killpg(launcher.pid, signal.SIGTERM)
        try:
            launcher.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    for pid_file in state.glob("*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ProcessLookupError, ValueError, PermissionError):
            pass


def _beijing(day: dt.date, hour: int, minute: int) -> str:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=BEIJING).isoformat()


def _run_state(api: Api, dag_id: str, run_id: str) -> str | None:
    state = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
    return state if state in ("success", "failed") else None


def _bills(data: Path) -> dict[str, list]:
    from pipelines.warehouse import open_warehouse

    con = open_warehouse(data, read_only=True)
    try:
        out = {}
        for table in ("bills", "bill_lines"):
            cols = [
                r[0]
                for r in con.execute(
                    "select column_name from information_schema.columns where table_name = ?"
                    " order by ordinal_position",
                    [table],
                ).fetchall()
                if not r[0].endswith("_at")  # when it was closed differs, nothing else may
            ]
            quoted = ", ".join(f'"{c}"' for c in cols)
            out[table] = [cols] + [
                [str(v) for v in row]
                for row in con.execute(f"select {quoted} from {table} order by all").fetchall()
            ]
        return out
    finally:
        con.close()


def _export_files(data: Path) -> dict[str, str]:
    return {
        p.relative_to(data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((data / "exports").rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``s3://<fresh bucket>/data`` on a local S3 server, with the AWS variables set in this
    process (the deployment gets the same through its environment)."""
    sys.path.insert(0, str(REPO / "tests"))
    import s3server

    from pipelines import objectstore

    proc, endpoint = s3server.start()
    aws = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "KOOBILL_CACHE_DIR": str(tmp_path / "test-mirror"),
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    objectstore.reset()
    name = f"koobill-services-{os.getpid()}"
    objectstore.client().create_bucket(Bucket=name)
    try:
        yield f"s3://{name}/data", aws
    finally:
        s3server.stop(proc)
        objectstore.reset()


def test_celery_deployment_bills_like_the_embedded_run(tmp_path: Path, bucket) -> None:
    from pipelines.config import resolve_data_dir
    from pipelines.generate import generate

    data_dir, aws = bucket
    base_env = {**os.environ, "KOOBILL_REPO": str(REPO)}
    base_env.pop("KOOBILL_DATA_DIR", None)
    _services_or_fail(base_env)
    _reset_services(base_env)

    embedded_data = tmp_path / "embedded-data"
    for target in (data_dir, embedded_data):  # the same seed: the same landing files
        generate(
            target, FIRST.isoformat(), CUTOFF.isoformat(), n_partners=4, usage_rows_per_day=100
        )
    state, home = tmp_path / "run", tmp_path / "airflow"
    state.mkdir()
    embedded = _embedded_run(embedded_data, tmp_path / "embedded.log")

    env = {
        **base_env,
        **aws,
        "AIRFLOW_HOME": str(home),
        "KOOBILL_CELERY_STATE": str(state),
        "KOOBILL_DATA_DIR": data_dir,
        "KOOBILL_AIRFLOW_DB": DB,
        "KOOBILL_REDIS_DB": str(REDIS_DB),
        "KOOBILL_API_PORT": str(API_PORT),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "18793",
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "18794",
        "KOOBILL_WORKER2_LOG_PORT": "18795",
        "KOOBILL_CELERY_PARENT_PID": str(os.getpid()),
        # the DAGs: scheduled runs only from the run that ingests FIRST to the close's day (the
        # scheduler refuses logical dates in the future, so the week lies in the past); fail
        # fast, look for the landing date every 5 s, one partner per mapped export task
        "KOOBILL_START_DATE": (FIRST + dt.timedelta(days=1)).isoformat(),
        "KOOBILL_END_DATE": (CUTOFF + dt.timedelta(days=1)).isoformat(),
        "KOOBILL_RETRIES": "0",
        "KOOBILL_LANDING_POKE_S": "5",
        "KOOBILL_EXPORT_BATCH_SIZE": "1",
    }
    env.pop("KOOBILL_CACHE_DIR")  # each component keeps a mirror in its own scratch folder
    launcher = subprocess.Popen(
        ["bash", str(LAUNCHER), "all"],
        env=env,
        stdout=open(state / "launcher.log", "wb"),  # noqa: SIM115 (closed with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _scenario(launcher, state, home)
        assert embedded.wait(timeout=RUN_TIMEOUT_S) == 0, (tmp_path / "embedded.log").read_text()[
            -3000:
        ]
    finally:
        _stop(launcher, state)
        if embedded.poll() is None:
            os.killpg(embedded.pid, signal.SIGKILL)
            embedded.wait()

    # the workers kept their own mirrors (two machines), and wrote everything to the bucket
    mirrors = sorted(p.parent.name for p in state.glob("worker-*/cache"))
    assert mirrors == ["worker-1", "worker-2"], mirrors
    from s3server import download_data_dir

    copy = download_data_dir(data_dir, tmp_path / "bucket-copy")
    assert (copy / "lake" / "bills" / "bills" / "_delta_log").is_dir()
    # every bill and bill line (the bucket's published database, read through this test's own
    # mirror), every export file: the same as the embedded run's
    celery_bills, embedded_bills = _bills(resolve_data_dir(data_dir)), _bills(embedded_data)
    assert len(celery_bills["bills"]) > 2  # a header and bills of several partners
    assert celery_bills == embedded_bills
    # the CSV and Parquet files carry no closing time: the same bytes as the embedded run's
    celery_files, embedded_files = _export_files(copy), _export_files(embedded_data)
    assert len(celery_files) == 4 * (len(celery_bills["bills"]) - 1)
    assert {f: h for f, h in celery_files.items() if f.endswith((".csv", ".parquet"))} == {
        f: h for f, h in embedded_files.items() if f.endswith((".csv", ".parquet"))
    }
    # the PDF and XLSX carry the bill's closed_at (as creation date and on the page), which
    # two closes cannot share: the mapped exports must be the bytes one embedded
    # `koobill export` writes for the same closed bills
    single = tmp_path / "single-export"
    shutil.copytree(copy, single, ignore=shutil.ignore_patterns("exports"))
    subprocess.run(
        [str(BIN / "koobill"), "--data-dir", str(single), "export", "--month", MONTH],
        check=True,
        capture_output=True,
    )
    assert celery_files == _export_files(single)
    # nothing left running: no process has this run's Airflow home in its environment
    assert _processes_of(home) == []


def _processes_of(home: Path) -> list[int]:
    """Process ids whose environment names ``home`` as AIRFLOW_HOME."""
    needle = f"AIRFLOW_HOME={home}".encode() + b"\0"
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes() + b"\0":
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def _scenario(launcher: subprocess.Popen, state: Path, home: Path) -> None:
    api = Api(f"http://127.0.0.1:{API_PORT}")
    passwords = home / "simple_auth_manager_passwords.json.generated"

    def ready():
        api.call("GET", "/api/v2/monitor/health")
        return passwords.exists()

    _wait("the API server", ready, START_TIMEOUT_S, launcher, state)
    api.login(json.loads(passwords.read_text())["admin"])
    for dag_id in ("koobill_daily", "koobill_month_close", "koobill_exports"):
        _wait(
            f"{dag_id} parsed",
            lambda d=dag_id: api.call("GET", f"/api/v2/dags/{d}"),
            START_TIMEOUT_S,
            launcher,
            state,
        )
    # unpaused, koobill_daily catches up the week between its start and end dates: seven
    # scheduled runs, one at a time (max_active_runs=1), in the order of their dates
    api.call("PATCH", "/api/v2/dags/koobill_daily", {"is_paused": False})

    def all_daily_runs_done():
        runs = api.call("GET", "/api/v2/dags/koobill_daily/dagRuns?order_by=logical_date")
        runs = runs["dag_runs"]
        if len(runs) == len(_days()) and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        return None

    runs = _wait(
        "the week of koobill_daily runs", all_daily_runs_done, RUN_TIMEOUT_S, launcher, state
    )
    assert [r["state"] for r in runs] == ["success"] * len(_days()), _logs(state)
    assert [r["run_type"] for r in runs] == ["scheduled"] * len(_days())
    daily = [r["dag_run_id"] for r in runs]
    starts = [r["start_date"] for r in runs]
    assert starts == sorted(starts), "the daily runs did not run in the order of their dates"

    for dag_id in ("koobill_month_close", "koobill_exports"):
        api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    close = api.call(
        "POST",
        "/api/v2/dags/koobill_month_close/dagRuns",
        {"logical_date": _beijing(CUTOFF + dt.timedelta(days=1), 2, 0), "conf": {}},
    )["dag_run_id"]
    state_ = _wait(
        "koobill_month_close",
        lambda: _run_state(api, "koobill_month_close", close),
        RUN_TIMEOUT_S,
        launcher,
        state,
    )
    assert state_ == "success", f"koobill_month_close {state_}:\n{_logs(state)}"

    # the close's asset event (koobill://bills) triggers koobill_exports by itself
    def exports_run():
        runs = api.call("GET", "/api/v2/dags/koobill_exports/dagRuns")["dag_runs"]
        return runs[0]["dag_run_id"] if runs else None

    exports = _wait("the asset-triggered koobill_exports run", exports_run, 120, launcher, state)
    state_ = _wait(
        "koobill_exports",
        lambda: _run_state(api, "koobill_exports", exports),
        RUN_TIMEOUT_S,
        launcher,
        state,
    )
    assert state_ == "success", f"koobill_exports {state_}:\n{_logs(state)}"

    # which worker ran what: the task instance records, then the workers' own logs
    ran = []
    for dag_id, run_id in [
        *(("koobill_daily", r) for r in daily),
        ("koobill_month_close", close),
        ("koobill_exports", exports),
    ]:
        tis = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")[
            "task_instances"
        ]
        ran += [(dag_id, ti["task_id"], ti["map_index"], ti["hostname"], ti["state"]) for ti in tis]
    print(
        "\n".join(f"{h:<18} {d} {t}[{m}] {s}" for d, t, m, h, s in sorted(ran, key=lambda r: r[3]))
    )
    assert {r[4] for r in ran} == {"success"}
    assert {r[3] for r in ran} == WORKERS, "both workers must have run tasks"
    batches = [r for r in ran if r[1] == "export_batch"]
    assert [r[2] for r in sorted(batches, key=lambda r: r[2])] == [0, 1, 2, 3]
    assert {r[3] for r in batches} == WORKERS, "the mapped exports must spread over both workers"
    for worker in ("worker-1", "worker-2"):
        log = (state / f"{worker}.log").read_text(errors="replace")
        assert "execute_workload" in log and "received" in log, f"{worker} received no task"
