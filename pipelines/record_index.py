"""The record-id index: which earlier landing dates may hold one of today's record ids.

The dedupe (spec section 2) looks up each valid row's ``record_id`` among the rows accepted on
earlier landing dates. Without an index that lookup reads the ``record_id`` column of every
earlier partition whose id range overlaps the day's; with random ids (UUID-like, as many
upstream systems issue them) every range overlaps, so a year in every ingest would read the
whole year. The index keeps that cost flat.

It is a cache derived from the lake, never a source of truth: it lives under
``<data dir>/index/record_ids/<feed>/`` (on the local disk, also for a data dir on object
storage), may be deleted at any time, and is rebuilt from the lake where it misses something.

- A record id's *key* is DuckDB's 64-bit ``hash(record_id)`` (the scheme, with DuckDB's
  version, is recorded in every run: another scheme is rebuilt, never mixed).
- A *run* covers a set of lake files (one ``(landing date, file name)`` each: a lake file is
  immutable and uniquely named, so a rerun of a date is a new file). It holds one sorted
  64-bit entry a key (the key's top 56 bits, then the index of the file it came from) and a
  pattern-blocked Bloom filter of the keys (16 bits a key; a key sets one of 65,536 fixed
  8-bit patterns in one 64-bit word: about 1 false hit in 1,000).
- An ingest adds a level-0 run for the file it committed; eight runs of one level are merged
  into one of the next (levels 0, 1, 2: a level-2 run covers 64 dates). A year of daily files
  is therefore about 5 level-2, up to 7 level-1 and 7 level-0 runs: a lookup probes ~20 Bloom
  filters with the day's keys (one 64-bit word read a key and filter), checks the few hits
  against the runs' sorted entries, and returns only the files that hold one of the keys
  (or, rarely, a key with the same top 56 bits: a file read for nothing, never one missed;
  about once in 200 ingests of 1M ids against a year of 1M-id dates).
  The dedupe then reads just those files, as before, and compares the ids themselves.
- A file of an earlier date that no run covers (the index was deleted, a date was ingested by
  another machine, or by a koobill without the index) is indexed from the lake first, once.
- Entries of files the lake no longer has (a date ingested again, a dropped partition) are
  ignored at lookup and dropped by the next merge; a run without any current file is deleted.

Only the writer (an ingest, under the data dir's lock) reads or writes the index.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.files import atomic_path

FANOUT = 8  # runs of one level merged into one run of the next
MAX_LEVEL = 2  # a level-2 run is never merged again (64 daily files)
BITS_PER_KEY = 16
BITS_SET = 8  # bits of a key's pattern, all in one 64-bit word
FORMAT = 4  # 4: one array of entries (56 bits of key, 8 of file), pattern-blocked filter
_FILE_BITS = 8  # a run covers at most 256 files (a level-2 run: 64)
_LOW = np.uint64((1 << _FILE_BITS) - 1)
_HIGH = ~_LOW  # the bits of a key an entry keeps
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying remixes the key's bits
_SLICE_BITS = 6  # merges go through the keys in at least 64 slices of ~128k entries

Echo = Callable[[str], None]
File = tuple[str, str]  # (landing date, file name)


def key_scheme() -> str:
    """The key of a record id: DuckDB's ``hash`` of the VARCHAR, as of this DuckDB version."""
    import duckdb

    return f"duckdb {duckdb.__version__} hash(record_id::varchar)"


KEY_SQL = "hash(cast(record_id as varchar))"


def keys_of(con, relation: str, where: str = "true", params: dict | None = None) -> np.ndarray:
    """The sorted keys of ``relation``'s record ids (a table, view or file read; an id that
    repeats gives its key as often, which the index takes as it comes)."""
    query = f"select {KEY_SQL} as k from {relation} where {where}"
    got = con.execute(query, params or {}).fetchnumpy()
    return np.sort(np.asarray(got["k"], dtype=np.uint64))


def index_dir(root: Path, feed: str) -> Path:
    return Path(root) / "index" / "record_ids" / feed


