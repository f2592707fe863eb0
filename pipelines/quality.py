"""Data-quality gates: staged bills before publishing, accepted feed records after ingest, and
the share of quarantined rows per feed.

Which engine counts what (README, "Data quality: how it is checked"):

- Bills. A month's bills are small (one row per partner and version), so Great Expectations
  evaluates every expectation of ``expectations.bills`` itself, with its pandas engine, on
  every row of the frame ``sql/quality/bills_frame.sql`` builds. The counts and offending rows
  in the report are GX's.
- Feeds. A landing day of usage can be millions of rows. DuckDB counts every expectation of
  ``expectations.feeds`` exactly over all rows: each expectation is translated to SQL when the
  suite is loaded (``load_suite``; a type without a SQL form is refused then, before any data
  is read). Great Expectations validates the rows handed to it (every row of a table up to
  ``max_gx_rows``, else the offending rows DuckDB found, up to ``SAMPLE_ROWS`` per rule) and
  must agree. The report says so and names the engine of each count. When no row is handed to
  GX (a table over ``max_gx_rows`` in which DuckDB found no offending row), GX is not run, nor
  imported: the suite is plain data (``expectations.feeds.Suite``), and the report says that
  DuckDB alone counted. (GX's own SQL engine on
  DuckDB through SQLAlchemy does not run with the pinned GX, SQLAlchemy and duckdb-engine: see
  the README.)

Money is exact either way: rules that need arithmetic are boolean columns that DuckDB computes
with DECIMAL arithmetic (``sql/quality/``), and amounts reach pandas as decimal *text*.

Each validation writes ``<name>.html`` (Great Expectations' validation page, with a summary of
the counts, their engine, failures and offending rows at the top) and ``<name>.json`` (the
validation result; koobill's summary under ``meta.koobill``) into ``report_dir``, pass or fail.

Great Expectations is imported inside the functions that validate, and only when it validates
rows: importing this module is cheap.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import html
import importlib.abc
import importlib.util
import json
import re
import sys
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from pipelines import calendar as cal
from pipelines import db, reports
from pipelines.env import settings
from pipelines.errors import KoobillError
from pipelines.files import write_text
from pipelines.rules import blank_sql

_warm: threading.Thread | None = None


# Modules that Great Expectations imports as it loads, although only expectations that koobill's
# suites do not use need them (the KL divergence and Kolmogorov-Smirnov tests): they are loaded
# on their first use instead. They are a third of the CPU of GX's import (0.8 s of 2.4 s).
DEFERRED_MODULES = ("scipy.stats", "altair")


class _DeferredImports(importlib.abc.MetaPathFinder):
    """A finder that hands out ``names`` as lazy modules (``importlib.util.LazyLoader``) to the
    thread that installed it: the module object exists at once, and its code runs when an
    attribute of it is first read, for the life of the process. Another thread importing one
    of them meanwhile gets the plain module. (Python 3.11's lazy module is not safe against two
    threads reading its first attribute at once, CPython gh-114763, fixed in 3.12.3: only GX's
    KL-divergence and Kolmogorov-Smirnov expectations read these modules, and koobill runs
    Great Expectations in one thread.)"""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(names)
        self.thread = threading.get_ident()

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.names or threading.get_ident() != self.thread:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


_import_lock = threading.Lock()


def import_gx() -> None:
    """Import Great Expectations and koobill's bills suite (``expectations.bills``), with
    ``DEFERRED_MODULES`` loaded on first use, once per process. The prewarming thread and the
    validating functions call this; a module that imports GX itself gets a plain import."""
    with _import_lock:
        if "expectations.bills" in sys.modules:
            return
        finder = _DeferredImports(DEFERRED_MODULES)
        sys.meta_path.insert(0, finder)
        # The import makes some 400,000 objects and no garbage worth a collection: the cyclic
        # collector would run some 600 times over a growing heap meanwhile (0.15 s of the
        # import's 1.55 s of CPU). It is off for the import's 1.4 s (for the whole process:
        # what other threads leave meanwhile is collected after).
        collecting = gc.isenabled()
        gc.disable()
        try:
            import expectations.bills  # noqa: F401  (imports great_expectations)
        finally:
            sys.meta_path.remove(finder)
            if collecting:
                gc.enable()


def prewarm() -> None:
    """Start importing Great Expectations (``import_gx``, about 1.5 s of Python) in a
    background thread, so the import overlaps the SQL work of an ingest or a close instead of
    following it.

    The validating functions wait for this thread before they import anything themselves,
    so the two threads never import the same modules at once. Off with
    ``KOOBILL_GX_PREWARM=0``."""
    global _warm
    if _warm is not None or not settings().gx_prewarm:
        return

    def run() -> None:
        try:
            import_gx()
        except Exception:  # noqa: BLE001  the validating thread imports again and reports
            pass

    _warm = threading.Thread(target=run, name="koobill-gx-import", daemon=True)
    _warm.start()


def _await_prewarm() -> None:
    if _warm is not None:
        _warm.join()


SAMPLE_ROWS = 50  # rows per failing expectation handed to GX when the table is large
MAX_GX_ROWS = 100_000  # tables up to this size are handed to GX whole
MESSAGE_ROWS = 5  # offending rows per failed expectation in an error message
BILL_KEY = ("partner_id", "bill_month", "version")
FEED_KEY = ("record_id", "partner_id")


class QualityError(KoobillError):
    """A data-quality check failed; nothing downstream should use the data.

    ``failures``: one dict per failed expectation with ``expectation`` (rule name),
    ``description``, ``columns``, ``count`` (offending rows over the whole table) and ``rows``
    (a sample of offending rows: key columns plus the values involved, as text).
    ``report_path``: the HTML report, or None when no report is written.
    """

    def __init__(
        self, message: str, failures: list[dict] | None = None, report_path: Path | None = None
    ) -> None:
        super().__init__(message)
        self.failures = list(failures or [])
        self.report_path = report_path


@dataclass(frozen=True)
class QualityResult:
    success: bool
    report_path: Path
    n_expectations: int
    failures: list[dict] = field(default_factory=list)
    json_path: Path | None = None
    rows_checked: int = 0


# ---------------------------------------------------------------------------------------------
# SQL files and suites


def _quality_sql(name: str) -> str:
    """The text of ``sql/quality/<name>.sql``; a missing file is an error, never skipped."""
    path = db.SQL_DIR / "quality" / f"{name}.sql"
    if not path.is_file():
        raise RuntimeError(f"koobill's quality SQL {path} is missing (a broken install?)")
    return path.read_text(encoding="utf-8")


class _Outcome(NamedTuple):
    """What a validation found, before it is written up."""

    result: Any  # Great Expectations' validation result
    rows_checked: int
    rows_to_gx: int
    coverage: str  # which engine counted what, in words
    checks: list[dict]
    failures: list[dict]


@dataclass(frozen=True)
class _Rule:
    """One expectation of a suite as koobill reports it: ``name`` (``meta.rule``), the columns
    it checks, the columns shown beside an offending row and, for the DuckDB engine, the SQL
    that is true on an offending row with the values it binds."""

    name: str
    type: str
    description: str
    columns: list[str]
    show: list[str]
    predicate: str = ""
    params: dict = field(default_factory=dict)

    @property
    def unique(self) -> bool:
        return self.type in _UNIQUE_TYPES


_UNIQUE_TYPES = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")


def _sql_not_null(col: str, kw: dict, p: str) -> tuple[str, dict]:
    return f"{_q(col)} is null", {}


def _sql_in_set(col: str, kw: dict, p: str) -> tuple[str, dict]:
    params = {f"{p}_{j}": v for j, v in enumerate(kw["value_set"])}
    names = ", ".join(f"${k}" for k in params)
    return f"{_q(col)} is not null and {_q(col)} not in ({names})", params


def _sql_regex(col: str, kw: dict, p: str) -> tuple[str, dict]:
    return f"{_q(col)} is not null and not regexp_matches({_q(col)}, ${p})", {p: kw["regex"]}


def _sql_between(col: str, kw: dict, p: str) -> tuple[str, dict]:
    bounds = {f"{p}_min": kw.get("min_value"), f"{p}_max": kw.get("max_value")}
    # a bound as exact decimal (GX stores 1 as 1.0): never a float comparison on an amount
    params = {k: Decimal(str(v)) for k, v in bounds.items() if v is not None}
    ops = {f"{p}_min": "<", f"{p}_max": ">"}
    if not params:
        raise ValueError("expect_column_values_to_be_between without a bound")
    parts = " or ".join(f"{_q(col)} {ops[k]} ${k}" for k in params)
    return f"{_q(col)} is not null and ({parts})", params


def _sql_unique(col: str, kw: dict, p: str) -> tuple[str, dict]:
    return "", {}  # counted by grouping (see _unique_count), not row by row


# The expectation types the DuckDB engine counts, with GX's semantics (NULLs only fail the
# not-null check; uniqueness ignores NULL keys), and the arguments it honours. A suite with any
# other type, or an argument such as ``mostly`` or ``row_condition``, is refused when it is
# loaded, before any data is read.
_SQL_FORMS = {
    "expect_column_values_to_not_be_null": _sql_not_null,
    "expect_column_values_to_be_in_set": _sql_in_set,
    "expect_column_values_to_match_regex": _sql_regex,
    "expect_column_values_to_be_between": _sql_between,
    "expect_column_values_to_be_unique": _sql_unique,
    "expect_compound_columns_to_be_unique": _sql_unique,
}
_SQL_KWARGS = {"column", "column_list", "value_set", "regex", "min_value", "max_value", "batch_id"}


def _sql_form(suite_name: str, rule: _Rule, kw: dict, p: str) -> tuple[str, dict]:
    """The SQL of ``rule`` for the DuckDB engine, or ValueError naming what it cannot count."""
    form = _SQL_FORMS.get(rule.type)
    if form is None:
        raise ValueError(
            f"suite {suite_name}: {rule.name} is a {rule.type}, which the DuckDB engine "
            f"cannot count; supported: {', '.join(sorted(_SQL_FORMS))}"
        )
    extra = sorted(set(kw) - _SQL_KWARGS)
    if extra:
        raise ValueError(
            f"suite {suite_name}: {rule.name} sets {', '.join(extra)}, which the DuckDB engine "
            "does not honour"
        )
    return form(rule.columns[0], kw, p)


def load_suite(suite: Any, engine: str) -> list[_Rule]:
    """The rules of ``suite`` (a Great Expectations suite, or ``expectations.feeds.Suite``: the
    same as plain data) for ``engine`` ("gx": Great Expectations evaluates every expectation
    itself; "duckdb": each is translated to SQL now). Refuses, before any data is read, a suite
    whose rule names repeat or that holds a type the engine cannot count."""
    rules = []
    for i, e in enumerate(suite.expectations):
        kw = _kwargs(e)
        meta = e.meta or {}
        rule = _Rule(
            name=_rule(e),
            type=e.expectation_type,
            description=e.description or "",
            columns=list(kw.get("column_list") or [kw["column"]]),
            show=list(meta.get("show", [])),
        )
        if engine == "duckdb":
            pred, params = _sql_form(suite.name, rule, kw, f"r{i}")
            rule = replace(rule, predicate=pred, params=params)
        rules.append(rule)
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"suite {suite.name}: expectation rules must be unique")
    return rules


def _q(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def _literal(text: str) -> str:
    """A SQL string literal (a view's definition cannot hold a bound parameter)."""
    return "'" + text.replace("'", "''") + "'"


def _rule(exp: Any) -> str:
    """The rule name of an expectation or of its configuration in a result."""
    return (exp.meta or {}).get("rule") or getattr(exp, "type", None) or exp.expectation_type


def _used(params: dict, sql: str) -> dict:
    """The named parameters a statement refers to outside its comments (DuckDB refuses unused
    ones)."""
    code = re.sub(r"--[^\n]*", "", sql)
    return {k: v for k, v in params.items() if re.search(rf"\${re.escape(k)}\b", code)}


def _text(v: Any) -> Any:
    if v is None:
        return None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(v, bool | int | str):
        return v
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return str(v)


def _offending_rows(df: Any, rule: _Rule, key: tuple[str, ...], index: list) -> list[dict]:
    """Up to SAMPLE_ROWS offending rows of ``df`` (key, checked and shown columns, as text)."""
    keep = [c for c in dict.fromkeys([*key, *rule.columns, *rule.show]) if c in df.columns]
    bad = df.loc[list(index)].sort_values(
        [c for c in rule.columns if c in df.columns], kind="stable", na_position="first"
    )
    return [
        {c: _text(v) for c, v in zip(keep, vals, strict=True)}
        for vals in bad[keep].head(SAMPLE_ROWS).itertuples(index=False, name=None)
    ]


# ---------------------------------------------------------------------------------------------
# Great Expectations


def _gx_run(df: Any, suite: Any, name: str, result_format: str) -> Any:
    """Great Expectations' pandas engine validates ``df`` (every row of it) with ``suite``."""
    import_gx()
    import great_expectations as gx

    if not isinstance(suite, gx.ExpectationSuite):
        suite = suite.gx()  # expectations.feeds.Suite: plain data
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    cfg = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=cfg)
    suite = context.suites.add(suite)
    batch_def = (
        context.data_sources.add_pandas("koobill")
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("frame")
    )
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch_def, suite=suite, name=name)
    )
    return vd.run(
        batch_parameters={"dataframe": df.reset_index(drop=True)},
        result_format={"result_format": result_format},
        run_id=RunIdentifier(run_name=name, run_time=dt.datetime.now(dt.UTC)),
    )


