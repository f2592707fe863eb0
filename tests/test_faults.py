"""Faults: SIGKILL in the middle of ingest, close and export; two closes at once; a disk that
fills up or a lake that cannot be written; reruns that must give the same bytes; commands that
must not write outside the data dir nor mix partners.

The commands run as real ``koobill`` processes (``pipelines.cli.main`` with its argv), forked
from a server that has imported koobill, DuckDB and Great Expectations once: a kill lands in
the work itself, not in interpreter start-up. After every kill the visible state is checked
(a committed partition has every member file, each whole; no ``*.tmp`` export is
listed); the final rerun must equal a clean run, byte for byte.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers import (
    after_data_dir_line,
    lake_state,
    land,
    order,
    partner,
    payment,
    price,
    usage,
    warehouse,
)
from helpers import lake_digest as _lake_digest

from pipelines import delta, lake

REPO = Path(__file__).resolve().parent.parent
MONTH = "2026-11"
DAYS = ["2026-11-09", "2026-11-10"]
PRELOAD = [
    "pipelines.cli",
    "pipelines.ingest",
    "pipelines.close",
    "pipelines.exports",
    "pipelines.quality",
    "pipelines.warehouse",
    "great_expectations",
    "duckdb",
    "pyarrow",
    "xlsxwriter",
    "fpdf",
]
FAULTS = {"kills": 0}  # counted for the report


# --- running koobill as a killable process ----------------------------------------------------


def _child(args: list[str], env: dict[str, str], out: str) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    import tempfile

    tempfile.tempdir = None  # honour a TMPDIR set for this run
    sys.argv = ["koobill", *args]
    from pipelines.cli import main

    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


_CTX = None
_OUT: list[Path] = []  # the runs' output folder, made by the test process only


def _out_dir() -> Path:
    if not _OUT:
        _OUT.append(Path(__import__("tempfile").mkdtemp(prefix="koobill-fault-out-")))
        atexit.register(shutil.rmtree, _OUT[0], True)
    return _OUT[0]


def _ctx():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


class Run:
    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None):
        self.out = _out_dir() / f"out-{os.getpid()}-{time.monotonic_ns()}.txt"
        full_env = {"KOOBILL_LOCK_WAIT_S": "0", **(env or {})}
        self.proc = _ctx().Process(
            target=_child, args=(["--data-dir", str(data_dir), *args], full_env, str(self.out))
        )
        self.t0 = time.monotonic()
        self.proc.start()

    def wait(self, timeout: float = 300) -> tuple[int, str]:
        self.proc.join(timeout)
        assert self.proc.exitcode is not None, "koobill did not finish"
        self.seconds = time.monotonic() - self.t0
        return self.proc.exitcode, self.out.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            FAULTS["kills"] += 1
        self.proc.join(60)


def koobill(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    code, out = Run(data_dir, *args, env=env).wait()
    assert code == 0, out
    return out


# --- state as a reader sees it ----------------------------------------------------------------


def lake_digest(data_dir: Path, *, skip: tuple[str, ...] = ("export_history",)) -> dict:
    """sha256 of every member file of every committed partition (as a reader sees them)."""
    return _lake_digest(data_dir / "lake", skip=skip)


def bills_content(data_dir: Path) -> list[dict]:
    """bills.parquet of every month without closed_at (a timestamp, expected to differ)."""
    rows = []
    for _month, part in lake.partitions(data_dir / "lake" / "bills", "bill_month"):
        f = part / "bills.parquet"
        rows += [
            {k: v for k, v in r.items() if k != "closed_at"} for r in pq.read_table(f).to_pylist()
        ]
    return rows


WAREHOUSE_TABLES = ("ingest_files", "quarantine", "payments", "estimates", "bill_lines")


def warehouse_content(data_dir: Path) -> dict:
    out = {t: warehouse(data_dir, f"select * from {t} order by all") for t in WAREHOUSE_TABLES}
    out["bills"] = warehouse(data_dir, "select * exclude (closed_at) from bills order by all")
    return out


def assert_visible_state_complete(data_dir: Path) -> None:
    """Every committed partition has its members' files, each whole; no member table lists a
    file that is not there or torn."""
    want = {
        "bills": {"bills.parquet", "bill_lines.parquet"},
        "ingest": {
            "orders.parquet",
            "usage.parquet",
            "files.parquet",
            "quarantine.parquet",
            "estimates.parquet",
            "partners.parquet",
            "prices.parquet",
        },
    }
    for table, prefix in (("ingest", "landing_date"), ("bills", "bill_month")):
        tdir = data_dir / "lake" / table
        for member in lake.members(tdir):
            for uri in delta.table_files(tdir / member):
                pq.read_metadata(delta.local_file(uri))  # a torn Parquet file has no footer
        for _value, part in lake.partitions(tdir, prefix):
            names = {f"{m}.parquet" for m in lake.members(tdir) if (part / f"{m}.parquet").exists()}
            assert want[table] <= names, (part, names)
            if table == "ingest":
                for r in pq.read_table(part / "files.parquet").to_pylist():
                    assert r["rows_read"] == r["accepted"] + r["quarantined"] + r["duplicates"]


def assert_exports_consistent(data_dir: Path) -> None:
    """No temp file is ever listed as an export; every listed export exists with its sha256."""
    from pipelines.exports import list_exports

    for r in list_exports(data_dir):
        assert ".tmp" not in r["path"] and not Path(r["path"]).name.startswith("."), r["path"]
        p = data_dir / r["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == r["sha256"], r["path"]


# --- the data set -----------------------------------------------------------------------------


def build_landing(data_dir: Path, usage_rows: int = 20_000) -> None:
    partners = [
        partner("P1"),
        partner("P2", currency="USD", discount_rate="0"),
        partner("A_1"),
        partner("AB1"),
        partner("P10"),
    ]
    for day in DAYS:
        land(data_dir, "partners", day, partners)
        land(data_dir, "prices", day, [price("S1"), price("SUSD", currency="USD")])
    # every customer id starts with its partner id: a leak between partners is visible
    land(
        data_dir,
        "orders",
        DAYS[0],
        [
            order("o1", customer_id="P1-C1"),
            order("o2", partner_id="P2", currency="USD", customer_id="P2-C1"),
            order("o3", partner_id="A_1", customer_id="A_1-C1", customer_name="=cmd|x"),
        ],
    )
    land(data_dir, "payments", DAYS[0], [payment("pay1")])
    # a usage file big enough that the ingest takes a few seconds
    cols = list(usage().keys())
    lines = [",".join(cols)]
    pids = ["P1", "A_1", "AB1", "P10"]
    for i in range(usage_rows):
        r = usage(
            f"u{i}",
            partner_id=pids[i % 4],
            customer_id=f"{pids[i % 4]}-C{i % 50}",
            customer_name=f"customer of {pids[i % 4]}",
            quantity=f"{i % 7}.5",
        )
        lines.append(",".join(r[c] for c in cols))
    folder = data_dir / "landing" / "usage" / DAYS[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "usage.csv").write_text("\n".join(lines) + "\n")
    land(
        data_dir,
        "orders",
        DAYS[1],
        [
            order("o4", partner_id="AB1", customer_id="AB1-C1"),
            order("o5", partner_id="P10", customer_id="P10-C1"),
        ],
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, worker_id) -> dict:
    """A clean run: ingest both days, close the month (--force), export every partner. Built
    once per test session and shared by the xdist workers (under a lock)."""
    import fcntl
    import json

    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent
    lock = base / "faults-reference.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        done = base / "faults-reference" / "reference.json"
        if not done.exists():
            ref = _build_reference(base / "faults-reference" / "data")
            done.write_text(json.dumps({k: v for k, v in ref.items() if k != "dir"}, default=str))
    ref = json.loads(done.read_text())
    ref["dir"] = base / "faults-reference" / "data"
    ref["warehouse"] = warehouse_content(ref["dir"])  # typed values, not their JSON text
    ref["bills"] = bills_content(ref["dir"])
    return ref


def _build_reference(d: Path) -> dict:
    build_landing(d)
    stages = d.parent / "stages"
    shutil.copytree(d, stages / "ingest", symlinks=True)
    t = {}
    for day in DAYS:
        r = Run(d, "ingest", "--date", day, "--quiet")
        code, out = r.wait()
        assert code == 0, out
        t[day] = r.seconds
    shutil.copytree(d, stages / "close", symlinks=True)
    r = Run(d, "close", "--month", MONTH, "--force")
    assert r.wait()[0] == 0
    t["close"] = r.seconds
    shutil.copytree(d, stages / "export", symlinks=True)
    r = Run(d, "export", "--month", MONTH)
    code, out = r.wait()
    assert code == 0, out
    r = Run(d, "export", "--month", MONTH, "--partner", "A_1")  # what the kill test runs
    assert r.wait()[0] == 0
    t["export"] = r.seconds
    print(f"clean run seconds: {t}")
    return {"dir": d, "seconds": t, "lake": lake_digest(d), "exports": export_digest(d)}


def export_digest(data_dir: Path, formats=("csv", "parquet")) -> dict:
    root = data_dir / "exports"
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix[1:] in formats
    }


def fresh_copy(reference: dict, tmp_path: Path, upto: str) -> Path:
    """A data dir with the reference's landing zone and nothing (or the ingests) done."""
    d = tmp_path / "data"
    shutil.copytree(Path(reference["dir"]).parent / "stages" / upto, d, symlinks=True)
    return d


