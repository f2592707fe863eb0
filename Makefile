# koobill: every target bootstraps .venv from the pinned, hashed lock file first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/data/demo
HOST ?= 127.0.0.1
PORT ?= 8000
CHROMIUM ?= /usr/bin/chromium
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Byte-code caching cuts Airflow's and Great Expectations' import time from tens of seconds to a
# few: keep it on even where the environment turns it off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-services lint lock bench airflow airflow-celery clean serve chromium focus-check

install: $(STAMP)

$(STAMP): requirements/lock.txt requirements/bootstrap.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/bootstrap.txt
	$(BIN)/uv pip install --python $(BIN)/python --require-hashes -r requirements/lock.txt
	$(BIN)/uv pip install --python $(BIN)/python --no-deps --no-build-isolation -e .
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

demo: install
	$(BIN)/python -m pipelines.demo --data-dir "$(DATA_DIR)"

test: install chromium
	KOOBILL_CHROMIUM="$(CHROMIUM)" $(BIN)/python -m pytest -n 2 -q

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
	  echo "koobill: installing Chromium for the browser tests (apt-get install chromium)"; \
	  { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium > /dev/null; } \
	    || echo "koobill: apt-get could not install Chromium; the browser tests will be skipped"; \
	else \
	  echo "koobill: Chromium is missing, so the browser tests will be skipped. Install it with"; \
	  echo "         sudo apt-get install -y chromium   (or set CHROMIUM / KOOBILL_CHROMIUM)"; \
	fi

# The Partner Bills page on DATA_DIR (the demo's by default: run `make demo` first).
serve: install
	$(BIN)/koobill --data-dir "$(DATA_DIR)" serve --host "$(HOST)" --port "$(PORT)"

# ruff on the Python, Airflow 3 rules on dags/, sqlfluff on sql/ (its rules, and the ones left
# out with the reason: .sqlfluff)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ruff check dags/ --select AIR3
	$(BIN)/sqlfluff lint sql/ --processes 1

# Airflow's UI, scheduler, DAG processor and triggerer (`airflow standalone`) on the DAGs of dags/
# and the data of DATA_DIR (the demo's by default, whose runs then show in the UI). DAGs start
# paused; the start date is the 1st of last month (Beijing), so unpausing koobill_daily catches up
# from the demo's month. The UI listens on 127.0.0.1 (AIRFLOW_HOST=0.0.0.0 to share it); task
# slots are sized to the machine's cores (AIRFLOW_PARALLELISM). Stop with Ctrl-C.
airflow: install
	@mkdir -p "$(DATA_DIR)/airflow"
	@echo "koobill: Airflow UI at http://localhost:8080  DAGs: $(CURDIR)/dags  data: $(DATA_DIR)"
	@echo "koobill: login as admin; the password is printed below once Airflow is ready, and kept in"
	@echo "         $(DATA_DIR)/airflow/simple_auth_manager_passwords.json.generated"
	@# a JWT secret of 64 bytes, made once (standalone's own is 24 bytes, and it says so)
	@test -s "$(DATA_DIR)/airflow/jwt_secret" || (umask 077; $(BIN)/python -c \
	  "import secrets; print(secrets.token_urlsafe(48))" > "$(DATA_DIR)/airflow/jwt_secret")
	export AIRFLOW_HOME="$(DATA_DIR)/airflow" AIRFLOW__CORE__DAGS_FOLDER="$(CURDIR)/dags" \
	  AIRFLOW__API_AUTH__JWT_SECRET="$$(cat "$(DATA_DIR)/airflow/jwt_secret")" \
	  AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin" KOOBILL_DATA_DIR="$(DATA_DIR)" \
	  AIRFLOW__API__HOST="$${AIRFLOW_HOST:-127.0.0.1}" \
	  AIRFLOW__CORE__PARALLELISM="$${AIRFLOW_PARALLELISM:-$$(nproc)}" \
	  AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1 \
	  PATH="$(CURDIR)/$(BIN):$$PATH"; \
	export KOOBILL_START_DATE="$${KOOBILL_START_DATE:-$$(TZ=Asia/Shanghai date -d "$$(TZ=Asia/Shanghai date +%Y-%m-01) -1 month" +%Y-%m-%d)}"; \
	echo "koobill: KOOBILL_START_DATE=$$KOOBILL_START_DATE"; \
	exec $(BIN)/airflow standalone

