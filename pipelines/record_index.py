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
  8-bit patterns in one 64-bit word: about 4 false hits in 1,000 absent keys).
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
FORMAT = 5  # 5: arrays recorded (size, mtime); 4: 56 bits of key, 8 of file; pattern filter
_FILE_BITS = 8  # a run covers at most 256 files (a level-2 run: 64)
_FILE_MASK = np.uint64((1 << _FILE_BITS) - 1)  # an entry's low bits: its file
_KEY_MASK = ~_FILE_MASK  # an entry's high bits: the key's top 56 bits
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying remixes the key's bits
_SLICE_BITS = 6  # merges go through the keys in at least 64 slices of ~128k entries

Echo = Callable[[str], None]
FileId = tuple[str, str]  # a lake file: (landing date, file name)


def key_scheme() -> str:
    """The key of a record id: DuckDB's ``hash`` of the VARCHAR, as of this DuckDB version."""
    import duckdb

    return f"duckdb {duckdb.__version__} hash(record_id::varchar)"


KEY_SQL = "hash(cast(record_id as varchar))"


def keys_of(con, relation: str, where: str = "true", params: dict | None = None) -> np.ndarray:
    """The sorted keys of ``relation``'s record ids (a table, view or file read; an id that
    repeats gives its key as often, which the index takes as it comes)."""
    # sorted by DuckDB on every core (numpy's sort of a 5M-key day takes one core 0.3 s)
    query = f"select {KEY_SQL} as k from {relation} where {where} order by k"
    got = con.execute(query, params or {}).fetchnumpy()
    return np.asarray(got["k"], dtype=np.uint64)


def _distinct(a: np.ndarray) -> np.ndarray:
    """The distinct values of the sorted array ``a``, in order."""
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def repeated(keys: np.ndarray) -> np.ndarray:
    """The distinct keys that occur more than once in the sorted ``keys``."""
    return _distinct(keys[1:][keys[1:] == keys[:-1]])


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


def _masks(trimmed: np.ndarray) -> np.ndarray:
    """Each key's 64-bit word pattern (``trimmed``: keys with their file bits cleared)."""
    return _patterns()[(trimmed * _MIX) >> np.uint64(48)]


