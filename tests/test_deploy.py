"""deploy/celery/airflow-celery.sh without services: a worker never makes secrets of its own,
and `check` only looks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = REPO / "deploy" / "celery" / "airflow-celery.sh"


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KOOBILL_"))}
    env |= {
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "KOOBILL_CELERY_STATE": str(tmp_path / "run"),
        # nothing answers here, whatever runs on this machine
        "KOOBILL_SERVICES_HOST": "127.0.0.1",
        "KOOBILL_PG_PORT": "1",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:1/0",
    }
    return subprocess.run(
        ["bash", str(LAUNCHER), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_worker_refuses_to_start_without_the_shared_secrets(tmp_path: Path) -> None:
    res = _launch(tmp_path, "worker", "worker-3")
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{tmp_path / 'home' / 'secrets.env'} is missing" in res.stdout
    assert "Copy it from the first machine" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no secrets, no folder made


def test_check_creates_no_folder(tmp_path: Path) -> None:
    res = _launch(tmp_path, "check")
    assert res.returncode == 1 and "does not answer" in res.stdout, res.stdout + res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
