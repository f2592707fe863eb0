"""Data-quality gates: staged bills before publishing, accepted feed records after ingest, and
the share of quarantined rows per feed.

Money is checked exactly. DuckDB computes every rule over *all* rows with DECIMAL arithmetic,
both as boolean columns and as exact violation counts (one aggregate pass, no sampling); Great
Expectations then validates a small pandas frame of keys, flags and amounts as decimal *text*
with the suites of ``expectations/``. The frame holds every row when the table is small (a
month's bills) and otherwise only rows that break a rule, up to ``SAMPLE_ROWS`` per
expectation, so a day of millions of usage rows is never copied into pandas.

Each validation writes ``<name>.html`` (Great Expectations' validation page, with a summary of
failures and offending rows at the top) and ``<name>.json`` (the validation result; koobill's
exact counts under ``meta.koobill``) into ``report_dir``, pass or fail.

Great Expectations is imported inside the functions that validate: importing this module is
cheap.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import reports
from pipelines.lake import KoobillError
from pipelines.rules import blank_sql

_warm: threading.Thread | None = None


def prewarm() -> None:
    """Start importing Great Expectations (about 3 s of Python) in a background thread, so
    the import overlaps the SQL work of an ingest or a close instead of following it.

    The validating functions wait for this thread before they import anything themselves,
    so the two threads never import the same modules at once. Off with
    ``KOOBILL_GX_PREWARM=0``."""
    global _warm
    if _warm is not None or os.environ.get("KOOBILL_GX_PREWARM", "1") == "0":
        return

    def run() -> None:
        try:
            import expectations.bills  # noqa: F401  (imports great_expectations)
            import expectations.feeds  # noqa: F401
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
ENV_MAX_QUARANTINE_SHARE = "KOOBILL_MAX_QUARANTINE_SHARE"
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
# Frames: the SQL that turns staged tables into keys, exact decimal text and boolean rules.

_BILLS_FRAME = """
with
bills_src as (
    select *, consume_amount - refunds + adjustments as net
    from {bills}
),

bill_keys as (
    select partner_id, bill_month, version, any_value(currency) as currency
    from {bills}
    group by partner_id, bill_month, version
),

line_sums as (
    select
        l.partner_id,
        l.bill_month,
        l.version,
        count(*) as lines_found,
        coalesce(sum(l.amount) filter (where l.component = 'consume'), 0) as lines_consume,
        coalesce(sum(l.amount) filter (where l.component = 'refund'), 0) as lines_refund,
        coalesce(sum(l.amount) filter (where l.component = 'adjustment'), 0) as lines_adjustment,
        coalesce(sum(l.amount) filter (where l.component = 'coupon'), 0) as lines_coupon,
        count(*) filter (
            where l.component is null
            or l.component not in ('consume', 'refund', 'adjustment', 'coupon')
        ) as lines_unknown_component,
        count(*) filter (
            where l.amount is null
            or (l.component in ('consume', 'coupon') and l.amount < 0)
            or (l.component = 'refund' and l.amount > 0)
        ) as lines_wrong_sign,
        count(*) - count(distinct l.line_no) as lines_bad_line_no,
        count(*) filter (where l.currency is distinct from k.currency) as lines_other_currency,
        count(k.version) = 0 as orphan
    from {lines} as l
    left join bill_keys as k
        on l.partner_id = k.partner_id and l.bill_month = k.bill_month and l.version = k.version
    group by l.partner_id, l.bill_month, l.version
),