# FOCUS 1.2 exports checked by the FinOps Foundation's focus-validator (docs/focus.md). The
# validator needs Python >= 3.12 and pins duckdb<2, pandas<3, numpy<2, so it gets its own venv
# (.venv-focus) from the hashed requirements/focus.txt. The validator tests of
# tests/test_focus.py run, then a fresh demo data dir under
# test-output/focus/ is exported with --format focus; every partner's Parquet and CSV dataset is
# validated; the validator's JUnit reports stay in test-output/focus/reports/.
PYTHON312 ?= $(firstword $(wildcard /root/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.12))
FOCUS_VENV := .venv-focus
FOCUS_OUT := $(CURDIR)/test-output/focus
FOCUS_MONTH := 2026-10

$(FOCUS_VENV)/.installed: requirements/focus.txt $(STAMP)
	@test -n "$(PYTHON312)" || { echo "koobill: focus-check needs Python 3.12 (set PYTHON312=...)"; exit 1; }
	test -x $(FOCUS_VENV)/bin/python || $(PYTHON312) -m venv $(FOCUS_VENV)
	$(BIN)/uv pip install --python $(FOCUS_VENV)/bin/python --require-hashes -r requirements/focus.txt
	touch $@

focus-check: install $(FOCUS_VENV)/.installed
	@mkdir -p "$(FOCUS_OUT)"
	@# the tests that need the validator (skipped by `make test` while .venv-focus is missing):
	@# a restated version's Correction rows validated, and the check failing on a broken dataset
	$(BIN)/python -m pytest -q -n 0 -p no:cacheprovider tests/test_focus.py -k "validator or check_fails"
	$(BIN)/python -m pipelines.demo --data-dir "$(FOCUS_OUT)/demo" --month $(FOCUS_MONTH) > "$(FOCUS_OUT)/demo.log" 2>&1 \
	  || { tail -40 "$(FOCUS_OUT)/demo.log"; exit 1; }
	$(BIN)/koobill --data-dir "$(FOCUS_OUT)/demo" export --month $(FOCUS_MONTH) --format focus
	$(BIN)/python tools/focus-check --venv $(FOCUS_VENV) --report-dir "$(FOCUS_OUT)/reports" \
	  "$(FOCUS_OUT)"/demo/exports/*/$(FOCUS_MONTH)/focus-*.parquet "$(FOCUS_OUT)"/demo/exports/*/$(FOCUS_MONTH)/focus-*.csv

# The production shape on this machine (README, Production): Airflow with the CeleryExecutor,
# its metadata database on PostgreSQL (database koobill_airflow, created if missing), Redis as
# the broker, and an API server, scheduler, DAG processor, triggerer and two Celery workers,
# each in its own process group and scratch folder under data/celery/run/. Settings:
# deploy/celery/celery.env; secrets: data/celery/airflow/secrets.env (made on first start).
# The UI listens on 127.0.0.1:8080. Stop with Ctrl-C (every component stops).
airflow-celery: install
	export KOOBILL_DATA_DIR="$(DATA_DIR)"; \
	export KOOBILL_START_DATE="$${KOOBILL_START_DATE:-$$(TZ=Asia/Shanghai date -d "$$(TZ=Asia/Shanghai date +%Y-%m-01) -1 month" +%Y-%m-%d)}"; \
	exec deploy/celery/airflow-celery.sh all

# The same deployment for real, on PostgreSQL + Redis + two Celery workers: a week of daily
# runs, the month close and the mapped exports through the scheduler, compared bill by bill and
# byte by byte with an embedded run (tests/services/; a few minutes; the logs of the last run
# stay in data/test-services/). Fails, saying how to install them, where PostgreSQL or Redis
# is missing.
test-services: install
	@mkdir -p "$(CURDIR)/data"
	KOOBILL_TEST_SERVICES=1 $(BIN)/python -m pytest -n 0 -q -s -p no:cacheprovider \
	  --basetemp="$(CURDIR)/data/test-services" tests/services

# Recompile the hashed lock files from requirements/*.in with the venv's own uv (installed by
# `make install` from requirements/bootstrap.txt).
lock: install
	$(BIN)/uv pip compile requirements/main.in --python-version 3.11 --generate-hashes --no-header -o requirements/lock.txt
	$(BIN)/uv pip compile requirements/bootstrap.in --python-version 3.11 --generate-hashes --no-header -o requirements/bootstrap.txt

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/page.py

# Remove what the targets made, keeping .venv: the demo's data dir (data/demo), make
# airflow-celery's Airflow home, secrets and process state (data/celery), make test-services'
# logs (data/test-services), make focus-check's output (test-output) and its venv
# (.venv-focus), and pytest's cache.
clean:
	rm -rf data/demo data/celery data/test-services test-output .venv-focus .pytest_cache
