"""Per-step and per-statement timing of one ``ingest_date`` run (a profiling aid for the bench).

    .venv/bin/python bench/profile_ingest.py DATA_DIR YYYY-MM-DD [--top N]

Wraps the DuckDB connection the ingest opens (every ``execute`` is timed with the first words of
its SQL) and the ingest's step functions; prints the steps, then the slowest statements. Nothing
in ``pipelines`` is changed: the wrapping is done by patching module attributes in this process.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STEPS: list[tuple[str, float, float]] = []  # (step, wall s, CPU s of the process)
STMTS: list[tuple[float, str]] = []


def _cpu() -> float:
    return time.process_time()


class TimedCon:
    """A DuckDB connection whose ``execute`` calls are timed."""

    def __init__(self, con):
        self._con = con

    def execute(self, query, *args, **kwargs):
        t = time.perf_counter()
        try:
            self._con.execute(query, *args, **kwargs)
        finally:
            STMTS.append((time.perf_counter() - t, re.sub(r"\s+", " ", str(query)).strip()))
        return self._con

    def __getattr__(self, name):
        return getattr(self._con, name)


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t, c = time.perf_counter(), _cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            label = name
            if name in ("_stage_feed", "_validate", "_count", "_accept") and len(args) > 2:
                label = f"{name}({args[2] if name == '_stage_feed' else args[1]})"
            STEPS.append((label, time.perf_counter() - t, _cpu() - c))

    return wrapper


def install() -> None:
    from pipelines import ingest, warehouse

    orig_connect = ingest.connect
    ingest.connect = lambda *a, **k: TimedCon(orig_connect(*a, **k))
    for name in (
        "_stage_feed",
        "_previous_reference",
        "_require_reference",
        "_validate",
        "_dedupe_records",
        "_count",
        "_accept",
        "_write_outputs",
        "_estimates",
        "_quality_gate",
        "_closed_month_warnings",
        "commit_version",
    ):
        if not hasattr(ingest, name):  # a step renamed since: say so instead of failing
            print(f"(pipelines.ingest has no {name}: not timed)", file=sys.stderr)
            continue
        setattr(ingest, name, _timed(name, getattr(ingest, name)))
    for name in ("sync_partition", "publish"):
        setattr(warehouse, name, _timed(name, getattr(warehouse, name)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("day")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    install()
    from pipelines.ingest import ingest_date

    t, c = time.perf_counter(), _cpu()
    ingest_date(a.data_dir, a.day)
    total, cpu = time.perf_counter() - t, _cpu() - c
    print(f"ingest {a.day}: {total:.2f} s wall, {cpu:.2f} s CPU (all threads)")
    # about 2 s of CPU when it is: only a feed that GX validates row by row needs it
    print(f"Great Expectations imported: {'great_expectations' in sys.modules}")
    print("\nsteps (wall s, CPU s; nested steps included in their parents):")
    agg: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for name, s, c in STEPS:
        agg[name][0] += s
        agg[name][1] += c
    for name, (s, c) in sorted(agg.items(), key=lambda x: -x[1][0]):
        print(f"  {s:8.2f}  {c:8.2f}  {name}")
    print(f"\nslowest statements (of {len(STMTS)}, {sum(s for s, _ in STMTS):.2f} s in all):")
    for s, q in sorted(STMTS, key=lambda x: -x[0])[: a.top]:
        print(f"  {s:8.2f}  {q[:160]}")


if __name__ == "__main__":
    main()