joined as (
    select
        b.*,
        coalesce(s.lines_found, 0) as lines_found,
        coalesce(s.lines_unknown_component, 0) as lines_unknown_component,
        coalesce(s.lines_wrong_sign, 0) as lines_wrong_sign,
        coalesce(s.lines_bad_line_no, 0) as lines_bad_line_no,
        coalesce(s.lines_other_currency, 0) as lines_other_currency,
        round(coalesce(s.lines_consume, 0), 2) as exp_consume,
        -round(coalesce(s.lines_refund, 0), 2) as exp_refunds,
        round(coalesce(s.lines_adjustment, 0), 2) as exp_adjustments,
        round(coalesce(s.lines_coupon, 0), 2) as exp_coupon_total,
        least(b.coupon_total, greatest(b.net, 0)) as exp_coupon_amount,
        round(greatest(b.net - b.coupon_amount, 0) * b.tax_rate, 2) as exp_tax,
        b.consume_amount - b.refunds + b.adjustments - b.coupon_amount + b.tax_amount
            as exp_bill_amount,
        'INV-' || b.partner_id || '-' || replace(b.bill_month, '-', '')
        || case when b.version >= 2 then '-V' || cast(b.version as varchar) else '' end
            as exp_invoice_no,
        count(*) filter (where b.status = 'closed')
            over (partition by b.partner_id, b.bill_month) as n_closed,
        -- versions are per partner: a restatement makes version n+1 only for the partners whose
        -- bill changed, and it names the invoice of version n it supersedes
        lag(b.version) over (partition by b.partner_id, b.bill_month order by b.version)
            as prev_version,
        lag(b.invoice_no) over (partition by b.partner_id, b.bill_month order by b.version)
            as prev_invoice_no
    from bills_src as b
    left join line_sums as s
        on b.partner_id = s.partner_id and b.bill_month = s.bill_month and b.version = s.version
)

select
    partner_id,
    bill_month,
    version,
    status,
    currency,
    invoice_no,
    supersedes_invoice_no,
    line_count,
    lines_found,
    lines_unknown_component,
    lines_wrong_sign,
    lines_bad_line_no,
    lines_other_currency,
    cast(consume_amount as varchar) as consume_amount,
    cast(refunds as varchar) as refunds,
    cast(adjustments as varchar) as adjustments,
    cast(coupon_total as varchar) as coupon_total,
    cast(coupon_amount as varchar) as coupon_amount,
    cast(tax_rate as varchar) as tax_rate,
    cast(tax_amount as varchar) as tax_amount,
    cast(bill_amount as varchar) as bill_amount,
    cast(amount_due as varchar) as amount_due,
    cast(net as varchar) as net_before_coupon,
    cast(exp_consume as varchar) as expected_consume_amount,
    cast(exp_refunds as varchar) as expected_refunds,
    cast(exp_adjustments as varchar) as expected_adjustments,
    cast(exp_coupon_total as varchar) as expected_coupon_total,
    cast(exp_coupon_amount as varchar) as expected_coupon_amount,
    cast(exp_tax as varchar) as expected_tax_amount,
    cast(exp_bill_amount as varchar) as expected_bill_amount,
    exp_invoice_no as expected_invoice_no,
    true as lines_have_a_bill,
    coalesce(n_closed <= 1, false) as one_closed_version,
    coalesce(
        consume_amount is not null and refunds is not null and adjustments is not null
        and coupon_total is not null and coupon_amount is not null and tax_rate is not null
        and tax_amount is not null and bill_amount is not null and amount_due is not null,
        false
    ) as amounts_present,
    coalesce(consume_amount = exp_consume, false) as consume_matches_lines,
    coalesce(refunds = exp_refunds, false) as refunds_match_lines,
    coalesce(adjustments = exp_adjustments, false) as adjustments_match_lines,
    coalesce(coupon_total = exp_coupon_total, false) as coupon_total_matches_lines,
    coalesce(line_count = lines_found, false) as line_count_matches,
    lines_unknown_component = 0 as line_components_known,
    lines_wrong_sign = 0 as line_signs_ok,
    lines_bad_line_no = 0 as line_numbers_unique,
    lines_other_currency = 0 as line_currency_matches,
    coalesce(
        consume_amount >= 0 and refunds >= 0 and coupon_total >= 0 and coupon_amount >= 0, false
    ) as components_not_negative,
    coalesce(coupon_amount = exp_coupon_amount, false) as coupon_amount_capped,
    coalesce(coupon_amount <= greatest(net, 0), false) as coupon_within_net,
    coalesce(tax_rate >= 0 and tax_rate < 1, false) as tax_rate_in_range,
    coalesce(tax_amount = exp_tax, false) as tax_amount_ok,
    coalesce(bill_amount = exp_bill_amount, false) as bill_amount_adds_up,
    coalesce(amount_due = greatest(bill_amount, 0), false) as amount_due_ok,
    coalesce((invoice_no is not null) = (amount_due > 0), false) as invoice_no_iff_amount_due,
    coalesce(invoice_no is null or invoice_no = exp_invoice_no, false) as invoice_no_matches_bill,
    coalesce(
        (version = 1 and prev_version is null) or version = prev_version + 1, false
    ) as versions_contiguous,
    supersedes_invoice_no is not distinct from prev_invoice_no as supersedes_previous_invoice,
    cast(prev_invoice_no as varchar) as expected_supersedes_invoice_no