def kill_points(seconds: float, n: int, seed: int) -> list[float]:
    rnd = random.Random(seed)
    return sorted(rnd.uniform(0.05, 1.0) * seconds for _ in range(n))


def kill_then_rerun(
    d: Path,
    args: list[str],
    seconds: float,
    seed: int,
    n: int = 4,
    tmp_glob: str = "lake/*/.staging/*.tmp",
) -> int:
    """Kill ``koobill args`` at ``n`` random moments (plus once right after its version folder
    appears), checking the visible state after each kill; return the number of kills."""
    kills = 0
    delays = kill_points(seconds, n, seed)
    for delay in [None, *delays]:
        r = Run(d, *args)
        if delay is None:  # poll for the uncommitted version folder, then kill
            deadline = time.monotonic() + seconds * 3
            while time.monotonic() < deadline and r.proc.is_alive():
                if list(d.glob(tmp_glob)):
                    break
                time.sleep(0.005)
        else:
            time.sleep(delay)
        was_alive = r.proc.is_alive()
        r.kill()
        kills += was_alive
        assert_visible_state_complete(d)
        assert_exports_consistent(d)
        if (d / "warehouse.duckdb").exists():  # opens (after WAL replay) and answers
            warehouse(d, "select count(*) from ingest_files")
    return kills


