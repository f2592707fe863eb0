"""Exports asked for from the page, run as a child process: an export is a writer (it takes the
data dir's lock and writes the warehouse), and the page stays a reader. The request waits for
the child, bounded; other requests go on meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def lock_wait_s() -> float:
    """How long an export asked for from the page waits for the writer lock
    (``$KOOBILL_WEB_EXPORT_LOCK_WAIT_S``, default 20 s)."""
    from pipelines.env import settings

    return settings().web_export_lock_wait_s


@dataclass
class ExportOutcome:
    ok: bool
    busy: bool = False
    message: str = ""
    files: list[dict] = field(default_factory=list)


def run_export(
    root: Path, month: str, partner: str, formats: list[str], version: int | None = None
) -> ExportOutcome:
    """Export one partner's month (ids and month already validated by the caller)."""
    from pipelines import objectstore

    wait = lock_wait_s()
    args = json.dumps(
        {
            # a data dir on object storage goes by its s3:// URI (the child mounts it itself)
            "root": objectstore.remote_of(root) or str(root),
            "month": month,
            "partner": partner,
            "formats": formats,
            "version": version,
            "lock_wait_s": wait,
        }
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pipelines.web.jobs"],
            input=args,
            capture_output=True,
            text=True,
            timeout=wait + 300,
        )
    except subprocess.TimeoutExpired:
        return ExportOutcome(ok=False, busy=True, message="the export took too long")
    try:
        return ExportOutcome(**json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, TypeError):
        return ExportOutcome(ok=False, message=(proc.stderr or "export failed").strip()[-300:])


def _main() -> None:
    from pipelines.errors import KoobillError, LockBusy
    from pipelines.exports import export_month

    a = json.loads(sys.stdin.read())
    try:
        result = export_month(
            a["root"],
            a["month"],
            partner=a["partner"],
            formats=a["formats"],
            version=a["version"],
            lock_wait_s=a["lock_wait_s"],
        )
        out = ExportOutcome(
            ok=True,
            files=[
                {"export_id": f.export_id, "path": f.path, "format": f.format} for f in result.files
            ],
        )
    except LockBusy as exc:
        out = ExportOutcome(ok=False, busy=True, message=str(exc))
    except KoobillError as exc:
        out = ExportOutcome(ok=False, message=str(exc))
    print(json.dumps(out.__dict__))


if __name__ == "__main__":
    _main()