from joined

union all by name

-- lines without a bill: only lines_have_a_bill applies (NULL is "not applicable" to GX)
select
    partner_id,
    bill_month,
    version,
    lines_found,
    false as lines_have_a_bill
from line_sums
where orphan
"""

_IDENT = re.compile(r'^[A-Za-z_][A-Za-z0-9_$]*$|^"(?:[^"]|"")+"$')


def _ident(name: str) -> str:
    """A table or view name (optionally qualified) quoted for SQL; refuses anything else."""
    parts = name.split(".")
    if not parts or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"not a table name: {name!r}")
    return ".".join(p if p.startswith('"') else f'"{p}"' for p in parts)


def _q(col: str) -> str:
    return '"' + col.replace('"', '""') + '"'


def _columns(con, table: str) -> dict[str, str]:
    rel = con.sql(f"select * from {table} limit 0")
    return {c: str(t).upper() for c, t in zip(rel.columns, rel.types, strict=True)}


_DECIMAL = re.compile(r"^DECIMAL\((\d+),\s*(\d+)\)$")


def _feed_frame(con, feed: str, table: str, text: bool = True) -> str:
    """The SQL of a feed's validation frame (expects the parameter ``$landing_date``).

    ``text``: typed values as text, for the rows handed to Great Expectations (a DECIMAL must
    never reach pandas as a float). Counting uses the same frame with the values as stored,
    which is the same nullness and the same flags without formatting every value as text."""
    from expectations.feeds import MAX_RECORD_AGE_DAYS, money_columns
    from pipelines.config import FEEDS

    have = _columns(con, table)
    spec = FEEDS[feed]
    missing = [c.name for c in spec if c.required and c.name not in have]
    if "landing_date" not in have:
        missing.append("landing_date")
    if missing:
        raise QualityError(
            f"{feed}: the table {table} lacks the column(s) {', '.join(missing)}",
            [
                {
                    "expectation": "required_columns_present",
                    "description": "",
                    "columns": missing,
                    "count": 0,
                    "rows": [],
                }
            ],
        )
    sel = []
    for c in spec:
        if c.name not in have:
            sel.append(f"cast(null as varchar) as {_q(c.name)}")
        elif c.kind in ("id", "partner", "currency", "month", "order_type"):
            # blank -> NULL (as the ingest's rules.blank_sql), the value itself as stored (the
            # ingest compares ids as they are, so must uniqueness here)
            v = f"cast({_q(c.name)} as varchar)"
            sel.append(f"case when {blank_sql(v)} then null else {v} end as {_q(c.name)}")
        elif text:
            sel.append(f"cast({_q(c.name)} as varchar) as {_q(c.name)}")
        else:
            sel.append(_q(c.name))
    sel.append("cast(landing_date as varchar) as landing_date" if text else "landing_date")

    day = "cast($landing_date as date)"
    lo = f"{day} - {int(MAX_RECORD_AGE_DAYS)}"
    hi = f"{day} + 1"

    def in_window(date_expr: str) -> str:
        return f"coalesce({date_expr} between {lo} and {hi}, true)"

    def ts_in_window(col: str) -> str:
        """Whether the Beijing date of ``col`` is in the window: the instant is compared with
        the window's bounds in Beijing time (computed once), not converted row by row."""
        start = f"timezone('Asia/Shanghai', cast({lo} as timestamp))"
        end = f"timezone('Asia/Shanghai', cast({hi} + 1 as timestamp))"
        v = f"cast({_q(col)} as timestamptz)"
        return f"coalesce({v} >= {start} and {v} < {end}, true)"

    def num(col: str) -> str:
        return f"cast({_q(col)} as decimal(38, 12))" if not _is_money(have[col]) else _q(col)

    def _is_money(t: str) -> bool:
        m = _DECIMAL.match(t)
        return bool(m) and int(m.group(2)) <= 6

    flags = {"landing_date_matches": f"coalesce(landing_date = {day}, false)"}
    money = [c for c in money_columns(feed) if c in have]
    if money_columns(feed):
        checks = [
            f"({_q(c)} is null or {num(c)} = round({num(c)}, 6))"
            for c in money
            if not _is_money(have[c])
        ]
        flags["amounts_6dp"] = " and ".join(checks) if checks else "true"
    if feed == "orders":
        flags["amount_is_official_minus_discount"] = (
            "coalesce(amount = official_amount - discount_amount, "
            "amount is null or official_amount is null or discount_amount is null)"
        )
        flags["amount_sign_ok"] = (
            "not coalesce("
            "(order_type in ('NEW', 'RENEW', 'AUTO_RENEW') and amount < 0)"
            " or (order_type = 'UNSUBSCRIBE' and amount > 0), false)"
        )
        flags["event_time_in_window"] = ts_in_window("event_time")
    elif feed == "usage":
        flags["quantity_not_negative"] = "coalesce(quantity >= 0, true)"
        flags["usage_end_not_before_start"] = "coalesce(usage_end >= usage_start, true)"
        flags["usage_start_in_window"] = ts_in_window("usage_start")
    elif feed in ("adjustments", "coupons"):
        month_start = "try_strptime(trim(cast(bill_month as varchar)) || '-01', '%Y-%m-%d')"
        flags["bill_month_in_window"] = in_window(f"cast({month_start} as date)")
        if feed == "coupons":
            flags["amount_positive"] = "coalesce(amount > 0, true)"
    elif feed == "payments":
        flags["amount_positive"] = "coalesce(amount > 0, true)"
        flags["paid_at_in_window"] = ts_in_window("paid_at")
    sel.extend(f"{expr} as {_q(name)}" for name, expr in flags.items())
    return "select\n    " + ",\n    ".join(sel) + f"\nfrom {table}"