# --- SIGKILL -----------------------------------------------------------------------------------


def test_kill_ingest_then_rerun_equals_a_clean_run(reference: dict, tmp_path: Path):
    d = fresh_copy(reference, tmp_path, "ingest")
    koobill(d, "ingest", "--date", DAYS[0], "--quiet")
    before = lake_digest(d)
    kills = kill_then_rerun(
        d, ["ingest", "--date", DAYS[1], "--quiet"], reference["seconds"][DAYS[1]], seed=1, n=3
    )
    assert kills >= 2
    # after the kills the other date is exactly as it was
    now = lake_digest(d)
    assert {k: v for k, v in now.items() if DAYS[0] in k} == {
        k: v for k, v in before.items() if DAYS[0] in k
    }
    koobill(d, "ingest", "--date", DAYS[1], "--quiet")
    koobill(d, "close", "--month", MONTH, "--force")
    assert lake_digest(d, skip=("export_history", "bills")) == {
        k: v for k, v in reference["lake"].items() if "bills" not in k
    }
    assert bills_content(d) == reference["bills"]
    assert warehouse_content(d) == reference["warehouse"]
    assert not list((d / "lake").glob("*/.staging/*.tmp"))


def test_kill_close_then_rerun_equals_a_clean_run(reference: dict, tmp_path: Path):
    d = fresh_copy(reference, tmp_path, "close")
    kills = kill_then_rerun(
        d, ["close", "--month", MONTH, "--force"], reference["seconds"]["close"], seed=2, n=2
    )
    assert kills >= 1  # once a run gets through, the next ones find the month closed
    bills = bills_content(d)
    assert bills in ([], reference["bills"])  # nothing, or the whole month
    koobill(d, "close", "--month", MONTH, "--force")
    assert bills_content(d) == reference["bills"]
    assert {v["version"] for v in bills_content(d)} == {1}  # never a second version
    assert warehouse_content(d) == reference["warehouse"]


