"""Landing completeness and data dirs (spec section 2, issue #13 points 2, 3, 5 and 8), as a
user meets them: a date whose files have not arrived, a mistyped --data-dir, a new data dir made
with `koobill init`, dates ingested out of order, and the line naming the data dir."""

from __future__ import annotations

import hashlib
import os
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    after_data_dir_line,
    committed,
    ingest,
    land,
    land_reference,
    order,
    partner,
    price,
    usage,
    warehouse,
)

from pipelines.cli import cli
from pipelines.close import close_month, missing_dates
from pipelines.config import FEEDS, init_data_dir, require_data_dir
from pipelines.exports import export_month
from pipelines.ingest import ingest_date
from pipelines.lake import DataDirError, KoobillError, data_dir_lock
from pipelines.warehouse import rebuild

MONTH = "2026-11"
# the first date ever ingested is 12-01, so closing November needs 12-01 .. 12-04 (the cutoff)
D1, D2, D3, D4 = "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"


def run(*args: str, env: dict[str, str] | None = None):
    """`koobill ARGS` in process; stdout and stderr apart."""
    return CliRunner().invoke(cli, list(args), env=env)


def tree(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed) with its content's sha256 or link target:
    a change anywhere shows."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def lock_files(root: Path) -> list[Path]:
    return list(root.rglob(".koobill.lock"))


# --- a landing date that is not present --------------------------------------------------------


def test_a_date_no_feed_has_a_folder_for_is_an_error_and_writes_nothing(data_dir: Path):
    land_reference(data_dir, D1)
    land(data_dir, "orders", D1, [order("o1", event_time="2026-11-30T10:00:00+08:00")])
    ingest(data_dir, D1)
    before = tree(data_dir)
    res = run("--data-dir", str(data_dir), "ingest", "--date", D2)
    assert res.exit_code == 1, res.output
    err = after_data_dir_line(res.stderr)
    assert err.startswith(f"error: landing date {D2} is not present"), err
    assert str(data_dir / "landing") in err and "--allow-empty" in err
    assert "Traceback" not in res.stderr and res.stdout == ""  # no table of zeros
    assert tree(data_dir) == before
    assert missing_dates(data_dir, MONTH) == [D2, D3, D4]
    # a feed folder of an unknown feed does not make the date present
    (data_dir / "landing" / "invoices" / D2).mkdir(parents=True)
    with pytest.raises(KoobillError, match=f"landing date {D2} is not present"):
        ingest_date(data_dir, D2)
    assert not committed(data_dir / "lake" / "ingest" / f"landing_date={D2}")


def test_allow_empty_records_the_day_and_the_close_counts_it(data_dir: Path):
    land_reference(data_dir, D1)
    land(data_dir, "orders", D1, [order("o1", event_time="2026-11-30T10:00:00+08:00")])
    land(data_dir, "orders", D3, [order("o3", event_time="2026-12-02T10:00:00+08:00")])
    ingest(data_dir, D1)
    res = run("--data-dir", str(data_dir), "ingest", "--date", D2, "--allow-empty")
    assert res.exit_code == 0, res.output
    assert "recorded as an empty day (--allow-empty)" in res.stdout
    assert f"ingested {D2} (empty day): 0 rows read" in res.stdout
    assert committed(data_dir / "lake" / "ingest" / f"landing_date={D2}")
    # the estimates go on as of the empty day, from the earlier snapshot
    assert warehouse(
        data_dir,
        "select partner_id, bill_month, estimate_amount from estimates where as_of_date = ? "
        "order by all",
        [D2],
    ) == [("P1", "2026-11", Decimal("90.00")), ("P1", "2026-12", Decimal("0.00"))]
    # --allow-empty on a present date is an ordinary ingest
    r3 = ingest(data_dir, D3, allow_empty=True)
    assert not r3.empty and r3.feeds["orders"].total("accepted") == 1
    # the close counts the empty day as ingested and waits only for the cutoff
    assert missing_dates(data_dir, MONTH) == [D4]
    with pytest.raises(KoobillError, match=D4):
        close_month(data_dir, MONTH)
    assert ingest(data_dir, D4, allow_empty=True).empty
    assert missing_dates(data_dir, MONTH) == []
    result = close_month(data_dir, MONTH)
    assert not result.forced and [b["partner_id"] for b in result.bills] == ["P1"]


# --- data dirs ---------------------------------------------------------------------------------