# ---------------------------------------------------------------------------------------------
# Running a suite: exact SQL counts, a small frame for GX, a report.


def _violation(exp: Any, i: int, params: dict) -> tuple[str, list[str]]:
    """SQL that is true on a row breaking ``exp`` (GX semantics: NULLs only fail not-null
    checks), and the window columns it needs."""
    kw = exp.configuration.kwargs
    kind = exp.expectation_type
    col = kw.get("column")
    if kind == "expect_column_values_to_not_be_null":
        return f"{_q(col)} is null", []
    if kind == "expect_column_values_to_be_in_set":
        names = []
        for j, v in enumerate(kw["value_set"]):
            params[f"v{i}_{j}"] = v
            names.append(f"$v{i}_{j}")
        return f"{_q(col)} is not null and {_q(col)} not in ({', '.join(names)})", []
    if kind == "expect_column_values_to_match_regex":
        params[f"v{i}"] = kw["regex"]
        return f"{_q(col)} is not null and not regexp_matches({_q(col)}, $v{i})", []
    if kind == "expect_column_values_to_be_between":
        parts = []
        if kw.get("min_value") is not None:
            params[f"v{i}_min"] = kw["min_value"]
            parts.append(f"{_q(col)} < $v{i}_min")
        if kw.get("max_value") is not None:
            params[f"v{i}_max"] = kw["max_value"]
            parts.append(f"{_q(col)} > $v{i}_max")
        return f"{_q(col)} is not null and ({' or '.join(parts)})", []
    if kind == "expect_column_values_to_be_unique":
        w = f"count(*) over (partition by {_q(col)}) as _n{i}"
        return f"{_q(col)} is not null and _n{i} > 1", [w]
    if kind == "expect_compound_columns_to_be_unique":
        cols = ", ".join(_q(c) for c in kw["column_list"])
        w = f"count(*) over (partition by {cols}) as _n{i}"
        return f"_n{i} > 1", [w]
    raise NotImplementedError(f"no SQL form for {kind}")


