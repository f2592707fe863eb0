"""koobill installs anywhere: a wheel (not only an editable checkout) carries the SQL, the
assets and every subpackage, and runs from a folder that is not the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_carries_the_sql_and_runs_outside_the_checkout(tmp_path: Path):
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("koobill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for sql in (REPO / "sql").glob("*.sql"):
        assert f"pipelines/sql/{sql.name}" in names, sql.name
    for pkg in REPO.joinpath("pipelines").rglob("__init__.py"):
        rel = pkg.relative_to(REPO).as_posix()
        assert rel in names, rel
    for asset in REPO.joinpath("pipelines").rglob("*"):
        if (
            asset.is_file()
            and asset.suffix not in (".py", ".pyc")
            and "__pycache__" not in str(asset)
        ):
            rel = asset.relative_to(REPO).as_posix()
            assert rel in names, f"{rel} is not in the wheel"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import pipelines.db as d, pipelines.warehouse as w, duckdb;"
        "print(d.SQL_DIR);"
        "c = duckdb.connect(); w.ensure_schema(c);"
        "print(c.execute('select count(*) from amount_due').fetchone()[0])"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    r = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    sql_dir, n = r.stdout.split()
    assert Path(sql_dir) == site / "pipelines" / "sql"
    assert n == "0"