def _gx_outcomes(res: Any) -> dict[str, tuple[bool, int | None, list, str]]:
    """Per rule: GX's verdict, its count of offending rows, their frame index, and the error
    GX raised while evaluating (then the verdict is a failure and the count unknown)."""
    out = {}
    for r in res.results:
        info = r.exception_info or {}
        raised = [info, *(v for v in info.values() if isinstance(v, dict))]
        err = next(
            (i.get("exception_message") or "an error" for i in raised if i.get("raised_exception")),
            "",
        )
        err = f"Great Expectations raised: {err}" if err else ""
        result = r.result or {}
        out[_rule(r.expectation_config)] = (
            bool(r.success) and not err,
            result.get("unexpected_count"),
            list(result.get("unexpected_index_list") or []),
            err,
        )
    return out


# ---------------------------------------------------------------------------------------------
# Bills: a month's bills are small (one row per partner and version), so Great Expectations
# evaluates every expectation itself on the whole frame; its counts are the report's counts.


def _validate_bills_gx(con, bills_table: str, lines_table: str, suite: Any) -> _Outcome:
    rules = load_suite(suite, "gx")
    frame = _quality_sql("bills_frame")
    params = {"bills_table": bills_table, "lines_table": lines_table}
    df = con.execute(frame, params).df()
    res = _gx_run(df, suite, suite.name, "COMPLETE")
    outcomes = _gx_outcomes(res)
    checks, failures = [], []
    for rule in rules:
        ok, count, index, err = outcomes.get(rule.name, (False, None, [], "no result"))
        checks.append(_check(rule, count, ok, "Great Expectations"))
        if not ok:
            failures.append(_failure(rule, count, _offending_rows(df, rule, BILL_KEY, index), err))
    coverage = f"Great Expectations (pandas) evaluated every expectation on all {len(df):,} rows"
    return _Outcome(res, len(df), len(df), coverage, checks, failures)