def _count_violations(
    con, frame_sql: str, params: dict, exps: list, preds: list[str]
) -> tuple[int, list[int]]:
    """The rows checked and, per expectation, the rows breaking it, in one scan of the frame.

    A uniqueness rule is first counted as distinct keys against non-null keys (an aggregate,
    no window over every row); only when they differ are the rows in repeated keys counted."""
    sel, slots = [], {}
    for i, (e, p) in enumerate(zip(exps, preds, strict=True)):
        if _is_unique(e):
            cols = _exp_columns(e)
            key = _q(cols[0]) if len(cols) == 1 else f"({', '.join(_q(c) for c in cols)})"
            nonnull = f"count({_q(cols[0])})" if len(cols) == 1 else "count(*)"
            slots[i] = len(sel)
            sel += [f"count(distinct {key})", nonnull]
        else:
            slots[i] = len(sel)
            sel.append(f"count(*) filter (where coalesce({p}, false))")
    sql = f"select count(*){''.join(', ' + x for x in sel)} from ({frame_sql}) as frame"
    row = con.execute(sql, _used(params, sql)).fetchone()
    vals = [int(x) for x in row[1:]]
    counts = []
    for i, e in enumerate(exps):
        if not _is_unique(e):
            counts.append(vals[slots[i]])
            continue
        distinct, nonnull = vals[slots[i]], vals[slots[i] + 1]
        if distinct == nonnull:
            counts.append(0)
            continue
        cols = _exp_columns(e)
        where = f"where {_q(cols[0])} is not null" if len(cols) == 1 else ""
        sql = (
            f"select coalesce(sum(n), 0) from (select count(*) as n from ({frame_sql}) "
            f"as frame {where} group by {', '.join(_q(c) for c in cols)} having count(*) > 1)"
        )
        counts.append(int(con.execute(sql, _used(params, sql)).fetchone()[0]))
    return int(row[0]), counts


def _used(params: dict, sql: str) -> dict:
    """The named parameters a statement refers to (DuckDB refuses unused ones)."""
    return {k: v for k, v in params.items() if re.search(rf"\${re.escape(k)}\b", sql)}


def _is_unique(exp: Any) -> bool:
    return exp.expectation_type in (
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
    )


def _rule(exp: Any) -> str:
    """The rule name of an expectation or of its configuration in a result."""
    return (exp.meta or {}).get("rule") or getattr(exp, "type", None) or exp.expectation_type


def _exp_columns(exp: Any) -> list[str]:
    kw = exp.configuration.kwargs
    return list(kw.get("column_list") or [kw["column"]])


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


