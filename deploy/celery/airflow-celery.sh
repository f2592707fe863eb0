#!/usr/bin/env bash
# koobill on Airflow with the CeleryExecutor (README, Production).
#
#   airflow-celery.sh [all]        this machine runs everything: API server, scheduler, DAG
#                                  processor, triggerer and two Celery workers (make airflow-celery)
#   airflow-celery.sh worker NAME  one Celery worker named NAME (a worker machine)
#   airflow-celery.sh check        say whether PostgreSQL and Redis answer, then exit
#
# Settings: deploy/celery/celery.env (every one can be overridden from the environment).
# Secrets: $AIRFLOW_HOME/secrets.env, generated on first start; copy it to every machine.
# Runs in the foreground and stops every component it started on Ctrl-C, on SIGTERM, when one
# of them dies, or (KOOBILL_CELERY_PARENT_PID) when that process is gone.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KOOBILL_REPO="${KOOBILL_REPO:-$(cd "$HERE/../.." && pwd)}"
BIN="${KOOBILL_BIN:-$KOOBILL_REPO/.venv/bin}"
# shellcheck source=celery.env
source "$HERE/celery.env"
export PATH="$BIN:$PATH"
# koobill_hostname (the hostname_callable) is importable by every component
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
unset PYTHONDONTWRITEBYTECODE

say() { echo "koobill-celery: $*"; }

check_services() {
    local missing=0
    if ! pg_isready -q -h "$KOOBILL_SERVICES_HOST" -p "$KOOBILL_PG_PORT" 2> /dev/null; then
        say "PostgreSQL does not answer on $KOOBILL_SERVICES_HOST:$KOOBILL_PG_PORT"
        missing=1
    fi
    if ! "$BIN/python" - << 'PY' 2> /dev/null; then
import os, redis
redis.Redis.from_url(os.environ["AIRFLOW__CELERY__BROKER_URL"], socket_timeout=3).ping()
PY
        say "Redis does not answer at $AIRFLOW__CELERY__BROKER_URL"
        missing=1
    fi
    if [ "$missing" = 1 ]; then
        say "install and start them, e.g. on Debian/Ubuntu:"
        say "  apt-get install -y postgresql redis-server"
        say "  service postgresql start; service redis-server start"
        say "(or point KOOBILL_SERVICES_HOST / AIRFLOW__DATABASE__SQL_ALCHEMY_CONN /"
        say " AIRFLOW__CELERY__BROKER_URL at yours)"
        return 1
    fi
}

ensure_secrets() {
    # The same fernet key, JWT secret and API secret key on every component, or tasks cannot
    # report to the API server and connections cannot be decrypted.
    local file="$AIRFLOW_HOME/secrets.env"
    mkdir -p "$AIRFLOW_HOME"
    if [ ! -f "$file" ]; then
        (
            umask 077
            "$BIN/python" - > "$file.tmp" << 'PY'
import secrets
from cryptography.fernet import Fernet
print("# koobill Airflow secrets: the same file on every machine; keep it private (mode 600)")
print(f"export AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}")
print(f"export AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(48)}")
print(f"export AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}")
PY
            mv "$file.tmp" "$file"
        )
        say "generated $file (copy it to every worker machine)"
    fi
    # shellcheck disable=SC1090
    source "$file"
}

ensure_database() {
    # Create the metadata database if it does not exist, then bring its schema up to date.
    local db="$KOOBILL_AIRFLOW_DB" pg=(-h "$KOOBILL_SERVICES_HOST" -p "$KOOBILL_PG_PORT" -U "$KOOBILL_PG_USER")
    if [ "$(psql "${pg[@]}" -d postgres -Atc "select 1 from pg_database where datname = '$db'")" != 1 ]; then
        say "creating the PostgreSQL database $db"
        createdb "${pg[@]}" "$db"
    fi
    say "airflow db migrate ($db)"
    "$BIN/airflow" db migrate > "$KOOBILL_CELERY_STATE/db-migrate.log" 2>&1 || {
        tail -30 "$KOOBILL_CELERY_STATE/db-migrate.log"
        say "airflow db migrate failed (log: $KOOBILL_CELERY_STATE/db-migrate.log)"
        return 1
    }
}

