"""The record-id index (pipelines/record_index.py): the dedupe's lookup of earlier dates.

The index must never miss a file that holds one of the day's ids (a missed duplicate would be
billed twice), whatever happened to the lake since it was written: dates ingested again,
partitions dropped, a deleted or damaged index, merges of runs. These tests compare it with
a brute-force lookup, then run real ingests with random (UUID-like) ids."""

from __future__ import annotations

import json
import random
import shutil
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pytest

from pipelines import record_index as ri
from pipelines.db import lake_files
from tests.helpers import (
    ingest,
    lake_by_id,
    land,
    land_reference,
    quarantined,
    usage,
)


def _write_ids(folder: Path, day: str, ids: list[str]) -> tuple[tuple[str, str], str]:
    """A lake-like file of ``ids`` for ``day``: ((day, name), path)."""
    f = folder / f"{day}-{uuid.uuid4().hex}.parquet"
    con = duckdb.connect()
    con.execute("create table t (record_id varchar)")
    if ids:
        con.executemany("insert into t values (?)", [(i,) for i in ids])
    con.execute("copy t to $p (format parquet)", {"p": str(f)})
    return (day, f.name), str(f)


def _day(i: int) -> str:
    return f"2026-{1 + i // 28:02d}-{1 + i % 28:02d}"


class Lake:
    """Simulated history: per date one current file of random ids."""

    def __init__(self, tmp: Path, rng: random.Random) -> None:
        self.tmp = tmp
        self.rng = rng
        self.files: dict[str, tuple[tuple[str, str], str, set[str]]] = {}
        self.root = tmp / "data"
        self.index = ri.RecordIndex(self.root, "usage")
        self.con = duckdb.connect()

    def ingest(self, day: str, ids: list[str]) -> None:
        fid, path = _write_ids(self.tmp, day, ids)
        self.files[day] = (fid, path, set(ids))
        keys = ri.keys_of(self.con, "read_parquet($f)", params={"f": lake_files([Path(path)])})
        self.index.add(day, fid[1], ri.prepare_run(keys))
        self.index.compact(self.current())

    def current(self) -> dict:
        return {fid: path for fid, path, _ids in self.files.values()}

    def earlier(self, day: str) -> dict:
        return {fid: path for d, (fid, path, _i) in self.files.items() if d < day}

    def lookup(self, day: str, ids: list[str]) -> list:
        return self.index.files_holding(self.con, _keys(self.con, ids), self.earlier(day))

    def truth(self, day: str, ids: list[str]) -> list:
        want = set(ids)
        return sorted(fid for d, (fid, _p, got) in self.files.items() if d < day and got & want)


def _keys(con, ids: list[str]) -> np.ndarray:
    con.execute("create or replace temp table probe (record_id varchar)")
    con.executemany("insert into probe values (?)", [(i,) for i in ids])
    return ri.keys_of(con, "probe")


def _history(tmp: Path, rng: random.Random, n_days: int, per_day: int) -> tuple[Lake, dict]:
    """A simulated lake of ``n_days`` dates of ``per_day`` random ids, indexed date by date."""
    lake = Lake(tmp, rng)
    days = {}
    for i in range(n_days):
        days[i] = _ids(rng, per_day)
        lake.ingest(_day(i), days[i])
    return lake, days


def _ids(rng: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n)]


def test_lookup_equals_brute_force_through_merges_reruns_and_backfills(tmp_path):
    rng = random.Random(18)
    lake = Lake(tmp_path, rng)
    every: list[str] = []
    for i in range(80):  # 80 dates: level-0, level-1 and level-2 runs
        ids = _ids(rng, 50)
        every += ids
        lake.ingest(_day(i), ids)
        if i % 7 == 3:  # a later date repeats a few ids of random earlier dates
            probe = rng.sample(every, 5) + _ids(rng, 20)
            assert lake.lookup(_day(i + 1), probe) == lake.truth(_day(i + 1), probe)
    levels = sorted(r.level for r in ri._runs(lake.index.folder))
    assert levels.count(2) == 1, levels  # 64 dates merged twice
    # dates ingested again: the new ids are found, the replaced file's ids are not
    for i in (3, 40, 70):
        new = _ids(rng, 30)
        lake.ingest(_day(i), new)
        probe = new[:3] + rng.sample(every, 10)
        assert lake.lookup(_day(90), probe) == lake.truth(_day(90), probe)
    # a backfill: only the dates before it count
    probe = rng.sample(every, 40)
    for day in (_day(10), _day(64), _day(65)):
        assert lake.lookup(day, probe) == lake.truth(day, probe)
    # a date dropped from the lake is no longer reported
    del lake.files[_day(20)]
    assert lake.lookup(_day(99), every) == lake.truth(_day(99), every)


