"""A data dir may live anywhere: a path holding DuckDB's glob characters (``[``, ``*``, ``{``),
a quote and a space runs the whole pipeline (ingest every date, close, amount due) exactly as
a plain path does, and never reads the folder such a path would match as a glob. A ``?`` is
escaped in every read like the others (``test_glob_escape_reads_exactly_that_file``), but
DuckDB cannot keep a database file under it (it names the write-ahead log by inserting
``.wal`` before the ``?``): such a data dir is refused before anything is written.

Also the few helpers of ``pipelines.db`` every query relies on: the glob escape, the one
quoting helper, the SQL files and their templates, and the memory limit."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipelines import db, lake
from pipelines.amount_due import amount_due
from pipelines.close import close_month
from pipelines.generate import generate
from pipelines.ingest import ingest_date
from pipelines.lake import KoobillError

FIRST, LAST = "2026-02-26", "2026-03-04"  # February's last landing dates through its cutoff
MONTH = "2026-02"
DATES = [(dt.date(2026, 2, 26) + dt.timedelta(days=i)).isoformat() for i in range(7)]
# As a DuckDB glob, "*" matches anything and "[1]" the digit 1 (braces are literal): the decoy
# folder beside it matches the whole name as a pattern, the folder itself does not.
TRICKY = "it's a {x}*gx[1]"
DECOY = "it's a {x}-gx1"


def _run(root: Path, seed: int = 7) -> dict:
    """Ingest every date, close the month, ask for every partner's amount due; what came out."""
    generate(root, FIRST, LAST, seed=seed, usage_rows_per_day=120, n_partners=3)
    for day in DATES:
        ingest_date(root, day)
    close = close_month(root, MONTH)
    part = lake.at(root / "lake" / "bills" / f"bill_month={MONTH}")
    bills = pq.read_table(part / "bills.parquet").drop_columns(["closed_at"]).to_pylist()
    lines = pq.read_table(part / "bill_lines.parquet").to_pylist()
    quarantine = []
    for day in DATES:
        f = lake.at(root / "lake" / "ingest" / f"landing_date={day}") / "quarantine.parquet"
        quarantine += pq.read_table(f).to_pylist()
    due = {}
    for b in close.bills:
        r = amount_due(root, b["partner_id"])  # as of now: the bills just published count
        due[b["partner_id"]] = (
            r.total_due,
            r.paid_total,
            r.credit_balance,
            [(x["bill_month"], x["version"], x["amount_due"], x["unpaid_amount"]) for x in r.bills],
        )
    return {"bills": bills, "lines": lines, "quarantine": quarantine, "due": due}


def test_a_data_dir_with_glob_characters_a_quote_and_a_space(tmp_path: Path) -> None:
    plain = _run(tmp_path / "plain" / "data")

    # the decoy: a data dir of other data (another seed, ingested and closed) where an
    # unescaped glob of the real path would look; DuckDB falls back to the literal path only
    # when a pattern matches nothing, so the decoy holds every file the real one will
    decoy = tmp_path / DECOY / "data"
    other = _run(decoy, seed=99)
    assert other["bills"] != plain["bills"]
    before = {str(p): p.read_bytes() for p in decoy.rglob("*.parquet")}
    tricky = _run(tmp_path / TRICKY / "data")

    assert plain["bills"], "the month has bills"
    assert any(b["amount_due"] != 0 for b in plain["bills"])
    assert plain["quarantine"], "the generated data has bad rows: the quarantine is compared"
    assert any(due[0] for due in plain["due"].values()), "some amount is due"
    assert tricky == plain
    # the decoy was never read (its data would have made other bills) nor written
    assert {str(p): p.read_bytes() for p in decoy.rglob("*.parquet")} == before


