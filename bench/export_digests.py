"""The sha256 of every export file for fixed inputs, to show that a change to the exports code
keeps their bytes (or to say exactly which files changed).

    .venv/bin/python bench/export_digests.py OUT.json            # record
    .venv/bin/python bench/export_digests.py OUT.json --compare BEFORE.json

Two inputs: the hand-made month of tests/test_exports.py (a superseded and a restated version,
CJK text, formula-like cells, payments, estimates), and a generated demo-sized month (the demo's
2026-10 with 4 partners and 200 usage rows a day, seed 7, ingested and closed through the
pipeline; cached under ``$KOOBILL_BENCH_OUT/export-digests``). Every version of every bill is
exported (the current ones, then each superseded version), so the superseded path is covered.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(REPO / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

DEMO_MONTH = "2026-10"


def _demo_dir(cache: Path) -> Path:
    """A generated, ingested and closed demo month (made once, then reused)."""
    from pipelines import calendar as cal

    root = cache / "demo"
    done = cache / "demo.done"
    if done.exists():
        return root
    from pipelines.close import close_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    if root.exists():
        shutil.rmtree(root)
    first, last = cal.first_day(DEMO_MONTH), cal.cutoff(DEMO_MONTH)
    generate(root, first.isoformat(), last.isoformat(), seed=7, usage_rows_per_day=200)
    for day in cal.date_range(first, last):
        ingest_date(root, day.isoformat())
    close_month(root, DEMO_MONTH)
    done.write_text("ok\n")
    return root


def _fixture_dir(work: Path) -> tuple[Path, str]:
    import test_exports

    return test_exports.make_data_dir(work / "fixture"), test_exports.MONTH


def _export_all(root: Path, month: str) -> dict[str, str]:
    """Export every version of every bill of ``month``; sha256 of each file by its path."""
    from pipelines.exports import export_month
    from pipelines.warehouse import connect_published

    con = connect_published(root)
    try:
        old = con.execute(
            "select distinct version from bills where bill_month = ? and status <> 'closed' "
            "order by version",
            [month],
        ).fetchall()
    finally:
        con.close()
    export_month(root, month, lock_wait_s=0)
    for (v,) in old:
        export_month(root, month, version=v, lock_wait_s=0)
    out = {}
    for f in sorted((root / "exports").rglob("*")):
        if f.is_file():
            out[f.relative_to(root).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def digests(cache: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root, month = _fixture_dir(work)
        out.update({f"fixture/{k}": v for k, v in _export_all(root, month).items()})
        demo = work / "demo"
        shutil.copytree(_demo_dir(cache), demo)
        out.update({f"demo/{k}": v for k, v in _export_all(demo, DEMO_MONTH).items()})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="where to write the digests (JSON)")
    ap.add_argument("--compare", help="digests recorded earlier: print what differs")
    args = ap.parse_args()
    cache = Path(os.environ.get("KOOBILL_BENCH_OUT", HERE / "out")) / "export-digests"
    cache.mkdir(parents=True, exist_ok=True)
    got = digests(cache)
    Path(args.out).write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"{len(got)} files; digests in {args.out}")
    if not args.compare:
        return 0
    want = json.loads(Path(args.compare).read_text())
    bad = 0
    for k in sorted(set(want) | set(got)):
        if want.get(k) != got.get(k):
            bad += 1
            print(f"DIFFERS {k}: {want.get(k)} -> {got.get(k)}")
    print("identical" if not bad else f"{bad} files differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
