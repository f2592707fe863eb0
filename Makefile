# koobill: every target bootstraps .venv from the pinned, hashed lock file first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/data/demo
export AIRFLOW__CORE__LOAD_EXAMPLES := False
# Byte-code caching cuts Airflow's and Great Expectations' import time from tens of seconds to a
# few: keep it on even where the environment turns it off.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test lint lock bench airflow clean

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

test: install
	$(BIN)/python -m pytest -n 2 -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ruff check dags/ --select AIR3

lock:
	uv pip compile requirements/main.in --python-version 3.11 --generate-hashes --no-header -o requirements/lock.txt
	uv pip compile requirements/bootstrap.in --python-version 3.11 --generate-hashes --no-header -o requirements/bootstrap.txt

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf data/demo .pytest_cache
