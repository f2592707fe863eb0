"""The README's examples run as written on demo data (issue #13 point 8): its SQL against the
analysts' database, its "Try it on the demo data" commands in a shell, and the demo's closing
hints point at things that exist.

The data dir is built like `make demo` builds its own (the same generator, seed, partners and
bill month, fewer rows and landing dates, the pipeline functions instead of the DAGs), once per
session and shared by the xdist workers under a file lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from pipelines.demo import DEMO_MONTH, how_to_look

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
# October's close needs every date from the first one ingested through the cutoff
FIRST, DATES = "2026-10-30", ["2026-10-30", "2026-10-31"] + [f"2026-11-0{i}" for i in range(1, 5)]

pytestmark = pytest.mark.slow


def section(title: str) -> str:
    """The README's text from the heading ``title`` to the next heading of its level or above."""
    level = title.split(" ")[0]
    start = README.index(f"\n{title}\n")
    rest = README[start + len(title) + 2 :]
    heading = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE)
    ends = [m.start() for m in heading.finditer(rest)]
    return rest[: ends[0]] if ends else rest


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="session")
def demo_like(tmp_path_factory, worker_id) -> Path:
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent
    root = base / "readme-demo" / "data"
    with open(base / "readme-demo.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if not (root.parent / "done").exists():
            _build(root)
            (root.parent / "done").touch()
    return root


def _build(root: Path) -> None:
    from pipelines.close import close_month
    from pipelines.exports import export_month
    from pipelines.generate import generate
    from pipelines.ingest import ingest_date

    if root.exists():
        shutil.rmtree(root)
    generate(root, FIRST, DATES[-1], seed=7, usage_rows_per_day=150, n_partners=4)
    for day in DATES:
        ingest_date(root, day)
    close_month(root, DEMO_MONTH)
    export_month(root, DEMO_MONTH, formats=["csv"])


def test_the_analysts_sql_runs_on_the_demo_data(demo_like: Path) -> None:
    (sql,) = blocks(section("## Analysts"), "sql")
    sql = re.sub(r"--[^\n]*", "", sql)  # the examples' trailing comments
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert len(statements) >= 5, statements
    con = duckdb.connect(str(demo_like / "warehouse.duckdb"), read_only=True)
    try:
        for statement in statements:
            rows = con.execute(statement).fetchall()
            # amount_due included: right after the close the bill just published is due
            assert rows, f"no row on the demo data: {statement}"
        # the partner of the examples and the filter on regions keep the Others area
        products = con.execute(statements[1]).fetchall()
        cols = [c[0] for c in con.description]
        ids = {r[cols.index("product_id")] for r in products}
        assert "OTHERS" in ids and len(ids) > 1, ids
    finally:
        con.close()


def test_the_try_it_commands_run_on_the_demo_data(demo_like: Path, tmp_path: Path) -> None:
    """The block as a user pastes it, in the repository's folder after `make demo`: here a
    folder with the same .venv and a copy of the demo-like data in data/demo."""
    (script,) = blocks(section("### Try it on the demo data"), "sh")
    commands = [ln for ln in script.splitlines() if ln.startswith("koobill ")]
    assert len(commands) >= 4, script
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    shutil.copytree(demo_like, tmp_path / "data" / "demo", symlinks=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOOBILL_")}
    env["PATH"] = "/usr/bin:/bin"  # koobill is not on PATH until the block puts it there
    res = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data = tmp_path / "data" / "demo"
    # every command named the data dir it used, the demo's, from the environment
    assert res.stderr.count(f"koobill: data dir {data} (from $KOOBILL_DATA_DIR)") == len(commands)
    assert "error:" not in res.stderr
    assert "ptn-haina" in res.stdout
    assert "nothing changed" in res.stdout
    exported = sorted(p.suffix for p in (data / "exports" / "ptn-haina" / DEMO_MONTH).iterdir())
    assert ".pdf" in exported and ".csv" in exported


def test_the_demo_says_how_to_look_at_its_data(demo_like: Path) -> None:
    lines = how_to_look(demo_like, DEMO_MONTH)
    text = "\n".join(lines)
    assert f"export KOOBILL_DATA_DIR={demo_like}" in text
    assert "make serve" in text
    assert "duckdb -readonly" not in text  # the DuckDB CLI is not installed by the project
    path_line = next(ln for ln in lines if "export PATH=" in ln)
    bin_dir = Path(re.search(r'PATH="([^:"]+):', path_line).group(1))
    assert (bin_dir / "koobill").is_file()
    # the DuckDB hint runs as printed, with the venv's python, and lists the analysts' tables
    duckdb_line = next(ln for ln in lines if "import duckdb" in ln).split("   # ")[0].strip()
    assert duckdb_line.startswith(f"{bin_dir / 'python'} -c ")
    res = subprocess.run(
        ["bash", "-c", duckdb_line], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "bills" in res.stdout and "expenditure_by_product" in res.stdout
    assert (demo_like / "warehouse.duckdb").is_file() and (demo_like / "landing").is_dir()
    # the README's Quickstart shows the same pointers, for the default data/demo
    quick = section("## Quickstart")
    assert 'export KOOBILL_DATA_DIR="$PWD/data/demo"' in quick
    assert "make serve" in quick
    assert (
        """.venv/bin/python -c "import duckdb; duckdb.connect('data/demo/warehouse.duckdb', """
        """read_only=True).sql('show tables').show()\"""" in quick
    )
