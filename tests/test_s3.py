"""The data dir on S3-compatible object storage (moto's server on 127.0.0.1, started by the
tests): the same bills, lines, estimates, quarantine and export bytes as on local disk, each
step run from another "machine" (a fresh local mirror); a writer killed mid-commit leaves the
previous version readable and its rerun succeeds; writers racing on one partition: one wins,
the other fails cleanly and nothing is lost."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import adjustment, land
from s3server import download_data_dir, moto_available

pytestmark = pytest.mark.skipif(not moto_available(), reason="moto_server is not installed")

REPO = Path(__file__).resolve().parents[1]
SPAN = ("2026-10-30", "2026-11-04")
DAYS = ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
MONTH = "2026-10"
LATE = adjustment(
    "late-adj-1",
    partner_id="ptn-haina",
    customer_id=None,
    product_id=None,
    amount="-12.34",
    currency="CNY",
    bill_month=MONTH,
    reason="late credit",
)


def _machine(tmp_path: Path, monkeypatch, name: str) -> None:
    """Switch to another machine: a fresh local mirror and fresh caches (nothing carried in
    memory from the previous step)."""
    from pipelines import delta, objectstore

    monkeypatch.setenv("KOOBILL_CACHE_DIR", str(tmp_path / f"cache-{name}"))
    objectstore.reset()
    delta.reset_cache()


def _land_late(data_dir: str, tmp_path: Path) -> None:
    """An upstream system puts one more adjustment file into the landing zone of the last day."""
    from pipelines import objectstore

    if not data_dir.startswith("s3://"):
        land(Path(data_dir), "adjustments", DAYS[-1], [LATE], name="late.csv")
        return
    scratch = tmp_path / "upstream"
    f = land(scratch, "adjustments", DAYS[-1], [LATE], name="late.csv")
    bucket, prefix = objectstore.parse_uri(data_dir)
    key = f"{prefix}/landing/adjustments/{DAYS[-1]}/late.csv"
    objectstore.client().put_object(Bucket=bucket, Key=key, Body=f.read_bytes())


def scenario(data_dir: str, tmp_path: Path, switch=lambda name: None) -> None:
    """Generate, ingest every day, close, land a late file, re-ingest, restate, export."""
    from pipelines.close import close_month
    from pipelines.exports import export_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    generate(data_dir, *SPAN, usage_rows_per_day=300, n_partners=3)
    for i, day in enumerate(DAYS):
        switch(f"ingest-{i % 2}")  # two ingest machines taking turns
        ingest_date(data_dir, day)
    switch("close")
    close_month(data_dir, MONTH)
    _land_late(data_dir, tmp_path)
    switch("late")
    ingest_date(data_dir, DAYS[-1])
    switch("restate")
    close_month(data_dir, MONTH, restate=True)
    switch("export")
    export_month(data_dir, MONTH)


TABLES = {
    "bills": ("partner_id, version", {"closed_at"}),
    "bill_lines": ("partner_id, version, line_no", set()),
    "estimates": ("partner_id, bill_month, as_of_date", set()),
    "quarantine": ("feed, landing_date, file, row", set()),
    "payments": ("record_id", set()),
    "amount_due": ("partner_id, bill_month", set()),
    # sha256, bytes: the PDF and XLSX carry the bill's closed_at (see the test)
    "export_history": (
        "partner_id, bill_month, version, format",
        {"export_id", "created_at", "sha256", "bytes"},
    ),
}


def published(data_dir: str) -> dict[str, list[tuple]]:
    """Every compared table of the published analysts' database."""
    from pipelines.config import resolve_data_dir
    from pipelines.warehouse import connect_published

    con = connect_published(resolve_data_dir(data_dir))
    try:
        out = {}
        for table, (order, skip) in TABLES.items():
            cols = [r[0] for r in con.execute(f"describe {table}").fetchall() if r[0] not in skip]
            out[table] = con.execute(f"select {', '.join(cols)} from {table} order by {order}")
            out[table] = out[table].fetchall()
        return out
    finally:
        con.close()


