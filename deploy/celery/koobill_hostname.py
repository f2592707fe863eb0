"""``[core] hostname_callable`` of koobill's Celery deployment (deploy/celery/celery.env).

The host name a task instance records: ``$KOOBILL_WORKER_HOSTNAME`` when set (two workers that
stand in for two machines on one host set ``worker-1.<host>``, ``worker-2.<host>``), else the
machine's FQDN, as Airflow's default ``airflow.utils.net.getfqdn`` gives it.
"""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("KOOBILL_WORKER_HOSTNAME") or socket.getfqdn()