def test_a_missing_or_damaged_index_is_rebuilt_from_the_lake(tmp_path):
    rng = random.Random(7)
    lake, days = _history(tmp_path, rng, 12, 20)
    probe = days[2][:1] + days[9][:2] + _ids(rng, 5)
    want = lake.truth(_day(30), probe)
    assert len(want) == 2
    shutil.rmtree(lake.index.folder)
    assert lake.lookup(_day(30), probe) == want  # every file indexed from the lake, once
    assert len(list(lake.index.folder.glob("*.json"))) == 12
    # a damaged run and a run of another key scheme are dropped and rebuilt
    runs = sorted(lake.index.folder.glob("*.json"))
    runs[0].write_text("{not json")
    meta = json.loads(runs[1].read_text())
    meta["scheme"] = "another hash"
    runs[1].write_text(json.dumps(meta))
    np.save(lake.index.folder / "L0-stray.keys.npy", np.zeros(3, np.uint64))
    assert lake.lookup(_day(30), probe) == want
    # arrays cut short (a disk that lost a write): the run is dropped and its file re-read
    for run in ri._runs(lake.index.folder):
        if (_day(9), lake.files[_day(9)][0][1]) in run.files:
            np.save(run.path("entries"), np.zeros(1, np.uint64))
    assert lake.lookup(_day(30), probe) == want
    lake.index.compact(lake.current())
    assert not (lake.index.folder / "L0-stray.keys.npy").exists()


@pytest.mark.parametrize(
    "damage",
    ["cut_short", "zeroed_filter", "zeroed_entries", "empty_file", "float_entries", "two_runs"],
)
def test_a_damaged_run_is_never_trusted_not_even_by_a_merge(tmp_path, damage):
    """Whatever happened to a run's arrays since they were written, the lookup answers as
    without the index, and a merge never carries a damaged run's file over as covered."""
    rng = random.Random(3)
    lake, days = _history(tmp_path, rng, 7, 40)
    runs = {r.files[0][0]: r for r in ri._runs(lake.index.folder)}
    victims = [runs[_day(0)], runs[_day(1)]] if damage == "two_runs" else [runs[_day(0)]]
    for run in victims:
        entries, bloom = np.array(run.load("entries")), np.array(run.load("bloom"))
        if damage in ("cut_short", "two_runs"):
            np.save(run.path("entries"), entries[: entries.size // 2])
        elif damage == "zeroed_filter":
            np.save(run.path("bloom"), np.zeros_like(bloom))
        elif damage == "zeroed_entries":
            np.save(run.path("entries"), np.zeros_like(entries))
        elif damage == "empty_file":
            run.path("entries").write_bytes(b"")
        else:
            np.save(run.path("entries"), entries.astype(np.float64))
    # the next date's ingest merges the 8 level-0 runs before any lookup sees the damage
    lake.ingest(_day(7), _ids(rng, 40))
    probe = days[0][:3] + days[1][:2] + _ids(rng, 5)
    assert lake.lookup(_day(9), probe) == lake.truth(_day(9), probe)
    assert lake.lookup(_day(9), days[0]) == lake.truth(_day(9), days[0])


def test_an_index_that_cannot_be_written_only_costs_reads(tmp_path, monkeypatch):
    rng = random.Random(4)
    lake = Lake(tmp_path, rng)
    days = {i: _ids(rng, 20) for i in range(4)}
    for i in range(3):
        lake.ingest(_day(i), days[i])
    shutil.rmtree(lake.index.folder)

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ri, "_write_run", refuse)
    said = []
    probe = days[1][:2] + _ids(rng, 3)
    got = lake.index.files_holding(
        lake.con, _keys(lake.con, probe), lake.earlier(_day(5)), said.append
    )
    assert got == sorted(lake.earlier(_day(5)))  # every file it cannot vouch for is read
    assert any("cannot add to the record-id index" in m for m in said)


def test_the_bloom_filter_answers_most_absent_keys_without_the_sorted_keys():
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64) & ri._KEY_MASK)
    m = ri._words_log2(keys.size)
    bloom = np.zeros(1 << m, np.uint64)
    ri._fill_bloom(bloom, keys, m)

    def passes(k):
        return (bloom[ri._word_index(k, m)] & ri._masks(k)) == ri._masks(k)

    assert passes(keys).all()  # never a false negative
    other = np.setdiff1d(
        np.unique(rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64) & ri._KEY_MASK), keys
    )
    assert passes(other).mean() < 0.004, passes(other).mean()