def _check(rule: _Rule, count: int | None, ok: bool, engine: str) -> dict:
    return {
        "expectation": rule.name,
        "type": rule.type,
        "description": rule.description,
        "columns": rule.columns,
        "violations": count,
        "counted_by": engine,
        "success": ok,
    }


def _failure(rule: _Rule, count: int | None, rows: list[dict], error: str = "") -> dict:
    out = {
        "expectation": rule.name,
        "description": rule.description,
        "columns": rule.columns,
        "count": count if count is not None else len(rows),
        "rows": rows,
    }
    if error:
        out["error"] = error
    return out


# ---------------------------------------------------------------------------------------------
# Feeds: a day of a feed can be millions of rows. DuckDB counts every expectation (translated
# to SQL when the suite is loaded) exactly over all rows; Great Expectations validates only the
# rows handed to it (all rows of a small table, else the offending rows DuckDB found) and its
# verdict on them must agree. The report says which engine counted what.


def _feed_view(con, feed: str, table: str) -> str:
    """A temp view of ``table`` with the spec's columns of ``feed``: blank ids as NULL (as the
    ingest's rules.blank_sql), amounts as DECIMAL, missing optional columns as NULL. Returns
    its name."""
    from pipelines.config import FEEDS

    rel = con.sql("select * from query_table($t) limit 0", params={"t": table})
    types = {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
    have = set(types)
    spec = FEEDS[feed]
    missing = [c.name for c in spec if c.required and c.name not in have]
    missing += [] if "landing_date" in have else ["landing_date"]
    if missing:
        raise QualityError(
            f"{feed}: the table {table} lacks the column(s) {', '.join(missing)}",
            [_failure(_Rule("required_columns_present", "", "", missing, []), 0, [])],
        )
    sel = []
    for c in spec:
        if c.name not in have:
            sel.append(f"cast(null as varchar) as {_q(c.name)}")
        elif c.kind in ("id", "partner", "currency", "month", "order_type"):
            v = f"cast({_q(c.name)} as varchar)"  # ids as stored: uniqueness agrees with ingest
            sel.append(f"case when {blank_sql(v)} then null else {v} end as {_q(c.name)}")
        elif c.kind in ("money", "qty") and not types[c.name].startswith("DECIMAL"):
            # an amount not stored as DECIMAL is compared as one, never as a float
            sel.append(f"cast({_q(c.name)} as decimal(38, 12)) as {_q(c.name)}")
        else:
            sel.append(_q(c.name))
    view = f"_koobill_quality_{uuid.uuid4().hex[:12]}"
    con.execute(
        f"create temp view {view} as select {', '.join(sel)}, landing_date "
        f"from query_table({_literal(table)})"
    )
    return view


def _count_violations(con, frame: str, params: dict, rules: list[_Rule]) -> tuple[int, list[int]]:
    """The rows of ``frame`` and, per rule, its offending rows, in one scan (a uniqueness rule:
    distinct key hashes against non-null keys; the rows in repeated keys are counted exactly,
    only when they differ: equal keys have equal hashes, so as many distinct hashes as keys
    means no key repeats, and a hash collision only costs that exact count)."""
    sel = []
    for rule in rules:
        if rule.unique:
            cols = ", ".join(_q(c) for c in rule.columns)
            if len(rule.columns) == 1:
                sel += [f"count(distinct hash({cols})) filter (where {cols} is not null)"]
                sel += [f"count({cols})"]
            else:
                sel += [f"count(distinct hash({cols}))", "count(*)"]
        else:
            sel.append(f"count(*) filter (where coalesce({rule.predicate}, false))")
    sql = f"select count(*), {', '.join(sel)} from ({frame}) as frame"
    vals = iter(con.execute(sql, _used(params, sql)).fetchone())
    n_rows, counts = int(next(vals)), []
    for rule in rules:
        if not rule.unique:
            counts.append(int(next(vals)))
            continue
        distinct, nonnull = next(vals), next(vals)
        counts.append(0 if distinct == nonnull else _unique_count(con, frame, params, rule))
    return n_rows, counts


def _unique_count(con, frame: str, params: dict, rule: _Rule) -> int:
    """The rows whose key repeats (GX's count: every row of a repeated key, NULL keys aside)."""
    cols = ", ".join(_q(c) for c in rule.columns)
    where = f"where {cols} is not null" if len(rule.columns) == 1 else ""
    sql = (
        f"select coalesce(sum(n), 0) from (select count(*) as n from ({frame}) as frame "
        f"{where} group by {cols} having count(*) > 1)"
    )
    return int(con.execute(sql, _used(params, sql)).fetchone()[0])


def _flagged(frame: str, rules: list[_Rule], counts: list[int]) -> str:
    """``frame`` with ``_v<i>``: whether the row breaks rule i. A uniqueness rule with repeated
    keys needs a window count over every row; one without is false everywhere."""
    flags, windows = [], []
    for i, (rule, count) in enumerate(zip(rules, counts, strict=True)):
        pred = rule.predicate
        if rule.unique:
            cols = ", ".join(_q(c) for c in rule.columns)
            if count:
                windows.append(f"count(*) over (partition by {cols}) as _n{i}")
            not_null = f" and {cols} is not null" if len(rule.columns) == 1 else ""
            pred = f"_n{i} > 1{not_null}" if count else "false"
        flags.append(f"coalesce({pred}, false) as _v{i}")
    win = "".join(f", {w}" for w in windows)
    return f"select *, {', '.join(flags)} from (select *{win} from ({frame}) as frame) as w"


def _as_text(con, sql: str, params: dict) -> Any:
    """The rows of ``sql`` as a pandas frame with every value but booleans as text: a DECIMAL
    never reaches pandas as a float."""
    rel = con.sql(f"select * from ({sql}) as s limit 0", params=_used(params, sql))
    casts = [
        _q(c) if str(t) == "BOOLEAN" else f"cast({_q(c)} as varchar) as {_q(c)}"
        for c, t in zip(rel.columns, rel.types, strict=True)
    ]
    out = f"select {', '.join(casts)} from ({sql}) as s"
    return con.execute(out, _used(params, out)).df()


def _gx_frame(
    con, flagged: str, params: dict, rules: list[_Rule], counts: list[int], limits: tuple[int, int]
) -> tuple[Any, str]:
    """The rows handed to Great Expectations, as text, and what they are. ``limits``: the
    rows of the table and the most rows handed over whole."""
    n_rows, max_gx_rows = limits
    if n_rows <= max_gx_rows:
        return _as_text(con, flagged, params), "every row"
    if not any(counts):
        empty = f"select * from ({flagged}) as f limit 0"
        return _as_text(con, empty, params), "no rows (no row breaks a rule)"
    tmp = f"_koobill_quality_{uuid.uuid4().hex[:12]}"
    any_v = " or ".join(f"_v{i}" for i in range(len(counts)))
    sql = f"create temp table {tmp} as select * from ({flagged}) as f where {any_v}"
    con.execute(sql, _used(params, sql))
    try:
        picks = " union all ".join(
            f"(select rowid as _rid from {tmp} where _v{i} order by {order} limit {SAMPLE_ROWS})"
            for i, (rule, n) in enumerate(zip(rules, counts, strict=True))
            if n
            for order in [", ".join(_q(c) for c in rule.columns)]
        )
        rows = (
            f"select * from {tmp} where rowid in (select _rid from ({picks}) as p) order by rowid"
        )
        df = _as_text(con, rows, {})
    finally:
        con.execute(f"drop table if exists {tmp}")
    return df, f"only rows breaking a rule, up to {SAMPLE_ROWS} per expectation"


class _Counted(NamedTuple):
    """A feed's DuckDB side of a validation (``_count_feed``): what GX then judges."""

    suite: Any
    rules: list[_Rule]
    n_rows: int
    counts: list[int]
    df: Any  # the rows handed to GX (a pandas frame)
    handed: str  # which rows those are, in words


def _count_feed(con, feed: str, table: str, day: str, suite: Any, max_gx_rows: int) -> _Counted:
    """DuckDB's part of a feed's validation: every rule counted over all rows, and the rows
    for GX. Reads ``con``, so it runs on the connection's thread."""
    from expectations.feeds import MAX_RECORD_AGE_DAYS

    rules = load_suite(suite, "duckdb")  # refuses a type DuckDB cannot count, before any read
    view = _feed_view(con, feed, table)
    landing = dt.date.fromisoformat(day)
    first, last = landing - dt.timedelta(days=MAX_RECORD_AGE_DAYS), landing + dt.timedelta(days=1)
    params = {
        "feed_view": view,
        "landing_date": landing,
        "first_day": first,
        "last_day": last,
        "starts_at": cal.beijing_midnight(first),
        "ends_at": cal.beijing_midnight(last + dt.timedelta(days=1)),
    }
    for rule in rules:
        params.update(rule.params)
    frame = _quality_sql(f"feed_{feed}")
    try:
        n_rows, counts = _count_violations(con, frame, params, rules)
        flagged = _flagged(frame, rules, counts)
        df, handed = _gx_frame(con, flagged, params, rules, counts, (n_rows, max_gx_rows))
    finally:
        con.execute(f"drop view if exists {view}")
    return _Counted(suite, rules, n_rows, counts, df, handed)


def _judge_feed(counted: _Counted) -> _Outcome:
    """GX's part: it validates the rows handed to it, and must agree with DuckDB's counts.
    Reads no connection: it may run in another thread than ``_count_feed``."""
    suite, rules, n_rows, counts, df, handed = counted
    if len(df):
        res = _gx_run(df, suite, suite.name, "BASIC")
        outcomes = _gx_outcomes(res)
    else:  # no row for GX to validate: it is not run (nor imported), DuckDB alone counted
        res, outcomes = None, {r.name: (True, 0, [], "") for r in rules}
    checks, failures = [], []
    for i, (rule, count) in enumerate(zip(rules, counts, strict=True)):
        gx_ok, _n, _index, err = outcomes.get(rule.name, (False, None, [], "no result"))
        if count == 0 and not gx_ok:
            err = err or "Great Expectations failed rows that DuckDB did not count"
        checks.append(_check(rule, count, count == 0 and gx_ok, "DuckDB"))
        if count or not gx_ok:
            index = df.index[df[f"_v{i}"].fillna(False).astype(bool)]
            failures.append(_failure(rule, count, _offending_rows(df, rule, FEED_KEY, index), err))
    coverage = (
        f"DuckDB counted every expectation on all {n_rows:,} rows; Great Expectations "
        f"validated {len(df):,} of them ({handed})"
    )
    if res is None:
        why = "no row breaks a rule" if n_rows else "the table is empty"
        coverage = (
            f"DuckDB counted every expectation on all {n_rows:,} rows; no row was handed to "
            f"Great Expectations ({why}), so it was not run"
        )
        res = _DuckDBResult(suite, rules, checks)
    return _Outcome(res, n_rows, len(df), coverage, checks, failures)


class _DuckDBResult:
    """The validation result of a feed that DuckDB alone counted (no row for Great
    Expectations): the shape of GX's JSON (``success``, ``results``, ``statistics``) with
    DuckDB's counts. Its HTML page is koobill's summary alone (``_write_report``)."""

    def __init__(self, suite: Any, rules: list[_Rule], checks: list[dict]) -> None:
        self.suite, self.rules, self.checks = suite, rules, checks

    def to_json_dict(self) -> dict:
        kwargs = {_rule(e): _kwargs(e) for e in self.suite.expectations}
        results = [
            {
                "success": check["success"],
                "expectation_config": {
                    "type": rule.type,
                    "kwargs": kwargs.get(rule.name, {}),
                    "description": rule.description,
                    "meta": {"rule": rule.name, "show": rule.show},
                },
                "result": {"unexpected_count": check["violations"]},
                "counted_by": "DuckDB",
            }
            for rule, check in zip(self.rules, self.checks, strict=True)
        ]
        ok = sum(1 for r in results if r["success"])
        return {
            "success": ok == len(results),
            "suite_name": self.suite.name,
            "results": results,
            "statistics": {
                "evaluated_expectations": len(results),
                "successful_expectations": ok,
                "unsuccessful_expectations": len(results) - ok,
                "success_percent": 100.0 * ok / len(results) if results else None,
            },
        }


def _kwargs(e: Any) -> dict:
    """The arguments of an expectation, GX object or plain data (``expectations.feeds``)."""
    return dict(e.configuration.kwargs if hasattr(e, "configuration") else e.kwargs)


# ---------------------------------------------------------------------------------------------
# Reports


def _finish(
    report_dir: Path, name: str, title: str, outcome: _Outcome, t0: float, n_exps: int
) -> QualityResult:
    """Write the report of a validation; return its result, or raise QualityError."""
    failures = outcome.failures
    success = not failures
    meta = {
        "title": title,
        "success": success,
        "rows_checked": outcome.rows_checked,
        "rows_handed_to_gx": outcome.rows_to_gx,
        "coverage": outcome.coverage,
        "checks": outcome.checks,
        "failures": failures,
        "seconds": round(time.monotonic() - t0, 3),
    }
    html_path, json_path = _write_report(report_dir, name, outcome.result, meta)
    result = QualityResult(success, html_path, n_exps, failures, json_path, outcome.rows_checked)
    if not success:
        raise QualityError(_message(title, failures, n_exps, html_path), failures, html_path)
    return result


def _message(title: str, failures: list[dict], n: int, path: Path) -> str:
    lines = [f"{title}: {len(failures)} of {n} expectations failed (report: {path})"]
    for f in failures:
        lines.append(f"- {f['description'] or f['expectation']}: {f['count']} offending row(s)")
        if f.get("error"):
            lines.append(f"    {f['error']}")
        for r in f["rows"][:MESSAGE_ROWS]:
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in r.items()))
        if f["count"] > MESSAGE_ROWS:
            lines.append(f"    ... and {f['count'] - min(len(f['rows']), MESSAGE_ROWS)} more")
    return "\n".join(lines)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "validation"