# --------------------------------------------------------------------------- the Bloom filter


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@functools.cache
def _patterns() -> np.ndarray:
    """2**16 fixed 64-bit words of (up to) BITS_SET bits each: a key's bits in its word are
    one of these patterns (a pattern-blocked Bloom filter: one table read a key)."""
    z = _splitmix64(np.arange(1 << 16, dtype=np.uint64))
    m = np.zeros(z.shape, dtype=np.uint64)
    for i in range(BITS_SET):
        m |= np.uint64(1) << ((z >> np.uint64(6 * i)) & np.uint64(63))
    return m


def _masks(high: np.ndarray) -> np.ndarray:
    """Each key's 64-bit word pattern (``high``: keys with their file bits cleared)."""
    return _patterns()[(high * _MIX) >> np.uint64(48)]


def _words_log2(n: int) -> int:
    """log2 of the filter's 64-bit words for ``n`` keys (at least BITS_PER_KEY bits a key)."""
    need = max(1, -(-n * BITS_PER_KEY // 64))
    return max(6, int(need - 1).bit_length())


def _word_index(high: np.ndarray, m: int) -> np.ndarray:
    return high >> np.uint64(64 - m)


def _fill_bloom(bloom: np.ndarray, entries: np.ndarray, m: int) -> None:
    """OR the sorted ``entries`` (or keys) into ``bloom`` (2**m words)."""
    if entries.size == 0:
        return
    high = entries & _HIGH
    idx = _word_index(high, m)
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    bloom[idx[starts]] |= np.bitwise_or.reduceat(_masks(high), starts)


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """A run: ``<name>.entries.npy`` (sorted uint64: a key's top 56 bits, then the index of its
    file in ``files``), ``<name>.bloom.npy`` (the filter) and ``<name>.json``."""

    folder: Path
    name: str
    level: int
    files: list[File]
    n: int
    m: int

    def path(self, what: str) -> Path:
        return self.folder / f"{self.name}.{what}.npy"

    def load(self, what: str) -> np.ndarray:
        return np.load(self.path(what), mmap_mode="r")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            (self.folder / f"{self.name}.json").unlink()
        for what in ARRAYS:
            with contextlib.suppress(OSError):
                self.path(what).unlink()


ARRAYS = ("entries", "bloom")


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, mirror=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _write_run(
    folder: Path,
    level: int,
    files: list[File],
    entries: np.ndarray,
    bloom: np.ndarray | None = None,
) -> Run:
    """Write a run (``entries`` sorted; ``bloom`` their filter, if already made); its ``.json``
    is written last: a run without one is not a run."""
    if len(files) > 1 << _FILE_BITS:
        raise ValueError(f"a run covers at most {1 << _FILE_BITS} files")
    folder.mkdir(parents=True, exist_ok=True)
    m = _words_log2(int(entries.size))
    dates = sorted(d for d, _f in files)
    name = f"L{level}-{dates[0]}-{dates[-1]}-{uuid.uuid4().hex[:8]}"
    run = Run(folder, name, level, files, int(entries.size), m)
    if bloom is None:
        bloom = np.zeros(1 << m, dtype=np.uint64)
        _fill_bloom(bloom, entries, m)
    elif bloom.size != 1 << m:
        raise ValueError(f"a filter of {bloom.size} words for {entries.size} entries")
    _save(run.path("entries"), np.ascontiguousarray(entries, dtype=np.uint64))
    _save(run.path("bloom"), bloom)
    meta = {
        "format": FORMAT,
        "scheme": key_scheme(),
        "level": level,
        "files": [list(f) for f in files],
        "entries": run.n,
        "words_log2": m,
    }
    with atomic_path(folder / f"{name}.json", mirror=False) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return run


def _runs(folder: Path) -> list[Run]:
    """The index's runs; a run of another scheme or format, or unreadable, is deleted."""
    if not folder.is_dir():
        return []
    scheme = key_scheme()
    out = []
    for meta_path in sorted(folder.glob("*.json")):
        name = meta_path.name.removesuffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
            run = Run(
                folder,
                name,
                int(meta["level"]),
                [(str(d), str(f)) for d, f in meta["files"]],
                int(meta["entries"]),
                int(meta["words_log2"]),
            )
            ok = meta.get("format") == FORMAT and meta.get("scheme") == scheme
            ok = ok and all(run.path(w).is_file() for w in ARRAYS)
        except (OSError, ValueError, KeyError, TypeError):
            run, ok = Run(folder, name, 0, [], 0, 0), False
        if ok:
            out.append(run)
        else:
            run.remove()
    return out


def _clean_strays(folder: Path, runs: list[Run]) -> None:
    """Arrays of a run whose ``.json`` was never written (a killed writer)."""
    known = {r.name for r in runs}
    for f in folder.glob("*.npy"):
        if f.name.split(".", 1)[0] not in known:
            with contextlib.suppress(OSError):
                f.unlink()


# --------------------------------------------------------------------------- the index


class RecordIndex:
    """The record-id index of one record feed under one data dir (see the module docstring)."""

    def __init__(self, root: Path, feed: str) -> None:
        self.feed = feed
        self.folder = index_dir(root, feed)

    def files_holding(
        self,
        con,
        keys: np.ndarray,
        earlier: dict[File, str],
        echo: Echo | None = None,
    ) -> list[File]:
        """The files among ``earlier`` (``{(landing date, file name): file URI}``, the feed's
        files of the earlier dates) that may hold one of ``keys`` (sorted): every file that
        does, and (rarely: the top 56 bits of two keys agree) one that does not."""
        if not earlier or keys.size == 0:
            return []
        high = keys & _HIGH  # sorted, as keys are
        high = high[np.concatenate(([True], high[1:] != high[:-1]))]
        masks = _masks(high)
        for _attempt in range(2):
            runs = _runs(self.folder)
            covered = {f for r in runs for f in r.files if f in earlier}
            missing = sorted(set(earlier) - covered)
            if missing:
                runs += self._index_files(con, missing, {f: earlier[f] for f in missing}, echo)
            found: set[File] = set()
            try:
                for run in runs:
                    useful = [i for i, f in enumerate(run.files) if f in earlier]
                    if useful:
                        found.update(_hits(run, high, masks, useful))
            except (OSError, ValueError) as exc:  # a damaged run: dropped, its files re-read
                if echo:
                    echo(f"warning: record-id index run {run.name} is damaged ({exc}); rebuilt")
                run.remove()
                continue
            return sorted(found)
        raise RuntimeError(f"the record-id index under {self.folder} cannot be read")

    def add(self, day: str, file_name: str, keys: np.ndarray) -> None:
        """Index the file the ingest of ``day`` just committed (``keys`` sorted)."""
        _write_run(self.folder, 0, [(day, file_name)], keys & _HIGH)

    def compact(self, current: Iterable[File], echo: Echo | None = None) -> None:
        """Delete the runs without a current file and merge FANOUT runs of a level into one
        of the next (dropping the entries of files the lake no longer has)."""
        current = set(current)
        runs = _runs(self.folder)
        _clean_strays(self.folder, runs)
        live = []
        for run in runs:
            if any(f in current for f in run.files):
                live.append(run)
            else:
                run.remove()
        for level in range(MAX_LEVEL):
            same = sorted(
                (r for r in live if r.level == level), key=lambda r: (min(r.files), r.name)
            )
            while len(same) >= FANOUT:
                group, same = same[:FANOUT], same[FANOUT:]
                if echo and level + 1 == MAX_LEVEL:
                    n = sum(len(r.files) for r in group)
                    echo(f"record-id index: merging the runs of {n} {self.feed} files into one")
                merged = _merge(self.folder, level + 1, group, current)
                for r in group:
                    r.remove()
                    live.remove(r)
                if merged is not None:
                    live.append(merged)  # counted with the next level

    def _index_files(
        self, con, files: list[File], uris: dict[File, str], echo: Echo | None
    ) -> list[Run]:
        """Level-0 runs for lake files no run covers, read from the lake (once)."""
        from pipelines.db import lake_files
        from pipelines.delta import local_file

        if echo and len(files) > 1:
            echo(
                f"indexing the record ids of {len(files)} earlier {self.feed} files "
                f"(once; {self.folder})"
            )
        out = []
        read = "read_parquet($files, hive_partitioning = false)"
        said = time.monotonic()
        for i, f in enumerate(files, 1):
            keys = keys_of(con, read, params={"files": lake_files([local_file(uris[f])])})
            out.append(_write_run(self.folder, 0, [f], keys & _HIGH))
            if echo and time.monotonic() - said > 10 and i < len(files):
                echo(f"  indexed {i} of {len(files)} files")
                said = time.monotonic()
        return out


def _hits(run: Run, high: np.ndarray, masks: np.ndarray, useful: list[int]) -> set[File]:
    """The files of ``run`` (among ``useful``, indexes into ``run.files``) holding a key."""
    bloom, entries = run.load("bloom"), run.load("entries")
    if bloom.size != 1 << run.m or entries.size != run.n:
        raise ValueError("its arrays do not match its .json")
    if run.n == 0:
        return set()
    maybe = high[(np.asarray(bloom[_word_index(high, run.m)]) & masks) == masks]
    if maybe.size == 0:
        return set()
    lo = np.searchsorted(entries, maybe, side="left")
    hi = np.searchsorted(entries, maybe | _LOW, side="right")
    wanted = np.zeros(len(run.files), dtype=bool)
    wanted[useful] = True
    out: set[int] = set()
    for a, b in zip(lo[hi > lo], hi[hi > lo], strict=True):
        out.update(int(i) for i in np.asarray(entries[a:b]) & _LOW if wanted[i])
    return {run.files[i] for i in out}


def _merge(folder: Path, level: int, group: list[Run], current: set[File]) -> Run | None:
    """One run of ``level`` from ``group``, keeping only the entries of ``current`` files."""
    files: list[File] = []
    remaps = []
    for run in group:
        remap = np.full(len(run.files), -1, dtype=np.int64)
        for i, f in enumerate(run.files):
            if f in current and f not in files:
                remap[i] = len(files)
                files.append(f)
        remaps.append(remap)
    if not files:
        return None
    ins = [r.load("entries") for r in group]
    # the new file index of each input entry (-1: dropped), as a lookup on the old one
    lookups = []
    for rm in remaps:
        lk = np.full(1 << _FILE_BITS, -1, dtype=np.int64)
        lk[: rm.size] = rm
        lookups.append(lk)
    total = sum(r.n for r in group)
    if any((rm < 0).any() for rm in remaps):
        total = sum(
            int(np.count_nonzero(lk[np.asarray(e) & _LOW] >= 0))
            for lk, e in zip(lookups, ins, strict=True)
        )
    out = np.empty(total, dtype=np.uint64)
    m = _words_log2(total)
    bloom = np.zeros(1 << m, dtype=np.uint64)  # filled slice by slice, while each is in cache
    bits = max(_SLICE_BITS, (total >> 17).bit_length())
    bounds = np.arange(1, 1 << bits, dtype=np.uint64) << np.uint64(64 - bits)
    cuts = [np.concatenate(([0], np.searchsorted(e, bounds), [e.size])) for e in ins]
    at = 0
    for c in range(1 << bits):
        parts = []
        for e, lk, cut in zip(ins, lookups, cuts, strict=True):
            a, b = int(cut[c]), int(cut[c + 1])
            if b > a:
                part = np.asarray(e[a:b])
                new = lk[part & _LOW]
                keep = new >= 0
                parts.append((part[keep] & _HIGH) | new[keep].astype(np.uint64))
        if not parts:
            continue
        chunk = np.sort(np.concatenate(parts), kind="stable")  # merges the sorted parts
        out[at : at + chunk.size] = chunk
        _fill_bloom(bloom, chunk, m)
        at += chunk.size
    return _write_run(folder, level, files, out, bloom)


def lake_file_ids(feed: str, partitions) -> dict[File, str]:
    """``{(landing date, file name): file URI}`` of ``feed``'s files in ``partitions``
    (``lake.partitions`` of ``lake/ingest``), without fetching any file."""
    out = {}
    for value, part in partitions:
        uri = part.uri(f"{feed}.parquet")
        if uri is not None:
            out[(value, os.path.basename(uri))] = uri
    return out