def local_exports(root: Path) -> dict[str, str]:
    base = root / "exports"
    return {
        p.relative_to(base).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def bucket_exports(data_dir: str) -> dict[str, str]:
    """The export files as they lie in the bucket (not in any mirror)."""
    from pipelines import objectstore

    bucket, prefix = objectstore.parse_uri(data_dir)
    s3 = objectstore.client()
    out = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/exports/")
    for page in pages:
        for item in page.get("Contents", ()):
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rel = item["Key"][len(f"{prefix}/exports/") :]
            out[rel] = hashlib.sha256(body).hexdigest()
    return dict(sorted(out.items()))


def _history_with_sha(data_dir: str) -> list[tuple]:
    from pipelines.config import resolve_data_dir
    from pipelines.warehouse import connect_published

    con = connect_published(resolve_data_dir(data_dir))
    try:
        cols = "partner_id, bill_month, version, bill_status, kind, format, path, sha256"
        return con.execute(f"select {cols} from export_history").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def on_local_disk(tmp_path_factory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("local")
    root = tmp / "data"
    scenario(str(root), tmp)
    return published(str(root)), local_exports(root)


def test_the_whole_scenario_on_object_storage_equals_local_disk(
    on_local_disk, s3_env, tmp_path, monkeypatch
):
    local_tables, local_files = on_local_disk
    scenario(s3_env, tmp_path, lambda name: _machine(tmp_path, monkeypatch, name))
    _machine(tmp_path, monkeypatch, "analyst")  # a reader that ran nothing
    tables = published(s3_env)
    assert tables["bills"] and any("superseded" in r for r in tables["bills"])  # restated
    for name in TABLES:
        assert tables[name] == local_tables[name], name
    # CSV and Parquet carry no closing time: the same bytes as on local disk
    files = bucket_exports(s3_env)
    assert len(files) == len(local_files) and files.keys() == local_files.keys()
    same = (".csv", ".parquet")
    assert {f: h for f, h in files.items() if f.endswith(same)} == {
        f: h for f, h in local_files.items() if f.endswith(same)
    }
    # the PDF and XLSX carry the bill's closed_at (creation date, on the page), which two
    # closes cannot share: they are the bytes a local export of the bucket's bills writes.
    # The bucket is a data dir as it is: a plain copy of it (Delta logs hold relative paths)
    copy = download_data_dir(s3_env, tmp_path / "copy", skip=("exports/",))
    from pipelines.exports import export_month

    export_month(str(copy), MONTH)
    assert local_exports(copy) == files
    history = {r[6]: r for r in _history_with_sha(s3_env)}
    assert {path.removeprefix("exports/"): r[-1] for path, r in history.items()} == files
    # the bucket holds the lake as Delta tables (the log and its Parquet files), no symlink
    from pipelines import objectstore

    bucket, prefix = objectstore.parse_uri(s3_env)
    keys = [k for k, _s, _e in objectstore.list_keys(s3_env + "/lake/bills/bills")]
    assert any(k.startswith("_delta_log/") and k.endswith(".json") for k in keys)
    assert any(k.startswith(f"bill_month={MONTH}/") and k.endswith(".parquet") for k in keys)


def test_the_mirror_is_only_a_cache(s3_env, tmp_path, monkeypatch):
    """Deleting a machine's mirror loses nothing: the next command rebuilds what it needs."""
    import shutil

    from pipelines.close import close_month
    from pipelines.config import resolve_data_dir
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    for day in DAYS[:2]:
        ingest_date(s3_env, day)
    before = published(s3_env)
    shutil.rmtree(resolve_data_dir(s3_env))
    _machine(tmp_path, monkeypatch, "same-name-again")
    close_month(s3_env, MONTH, force=True)
    after = published(s3_env)
    assert after["estimates"] == before["estimates"]
    assert [r[0] for r in after["bills"]] == sorted({r[0] for r in before["estimates"]})


CHILD = r"""
import os, signal, sys

def hook(event, args):
    # the marker member (files) of the ingest partition is about to be placed: every other
    # member of the date is committed, the partition is not listed yet
    if event == "os.rename" and "/lake/ingest/files/" in str(args[1]):
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(hook)
from pipelines.ingest import ingest_date

ingest_date(sys.argv[1], sys.argv[2])
"""


def test_a_writer_killed_mid_commit_leaves_the_previous_version_and_the_rerun_succeeds(
    s3_env, tmp_path, monkeypatch
):
    from pipelines import lake
    from pipelines.config import Paths, resolve_data_dir
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    for day in DAYS[:2]:
        ingest_date(s3_env, day)
    before = published(s3_env)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, s3_env, DAYS[2]],
        cwd=REPO,
        env={**os.environ, "KOOBILL_CACHE_DIR": str(tmp_path / "cache-killed")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    _machine(tmp_path, monkeypatch, "after-the-crash")
    root = resolve_data_dir(s3_env)
    # the date is not listed, the earlier dates read as before, nothing was published
    assert [v for v, _p in lake.partitions(Paths(root).ingest, "landing_date")] == DAYS[:2]
    assert published(s3_env) == before
    # the dead writer's lease does not hold the next one back (same machine, process gone)
    ingest_date(s3_env, DAYS[2])
    assert [v for v, _p in lake.partitions(Paths(root).ingest, "landing_date")] == DAYS[:3]
    after = published(s3_env)
    assert len(after["estimates"]) > len(before["estimates"])


def test_two_writers_racing_on_one_partition_one_wins_nothing_is_lost(
    s3_env, tmp_path, monkeypatch
):
    """Two machines commit the same partition of one table from the same base version: the
    log's conditional write lets exactly one through; the other fails with a clear error and
    changes nothing; the table holds the winner's file whole."""
    import duckdb

    from pipelines import delta, lake
    from pipelines.config import resolve_data_dir
    from pipelines.errors import KoobillError

    root = resolve_data_dir(s3_env)
    table = root / "lake" / "race" / "numbers"
    con = duckdb.connect()
    first = tmp_path / "first.parquet"
    con.execute(f"copy (select 'a' as k, 0 as n) to '{first}' (format parquet)")
    delta.commit_file(table, "k", "a", first)
    files = []
    for i in (1, 2):
        f = tmp_path / f"writer{i}.parquet"
        con.execute(f"copy (select 'a' as k, {i} as n from range(1000)) to '{f}' (format parquet)")
        files.append(f)
    # both writers read the table at the same version, then commit
    from deltalake import DeltaTable

    base = [
        DeltaTable(
            delta.table_uri(table), storage_options=delta._storage_options(delta.table_uri(table))
        )
        for _ in (1, 2)
    ]
    results: list[object] = [None, None]
    barrier = threading.Barrier(2)

    for dt in base:  # each writer commits from the version it read (no refresh before)
        dt.update_incremental = lambda: None

    def writer(i: int) -> None:
        delta._cache(delta.table_uri(table), table, base[i])
        barrier.wait()
        try:
            delta.commit_file(table, "k", "a", files[i], what=f"writer {i + 1}")
            results[i] = "ok"
        except KoobillError as exc:
            results[i] = exc

    threads = [threading.Thread(target=writer, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r == "ok" for r in results) == [False, True], results
    loser = next(r for r in results if r != "ok")
    assert isinstance(loser, delta.LakeConflict)
    assert "another writer committed" in str(loser) and "Run the command again" in str(loser)
    delta.reset_cache()
    (uri,) = delta.partition_files(table, "k")["a"]
    n = con.execute(
        "select count(*), min(n), max(n) from read_parquet($f)", {"f": str(delta.local_file(uri))}
    ).fetchone()
    assert n[0] == 1000 and n[1] == n[2] and n[1] in (1, 2)
    writes = [h for h in delta.history(table) if h["operation"] in ("WRITE", "CREATE TABLE")]
    assert len(writes) == 2  # the first commit and the winner's
    assert lake.members(table.parent) == ["numbers"]


def test_two_ingests_from_two_machines_take_turns(s3_env, tmp_path, monkeypatch):
    """The bucket's lease lock: a second machine's command waits for the first, then runs."""
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    ingest_date(s3_env, DAYS[0])
    script = textwrap.dedent(
        """
        import sys
        from pipelines.ingest import ingest_date
        ingest_date(sys.argv[1], sys.argv[2])
        print("done", sys.argv[2])
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, s3_env, day],
            cwd=REPO,
            env={**os.environ, "KOOBILL_CACHE_DIR": str(tmp_path / f"cache-m{i}")},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, day in enumerate(DAYS[1:3])
    ]
    t0 = time.monotonic()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert time.monotonic() - t0 < 300
    _machine(tmp_path, monkeypatch, "reader")
    from pipelines.config import resolve_data_dir
    from pipelines.warehouse import connect_published

    con = connect_published(resolve_data_dir(s3_env))
    try:
        days = con.execute("select distinct as_of_date::varchar from estimates order by 1")
        assert [d for (d,) in days.fetchall()] == DAYS[:3]
        amounts = con.execute("select estimate_amount from estimates").fetchall()
        assert amounts and all(isinstance(a, Decimal) for (a,) in amounts)
    finally:
        con.close()


def test_the_page_reads_the_published_state_from_the_bucket(s3_env, tmp_path, monkeypatch):
    """A page server on a machine that ran nothing: its accounts, bills and export files all
    come from the bucket, and a new publication shows without a restart."""
    from fastapi.testclient import TestClient
    from web_helpers import csrf_of

    from pipelines import accounts
    from pipelines.close import close_month
    from pipelines.config import resolve_data_dir
    from pipelines.exports import export_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date
    from pipelines.web.app import create_app

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    for day in DAYS[:2]:
        ingest_date(s3_env, day)
    accounts.add_user(
        resolve_data_dir(s3_env), "bright", "partner", "pw-bright-123456", "ptn-brightsoft"
    )
    _machine(tmp_path, monkeypatch, "web")
    root = resolve_data_dir(s3_env)
    assert not (root / "warehouse.duckdb").exists()  # nothing in this mirror yet
    with TestClient(create_app(root)) as client:
        page = client.get("/login")
        r = client.post(
            "/login",
            data={
                "username": "bright",
                "password": "pw-bright-123456",
                "csrf_token": csrf_of(page.text),
                "next": "/",
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/", (r.headers, r.text[:300])
        r = client.get("/")
        assert r.status_code == 200 and "BrightSoft" in r.text, r.text[:3000]
        # another machine closes and exports; the page shows it on its next request
        monkeypatch.setenv("KOOBILL_CACHE_DIR", str(tmp_path / "cache-writer"))
        from pipelines import delta, objectstore

        objectstore.reset()
        delta.reset_cache()
        close_month(s3_env, MONTH, force=True)
        result = export_month(s3_env, MONTH, partner="ptn-brightsoft", formats=["pdf"])
        (pdf,) = [f for f in result.files if f.format == "pdf"]
        bucket, prefix = objectstore.parse_uri(s3_env)
        body = objectstore.client().get_object(Bucket=bucket, Key=f"{prefix}/{pdf.path}")
        expected = body["Body"].read()
        monkeypatch.setenv("KOOBILL_CACHE_DIR", str(tmp_path / "cache-web"))
        objectstore.reset()
        objectstore.mount(s3_env)
        time.sleep(2.1)  # the page looks for a new publication at most every 2 seconds
        html = client.get(f"/bills/{MONTH}").text
        assert "INV-ptn-brightsoft-202610" in html
        r = client.get(f"/exports/{pdf.export_id}")
        assert r.status_code == 200 and r.content == expected
        # no other partner's bill
        assert "ptn-yunqi" not in html and "云启" not in html


def test_init_and_refusals_on_object_storage(s3_env):
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.errors import DataDirError, KoobillError

    runner = CliRunner()
    other = s3_env.rsplit("/", 1)[0] + "/not-a-data-dir"
    r = runner.invoke(cli, ["--data-dir", other, "ingest", "--date", DAYS[0]])
    assert r.exit_code == 1 and "is not a koobill data dir" in r.output, r.output
    assert f"koobill init {other}" in r.output
    r = runner.invoke(cli, ["init", s3_env])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["--data-dir", s3_env, "ingest", "--date", DAYS[0]])
    # a data dir now: the missing landing date is the error, as on disk
    assert r.exit_code == 1 and "--allow-empty" in r.output, r.output
    r = runner.invoke(cli, ["--data-dir", s3_env, "ingest", "--date", DAYS[0], "--allow-empty"])
    assert r.exit_code == 0, r.output
    assert issubclass(DataDirError, KoobillError)
    missing = "s3://koobill-no-such-bucket-4242/data"
    r = runner.invoke(cli, ["--data-dir", missing, "close", "--month", MONTH])
    assert r.exit_code == 1 and "koobill-no-such-bucket-4242" in r.output, r.output
    assert "Traceback" not in r.output


def test_machines_taking_turns_keep_the_published_state_whole(s3_env, tmp_path, monkeypatch):
    """A ingests, B ingests, A closes, B exports and reconciles and ingests again: every
    machine starts from the bucket's publication, reads the bucket's settings and export files,
    and no publication loses what another machine published."""
    from pipelines import objectstore
    from pipelines.close import close_month
    from pipelines.config import resolve_data_dir
    from pipelines.exports import export_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date
    from pipelines.reconcile import reconcile_month
    from pipelines.settings import load_settings

    def bills() -> int:
        return len(published(s3_env)["bills"])

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    bucket, prefix = objectstore.parse_uri(s3_env)
    settings = (REPO / "pipelines" / "assets" / "settings.default.toml").read_text("utf-8")
    settings = settings.replace(settings.split('name = "', 1)[1].split('"', 1)[0], "Acme Billing")
    objectstore.client().put_object(
        Bucket=bucket, Key=f"{prefix}/settings.toml", Body=settings.encode()
    )
    _machine(tmp_path, monkeypatch, "A")
    for day in DAYS[:1]:
        ingest_date(s3_env, day)
    _machine(tmp_path, monkeypatch, "B")
    ingest_date(s3_env, DAYS[1])
    _machine(tmp_path, monkeypatch, "A")
    close_month(s3_env, MONTH, force=True)
    assert bills() == 2
    _machine(tmp_path, monkeypatch, "B")  # B's working copy is from before the close
    assert load_settings(resolve_data_dir(s3_env)).issuer.name == "Acme Billing"
    result = export_month(s3_env, MONTH, formats=["pdf", "csv"])
    assert len(result.files) == 4 and not result.warnings
    assert bills() == 2
    _machine(tmp_path, monkeypatch, "A")  # A did not write the exports: they are in the bucket
    report = reconcile_month(s3_env, MONTH)
    assert report.residuals == [], report.residuals
    _machine(tmp_path, monkeypatch, "B")
    ingest_date(s3_env, DAYS[1])  # a rerun on B after A's and B's turns
    _machine(tmp_path, monkeypatch, "C")
    tables = published(s3_env)
    assert len(tables["bills"]) == 2 and len(tables["export_history"]) == 4


def test_the_bucket_decides_which_landing_files_are_read(s3_env, tmp_path, monkeypatch):
    """A file deleted from the bucket is not read from a mirror that saw it, and a file put
    into a mirror by hand is not read either."""
    from pipelines import objectstore
    from pipelines.config import Paths, resolve_data_dir
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    first = ingest_date(s3_env, DAYS[0])
    root = resolve_data_dir(s3_env)
    folder = Paths(root).landing_dir("orders", DAYS[0])
    (name,) = [p.name for p in folder.iterdir()]
    bucket, prefix = objectstore.parse_uri(s3_env)
    objectstore.client().delete_object(
        Bucket=bucket, Key=f"{prefix}/landing/orders/{DAYS[0]}/{name}"
    )
    land(root, "orders", DAYS[0], [], name="by-hand.csv", columns=["record_id"])
    again = ingest_date(s3_env, DAYS[0])
    assert not folder.exists()  # the mirror follows the bucket: no orders that day
    assert first.feeds["orders"].total("rows_read") > 0
    assert again.feeds["orders"].total("rows_read") == 0


def test_the_page_export_button_works_on_object_storage(s3_env, tmp_path, monkeypatch):
    from pipelines import objectstore
    from pipelines.close import close_month
    from pipelines.config import resolve_data_dir
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date
    from pipelines.web.jobs import run_export

    generate(s3_env, *SPAN, usage_rows_per_day=50, n_partners=2)
    for day in DAYS[:1]:
        ingest_date(s3_env, day)
    close_month(s3_env, MONTH, force=True)
    _machine(tmp_path, monkeypatch, "web")
    outcome = run_export(resolve_data_dir(s3_env), MONTH, "ptn-brightsoft", ["pdf"])
    assert outcome.ok, outcome
    bucket, prefix = objectstore.parse_uri(s3_env)
    keys = [k for k, _s, _e in objectstore.list_keys(s3_env + "/exports")]
    assert keys == ["ptn-brightsoft/2026-10/bill-ptn-brightsoft-2026-10-v1.pdf"], keys
    # an export written by a pool of processes (one per core at scale): every file reaches the
    # bucket, whichever process wrote it
    from pipelines.exports import export_month

    result = export_month(s3_env, MONTH, formats=["csv", "parquet"], workers=2)
    written = {f.path.removeprefix("exports/") for f in result.files}
    keys = {k for k, _s, _e in objectstore.list_keys(s3_env + "/exports")}
    assert len(written) == 4 and written <= keys, (written, keys)


def test_init_refuses_a_prefix_that_holds_other_objects(s3_env):
    from pipelines import objectstore
    from pipelines.config import init_data_dir
    from pipelines.errors import DataDirError

    bucket, prefix = objectstore.parse_uri(s3_env)
    objectstore.client().put_object(Bucket=bucket, Key=f"{prefix}/photos/cat.jpg", Body=b"x")
    with pytest.raises(DataDirError, match="holds objects and is not a koobill data dir"):
        init_data_dir(s3_env)
    assert (
        objectstore.is_remote("S3://Bucket/x") and objectstore.parse_uri("S3://abc/x")[0] == "abc"
    )
