"""Every environment variable koobill reads, in one place, validated.

:class:`KoobillSettings` declares each ``KOOBILL_*`` variable once: its type, default, bounds
and meaning. :func:`settings` reads the environment as it is now (a test's ``setenv`` applies
at once) and refuses a value it cannot use with a :class:`~pipelines.errors.SettingError` that
names the variable, the value and what it expects, e.g.::

    KOOBILL_LOCK_WAIT_S='ten' is not a number of seconds, 0 or more (e.g. 600); fix or unset it

An empty variable counts as unset. ``docs/configuration.md`` is generated from this class
(``python -m pipelines.env``; a test fails when it differs), with the variables that only the
tests and the bench read.

The variables read when Airflow parses a DAG file (``KOOBILL_START_DATE``,
``KOOBILL_RETRIES``, ``KOOBILL_LANDING_WAIT_H``, ``KOOBILL_LANDING_POKE_S``) are declared here
too; this module imports pydantic-settings and the standard library only (pydantic is already
loaded by Airflow's SDK).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.errors import SettingError
from pipelines.schema import EXPORT_FORMATS, EXTRA_EXPORT_FORMATS

PREFIX = "KOOBILL_"
DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"

_MEMORY = r"(?i)^[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"


def _setting(default: Any, *, expects: str, example: str, read: str, doc: str, **kw: Any) -> Any:
    """A field with what the docs table and the error messages say about it."""
    return Field(
        default,
        description=doc,
        json_schema_extra={"expects": expects, "example": example, "read": read},
        **kw,
    )


class KoobillSettings(BaseSettings):
    """The ``KOOBILL_*`` environment variables of the package, the CLI, the page and the DAGs."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    data_dir: str | None = _setting(
        None,
        expects="a folder path or an s3:// URI",
        example="/srv/koobill/data, s3://billing/koobill",
        read="every command, page and task",
        doc="The data dir when `--data-dir` is not given (default `./data`). Every command but "
        "`init` and `generate` refuses a path that is no data dir (no `landing/` folder). "
        "`s3://bucket/prefix` puts it on S3-compatible object storage (endpoint and credentials "
        "from the standard `AWS_*` settings; README, Production).",
    )
    cache_dir: Path | None = _setting(
        None,
        expects="a folder path",
        example="/var/cache/koobill",
        read="every command on an `s3://` data dir",
        doc="Where the local mirror of a data dir on object storage is kept: "
        "`<cache>/s3/<bucket>/<prefix>` (default `~/.cache/koobill`). A cache: deleting it "
        "loses nothing that was uploaded.",
    )
    lock_wait_s: float = _setting(
        600.0,
        ge=0,
        allow_inf_nan=False,
        expects="a number of seconds, 0 or more",
        example="600",
        read="ingest, close, export, rebuild-warehouse",
        doc="How long a writing command waits for the data dir's writer lock before it fails "
        "with `another koobill command holds the lock`.",
    )
    memory_limit: str = _setting(
        "2GB",
        pattern=_MEMORY,
        expects="an amount of memory",
        example="2GB, 512MB",
        read="ingest",
        doc="DuckDB's memory limit during an ingest; beyond it DuckDB spills to disk.",
    )
    max_quarantine_share: float = _setting(
        0.05,
        ge=0,
        le=1,
        expects="a share between 0 and 1",
        example="0.05 or 5%",
        read="ingest",
        doc="A feed-day whose quarantined share of rows is above this fails the ingest of its "
        "date (the source looks broken); nothing of the date is published.",
    )
    quarantine_min_rows: int = _setting(
        100,
        ge=0,
        expects="a whole number of rows",
        example="100",
        read="ingest",
        doc="A feed-day with fewer rows read is too small to judge by that share: its bad rows "
        "are quarantined one by one and the date goes on.",
    )
    gx_prewarm: bool = _setting(
        True,
        expects="on or off",
        example="0 or 1",
        read="ingest, close",
        doc="`0` turns off importing Great Expectations in a background thread while an ingest "
        "or a close runs its SQL.",
    )
    lake_retention_hours: int = _setting(
        0,
        ge=0,
        expects="a whole number of hours",
        example="168",
        read="ingest, close, export, reconcile",
        doc="How long the lake keeps a data file after a commit replaced it (Delta Lake time "
        "travel to older versions needs them). `0` deletes it right after the commit; the "
        "table's log keeps every commit either way.",
    )
    web_export_lock_wait_s: float = _setting(
        20.0,
        ge=0,
        allow_inf_nan=False,
        expects="a number of seconds, 0 or more",
        example="20",
        read="the Partner Bills page",
        doc="How long an export asked for from the page waits for the writer lock (the page "
        "answers that the data is busy after that).",
    )
    export_formats: Annotated[tuple[str, ...] | None, NoDecode] = _setting(
        None,
        expects=f"a comma-separated list of {', '.join(EXPORT_FORMATS + EXTRA_EXPORT_FORMATS)}",
        example="pdf,xlsx",
        read="`koobill_exports` (run time)",
        doc=(
            f"The formats the exports DAG writes (default: `{','.join(EXPORT_FORMATS)}`; "
            "add `focus` for the FOCUS 1.2 dataset)."
        ),
    )
    export_workers: int | None = _setting(
        None,
        ge=1,
        expects="a whole number of processes, 1 or more",
        example="4",
        read="export",
        doc="How many processes write the export files (default one per core, at most one per "
        "10 bills).",
    )
    start_date: dt.date = _setting(
        dt.date(2026, 1, 1),
        expects="a date YYYY-MM-DD",
        example="2026-01-01",
        read="the DAGs (parse time)",
        doc="The DAGs' start date, in Beijing time.",
    )
    end_date: dt.date | None = _setting(
        None,
        expects="a date YYYY-MM-DD",
        example="2026-11-07",
        read="the DAGs (parse time)",
        doc="The DAGs' last date, in Beijing time (default none: they run on). A bounded catch-up, "
        "e.g. one week of `koobill_daily` runs in `make test-services`.",
    )
    export_batch_size: int = _setting(
        10,
        ge=1,
        expects="a whole number, 1 or more",
        example="10",
        read="`koobill_exports` (run time)",
        doc="Partners per mapped export task (`export_batch.expand`): the unit of fan-out over "
        "the Celery workers.",
    )
    retries: int | None = _setting(
        None,
        ge=0,
        expects="a whole number, 0 or more",
        example="3",
        read="the DAGs (parse time)",
        doc="Overrides every DAG's retries (by default `koobill_daily` 3, `koobill_month_close` "
        "6, `koobill_exports` 3).",
    )
    landing_wait_h: float = _setting(
        6.0,
        gt=0,
        allow_inf_nan=False,
        expects="a number of hours, more than 0",
        example="6",
        read="`koobill_daily` (parse time)",
        doc="How long `koobill_daily` waits for its landing date before the run fails (6 hours: "
        "until about 07:30 Beijing).",
    )
    landing_poke_s: float = _setting(
        300.0,
        gt=0,
        allow_inf_nan=False,
        expects="a number of seconds, more than 0",
        example="300",
        read="`koobill_daily` (parse time)",
        doc="How often `koobill_daily` looks for its landing date meanwhile (the sensor frees "
        "its worker slot in between).",
    )

    @field_validator("max_quarantine_share", mode="before")
    @classmethod
    def _percent(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                return float(value.strip()[:-1]) / 100
            except ValueError:
                return value
        return value

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("export_formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        formats = tuple(f.strip().lower() for f in value.split(",") if f.strip())
        if not formats or not set(formats) <= set(EXPORT_FORMATS + EXTRA_EXPORT_FORMATS):
            raise ValueError("unknown format")
        return formats

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of a field: ``lock_wait_s`` -> ``KOOBILL_LOCK_WAIT_S``."""
        return PREFIX + field.upper()


_cache: dict[tuple[tuple[str, str], ...], KoobillSettings] = {}


def settings() -> KoobillSettings:
    """The settings as the environment holds them now. Raises :class:`SettingError` naming
    every variable whose value cannot be used."""
    key = tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))
    found = _cache.get(key)
    if found is None:
        try:
            found = KoobillSettings()
        except ValidationError as exc:
            raise SettingError(_explain(exc)) from None
        _cache.clear()  # one entry: the environment changes rarely (tests, a CLI run)
        _cache[key] = found
    return found


def aws_environment() -> dict[str, str]:
    """The standard ``AWS_*`` variables as set now (empty ones left out). boto3 and deltalake
    read them themselves; :mod:`pipelines.objectstore` looks at the endpoint, the region and
    the locking provider (see the object storage table of docs/configuration.md)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_") and v}


def _explain(exc: ValidationError) -> str:
    fields = KoobillSettings.model_fields
    out = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        extra = fields[name].json_schema_extra if name in fields else None
        if not isinstance(extra, dict):
            out.append(str(err["msg"]))
            continue
        out.append(
            f"{KoobillSettings.variable(name)}={err['input']!r} is not {extra['expects']} "
            f"(e.g. {extra['example']}); fix or unset it"
        )
    return "; ".join(out)


# --------------------------------------------------------------------------- documentation

# Read by the production launcher (deploy/celery), not by the package: the rows of the second table.
DEPLOYMENT = """\
| `KOOBILL_REPO` | the checkout | where the launcher finds dags/, the venv and data/ |
| `KOOBILL_BIN` | `.venv/bin` | the venv's bin folder (airflow, koobill) |
| `KOOBILL_CELERY_STATE` | `data/celery/run` | each component's pid, log and scratch folder (`TMPDIR`) |
| `KOOBILL_SERVICES_HOST` | 127.0.0.1 | where PostgreSQL and Redis listen |
| `KOOBILL_PG_USER` | postgres | PostgreSQL user of Airflow's metadata database (trust auth by default; set `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN` for a password) |
| `KOOBILL_PG_PORT` | 5432 | PostgreSQL port |
| `KOOBILL_AIRFLOW_DB` | koobill_airflow | Airflow's metadata database (created if missing) |
| `KOOBILL_REDIS_DB` | 0 | Redis database number of the Celery broker |
| `KOOBILL_API_HOST` | 127.0.0.1 | the API server's address, also the workers' execution API URL |
| `KOOBILL_API_PORT` | 8080 | the API server's port |
| `KOOBILL_WORKER_HOSTNAME` | the machine's name | a worker's host name in the task logs (distinct per worker on one machine) |
| `KOOBILL_WORKER_QUEUES` | default | the Celery queues a worker takes tasks from |
| `KOOBILL_WORKER2_LOG_PORT` | 8794 | the second local worker's log server port |
| `KOOBILL_CELERY_PARENT_PID` | | set by the launcher: its components stop when it dies |
"""

# Standard AWS variables of a data dir on object storage: the rows of the object storage table.
OBJECT_STORAGE = """\
| `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`) | AWS | the S3-compatible endpoint, e.g. `http://127.0.0.1:9000`; an `http://` one is allowed for the lake too |
| `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | | the credentials (or `AWS_PROFILE` and the AWS config files) |
| `AWS_REGION` (or `AWS_DEFAULT_REGION`) | `us-east-1` | the bucket's region |
| `AWS_S3_LOCKING_PROVIDER` | | `dynamodb`: the lake's commits go through a DynamoDB lock instead of conditional writes (stores without `If-None-Match`) |
"""

# Read by the tests and the bench, not by the package: the rows of the third table.
TOOLING = """\
| `KOOBILL_CHROMIUM` | `/usr/bin/chromium` | the browser tests: the Chromium to drive |
| `KOOBILL_TEST_SERVICES` | | `1` (set by `make test-services`): run tests/services on PostgreSQL, Redis and two Celery workers |
| `KOOBILL_BIG_FILE_BYTES` | 2000000000 | tests/test_reliability.py: size of its big landing file |
| `KOOBILL_BENCH_BIG_ROWS` | 5000000 | `make bench`: usage rows of the big landing day |
| `KOOBILL_BENCH_DAY_ROWS` | 1000000 | `make bench`: usage rows of each day of the month |
| `KOOBILL_BENCH_DAYS` | 30 | `make bench`: landing days in the month (2 or more) |
| `KOOBILL_BENCH_YEAR_DAYS` | 365 | `make bench`: landing dates of the random-id history (the last is measured against a first date) |
| `KOOBILL_BENCH_REPEATS` | 3 | `make bench`: runs per measurement (the median is reported) |
| `KOOBILL_BENCH_BUDGET_S` | 900 | `make bench`: stop repeating a measurement after this long |
| `KOOBILL_BENCH_OUT` | `bench/out` | `make bench`: cache of generated and ingested data |
| `KOOBILL_BENCH_RESULTS_DIR` | `bench` | `make bench`: where results.json and .md go |
| `KOOBILL_BENCH_SKIP` | | `make bench`: parts to skip: big, pandas, month, close, cli, year, exports |
| `KOOBILL_BENCH_KEEP` | | `1`: `make bench` keeps the last results' figures of the parts it skips (same sizes) |
| `KOOBILL_BENCH_SUBPROCESS` | | `1`: the tiny bench runs each measure in a subprocess |
| `KOOBILL_BENCH_EXPORT_PARTNERS` | 200 | `make bench`: partners of the exports measurement (bench/exports_measure.py) |
| `KOOBILL_BENCH_EXPORT_ROWS` | 20000 | `make bench`: usage rows per day of the exports measurement |
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def render() -> str:
    """The Markdown of ``docs/configuration.md``."""
    rows = []
    for name, field in KoobillSettings.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict), name
        rows.append(
            f"| `{KoobillSettings.variable(name)}` | {_default(field.default)} | "
            f"{_cell(str(extra['example']))} | {_cell(str(extra['read']))} | "
            f"{_cell(field.description or '')} |"
        )
    return "\n".join(
        [
            "# Configuration",
            "",
            "<!-- Generated by `python -m pipelines.env` from `pipelines/env.py`; "
            "do not edit by hand. -->",
            "",
            "koobill reads these environment variables, all in `pipelines/env.py`, each "
            "validated when it is read: a value that cannot be used stops the command with "
            "an error naming the variable, the value and what is expected. An empty variable "
            "counts as unset. Variables marked *parse time* are read when Airflow parses the "
            "DAG files (restart the DAG processor after a change); the others when a command, "
            "a page request or a task runs.",
            "",
            "| variable | default | example | read by | meaning |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "The invoice issuer, bank accounts and payment terms are not environment variables: "
            "they are in `<data-dir>/settings.toml` (see `pipelines/assets/settings.default.toml`"
            ", which documents every key).",
            "",
            "## The production deployment",
            "",
            "Read by `deploy/celery/airflow-celery.sh` and `deploy/celery/celery.env` (the "
            "README's Production section), not by the package:",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
            DEPLOYMENT,
            "## A data dir on object storage",
            "",
            "With `--data-dir s3://bucket/prefix` (or `KOOBILL_DATA_DIR`), boto3 and deltalake "
            "read the standard AWS variables themselves; these are the ones that matter:",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
            OBJECT_STORAGE,
            "## Tests and the bench",
            "",
            "| variable | default | meaning |",
            "|---|---|---|",
            TOOLING,
        ]
    )


def write(path: Path = DOC_PATH) -> Path:
    from pipelines.files import write_text

    write_text(path, render())
    return path


def main(argv: list[str] | None = None) -> None:
    """``python -m pipelines.env [PATH]``: write the configuration reference (docs/configuration.md
    by default)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and (argv[0].startswith("-") or len(argv) > 1):
        print(
            "usage: python -m pipelines.env [PATH]  (writes the configuration reference; "
            f"default {DOC_PATH})"
        )
        raise SystemExit(0 if argv[0] in ("-h", "--help") else 2)
    print(f"wrote {write(Path(argv[0]) if argv else DOC_PATH)}")


if __name__ == "__main__":
    main()