def _words_log2(n: int) -> int:
    """log2 of the filter's 64-bit words for ``n`` keys (at least BITS_PER_KEY bits a key)."""
    need = max(1, -(-n * BITS_PER_KEY // 64))
    return max(6, int(need - 1).bit_length())


def _word_index(trimmed: np.ndarray, m: int) -> np.ndarray:
    return trimmed >> np.uint64(64 - m)


def _fill_bloom(bloom: np.ndarray, entries: np.ndarray, m: int) -> None:
    """OR the sorted ``entries`` (or keys) into ``bloom`` (2**m words)."""
    if entries.size == 0:
        return
    trimmed = entries & _KEY_MASK
    idx = _word_index(trimmed, m)
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    bloom[idx[starts]] |= np.bitwise_or.reduceat(_masks(trimmed), starts)


def prepare_run(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arrays of the level-0 run of one file whose record ids have the sorted ``keys``:
    its entries and its filter (numpy alone, which lets go of the GIL: the ingest makes them
    in a background thread while it writes the day, and writes them once it has committed)."""
    entries = keys & _KEY_MASK
    m = _words_log2(int(entries.size))
    bloom = np.zeros(1 << m, dtype=np.uint64)
    _fill_bloom(bloom, entries, m)
    return entries, bloom


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """A run: ``<name>.entries.npy`` (sorted uint64: a key's top 56 bits, then the index of its
    file in ``files``), ``<name>.bloom.npy`` (the filter) and ``<name>.json``."""

    folder: Path
    name: str
    level: int
    files: list[FileId]
    entries: int
    words_log2: int
    stats: dict  # each array's (size, mtime_ns) when written: a changed array is damage

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
    files: list[FileId],
    entries: np.ndarray,
    bloom: np.ndarray | None = None,
) -> Run:
    """Write a run (``entries`` sorted; ``bloom`` their filter, if already made); its ``.json``
    is written last (with each array's size and time: see :func:`_runs`): a run without one is
    not a run."""
    if len(files) > 1 << _FILE_BITS:
        raise ValueError(f"a run covers at most {1 << _FILE_BITS} files")
    folder.mkdir(parents=True, exist_ok=True)
    m = _words_log2(int(entries.size))
    dates = sorted(d for d, _f in files)
    name = f"L{level}-{dates[0]}-{dates[-1]}-{uuid.uuid4().hex[:8]}"
    run = Run(folder, name, level, files, int(entries.size), m, {})
    if bloom is None:
        bloom = np.zeros(1 << m, dtype=np.uint64)
        _fill_bloom(bloom, entries, m)
    elif bloom.size != 1 << m:
        raise ValueError(f"a filter of {bloom.size} words for {entries.size} entries")
    _save(run.path("entries"), np.ascontiguousarray(entries, dtype=np.uint64))
    _save(run.path("bloom"), bloom)
    run.stats = {what: _stat(run.path(what)) for what in ARRAYS}
    meta = {
        "format": FORMAT,
        "scheme": key_scheme(),
        "level": level,
        "files": [list(f) for f in files],
        "entries": run.entries,
        "words_log2": m,
        "arrays": run.stats,
    }
    with atomic_path(folder / f"{name}.json", mirror=False) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return run


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


class Damaged(Exception):
    """A run that is not as it was written."""


def _check(run: Run) -> None:
    """Raise :class:`Damaged` unless the run's arrays are the ones it wrote: same size and
    modification time as recorded (an array replaced or cut short since is damage; the bytes
    themselves are trusted, as the lake's are). A lookup that still finds them unreadable
    reads the run's files instead (:meth:`RecordIndex.files_holding`)."""
    for what in ARRAYS:
        try:
            now = _stat(run.path(what))
        except OSError as exc:
            raise Damaged(f"{run.path(what).name}: {exc.strerror or exc}") from None
        if now != list(run.stats.get(what, ())):
            raise Damaged(f"{run.path(what).name} changed since it was written")


def _runs(folder: Path, echo: Echo | None = None) -> list[Run]:
    """The index's sound runs. A run of another scheme or format is deleted; so is a damaged
    one (unreadable ``.json``, or :func:`_check` fails), with a warning: its files are then
    indexed again from the lake."""
    if not folder.is_dir():
        return []
    scheme = key_scheme()
    out = []
    for meta_path in sorted(folder.glob("*.json")):
        name = meta_path.name.removesuffix(".json")
        run = Run(folder, name, 0, [], 0, 0, {})
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT or meta.get("scheme") != scheme:
                run.remove()  # written by another koobill or DuckDB: rebuilt, not an error
                continue
            run = Run(
                folder,
                name,
                int(meta["level"]),
                [(str(d), str(f)) for d, f in meta["files"]],
                int(meta["entries"]),
                int(meta["words_log2"]),
                {str(k): list(v) for k, v in meta["arrays"].items()},
            )
            _check(run)
        except Exception as exc:  # noqa: BLE001  (a damaged run is dropped, never trusted)
            if echo:
                echo(
                    f"warning: record-id index run {meta_path} is damaged ({exc}); it is "
                    "deleted and its files are indexed again from the lake"
                )
            run.remove()
            with contextlib.suppress(OSError):
                meta_path.unlink()
            continue
        out.append(run)
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
    """The record-id index of one record feed under one data dir (see the module docstring).

    It can only make the dedupe read fewer files: whatever goes wrong with it (a damaged run,
    a folder that cannot be written), the files it cannot vouch for are read, as without it."""

    def __init__(self, root: Path, feed: str) -> None:
        self.feed = feed
        self.folder = index_dir(root, feed)

    def files_holding(
        self,
        con,
        keys: np.ndarray,
        earlier: dict[FileId, str],
        echo: Echo | None = None,
    ) -> list[FileId]:
        """The files among ``earlier`` (``{(landing date, file name): file URI}``, the feed's
        files of the earlier dates) that may hold one of ``keys`` (sorted): every file that
        does, and (rarely: the top 56 bits of two keys agree) one that does not."""
        if not earlier or keys.size == 0:
            return []
        say = echo or (lambda _m: None)
        trimmed = _distinct(keys & _KEY_MASK)  # sorted, as keys are
        masks = _masks(trimmed)
        try:
            runs = _runs(self.folder, say)
        except Exception as exc:  # noqa: BLE001  (the folder itself cannot be read)
            say(
                f"warning: the record-id index under {self.folder} cannot be read ({exc}); "
                f"the {len(earlier)} earlier {self.feed} files are read instead"
            )
            return sorted(earlier)
        unsure: set[FileId] = set()  # files read because the index cannot vouch for them
        covered = {f for r in runs for f in r.files if f in earlier}
        missing = sorted(set(earlier) - covered)
        if missing:
            try:
                runs += self._index_files(con, missing, earlier, say)
            except Exception as exc:  # noqa: BLE001  (e.g. an index folder not writable)
                say(
                    f"warning: cannot add to the record-id index under {self.folder} ({exc}); "
                    f"the {len(missing)} {self.feed} files it lacks are read instead"
                )
                unsure.update(missing)
        found: set[FileId] = set()
        for run in runs:
            live = [i for i, f in enumerate(run.files) if f in earlier]
            if not live:
                continue
            try:
                found.update(_hits(run, trimmed, masks, live))
            except Exception as exc:  # noqa: BLE001  (damaged after all: its files are read)
                say(f"warning: record-id index run {run.name} cannot be read ({exc}); deleted")
                run.remove()
                unsure.update(run.files[i] for i in live)
        return sorted(found | unsure)

    def add(self, day: str, file_name: str, arrays: tuple[np.ndarray, np.ndarray]) -> None:
        """Index the file the ingest of ``day`` just committed: ``arrays``, the run
        ``prepare_run`` made of its record ids' keys."""
        _write_run(self.folder, 0, [(day, file_name)], *arrays)

    def compact(self, current: Iterable[FileId], echo: Echo | None = None) -> None:
        """Delete the runs without a current file and merge FANOUT runs of a level into one
        of the next (dropping the entries of files the lake no longer has)."""
        current = set(current)
        runs = _runs(self.folder, echo)
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
        self, con, files: list[FileId], uris: dict[FileId, str], echo: Echo | None
    ) -> list[Run]:
        """Level-0 runs for lake files no run covers, read from the lake (once)."""
        from pipelines.db import lake_files
        from pipelines.delta import local_file

        if echo:
            many = f"{len(files)} earlier {self.feed} files" if len(files) > 1 else "1 file"
            echo(f"indexing the record ids of {many} (once; {self.folder})")
        out = []
        read = "read_parquet($files, hive_partitioning = false)"
        said = time.monotonic()
        for i, f in enumerate(files, 1):
            keys = keys_of(con, read, params={"files": lake_files([local_file(uris[f])])})
            out.append(_write_run(self.folder, 0, [f], keys & _KEY_MASK))
            if echo and time.monotonic() - said > 10 and i < len(files):
                echo(f"  indexed {i} of {len(files)} files")
                said = time.monotonic()
        return out


def _hits(run: Run, trimmed: np.ndarray, masks: np.ndarray, live: list[int]) -> set[FileId]:
    """The files of ``run`` (among ``live``, indexes into ``run.files``) holding one of the
    keys (``trimmed``: sorted, distinct, file bits cleared; ``masks``: their patterns)."""
    if run.entries == 0:
        return set()
    bloom, entries = run.load("bloom"), run.load("entries")
    for a, size in ((entries, run.entries), (bloom, 1 << run.words_log2)):
        if a.dtype != np.uint64 or a.shape != (size,):
            raise Damaged(f"an array holds {a.dtype} {a.shape}, not ({size},)")
    words = np.asarray(bloom[_word_index(trimmed, run.words_log2)])
    bloom_hits = trimmed[(words & masks) == masks]
    if bloom_hits.size == 0:
        return set()
    lo = np.searchsorted(entries, bloom_hits, side="left")
    hi = np.searchsorted(entries, bloom_hits | _FILE_MASK, side="right")
    file_mask = np.zeros(len(run.files), dtype=bool)
    file_mask[live] = True
    out: set[int] = set()
    for a, b in zip(lo[hi > lo], hi[hi > lo], strict=True):
        out.update(int(i) for i in np.asarray(entries[a:b]) & _FILE_MASK if file_mask[i])
    return {run.files[i] for i in out}


def _merge(folder: Path, level: int, group: list[Run], current: set[FileId]) -> Run | None:
    """One run of ``level`` from ``group``, keeping only the entries of ``current`` files."""
    files: list[FileId] = []
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
    total = sum(r.entries for r in group)
    if any((rm < 0).any() for rm in remaps):
        total = sum(
            int(np.count_nonzero(lk[np.asarray(e) & _FILE_MASK] >= 0))
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
                new = lk[part & _FILE_MASK]
                keep = new >= 0
                parts.append((part[keep] & _KEY_MASK) | new[keep].astype(np.uint64))
        if not parts:
            continue
        chunk = np.sort(np.concatenate(parts), kind="stable")  # merges the sorted parts
        out[at : at + chunk.size] = chunk
        _fill_bloom(bloom, chunk, m)
        at += chunk.size
    if at != total:
        raise Damaged(f"merging {[r.name for r in group]}: {at} entries where {total} were due")
    return _write_run(folder, level, files, out, bloom)


def lake_file_ids(feed: str, partitions) -> dict[FileId, str]:
    """``{(landing date, file name): file URI}`` of ``feed``'s files in ``partitions``
    (``lake.partitions`` of ``lake/ingest``), without fetching any file."""
    out = {}
    for value, part in partitions:
        uri = part.uri(f"{feed}.parquet")
        if uri is not None:
            out[(value, os.path.basename(uri))] = uri
    return out