NAMES=()
PIDS=()

start() {
    # start NAME CMD...: in its own process group and scratch folder, output to NAME.log
    local name="$1"
    shift
    local dir="$KOOBILL_CELERY_STATE/$name"
    mkdir -p "$dir/tmp"
    (
        cd "$dir"
        export TMPDIR="$dir/tmp"
        exec setsid "$@"
    ) >> "$KOOBILL_CELERY_STATE/$name.log" 2>&1 < /dev/null &
    local pid=$!
    echo "$pid" > "$KOOBILL_CELERY_STATE/$name.pid"
    NAMES+=("$name")
    PIDS+=("$pid")
    say "started $name (pid $pid, log $KOOBILL_CELERY_STATE/$name.log)"
}

stop_all() {
    trap - EXIT INT TERM
    [ "${#PIDS[@]}" -gt 0 ] || return 0
    say "stopping ${NAMES[*]}"
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2> /dev/null || true; done
    for i in $(seq 1 30); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 -- "-$pid" 2> /dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 1
    done
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2> /dev/null || true; done
    for i in "${!NAMES[@]}"; do rm -f "$KOOBILL_CELERY_STATE/${NAMES[$i]}.pid"; done
    say "stopped"
}

supervise() {
    trap stop_all EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    while true; do
        local i
        for i in "${!PIDS[@]}"; do
            if ! kill -0 "${PIDS[$i]}" 2> /dev/null; then
                say "${NAMES[$i]} stopped; its log ends with:"
                tail -20 "$KOOBILL_CELERY_STATE/${NAMES[$i]}.log" || true
                exit 1
            fi
        done
        if [ -n "${KOOBILL_CELERY_PARENT_PID:-}" ] && ! kill -0 "$KOOBILL_CELERY_PARENT_PID" 2> /dev/null; then
            say "parent process $KOOBILL_CELERY_PARENT_PID is gone"
            exit 1
        fi
        sleep 2
    done
}

worker() {
    # worker NAME [LOG_PORT [RECORDED_HOST]]: one Celery worker with its own scratch folder and
    # Celery node name NAME@host. Task instances record RECORDED_HOST as their host (default:
    # the machine's FQDN). Queues: $KOOBILL_WORKER_QUEUES (default: Airflow's default queue).
    local name="$1" port="${2:-$AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT}" host="${3:-}"
    KOOBILL_WORKER_HOSTNAME="$host" \
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$port" \
        start "$name" "$BIN/airflow" celery worker \
        --celery-hostname "$name@%h" \
        --queues "${KOOBILL_WORKER_QUEUES:-default}" \
        --concurrency "$AIRFLOW__CELERY__WORKER_CONCURRENCY"
}

main() {
    local what="${1:-all}"
    mkdir -p "$KOOBILL_CELERY_STATE" "$AIRFLOW_HOME"
    case "$what" in
        check)
            check_services && say "PostgreSQL and Redis answer"
            return
            ;;
        all)
            check_services
            ensure_secrets
            ensure_database
            say "UI and REST API: $AIRFLOW__API__BASE_URL (user admin; password in" \
                "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
            say "DAGs: $AIRFLOW__CORE__DAGS_FOLDER  data: $KOOBILL_DATA_DIR  state: $KOOBILL_CELERY_STATE"
            start api-server "$BIN/airflow" api-server --host "$AIRFLOW__API__HOST" --port "$KOOBILL_API_PORT"
            start scheduler "$BIN/airflow" scheduler
            start dag-processor "$BIN/airflow" dag-processor
            start triggerer "$BIN/airflow" triggerer
            # two workers stand in for two machines: their own scratch folders, Celery node
            # names, log server ports, and the host names their task instances record
            worker worker-1 "$AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT" "koobill-worker-1"
            worker worker-2 "${KOOBILL_WORKER2_LOG_PORT:-$((AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT + 2))}" \
                "koobill-worker-2"
            ;;
        worker)
            check_services
            ensure_secrets
            worker "${2:?usage: airflow-celery.sh worker NAME}"
            ;;
        *)
            echo "usage: $0 [all | worker NAME | check]" >&2
            return 2
            ;;
    esac
    say "running; Ctrl-C stops every component"
    supervise
}

main "$@"