# --- the helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gx[1]", "a*b", "a?b", "x{1,2}", "it's a [b]", "[[]", "a\\b"])
def test_glob_escape_reads_exactly_that_file(tmp_path: Path, name: str) -> None:
    con = db.connect()
    real = tmp_path / name
    real.mkdir()
    for decoy in ("gx1", "aXb", "a-b", "x1", "x2", "it's a b", "["):
        (tmp_path / decoy).mkdir(exist_ok=True)
        con.execute(
            "copy (select 2 as n) to $p (format parquet)",
            {"p": str(tmp_path / decoy / "f.parquet")},
        )
    con.execute("copy (select 1 as n) to $p (format parquet)", {"p": str(real / "f.parquet")})
    q = "select n from read_parquet($files, hive_partitioning = false)"
    got = con.execute(q, {"files": db.lake_files(real / "f.parquet")}).fetchall()
    assert got == [(1,)]
    # the literal form (for a view's definition) is the same list, quoted
    assert con.execute(f"select n from {db.parquet(real / 'f.parquet')}").fetchall() == [(1,)]


def test_quote_path_is_one_string_literal() -> None:
    con = duckdb.connect()
    for text in ["it's", "''", "a'); select 1; --", "x\\'y"]:
        assert con.execute(f"select {db.quote_path(text)}").fetchone()[0] == text


def test_sql_files_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="missing"):
        db.sql("ingest/no_such_step")
    text = db.render("ingest/output_view", view="out_x", variable="koobill_out_x")
    assert "{{" not in text and "out_x" in text
    with pytest.raises(KeyError):
        db.render("ingest/output_view", view="out_x")  # a placeholder left unfilled
    with pytest.raises(KeyError):
        db.render("ingest/output_view", view="v", variable="w", typo="z")  # a part unused
    # every step of the pipeline is a file of the package, read through importlib.resources
    from importlib import resources

    root = resources.files("pipelines.sql")
    assert Path(str(root)) == db.SQL_DIR
    assert root.joinpath("ingest", "checked_rows.sql").is_file()
    assert root.joinpath("close", "bill_partners.sql").is_file()


def test_the_memory_limit_is_validated_then_bound(data_dir: Path, monkeypatch) -> None:
    from helpers import land, land_reference, order

    land_reference(data_dir, "2026-11-10")
    land(data_dir, "orders", "2026-11-10", [order("o1")])
    monkeypatch.setenv("KOOBILL_MEMORY_LIMIT", "1GB'; select 1; --")
    with pytest.raises(KoobillError, match="KOOBILL_MEMORY_LIMIT"):
        ingest_date(data_dir, "2026-11-10")
    monkeypatch.setenv("KOOBILL_MEMORY_LIMIT", "512MB")
    r = ingest_date(data_dir, "2026-11-10")
    assert r.feeds["orders"].total("accepted") == 1
    con = db.connect()
    db.limit_memory(con, "512MB", data_dir / ".tmp")
    assert con.execute("select current_setting('memory_limit')").fetchone()[0] == "488.2 MiB"


def test_a_data_dir_under_a_question_mark_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    from helpers import land, land_reference, order

    from pipelines.config import init_data_dir

    root = init_data_dir(tmp_path / "what?" / "data")
    land_reference(root, "2026-11-10")
    land(root, "orders", "2026-11-10", [order("o1")])
    with pytest.raises(KoobillError, match=r"holds a '\?': DuckDB cannot keep a database there"):
        ingest_date(root, "2026-11-10")
    with pytest.raises(KoobillError, match="Move the data dir to a path without '\\?'"):
        close_month(root, "2026-11", force=True)
    assert not (root / "lake" / "ingest").exists() or not any((root / "lake" / "ingest").iterdir())
    assert not (root / "warehouse.duckdb").exists()


def test_the_decoy_would_be_read_without_the_escape(tmp_path: Path) -> None:
    """The check above means something: unescaped, DuckDB reads the decoy's file."""
    con = db.connect()
    for name, n in ((TRICKY, 1), (DECOY, 2)):
        (tmp_path / name).mkdir()
        target = str(tmp_path / name / "f.parquet")
        con.execute("copy (select $n::integer as n) to $p (format parquet)", {"n": n, "p": target})
    q = "select n from read_parquet($files, hive_partitioning = false)"
    raw = [str(tmp_path / TRICKY / "f.parquet")]
    assert con.execute(q, {"files": raw}).fetchall() == [(2,)]