def _summary_html(meta: dict) -> str:
    e = html.escape
    ok = meta["success"]
    color = "#1a7f37" if ok else "#cf222e"
    out = [
        '<div id="koobill-summary" style="font-family:sans-serif;margin:16px;padding:12px;'
        f'border:2px solid {color};border-radius:6px;background:#fff;color:#111">',
        f'<h2 style="color:{color}">{e(meta["title"])}: {"PASSED" if ok else "FAILED"}</h2>',
        f"<p>{e(meta['coverage'])}. Money is compared as exact DECIMAL in DuckDB (the "
        "boolean rule columns) and reaches Great Expectations as text, never as a float.</p>",
        '<table style="border-collapse:collapse" border="1" cellpadding="4">',
        "<tr><th>expectation</th><th>rule</th><th>offending rows</th><th>counted by</th>"
        "<th>result</th></tr>",
    ]
    for c in meta["checks"]:
        res = "ok" if c["success"] else "<b>FAILED</b>"
        n = "?" if c["violations"] is None else f"{c['violations']:,}"
        out.append(
            f"<tr><td>{e(c['expectation'])}</td><td>{e(c['description'])}</td>"
            f"<td>{n}</td><td>{e(c['counted_by'])}</td><td>{res}</td></tr>"
        )
    out.append("</table>")
    for f in meta["failures"]:
        out.append(f"<h3>{e(f['expectation'])}: {f['count']:,} offending row(s)</h3>")
        out.append(f"<p>{e(f['description'])}</p>")
        if f["rows"]:
            cols = list(f["rows"][0])
            out.append(
                '<table style="border-collapse:collapse" border="1" cellpadding="4"><tr>'
                + "".join(f"<th>{e(c)}</th>" for c in cols)
                + "</tr>"
            )
            for r in f["rows"]:
                out.append("<tr>" + "".join(f"<td>{e(str(r[c]))}</td>" for c in cols) + "</tr>")
            out.append("</table>")
    out.append("</div>")
    return "\n".join(out)


