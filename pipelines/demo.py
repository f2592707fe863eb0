"""``python -m pipelines.demo --data-dir DIR``: one billing cycle through the real Airflow DAGs.

What it does, on embedded defaults (``make demo``):

1. wipes DIR (only if it is empty or an earlier demo made it) and makes it a data dir;
2. points Airflow at ``DIR/airflow`` (SQLite metadata database, no example DAGs) and runs
   ``airflow db migrate``;
3. generates a small landing zone: every landing date of the bill month (``DEMO_MONTH``,
   2026-10, unless ``--month``) through its cutoff (the 4th of the next month);
4. runs ``koobill_daily`` with ``dag.test()`` once per landing date, with the logical date of
   its scheduled run (01:30 Beijing the day after), then ``koobill_month_close`` for the month
   (02:00 Beijing on the 5th), then ``koobill_exports``;
5. prints the bills, where the exports are, and how to point the CLI, DuckDB and the page at
   the data.

Airflow's own log output goes to ``DIR/airflow/logs/demo.log``; on a failure its tail is
printed. Rerunning starts from scratch and gives the same bills.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines import calendar as cal
from pipelines.files import write_text

REPO = Path(__file__).resolve().parents[1]
MARKER = ".koobill-demo"


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


def _say(msg: str = "") -> None:
    print(msg, flush=True)


# The demo bills one fixed month, so that the README's examples (partner ptn-haina, month
# 2026-10) run as written on the demo data whenever the demo is run.
DEMO_MONTH = "2026-10"


def _prepare_dir(root: Path) -> None:
    """Empty ``root`` for a fresh run, refusing to wipe a folder the demo did not make, and
    make it a data dir."""
    from pipelines.config import init_data_dir

    if root.exists():
        if not root.is_dir():
            raise DemoError(f"{root} exists and is not a folder")
        entries = {p.name for p in root.iterdir()}
        # an empty folder, or one holding only the Airflow home `make airflow` creates, is fine
        if entries - {"airflow"} and MARKER not in entries:
            raise DemoError(
                f"{root} is not empty and was not made by the demo (no {MARKER} file): "
                "refusing to wipe it; pass another --data-dir"
            )
        shutil.rmtree(root)
    init_data_dir(root)
    write_text(root / MARKER, "made by `python -m pipelines.demo`; wiped on every demo run\n")


def _airflow_env(root: Path, dags_folder: Path, start_date: dt.date) -> dict[str, str]:
    """Environment for Airflow and the DAGs; must be in place before airflow is imported."""
    return {
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "KOOBILL_DATA_DIR": str(root),
        # The DAGs' start date must precede the demo's logical dates, or runs get no tasks.
        "KOOBILL_START_DATE": start_date.isoformat(),
        # Fail fast: dag.test() would otherwise sit out the retry delays of a failing task.
        "KOOBILL_RETRIES": "0",
    }


@contextlib.contextmanager
def _captured(log_path: Path) -> Iterator[None]:
    """Send everything written to stdout/stderr (Airflow's logs, task prints) to ``log_path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _migrate(env: dict[str, str], log_path: Path) -> None:
    with open(log_path, "ab") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        raise DemoError(f"airflow db migrate failed:\n{_tail(log_path)}")


@contextlib.contextmanager
def dag_test_deadline_fix() -> Iterator[None]:
    """Let ``dag.test()`` finish a DAG that has a deadline alert (Airflow 3.3.2 bug).

    ``DAG.test()`` builds its scheduler DAG by an in-memory serialize/deserialize round trip,
    so ``dag.deadline`` holds encoded alerts (dicts) instead of ``deadline_alert`` ids, and
    ``DagRun.update_state()`` crashes in ``DeadlineAlertModel.get_by_id`` ("'dict' object has
    no attribute 'hex'") when the run succeeds (apache/airflow#73428, fix proposed in #73430).
    As in that fix, an encoded alert is decoded directly; ids still go to the database. The
    scheduler never sees dicts, so production runs are unaffected.
    """
    from types import SimpleNamespace
    from unittest import mock

    from airflow.models.deadline_alert import DeadlineAlert as DeadlineAlertModel
    from airflow.serialization.decoders import decode_deadline_alert

    original = DeadlineAlertModel.get_by_id

    def get_by_id(deadline_alert_id, *args, **kwargs):
        if isinstance(deadline_alert_id, dict):
            alert = decode_deadline_alert(deadline_alert_id)
            return SimpleNamespace(reference_class=type(alert.reference))
        return original(deadline_alert_id, *args, **kwargs)

    with mock.patch.object(DeadlineAlertModel, "get_by_id", get_by_id):
        yield


def _run_dag(dag, log_path: Path, what: str, **test_kwargs) -> None:
    """``dag.test()`` one run; raise unless every task instance of it succeeded."""
    started = dt.datetime.now(dt.UTC)
    with _captured(log_path), dag_test_deadline_fix():
        dr = dag.test(**test_kwargs)
    _record_real_start(dr, started)
    tis = dr.get_task_instances()
    states = {ti.task_id: str(ti.state) for ti in tis}
    if str(dr.state) != "success" or not tis or any(s != "success" for s in states.values()):
        raise DemoError(
            f"{what}: run {dr.run_id} ended {dr.state} (tasks: {states or 'none created'})\n"
            f"--- last lines of {log_path} ---\n{_tail(log_path)}"
        )


def _record_real_start(dr, started: dt.datetime) -> None:
    """``dag.test()`` records a run as started at its logical date (weeks ago for the demo's
    replayed month), so the UI showed runs lasting weeks; record when it really started."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import update

    with create_session() as session:
        session.execute(update(DagRun).where(DagRun.id == dr.id).values(start_date=started))


def _at_beijing(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=cal.BEIJING)


def run_demo(
    root: Path,
    month: str,
    *,
    usage_rows_per_day: int = 200,
    n_partners: int = 4,
    seed: int = 7,
    dags_folder: Path = REPO / "dags",
) -> None:
    """Run the demo end to end into ``root`` (wiped first)."""
    t_start = time.monotonic()
    cal.parse_month(month)
    first, last = cal.first_day(month), cal.cutoff(month)
    days = cal.date_range(first, last)

    _prepare_dir(root)
    env = _airflow_env(root, dags_folder, first - dt.timedelta(days=1))
    os.environ.update(env)
    airflow_home = Path(env["AIRFLOW_HOME"])
    (airflow_home / "logs").mkdir(parents=True, exist_ok=True)
    log_path = airflow_home / "logs" / "demo.log"

    _say(f"koobill demo: bill month {month}, data dir {root}")
    _say(f"  Airflow home {airflow_home} (SQLite), DAGs from {dags_folder}, log {log_path}")

    t = time.monotonic()
    _say("[1/5] airflow db migrate ...")
    _migrate(env, log_path)
    _say(f"      done in {time.monotonic() - t:.1f} s")

    _generate_landing(root, days, seed, usage_rows_per_day, n_partners)
    daily, close, exports = _load_dags(dags_folder, log_path)
    _run_daily(daily, days, log_path)

    t = time.monotonic()
    close_at = _at_beijing(cal.close_date(month), 2, 0)
    _say(f"[4/5] koobill_month_close: run of {close_at:%Y-%m-%d %H:%M} Beijing closes {month} ...")
    _run_dag(close, log_path, f"koobill_month_close for {month}", logical_date=close_at)
    _say(f"      bills validated and published in {time.monotonic() - t:.1f} s")

    t = time.monotonic()
    _say("[5/5] koobill_exports: exports of the month just published ...")
    _run_dag(exports, log_path, f"koobill_exports for {month}", logical_date=None)
    _say(f"      done in {time.monotonic() - t:.1f} s")

    _print_summary(root, month)
    _print_page_users(root, month)
    noon = _at_beijing(cal.close_date(month), 12, 0)
    if dt.datetime.now(dt.UTC) > noon:
        _say(
            f"Note: the demo closes a past month after its deadline ({noon:%Y-%m-%d %H:%M}"
            " Beijing) had already passed, so no late-close alert was raised."
        )
    _say(f"demo finished in {time.monotonic() - t_start:.0f} s")
    _say(f"Browse the same DAGs and runs in Airflow's UI: make airflow DATA_DIR={root}")
    _print_how_to_look(root, month)


def _generate_landing(
    root: Path, days: list[dt.date], seed: int, usage_rows_per_day: int, n_partners: int
) -> None:
    """Step 2: the sample landing zone of every date of the demo."""
    from pipelines.generate import generate

    t = time.monotonic()
    _say(
        f"[2/5] generating landing dates {days[0]}..{days[-1]} "
        f"({n_partners} partners, {usage_rows_per_day} usage rows a day, seed {seed}) ..."
    )
    summary = generate(
        root,
        days[0].isoformat(),
        days[-1].isoformat(),
        seed=seed,
        usage_rows_per_day=usage_rows_per_day,
        n_partners=n_partners,
        bad_rows=True,
    )
    for line in str(summary or "").splitlines():
        _say(f"      {line}")
    _say(f"      done in {time.monotonic() - t:.1f} s")


def _load_dags(dags_folder: Path, log_path: Path):
    """The three DAGs, parsed as Airflow parses them (its chatter goes to the log)."""
    with _captured(log_path):
        from airflow.dag_processing.dagbag import BundleDagBag

        # puts the DAGs folder on sys.path, as Airflow does: the DAG files import koobill_common
        bag = BundleDagBag(dag_folder=str(dags_folder), bundle_path=dags_folder)
    if bag.import_errors:
        raise DemoError(f"DAG import errors: {bag.import_errors}")
    return bag.dags["koobill_daily"], bag.dags["koobill_month_close"], bag.dags["koobill_exports"]


def _run_daily(daily, days: list[dt.date], log_path: Path) -> None:
    """Step 3: one run of koobill_daily per landing date, as the scheduler would make them."""
    t = time.monotonic()
    _say(f"[3/5] koobill_daily: {len(days)} runs (01:30 Beijing, each ingests the day before)")
    for day in days:
        t_day = time.monotonic()
        logical = _at_beijing(day + dt.timedelta(days=1), 1, 30)
        _run_dag(daily, log_path, f"koobill_daily for {day}", logical_date=logical)
        _say(
            f"      {logical:%Y-%m-%d %H:%M} run ingested {day}  ({time.monotonic() - t_day:.1f} s)"
        )
    _say(f"      done in {time.monotonic() - t:.1f} s")


def duckdb_hint(root: Path) -> str:
    """Python that lists the analysts' tables of ``root``'s warehouse, read-only."""
    return (
        f"import duckdb; duckdb.connect('{root / 'warehouse.duckdb'}', read_only=True)"
        ".sql('show tables').show()"
    )


def how_to_look(root: Path, month: str) -> list[str]:
    """How to point the CLI, DuckDB and the page at the demo data (printed last)."""
    make = "make serve" if root == REPO / "data" / "demo" else f"make serve DATA_DIR={root}"
    return [
        "Look at the demo data:",
        f'  export PATH="{REPO / ".venv" / "bin"}:$PATH"   # koobill on PATH',
        f"  export KOOBILL_DATA_DIR={root}",
        f"  koobill amount-due --partner ptn-haina; koobill exports list --month {month}",
        # the venv's DuckDB: the DuckDB command-line tool is not installed by the project
        f'  {REPO / ".venv" / "bin" / "python"} -c "{duckdb_hint(root)}"'
        "   # the analysts' tables (README, Analysts)",
        f"  {make}   # the Partner Bills page",
    ]


def _print_how_to_look(root: Path, month: str) -> None:
    _say()
    for line in how_to_look(root, month):
        _say(line)


def _print_summary(root: Path, month: str) -> None:
    from pipelines.close import print_bills
    from pipelines.warehouse import open_warehouse

    con = open_warehouse(root, read_only=True)
    try:
        cur = con.execute(
            "select * from bills where bill_month = ? and status = 'closed' order by partner_id",
            [month],
        )
        cols = [c[0] for c in cur.description]
        bills = [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        n_est = con.execute(
            "select count(*) from estimates where bill_month = ?", [month]
        ).fetchone()[0]
        exports = con.execute(
            "select count(*), coalesce(sum(bytes), 0) from export_history where bill_month = ?",
            [month],
        ).fetchone()
    finally:
        con.close()

    _say()
    _say(f"Bills of {month} ({len(bills)} partners; {n_est} daily estimate rows led up to them):")
    print_bills(bills, _say)
    _say()
    _say(f"Exports: {exports[0]} files, {exports[1]:,} bytes, recorded in export_history")
    base = root / "exports"
    for folder in sorted(base.glob(f"*/{month}")):
        names = ", ".join(sorted(p.name for p in folder.iterdir() if p.is_file()))
        _say(f"  {folder}: {names}")
    _say(f"Warehouse for analysts: {root / 'warehouse.duckdb'}")


def _print_page_users(root: Path, month: str) -> None:
    """Accounts of the Partner Bills page: finance and one user per demo partner."""
    from pipelines.accounts import create_demo_users
    from pipelines.web.data import reader

    with reader(root) as db:
        partners = [p["partner_id"] for p in db.partners()]
    users = create_demo_users(root, partners)
    _say()
    _say("Partner Bills page: `make serve`, then open http://127.0.0.1:8000/ and sign in as")
    for username, role, pid, password in users:
        scope = f"sees partner {pid}" if pid else "sees every partner"
        _say(f"  {username:<20} password {password:<14} ({role}: {scope})")
    _say(f"  (shown once; reset one with: koobill --data-dir {root} users reset-password ...)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.demo",
        description="Generate a month of sample data and bill it through the real Airflow DAGs.",
    )
    parser.add_argument("--data-dir", required=True, help="Folder for the demo (wiped first).")
    parser.add_argument(
        "--month", default=DEMO_MONTH, help=f"Bill month YYYY-MM (default: {DEMO_MONTH})."
    )
    parser.add_argument("--usage-rows-per-day", type=int, default=200)
    parser.add_argument("--partners", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dags-folder", default=str(REPO / "dags"))
    args = parser.parse_args(argv)
    from pipelines.errors import KoobillError

    try:
        run_demo(
            Path(args.data_dir).expanduser().resolve(),
            args.month,
            usage_rows_per_day=args.usage_rows_per_day,
            n_partners=args.partners,
            seed=args.seed,
            dags_folder=Path(args.dags_folder).expanduser().resolve(),
        )
    except (DemoError, KoobillError, ValueError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