def test_kill_export_then_rerun_equals_a_clean_run(reference: dict, tmp_path: Path):
    d = fresh_copy(reference, tmp_path, "export")
    args = ["export", "--month", MONTH, "--partner", "A_1"]
    kills = kill_then_rerun(
        d, args, reference["seconds"]["export"], seed=3, n=2, tmp_glob="exports/*/*/.*.tmp"
    )
    assert kills >= 2
    koobill(d, *args)
    assert export_digest(d) == {
        k: v for k, v in reference["exports"].items() if k.startswith("A_1/")
    }
    assert_exports_consistent(d)
    leftovers = [p for p in (d / "exports").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


# --- two closes at once -------------------------------------------------------------------------


@pytest.mark.parametrize("wait", ["0", "120"])
def test_two_closes_at_once_never_make_two_bills(reference: dict, tmp_path: Path, wait: str):
    d = fresh_copy(reference, tmp_path, "close")
    runs = [
        Run(d, "close", "--month", MONTH, "--force", env={"KOOBILL_LOCK_WAIT_S": wait})
        for _ in range(2)
    ]
    results = sorted(r.wait() for r in runs)
    codes = [c for c, _ in results]
    if wait == "0" and codes == [0, 1]:  # the loser fails fast with a clear message
        assert after_data_dir_line(results[1][1]).startswith(
            "error: another koobill command holds the lock"
        )
        assert "Traceback" not in results[1][1]
    else:  # the second waited for the lock and found the month closed
        assert codes == [0, 0], results
        assert any("already closed (version 1); nothing changed" in o for _, o in results)
    assert bills_content(d) == reference["bills"]
    assert warehouse(d, "select count(*), count(distinct version) from bills") == [
        (len(reference["bills"]), 1)
    ]


# --- writes that fail -----------------------------------------------------------------------------


def test_lake_that_cannot_be_written_fails_clearly(reference: dict, tmp_path: Path):
    d = fresh_copy(reference, tmp_path, "ingest")
    (d / "lake").write_text("not a folder")  # as good as permission denied, even for root
    code, out = Run(d, "ingest", "--date", DAYS[0], "--quiet").wait()
    assert code == 1, out
    assert after_data_dir_line(out).startswith("error: cannot write under"), out
    assert "Not a directory" in out, out
    assert (d / "lake").read_text() == "not a folder"


def test_exports_that_cannot_be_written_fail_clearly(reference: dict, tmp_path: Path):
    d = fresh_copy(reference, tmp_path, "export")
    (d / "exports").write_text("not a folder")
    hist_before = lake.export_history_files(d)
    code, out = Run(d, "export", "--month", MONTH).wait()
    assert code == 1 and after_data_dir_line(out).startswith("error: "), out
    assert "Traceback" not in out
    assert lake.export_history_files(d) == hist_before


@contextlib.contextmanager
def tiny_disk(path: Path, size: str):
    path.mkdir(parents=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.decode(errors="replace"))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_disk(reference: dict, tmp_path: Path):
    """A data dir on a tiny disk (what the first date needs + 256 KB), its landing zone on the
    big disk: the second date (a 20 000-row usage file) does not fit."""
    with tiny_disk(tmp_path / "tiny", "64m") as disk:
        d = disk / "data"
        d.mkdir()
        (d / "landing").symlink_to(Path(reference["dir"]) / "landing")
        koobill(d, "ingest", "--date", DAYS[0], "--quiet")
        used = shutil.disk_usage(disk).used
        subprocess.run(["mount", "-o", f"remount,size={used + 256 * 1024}", str(disk)], check=True)
        yield d


def test_full_disk_keeps_the_previous_state(full_disk: Path):
    d = full_disk
    before = lake_digest(d)
    wh = warehouse_content(d)
    code, out = Run(d, "ingest", "--date", DAYS[1], "--quiet").wait()
    assert code == 1, out
    assert lake_digest(d) == before
    assert warehouse_content(d) == wh
    assert not list((d / "lake").glob("*/.staging/*.tmp"))
    assert_visible_state_complete(d)


def test_full_disk_error_is_clear(full_disk: Path):
    code, out = Run(full_disk, "ingest", "--date", DAYS[1], "--quiet").wait()
    assert code == 1 and after_data_dir_line(out).startswith("error: "), out
    assert "No space left" in out, out
    assert "Traceback" not in out


# --- reruns ------------------------------------------------------------------------------------


def test_every_command_twice_gives_the_same_bytes(reference: dict, tmp_path: Path):
    """ingest, close and export run twice on one data dir equal the clean run of another data
    dir: the same Parquet bytes in the lake (bills compared without closed_at), the same
    warehouse tables, the same export files."""
    d = tmp_path / "data"
    shutil.copytree(reference["dir"] / "landing", d / "landing")
    for day in DAYS:
        koobill(d, "ingest", "--date", day, "--quiet")
        first = lake_digest(d)
        koobill(d, "ingest", "--date", day, "--quiet")
        assert lake_digest(d) == first
    koobill(d, "close", "--month", MONTH, "--force")
    first, versions = lake_digest(d), lake_state(d / "lake" / "bills")
    out = koobill(d, "close", "--month", MONTH, "--force")
    assert "already closed (version 1); nothing changed" in out
    assert lake_digest(d) == first
    assert lake_state(d / "lake" / "bills") == versions  # no new commit
    koobill(d, "export", "--month", MONTH, "--partner", "P10")
    exports = export_digest(d)
    koobill(d, "export", "--month", MONTH, "--partner", "P10")
    assert (
        export_digest(d)
        == exports
        == {k: v for k, v in reference["exports"].items() if k.startswith("P10/")}
    )
    assert lake_digest(d, skip=("export_history", "bills")) == {
        k: v for k, v in reference["lake"].items() if "bills" not in k
    }
    assert bills_content(d) == reference["bills"]
    assert warehouse_content(d) == reference["warehouse"]


# --- isolation -------------------------------------------------------------------------------------


def test_nothing_is_written_outside_the_data_dir(tmp_path: Path):
    sandbox = tmp_path / "sandbox"
    d = sandbox / "data"
    home, tmp = sandbox / "home", sandbox / "tmp"
    home.mkdir(parents=True)
    tmp.mkdir()
    build_landing(d, usage_rows=100)
    # hostile ids and names in the data
    land(
        d,
        "partners",
        DAYS[1],
        [partner("P1"), partner("../evil"), partner("..")],
        name="zz-partners.csv",
    )
    land(
        d,
        "orders",
        DAYS[1],
        [order("e1", partner_id="../evil"), order("e2", partner_id="../../../../tmp/evil")],
        name="..evil..csv",
    )
    land(d, "orders", DAYS[1], [order("e3", partner_id="P1/../../x")], name="a..b.csv")
    env = {"HOME": str(home), "TMPDIR": str(tmp), "KOOBILL_MAX_QUARANTINE_SHARE": "1"}
    for day in DAYS:
        koobill(d, "ingest", "--date", day, "--quiet", env=env)
    koobill(d, "close", "--month", MONTH, "--force", env=env)
    koobill(d, "export", "--month", MONTH, env=env)
    for bad in ["../evil", "..", "P1/../P2", "/tmp/x", "P1\x00"]:
        for args in (
            ["export", "--month", MONTH, "--partner", bad],
            ["amount-due", "--partner", bad],
        ):
            code, out = Run(d, *args, env=env).wait()
            assert code == 1 and after_data_dir_line(out).startswith("error: "), out
            assert "invalid partner id" in out, out
    assert sorted(p.name for p in sandbox.iterdir()) == ["data", "home", "tmp"]
    assert list(home.iterdir()) == [] and list(tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sandbox"]
    for p in (d / "exports").rglob("*"):
        rel = p.relative_to(d / "exports").parts
        assert rel[0] in {"P1", "P2", "A_1", "AB1", "P10"}, p
    bad = warehouse(
        d, "select count(*) from bills where partner_id not in ('P1', 'P2', 'A_1', 'AB1', 'P10')"
    )
    assert bad == [(0,)]


def test_no_export_holds_another_partners_rows(reference: dict):
    """Ids that are LIKE patterns or prefixes of each other (A_1 / AB1, P1 / P10): every row of
    a partner's CSV and Parquet export is that partner's (its partner id, its customers)."""
    import csv

    d = Path(reference["dir"])
    for pid in ["P1", "P2", "A_1", "AB1", "P10"]:
        files = sorted((d / "exports" / pid / MONTH).iterdir())
        assert {f.suffix for f in files} == {".pdf", ".xlsx", ".csv", ".parquet"}, pid
        for f in files:
            if f.suffix == ".parquet":
                rows = pq.read_table(f).to_pylist()
            elif f.suffix == ".csv":
                rows = list(csv.DictReader(f.read_text(encoding="utf-8-sig").splitlines()))
            else:
                continue
            assert rows and {r["partner_id"] for r in rows} == {pid}, f
            customers = {r["customer_id"] for r in rows if r["customer_id"]}
            assert customers and all(c.startswith(pid + "-") for c in customers), (f, customers)
    from pipelines.exports import list_exports

    for r in list_exports(d):
        assert r["path"].startswith(f"exports/{r['partner_id']}/{MONTH}/"), r