def _run(
    con,
    frame_sql: str,
    params: dict,
    suite: Any,
    *,
    key: tuple[str, ...],
    title: str,
    report_dir: Path,
    name: str,
    max_gx_rows: int,
    count_sql: str | None = None,
) -> QualityResult:
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    t0 = time.monotonic()
    exps = list(suite.expectations)
    rules = [_rule(e) for e in exps]
    if len(set(rules)) != len(rules):
        raise ValueError(f"suite {suite.name}: expectation rules must be unique")
    params = dict(params)
    preds, windows = [], []
    for i, e in enumerate(exps):
        p, w = _violation(e, i, params)
        preds.append(p)
        windows.extend(w)
    win = (", " + ", ".join(windows)) if windows else ""
    flagged = (
        f"select *, {', '.join(f'coalesce({p}, false) as _v{i}' for i, p in enumerate(preds))}\n"
        f"from (select *{win} from ({frame_sql}) as frame) as w"
    )
    n_rows, counts = _count_violations(con, count_sql or frame_sql, params, exps, preds)

    if n_rows <= max_gx_rows:
        df = con.execute(f"select * from ({flagged}) as f", params).df()
        handed = "every row"
    elif not any(counts):
        df = con.execute(f"select * from ({flagged}) as f limit 0", params).df()
        handed = "no rows (no row breaks a rule)"
    else:
        tmp = f"_koobill_quality_{uuid.uuid4().hex[:12]}"
        any_v = " or ".join(f"_v{i}" for i in range(len(exps)))
        con.execute(
            f"create temp table {tmp} as select * from ({flagged}) as f where {any_v}", params
        )
        try:
            picks = " union all ".join(
                f"(select rowid as _rid from {tmp} where _v{i} "
                f"order by {', '.join(_q(c) for c in _exp_columns(exps[i]))} limit {SAMPLE_ROWS})"
                for i in range(len(exps))
                if counts[i]
            )
            df = con.execute(
                f"select * from {tmp} where rowid in (select _rid from ({picks}) as p) "
                f"order by rowid"
            ).df()
        finally:
            con.execute(f"drop table if exists {tmp}")
        handed = f"only rows breaking a rule, up to {SAMPLE_ROWS} per expectation"
    df = df.reset_index(drop=True)

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
    res = vd.run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "BASIC"},
        run_id=RunIdentifier(run_name=name, run_time=dt.datetime.now(dt.UTC)),
    )
    gx_ok = {_rule(r.expectation_config): bool(r.success) for r in res.results}

    failures = []
    checks = []
    for i, e in enumerate(exps):
        rule = rules[i]
        ok = gx_ok.get(rule, False) and counts[i] == 0
        show = [c for c in (e.meta or {}).get("show", []) if c in df.columns]
        cols = _exp_columns(e)
        checks.append(
            {
                "expectation": rule,
                "type": e.expectation_type,
                "description": e.description or "",
                "columns": cols,
                "violations": counts[i],
                "success": ok,
            }
        )
        if ok:
            continue
        keep = list(dict.fromkeys([*key, *cols, *show]))
        bad = df[df[f"_v{i}"].fillna(False).astype(bool)].sort_values(
            [c for c in cols if c in df.columns], kind="stable", na_position="first"
        )
        rows = [
            {c: _text(v) for c, v in zip(keep, vals, strict=True)}
            for vals in bad[keep].head(SAMPLE_ROWS).itertuples(index=False, name=None)
        ]
        failures.append(
            {
                "expectation": rule,
                "description": e.description or "",
                "columns": cols,
                "count": counts[i],
                "rows": rows,
            }
        )

    success = not failures
    meta = {
        "title": title,
        "success": success,
        "rows_checked": n_rows,
        "rows_handed_to_gx": len(df),
        "rows_handed_note": handed,
        "checks": checks,
        "failures": failures,
        "seconds": round(time.monotonic() - t0, 3),
    }
    html_path, json_path = _write_report(report_dir, name, res, meta)
    result = QualityResult(success, html_path, len(exps), failures, json_path, n_rows)
    if not success:
        raise QualityError(_message(title, failures, len(exps), html_path), failures, html_path)
    return result


def _message(title: str, failures: list[dict], n: int, path: Path) -> str:
    lines = [f"{title}: {len(failures)} of {n} expectations failed (report: {path})"]
    for f in failures:
        lines.append(f"- {f['description'] or f['expectation']}: {f['count']} offending row(s)")
        for r in f["rows"][:MESSAGE_ROWS]:
            lines.append("    " + ", ".join(f"{k}={v}" for k, v in r.items()))
        if f["count"] > MESSAGE_ROWS:
            lines.append(f"    ... and {f['count'] - min(len(f['rows']), MESSAGE_ROWS)} more")
    return "\n".join(lines)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "validation"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _summary_html(meta: dict) -> str:
    e = html.escape
    ok = meta["success"]
    color = "#1a7f37" if ok else "#cf222e"
    out = [
        '<div id="koobill-summary" style="font-family:sans-serif;margin:16px;padding:12px;'
        f'border:2px solid {color};border-radius:6px;background:#fff;color:#111">',
        f'<h2 style="color:{color}">{e(meta["title"])}: {"PASSED" if ok else "FAILED"}</h2>',
        f"<p>{meta['rows_checked']:,} rows checked exactly in DuckDB; Great Expectations "
        f"validated {meta['rows_handed_to_gx']:,} of them ({e(meta['rows_handed_note'])}).</p>",
        '<table style="border-collapse:collapse" border="1" cellpadding="4">',
        "<tr><th>expectation</th><th>rule</th><th>offending rows</th><th>result</th></tr>",
    ]
    for c in meta["checks"]:
        res = "ok" if c["success"] else "<b>FAILED</b>"
        out.append(
            f"<tr><td>{e(c['expectation'])}</td><td>{e(c['description'])}</td>"
            f"<td>{c['violations']:,}</td><td>{res}</td></tr>"
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
    _atomic_write(json_path, json.dumps(doc, indent=2, default=str))
    summary = _summary_html(meta)
    try:
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        page = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(res))
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
    _atomic_write(html_path, page)
    reports.write_index(reports.quality_root(report_dir), _atomic_write, html_path, meta["success"])
    return html_path, json_path