COMMANDS = [
    ["ingest", "--date", D1],
    ["ingest", "--date", D1, "--allow-empty"],
    ["close", "--month", MONTH],
    ["close", "--month", MONTH, "--force"],
    ["export", "--month", MONTH],
    ["exports", "list"],
    ["amount-due", "--partner", "P1"],
    ["rebuild-warehouse"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_a_mistyped_data_dir_is_refused_and_nothing_is_created(tmp_path: Path, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = init_data_dir(tmp_path / "data")
    before = tree(tmp_path)
    typo = tmp_path / "dta"
    res = run("--data-dir", str(typo), *args)
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith(f"koobill: data dir {typo} (from --data-dir)\n"), res.stderr
    err = after_data_dir_line(res.stderr)
    assert err.startswith(f"error: data dir {typo} does not exist (from --data-dir)"), err
    assert f"koobill init {typo}" in err and "Traceback" not in res.stderr
    # through $KOOBILL_DATA_DIR: the same refusal, naming where the path came from
    res = run(*args, env={"KOOBILL_DATA_DIR": str(typo)})
    assert res.exit_code == 1 and "(from $KOOBILL_DATA_DIR)" in res.stderr, res.stderr
    # the default ./data of another folder
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = run(*args, env={"KOOBILL_DATA_DIR": ""})
    assert res.exit_code == 1 and "(from default ./data)" in res.stderr, res.stderr
    assert "does not exist" in res.stderr
    (tmp_path / "elsewhere").rmdir()
    assert tree(tmp_path) == before  # no folder, lake, warehouse or lock file appeared
    assert not typo.exists() and lock_files(tmp_path) == [] and real.is_dir()


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_a_folder_that_is_no_data_dir_is_refused_and_left_alone(tmp_path: Path, args):
    """A system-like folder (files, no landing/): no "35 landing dates have not been ingested",
    no lock file left in it."""
    system = tmp_path / "etc"
    (system / "conf.d").mkdir(parents=True)
    (system / "hosts").write_text("127.0.0.1 localhost\n")
    before = tree(tmp_path)
    res = run("--data-dir", str(system), *args)
    assert res.exit_code == 1, res.output
    err = after_data_dir_line(res.stderr)
    assert err.startswith(f"error: {system} is not a koobill data dir: it has no landing/"), err
    assert "not been ingested" not in res.output
    assert tree(tmp_path) == before and lock_files(tmp_path) == []


def test_the_pipeline_functions_refuse_a_data_dir_too(tmp_path: Path):
    """What the DAGs call: the same check, before anything is created or locked."""
    typo, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    for root in (typo, empty):
        calls = [
            lambda r=root: ingest_date(r, D1),
            lambda r=root: ingest_date(r, D1, allow_empty=True),
            lambda r=root: close_month(r, MONTH, force=True),
            lambda r=root: export_month(r, MONTH),
            lambda r=root: rebuild(r),
            lambda r=root: data_dir_lock(r).__enter__(),
            lambda r=root: missing_dates(r, MONTH),
            lambda r=root: require_data_dir(r),
        ]
        for call in calls:
            with pytest.raises(DataDirError, match=str(root)):
                call()
    assert not typo.exists() and list(empty.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_init_then_ingest(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KOOBILL_LOCK_WAIT_S", "0")
    d = tmp_path / "billing" / "data"
    res = run("init", str(d))
    assert res.exit_code == 0, res.output
    assert res.stderr == f"koobill: data dir {d} (from argument)\n"
    assert f"data dir ready: {d}" in res.stdout and f"export KOOBILL_DATA_DIR={d}" in res.stdout
    assert sorted(p.name for p in (d / "landing").iterdir()) == sorted(FEEDS)
    assert sorted(p.name for p in d.iterdir()) == ["landing"]  # no lake, warehouse or lock yet
    # idempotent, also as `--data-dir DIR init`
    before = tree(d)
    assert run("--data-dir", str(d), "init").exit_code == 0
    assert run("init", str(d)).exit_code == 0
    assert tree(d) == before
    # the upstream drops its files; the date ingests
    land_reference(d, D1)
    land(d, "orders", D1, [order("o1", event_time="2026-11-30T10:00:00+08:00")])
    res = run("--data-dir", str(d), "ingest", "--date", D1, "--quiet")
    assert res.exit_code == 0, res.output
    assert f"ingested {D1}: 3 rows read, 0 quarantined" in res.stdout
    assert warehouse(d, "select count(*) from ingest_files") == [(3,)]


def test_init_refuses_a_folder_of_other_things(tmp_path: Path):
    full = tmp_path / "docs"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    res = run("init", str(full))
    assert res.exit_code == 1
    assert "is not empty and is not a koobill data dir" in after_data_dir_line(res.stderr)
    assert sorted(p.name for p in full.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    res = run("init", str(a_file))
    assert res.exit_code == 1 and "is not a folder" in res.stderr
    # an empty folder is fine
    (tmp_path / "new").mkdir()
    assert run("init", str(tmp_path / "new")).exit_code == 0


def test_generate_creates_its_data_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("KOOBILL_LOCK_WAIT_S", "0")
    d = tmp_path / "sample"
    args = ["--start", "2026-10-01", "--end", "2026-10-01", "--usage-rows-per-day", "5"]
    res = run("--data-dir", str(d), "generate", *args, "--no-bad-rows")
    assert res.exit_code == 0, res.output
    assert res.stderr.startswith(f"koobill: data dir {d} (from --data-dir)\n")
    assert sorted(p.name for p in (d / "landing").iterdir()) == sorted(FEEDS)
    # a bad argument creates nothing
    res = run("--data-dir", str(tmp_path / "other"), "generate", "--start", "x", "--end", "y")
    assert res.exit_code == 1 and not (tmp_path / "other").exists()


# --- out-of-order ingest -----------------------------------------------------------------------


def test_ingesting_before_the_partner_snapshot_names_the_missing_date(data_dir: Path):
    """The user ingests 10-02 first on a new data dir: the snapshot lands on 10-01."""
    d0, d1 = "2026-10-01", "2026-10-02"
    land_reference(data_dir, d0)
    land(data_dir, "orders", d0, [order("o0", event_time="2026-10-01T10:00:00+08:00")])
    land(data_dir, "orders", d1, [order("o1", event_time="2026-10-02T10:00:00+08:00")])
    before = tree(data_dir)
    res = run("--data-dir", str(data_dir), "ingest", "--date", d1)
    assert res.exit_code == 1, res.output
    err = after_data_dir_line(res.stderr)
    assert err.startswith(
        f"error: cannot ingest {d1}: no partner snapshot has been ingested on or before {d1}"
    ), err
    assert f"the first landing date with a partners folder is {d0}" in err
    assert f"ingest {d0} first" in err and "Nothing was written" in err
    assert "source looks broken" not in res.output and "quarantined" not in res.output
    # the date's lake and the warehouse are untouched (the writer lock and the scratch folder
    # of the run are the data dir's own)
    scratch = (".koobill.lock", ".tmp")
    assert {k: v for k, v in tree(data_dir).items() if not k.startswith(scratch)} == before
    assert not committed(data_dir / "lake" / "ingest" / f"landing_date={d1}")
    # in order, both dates ingest
    ingest(data_dir, d0)
    assert ingest(data_dir, d1).feeds["orders"].total("accepted") == 1


def test_usage_before_any_price_list_names_the_missing_date(data_dir: Path):
    d0, d1 = "2026-10-01", "2026-10-02"
    land(data_dir, "prices", d0, [price("S1")])
    land(data_dir, "partners", d1, [partner()])  # the snapshot is there, the prices are not
    land(data_dir, "usage", d1, [usage("u1", usage_start="2026-10-02T01:00:00+08:00")])
    with pytest.raises(KoobillError) as exc:
        ingest(data_dir, d1)
    msg = str(exc.value)
    assert msg.startswith(f"cannot ingest {d1}: no price list has been ingested on or before {d1}")
    assert "1 usage row(s) cannot be rated" in msg and f"ingest {d0} first" in msg
    assert not committed(data_dir / "lake" / "ingest" / f"landing_date={d1}")
    ingest(data_dir, d0)
    assert ingest(data_dir, d1).feeds["usage"].total("accepted") == 1


def test_records_with_no_partner_snapshot_anywhere(data_dir: Path):
    day = "2026-10-02"
    land(data_dir, "orders", day, [order("o1", event_time="2026-10-02T10:00:00+08:00")])
    land(data_dir, "partners", "2026-10-05", [partner()])
    with pytest.raises(KoobillError) as exc:
        ingest(data_dir, day)
    msg = str(exc.value)
    assert f"no landing date on or before {day} has a partners folder" in msg
    assert "(the first is 2026-10-05)" in msg
    # a snapshot that landed the same day but holds no valid row is named as such
    land(data_dir, "partners", day, [partner(tax_rate="2")])
    with pytest.raises(KoobillError, match=f"the partners folder of {day} has no valid row"):
        ingest(data_dir, day)


def test_a_day_of_reference_data_only_needs_no_earlier_date(data_dir: Path):
    """Nothing to check against a snapshot: the rule does not apply."""
    land(data_dir, "prices", "2026-10-01", [price()])
    assert ingest(data_dir, "2026-10-01").feeds["prices"].total("accepted") == 1


# --- the line naming the data dir --------------------------------------------------------------


def test_every_command_names_its_data_dir_on_stderr(data_dir: Path, tmp_path, monkeypatch):
    res = run("--data-dir", str(data_dir), "exports", "list")
    assert res.exit_code == 0, res.output
    assert res.stderr == f"koobill: data dir {data_dir} (from --data-dir)\n"
    assert "koobill: data dir" not in res.stdout  # stdout stays clean for pipes
    res = run("exports", "list", env={"KOOBILL_DATA_DIR": str(data_dir)})
    assert res.stderr == f"koobill: data dir {data_dir} (from $KOOBILL_DATA_DIR)\n"
    monkeypatch.chdir(data_dir.parent)  # tmp_path, whose ./data is data_dir
    res = run("exports", "list", env={"KOOBILL_DATA_DIR": ""})
    assert res.stderr == f"koobill: data dir {data_dir} (from default ./data)\n"
    # a relative path is shown absolute
    res = run("--data-dir", "data", "exports", "list")
    assert res.stderr == f"koobill: data dir {data_dir} (from --data-dir)\n"
    # --help names none
    assert run("--help").stderr == "" and run("ingest", "--help").stderr == ""
