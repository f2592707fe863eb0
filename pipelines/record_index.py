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
  immutable and uniquely named, so a rerun of a date is a new file). It holds the sorted keys
  of their rows, the file each key came from, and a register-blocked Bloom filter of the keys
  (16 bits a key, 8 bits set in one 64-bit word: about 1 false hit in 1,000).
- An ingest adds a level-0 run for the file it committed; eight runs of one level are merged
  into one of the next (levels 0, 1, 2: a level-2 run covers 64 dates). A year of daily files
  is therefore about 5 level-2, up to 7 level-1 and 7 level-0 runs: a lookup probes ~20 Bloom
  filters with the day's keys (one 64-bit word read a key and filter), checks the few hits
  against the runs' sorted keys, and returns only the files that truly hold one of the keys.
  The dedupe then reads just those files, as before.
- A file of an earlier date that no run covers (the index was deleted, a date was ingested by
  another machine, or by a koobill without the index) is indexed from the lake first, once.
- Entries of files the lake no longer has (a date ingested again, a dropped partition) are
  ignored at lookup and dropped by the next merge; a run without any current file is deleted.

Only the writer (an ingest, under the data dir's lock) reads or writes the index.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.files import atomic_path

FANOUT = 8  # runs of one level merged into one run of the next
MAX_LEVEL = 2  # a level-2 run is never merged again (64 daily files)
BITS_PER_KEY = 16
BITS_SET = 8  # bits set per key, all in one 64-bit word
FORMAT = 1
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying remixes the key's bits
_CHUNK_BITS = 6  # merges and filter builds go through the keys in 64 slices

Echo = Callable[[str], None]
File = tuple[str, str]  # (landing date, file name)


def key_scheme() -> str:
    """The key of a record id: DuckDB's ``hash`` of the VARCHAR, as of this DuckDB version."""
    import duckdb

    return f"duckdb {duckdb.__version__} hash(record_id::varchar)"


KEY_SQL = "hash(cast(record_id as varchar))"


def keys_of(con, relation: str, where: str = "true", params: dict | None = None) -> np.ndarray:
    """The sorted, distinct keys of ``relation``'s record ids (a table, view or file read)."""
    query = f"select distinct {KEY_SQL} as k from {relation} where {where}"
    got = con.execute(query, params or {}).fetchnumpy()
    return np.sort(np.asarray(got["k"], dtype=np.uint64))


def index_dir(root: Path, feed: str) -> Path:
    return Path(root) / "index" / "record_ids" / feed


# --------------------------------------------------------------------------- the Bloom filter


def _masks(keys: np.ndarray) -> np.ndarray:
    """Each key's 64-bit word pattern: BITS_SET bit positions from the remixed key."""
    g = keys * _MIX
    m = np.zeros(keys.shape, dtype=np.uint64)
    one = np.uint64(1)
    for i in range(BITS_SET):
        m |= one << ((g >> np.uint64(6 * i + 8)) & np.uint64(63))
    return m


def _words_log2(n: int) -> int:
    """log2 of the filter's 64-bit words for ``n`` keys (at least BITS_PER_KEY bits a key)."""
    need = max(1, -(-n * BITS_PER_KEY // 64))
    return max(_CHUNK_BITS, int(need - 1).bit_length())


def _word_index(keys: np.ndarray, m: int) -> np.ndarray:
    return keys >> np.uint64(64 - m)


def _fill_bloom(bloom: np.ndarray, keys: np.ndarray, m: int) -> None:
    """OR the sorted ``keys`` into ``bloom`` (2**m words)."""
    if keys.size == 0:
        return
    idx = _word_index(keys, m)
    starts = np.flatnonzero(np.concatenate(([True], idx[1:] != idx[:-1])))
    bloom[idx[starts]] |= np.bitwise_or.reduceat(_masks(keys), starts)


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
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
        for what in ("keys", "files", "bloom"):
            with contextlib.suppress(OSError):
                self.path(what).unlink()


def _save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, mirror=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _write_run(
    folder: Path, level: int, files: list[File], keys: np.ndarray, which: np.ndarray
) -> Run:
    """Write a run (``keys`` sorted; ``which[i]`` the index in ``files`` of ``keys[i]``'s file);
    its ``.json`` is written last: a run without one is not a run."""
    folder.mkdir(parents=True, exist_ok=True)
    m = _words_log2(int(keys.size))
    dates = sorted(d for d, _f in files)
    name = f"L{level}-{dates[0]}-{dates[-1]}-{uuid.uuid4().hex[:8]}"
    run = Run(folder, name, level, files, int(keys.size), m)
    bloom = np.zeros(1 << m, dtype=np.uint64)
    _fill_bloom(bloom, keys, m)
    _save(run.path("keys"), np.ascontiguousarray(keys, dtype=np.uint64))
    _save(run.path("files"), np.ascontiguousarray(which, dtype=np.uint16))
    _save(run.path("bloom"), bloom)
    meta = {
        "format": FORMAT,
        "scheme": key_scheme(),
        "level": level,
        "files": [list(f) for f in files],
        "keys": run.n,
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
                int(meta["keys"]),
                int(meta["words_log2"]),
            )
            ok = meta.get("format") == FORMAT and meta.get("scheme") == scheme
            ok = ok and all(run.path(w).is_file() for w in ("keys", "files", "bloom"))
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
        files of the earlier dates) holding at least one of ``keys`` (sorted)."""
        if not earlier or keys.size == 0:
            return []
        for _attempt in range(2):
            runs = _runs(self.folder)
            covered = {f for r in runs for f in r.files if f in earlier}
            missing = sorted(set(earlier) - covered)
            if missing:
                runs += self._index_files(con, missing, {f: earlier[f] for f in missing}, echo)
            masks = _masks(keys)
            found: set[File] = set()
            try:
                for run in runs:
                    useful = [i for i, f in enumerate(run.files) if f in earlier]
                    if useful:
                        found.update(_hits(run, keys, masks, useful))
            except (OSError, ValueError) as exc:  # a damaged run: dropped, its files re-read
                if echo:
                    echo(f"warning: record-id index run {run.name} is damaged ({exc}); rebuilt")
                run.remove()
                continue
            return sorted(found)
        raise RuntimeError(f"the record-id index under {self.folder} cannot be read")

    def add(self, day: str, file_name: str, keys: np.ndarray) -> None:
        """Index the file the ingest of ``day`` just committed (``keys`` sorted)."""
        _write_run(self.folder, 0, [(day, file_name)], keys, np.zeros(keys.size, np.uint16))

    def compact(self, current: Iterable[File]) -> None:
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
                merged = _merge(self.folder, level + 1, group, current)
                for r in group:
                    r.remove()
                    live.remove(r)
                if merged is not None:
                    live.append(merged)
            # merged runs join the next level's count in the next round of the loop

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
        for f in files:
            keys = keys_of(con, read, params={"files": lake_files([local_file(uris[f])])})
            out.append(_write_run(self.folder, 0, [f], keys, np.zeros(keys.size, np.uint16)))
        return out


def _hits(run: Run, keys: np.ndarray, masks: np.ndarray, useful: list[int]) -> set[File]:
    """The files of ``run`` (among ``useful``, indexes into ``run.files``) holding a key."""
    if run.n == 0:
        return set()
    bloom, sorted_keys, which = run.load("bloom"), run.load("keys"), run.load("files")
    if bloom.size != 1 << run.m or sorted_keys.size != run.n or which.size != run.n:
        raise ValueError("its arrays do not match its .json")
    words = np.asarray(bloom[_word_index(keys, run.m)])
    maybe = keys[(words & masks) == masks]
    if maybe.size == 0:
        return set()
    lo = np.searchsorted(sorted_keys, maybe, side="left")
    hi = np.searchsorted(sorted_keys, maybe, side="right")
    wanted = np.zeros(len(run.files), dtype=bool)
    wanted[useful] = True
    out: set[int] = set()
    for a, b in zip(lo[hi > lo], hi[hi > lo], strict=True):
        out.update(int(i) for i in np.asarray(which[a:b]) if wanted[i])
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
    if len(files) > np.iinfo(np.uint16).max:
        raise ValueError("a run covers at most 65535 files")
    keys_in = [r.load("keys") for r in group]
    which_in = [r.load("files") for r in group]
    total = sum(
        int(np.count_nonzero(rm[np.asarray(w)] >= 0))
        for rm, w in zip(remaps, which_in, strict=True)
    )
    out_keys = np.empty(total, dtype=np.uint64)
    out_which = np.empty(total, dtype=np.uint16)
    at = 0
    bounds = [np.uint64(i) << np.uint64(64 - _CHUNK_BITS) for i in range(1, 1 << _CHUNK_BITS)]
    cuts = [np.concatenate(([0], np.searchsorted(k, bounds), [k.size])) for k in keys_in]
    for c in range(1 << _CHUNK_BITS):
        parts_k, parts_w = [], []
        for k_arr, w_arr, remap, cut in zip(keys_in, which_in, remaps, cuts, strict=True):
            a, b = int(cut[c]), int(cut[c + 1])
            if b > a:
                w = remap[np.asarray(w_arr[a:b])]
                keep = w >= 0
                parts_k.append(np.asarray(k_arr[a:b])[keep])
                parts_w.append(w[keep])
        if not parts_k:
            continue
        k = np.concatenate(parts_k)
        order = np.argsort(k, kind="stable")
        n = k.size
        out_keys[at : at + n] = k[order]
        out_which[at : at + n] = np.concatenate(parts_w)[order]
        at += n
    return _write_run(folder, level, files, out_keys[:at], out_which[:at])


def lake_file_ids(feed: str, partitions) -> dict[File, str]:
    """``{(landing date, file name): file URI}`` of ``feed``'s files in ``partitions``
    (``lake.partitions`` of ``lake/ingest``), without fetching any file."""
    out = {}
    for value, part in partitions:
        uri = part.uri(f"{feed}.parquet")
        if uri is not None:
            out[(value, os.path.basename(uri))] = uri
    return out