# ---------------------------------------------------------------------------------------------
# Public API


def validate_bills(
    con, bills_table: str, lines_table: str, report_dir: Path, run_name: str
) -> QualityResult:
    """Validate staged bills and bill lines (columns of schema BILLS and BILL_LINES) against
    ``expectations.bills.bills_suite``.

    Writes ``<report_dir>/<run_name>.html`` and ``.json`` whatever the outcome, returns a
    QualityResult on success and raises QualityError naming each failed expectation and its
    offending bills (partner_id, bill_month, version and the values involved) otherwise.
    """
    _await_prewarm()
    from expectations.bills import bills_suite

    frame = _BILLS_FRAME.format(bills=_ident(bills_table), lines=_ident(lines_table))
    return _run(
        con,
        frame,
        {},
        bills_suite(),
        key=BILL_KEY,
        title=f"bills {run_name}",
        report_dir=Path(report_dir),
        name=run_name,
        max_gx_rows=MAX_GX_ROWS,
    )


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

    Every rule is counted over all rows in DuckDB; Great Expectations sees every row when the
    table has at most ``max_gx_rows`` rows, else only offending rows. Writes
    ``<report_dir>/feed-<feed>-<landing_date>.html`` and ``.json``; raises QualityError on
    failure.
    """
    _await_prewarm()
    from expectations.feeds import feed_suite

    day = dt.date.fromisoformat(landing_date).isoformat()
    suite = feed_suite(feed)
    name = f"feed-{feed}-{day}"
    title = f"{feed} on {day}"
    try:
        frame = _feed_frame(con, feed, _ident(table))
        native = _feed_frame(con, feed, _ident(table), text=False)
    except QualityError as exc:
        exc.report_path = _write_schema_report(Path(report_dir), name, title, exc)
        raise
    return _run(
        con,
        frame,
        {"landing_date": day},
        suite,
        key=FEED_KEY,
        title=title,
        report_dir=Path(report_dir),
        name=name,
        max_gx_rows=max_gx_rows,
        count_sql=native,
    )


def _write_schema_report(report_dir: Path, name: str, title: str, exc: QualityError) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    meta = {"title": title, "success": False, "error": str(exc), "failures": exc.failures}
    path = report_dir / f"{_safe_name(name)}.html"
    _atomic_write(report_dir / f"{_safe_name(name)}.json", json.dumps(meta, indent=2))
    _atomic_write(
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{reports.stylesheet()}</style></head><body><div class='container-fluid p-3'>"
        f"<p><a href='{html.escape(reports.index_href(report_dir))}'>Home</a></p>"
        f"<h2>{html.escape(title)}: FAILED</h2><p>{html.escape(str(exc))}</p>"
        "</div></body></html>",
    )
    reports.write_index(reports.quality_root(report_dir), _atomic_write, path, False)
    return path


ENV_QUARANTINE_MIN_ROWS = "KOOBILL_QUARANTINE_MIN_ROWS"
DEFAULT_QUARANTINE_MIN_ROWS = 100


def _threshold_from_env() -> float:
    raw = os.environ.get(ENV_MAX_QUARANTINE_SHARE)
    if raw is None or not raw.strip():
        return 0.05
    try:
        value = float(raw.strip().rstrip("%")) / (100 if raw.strip().endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise KoobillError(
            f"{ENV_MAX_QUARANTINE_SHARE}={raw!r} is not a share between 0 and 1 (e.g. 0.05 or 5%)"
        )
    return value


def _min_rows_from_env() -> int:
    raw = (os.environ.get(ENV_QUARANTINE_MIN_ROWS) or "").strip()
    if not raw:
        return DEFAULT_QUARANTINE_MIN_ROWS
    if not raw.isdigit():
        raise KoobillError(f"{ENV_QUARANTINE_MIN_ROWS}={raw!r} is not a whole number of rows")
    return int(raw)


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
        threshold = _threshold_from_env()
    if min_rows is None:
        min_rows = _min_rows_from_env()
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