def _write_report(report_dir: Path, name: str, res: Any, meta: dict) -> tuple[Path, Path]:
    """``<name>.html`` (GX's validation page with koobill's summary on top) and ``<name>.json``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    base = _safe_name(name)
    html_path, json_path = report_dir / f"{base}.html", report_dir / f"{base}.json"
    doc = res.to_json_dict()
    doc.setdefault("meta", {})["koobill"] = meta
    write_text(json_path, json.dumps(doc, indent=2, default=str))
    summary = _summary_html(meta)
    if isinstance(res, _DuckDBResult):  # GX was not run: koobill's summary is the page
        page = (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(meta['title'])}</title>"
            f"<style>{reports.stylesheet()}</style></head><body>"
            f"<div class='container-fluid p-3'><p><a href='{html.escape(reports.index_href(report_dir))}'>"
            f"Home</a></p></div>{summary}</body></html>"
        )
        write_text(html_path, page)
        reports.write_index(reports.quality_root(report_dir), html_path, meta["success"])
        return html_path, json_path
    try:
        from great_expectations.render.renderer import ValidationResultsPageRenderer

        page = _page_view().render(ValidationResultsPageRenderer().render(res))
        m = re.search(r"<body[^>]*>", page)
        page = page[: m.end()] + summary + page[m.end() :] if m else summary + page
        page = reports.make_offline(page, report_dir)
    except Exception as exc:  # noqa: BLE001 - the report must be written even if GX cannot render
        page = (
            "<!doctype html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(meta['title'])}</title></head><body>{summary}"
            f"<p>Great Expectations could not render its page: {html.escape(repr(exc))}</p>"
            f"<pre>{html.escape(json.dumps(doc, indent=2, default=str))}</pre></body></html>"
        )
    write_text(html_path, page)
    reports.write_index(reports.quality_root(report_dir), html_path, meta["success"])
    return html_path, json_path


# ---------------------------------------------------------------------------------------------
# Public API


def validate_bills(
    con, bills_table: str, lines_table: str, report_dir: Path, run_name: str
) -> QualityResult:
    """Validate staged bills and bill lines (columns of schema BILLS and BILL_LINES) against
    ``expectations.bills.bills_suite``: Great Expectations evaluates every expectation on every
    row of the frame ``sql/quality/bills_frame.sql`` builds.

    Writes ``<report_dir>/<run_name>.html`` and ``.json`` whatever the outcome, returns a
    QualityResult on success and raises QualityError naming each failed expectation and its
    offending bills (partner_id, bill_month, version and the values involved) otherwise.
    """
    _await_prewarm()
    import_gx()
    from expectations.bills import bills_suite

    t0 = time.monotonic()
    suite = bills_suite()
    outcome = _validate_bills_gx(con, bills_table, lines_table, suite)
    title = f"bills {run_name}"
    return _finish(Path(report_dir), run_name, title, outcome, t0, len(suite.expectations))


def validate_feed(
    con,
    feed: str,
    table: str,
    landing_date: str,
    report_dir: Path,
    *,
    max_gx_rows: int = MAX_GX_ROWS,
) -> QualityResult:
    """Validate the accepted records of ``feed`` for ``landing_date`` held in ``table`` (the
    spec's columns typed, plus ``landing_date``) against ``expectations.feeds.feed_suite``.

    DuckDB counts every rule exactly over all rows (``sql/quality/feed_<feed>.sql`` and the
    suite's expectations translated to SQL); Great Expectations validates every row when the
    table has at most ``max_gx_rows`` rows, else only the offending rows, and must agree.
    Writes ``<report_dir>/feed-<feed>-<landing_date>.html`` and ``.json``; raises QualityError
    on failure.
    """
    (result,) = validate_feeds(
        con, [(feed, table)], landing_date, report_dir, max_gx_rows=max_gx_rows
    )
    return result


def validate_feeds(
    con,
    feeds: list[tuple[str, str]],
    landing_date: str,
    report_dir: Path,
    *,
    max_gx_rows: int = MAX_GX_ROWS,
    sizes: dict[str, int] | None = None,
) -> list[QualityResult]:
    """``validate_feed`` of each (feed, table) of ``feeds``; their results in that order, or
    the QualityError of the first that fails, once every feed is validated and reported.

    DuckDB counts the feeds on this thread, the smallest first (``sizes``: rows per feed),
    while Great Expectations validates the rows of those already counted and writes every
    report in one background thread: GX's Python then runs beside DuckDB's count of the big
    feed instead of after it."""
    if not feeds:
        return []
    _await_prewarm()
    from expectations.feeds import feed_suite

    day = dt.date.fromisoformat(landing_date).isoformat()
    order = sorted(range(len(feeds)), key=lambda i: (sizes or {}).get(feeds[i][0], 0))
    futures: dict[int, Future] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="koobill-gx") as pool:
        for i in order:
            feed, table = feeds[i]
            t0 = time.monotonic()
            suite = feed_suite(feed)
            name, title = f"feed-{feed}-{day}", f"{feed} on {day}"
            try:
                counted: _Counted | Exception = _count_feed(
                    con, feed, table, day, suite, max_gx_rows
                )
            except Exception as exc:  # noqa: BLE001  raised in the feeds' order, below
                counted = exc
            futures[i] = pool.submit(_judge_and_report, report_dir, name, title, counted, t0)
    return [futures[i].result() for i in range(len(feeds))]


def _judge_and_report(
    report_dir: Path, name: str, title: str, counted: _Counted | Exception, t0: float
) -> QualityResult:
    """GX's part of one feed's validation and its report (``validate_feeds``' thread); the
    error of its count, if it had one (a QualityError is reported)."""
    try:
        if isinstance(counted, Exception):
            raise counted
        outcome = _judge_feed(counted)
    except QualityError as exc:
        exc.report_path = _write_schema_report(Path(report_dir), name, title, exc)
        raise
    return _finish(Path(report_dir), name, title, outcome, t0, len(counted.suite.expectations))


@functools.cache
def _page_view() -> Any:
    """GX's page view, made once per process: its Jinja templates (34 of them, 0.2 s to
    compile for each new view) are compiled once for every report the process writes. (Their
    bytecode is not kept on disk: Jinja would load it as code from wherever it lies.)"""
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView()


def _write_schema_report(report_dir: Path, name: str, title: str, exc: QualityError) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "success": False, "error": str(exc), "failures": exc.failures}
    path = report_dir / f"{_safe_name(name)}.html"
    write_text(report_dir / f"{_safe_name(name)}.json", json.dumps(meta, indent=2))
    write_text(
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{reports.stylesheet()}</style></head><body><div class='container-fluid p-3'>"
        f"<p><a href='{html.escape(reports.index_href(report_dir))}'>Home</a></p>"
        f"<h2>{html.escape(title)}: FAILED</h2><p>{html.escape(str(exc))}</p>"
        "</div></body></html>",
    )
    reports.write_index(reports.quality_root(report_dir), path, False)
    return path


def check_quarantine_share(
    stats: list[dict], threshold: float | None = None, min_rows: int | None = None
) -> None:
    """Fail when a feed's quarantined rows exceed ``threshold`` of the rows read.

    A feed-day with fewer than ``min_rows`` rows read (default ``KOOBILL_QUARANTINE_MIN_ROWS``,
    else 100) is too small to say that its source is broken: its bad rows are quarantined one
    by one, and the date goes on.

    ``stats``: one dict per ingested file with ``feed``, ``file``, ``rows_read``, ``accepted``,
    ``quarantined``, ``duplicates``, optionally ``landing_date`` and ``top_reasons`` (a list of
    (reason, count)). Files are summed per feed (and landing date). A share strictly above the
    threshold raises QualityError. When ``threshold`` is not given it is read from the
    environment variable ``KOOBILL_MAX_QUARANTINE_SHARE`` (``0.05`` or ``5%``), default 0.05.
    """
    if threshold is None:
        threshold = settings().max_quarantine_share  # 0.05 or 5%
    if min_rows is None:
        min_rows = settings().quarantine_min_rows
    read: dict[tuple, int] = defaultdict(int)
    quarantined: dict[tuple, int] = defaultdict(int)
    reasons: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for s in stats:
        k = (s["feed"], str(s.get("landing_date") or s.get("date") or ""))
        read[k] += int(s.get("rows_read") or 0)
        quarantined[k] += int(s.get("quarantined") or 0)
        for reason, n in s.get("top_reasons") or []:
            reasons[k][str(reason)] += int(n)
    failures, lines = [], []
    for k in read:
        if read[k] < max(min_rows, 1) or quarantined[k] / read[k] <= threshold:
            continue
        feed, day = k
        share = quarantined[k] / read[k]
        top = sorted(reasons[k].items(), key=lambda x: (-x[1], x[0]))[:5]
        top_txt = "; ".join(f"{r} ({n:,})" for r, n in top) or "not available"
        lines.append(
            f"{feed}{' on ' + day if day else ''}: {share:.1%} of rows quarantined "
            f"({quarantined[k]:,} of {read[k]:,}; threshold {threshold * 100:g}%): the source looks "
            f"broken. Top reasons: {top_txt}"
        )
        failures.append(
            {
                "expectation": "quarantine_share_below_threshold",
                "description": f"quarantined / rows_read <= {threshold}",
                "columns": ["quarantined", "rows_read"],
                "count": quarantined[k],
                "rows": [
                    {
                        "feed": feed,
                        "landing_date": day or None,
                        "rows_read": read[k],
                        "quarantined": quarantined[k],
                        "share": round(share, 6),
                        "top_reasons": top,
                    }
                ],
            }
        )
    if failures:
        raise QualityError("\n".join(lines), failures)