@pytest.mark.parametrize("delete_index", [False, True])
def test_ingests_with_random_ids_find_every_duplicate(data_dir, delete_index):
    """Real ingests with UUID-like ids: a later date re-sends rows of several earlier dates
    (the same content: a duplicate; changed: a conflicting duplicate) among fresh ids; with
    the index as the ingests left it, or deleted (rebuilt from the lake)."""
    rng = random.Random(5)
    days = [f"2026-11-{d:02d}" for d in range(10, 19)]
    land_reference(data_dir, days[0])
    sent: dict[str, list[dict]] = {}
    for day in days[:-1]:
        sent[day] = [usage(str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(30)]
        land(data_dir, "usage", day, sent[day])
        ingest(data_dir, day)
    same = [sent[days[0]][0], sent[days[3]][5], sent[days[3]][6], sent[days[7]][29]]
    changed = [dict(sent[days[1]][2], quantity="3"), dict(sent[days[6]][0], quantity="5")]
    fresh = [usage(str(uuid.UUID(int=rng.getrandbits(128)))) for _ in range(10)]
    land(data_dir, "usage", days[-1], same + changed + fresh)
    if delete_index:
        shutil.rmtree(data_dir / "index")
    r = ingest(data_dir, days[-1])
    assert r.feeds["usage"].total("duplicates") == len(same)
    assert sorted(lake_by_id(data_dir, days[-1], "usage")) == sorted(u["record_id"] for u in fresh)
    q = quarantined(data_dir, days[-1], "usage")
    assert sorted(x["record_id"] for x in q) == sorted(u["record_id"] for u in changed)
    assert {x["reason"].split(" was accepted on ")[1].split()[0] for x in q} == {days[1], days[6]}
    # the index names only the dates holding a re-sent id
    from pipelines import lake
    from pipelines.config import Paths

    earlier = lake.partitions(Paths(data_dir).ingest, "landing_date")[:-1]
    ids = ri.lake_file_ids("usage", earlier)
    con = duckdb.connect()
    con.execute("create table probe (record_id varchar)")
    con.executemany("insert into probe values (?)", [(u["record_id"],) for u in same + changed])
    holding = ri.RecordIndex(data_dir, "usage").files_holding(con, ri.keys_of(con, "probe"), ids)
    assert [d for d, _f in holding] == [days[0], days[1], days[3], days[6], days[7]]


def test_a_rerun_date_counts_with_its_new_rows_only(data_dir):
    d1, d2, d3 = "2026-11-10", "2026-11-11", "2026-11-12"
    land_reference(data_dir, d1)
    land(data_dir, "usage", d1, [usage("x-old")])
    ingest(data_dir, d1)
    ingest(data_dir, d2, allow_empty=True)
    # d1 again, with other rows: x-old was never accepted, x-new was
    shutil.rmtree(data_dir / "landing" / "usage" / d1)
    land(data_dir, "usage", d1, [usage("x-new")])
    ingest(data_dir, d1)
    land(data_dir, "usage", d3, [usage("x-old"), usage("x-new")])
    r = ingest(data_dir, d3)
    assert r.feeds["usage"].total("duplicates") == 1
    assert sorted(lake_by_id(data_dir, d3, "usage")) == ["x-old"]


def test_ingests_succeed_and_dedupe_when_the_index_cannot_be_written(data_dir, monkeypatch):
    from pipelines.ingest import ingest_date

    def refuse(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ri, "_write_run", refuse)
    d1, d2 = "2026-11-10", "2026-11-11"
    land_reference(data_dir, d1)
    land(data_dir, "usage", d1, [usage("u-1"), usage("u-2")])
    said: list[str] = []
    ingest_date(data_dir, d1, progress=said.append)
    assert any("record-id index" in m and "was not updated" in m for m in said), said
    land(data_dir, "usage", d2, [usage("u-2"), usage("u-3")])
    said.clear()
    r = ingest_date(data_dir, d2, progress=said.append)
    assert r.feeds["usage"].total("duplicates") == 1
    assert any("cannot add to the record-id index" in m for m in said), said
