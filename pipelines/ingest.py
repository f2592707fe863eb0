"""Ingest one landing date: read, validate, dedupe, rate, assign bill months, refresh estimates.

The whole date is one transaction: everything is computed in an in-memory DuckDB, written into a
fresh version folder, validated, and only then committed (``lake.commit_version``) and mirrored
into the warehouse. Rerunning a date replaces exactly that date.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipelines import calendar as cal
from pipelines import rules
from pipelines.config import (
    FEED_ORDER,
    FEEDS,
    MONEY_LIMIT,
    RECORD_FEEDS,
    Paths,
    require_data_dir,
    resolve_data_dir,
)
from pipelines.db import connect, parquet, quote_path
from pipelines.lake import (
    KoobillError,
    commit_version,
    data_dir_lock,
    lock_wait_s,
    memory_limit,
    new_version_dir,
    partitions,
)
from pipelines.readers import create_staging, landing_files, load_file, staging_source

Echo = Callable[[str], None]

# The date a record is "dated" on, per feed (spec section 1).
RECORD_TS = {
    "orders": '"event_time"',
    "usage": '"usage_start"',
    "payments": '"paid_at"',
}
BILLED_FEEDS = ("orders", "usage", "adjustments", "coupons")
PRICE_KEY = ("partner_id", "sku_code", "unit", "usage_start")  # what rates a usage row


@dataclass
class FeedStats:
    feed: str
    files: list[dict] = field(default_factory=list)
    top_reasons: list[tuple[str, int]] = field(default_factory=list)

    def total(self, key: str) -> int:
        return sum(int(f[key]) for f in self.files)


@dataclass
class IngestResult:
    landing_date: str
    feeds: dict[str, FeedStats]
    estimates: list[dict]
    seconds: float
    ignored_files: list[str]
    late_records: int
    closed_month_warnings: list[str]
    empty: bool = False  # recorded with --allow-empty: no feed had a folder for the date


def _beijing_date(expr: str) -> str:
    return f"cast(cast({expr} as timestamp) + interval 8 hour as date)"


def _record_date(feed: str) -> str:
    if feed in RECORD_TS:
        return _beijing_date(RECORD_TS[feed])
    return "cast(\"bill_month\" || '-01' as date)"


def ingest_date(
    data_dir: str | Path | None,
    day: str | dt.date,
    *,
    progress: Echo | None = None,
    max_quarantine_share: float | None = None,
    allow_empty: bool = False,
) -> IngestResult:
    """Ingest landing date ``day`` of every feed and refresh the estimates as of ``day``.

    The date must be *present* (at least one feed has a folder for it), else KoobillError:
    the upstream export may not have arrived yet. ``allow_empty`` records a date that truly
    had no data; it then counts as ingested for the month close (spec section 2)."""
    root = require_data_dir(data_dir)
    d = cal.parse_date(day) if isinstance(day, str) else day
    present = landing_date_present(root, d)
    if not present and not allow_empty:
        raise KoobillError(
            f"landing date {d} is not present: no feed has a folder "
            f"{Paths(root).landing}/<feed>/{d}/. Its files may not have arrived yet; if the "
            "date truly had no data, record it with --allow-empty. Nothing was written."
        )
    with data_dir_lock(root, wait_s=lock_wait_s(), what=f"ingest {d}"):
        result = _ingest(root, d, progress or (lambda _m: None), max_quarantine_share)
    result.empty = not present
    return result


def landing_date_present(data_dir: str | Path | None, day: str | dt.date) -> bool:
    """True when at least one feed has a folder for landing date ``day`` (spec section 2)."""
    paths = Paths(resolve_data_dir(data_dir))
    d = day if isinstance(day, str) else day.isoformat()
    return any(paths.landing_dir(feed, d).is_dir() for feed in FEEDS)


def _ingest(root: Path, d: dt.date, echo: Echo, max_share: float | None) -> IngestResult:
    t0 = time.monotonic()
    from pipelines import quality

    quality.prewarm()  # the quality gate's import overlaps the reading and the checks
    paths = Paths(root)
    day = d.isoformat()
    part = paths.ingest_dir(day)
    earlier = [(v, p) for v, p in partitions(paths.ingest, "landing_date") if v < day]
    con = connect(":memory:")
    tmp = root / ".tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    con.execute(f"set temp_directory = {quote_path(tmp)}")
    con.execute(f"set memory_limit = '{memory_limit()}'")  # validated: digits and a unit
    vdir: Path | None = None
    try:
        stats: dict[str, FeedStats] = {}
        ignored: list[str] = []
        for feed in FEED_ORDER:
            stats[feed] = _stage_feed(con, paths, feed, day, echo, ignored)
        _partner_snapshot(con, earlier)
        _price_list(con, earlier)
        con.execute(
            "create temp table quarantine_rows (feed varchar, landing_date date, "
            "file varchar, row bigint, record_id varchar, reason_codes varchar[], "
            "reason varchar, raw varchar)"
        )
        # the reference feeds first: a date whose records have no snapshot or price list at
        # all stops here, before anything is written
        for feed in ("partners", "prices"):
            _validate(con, feed, d, earlier)
            _require_reference(con, paths, feed, d, earlier, stats)
        vdir = new_version_dir(part)
        for feed in FEED_ORDER:
            if feed in RECORD_FEEDS:
                _validate(con, feed, d, earlier)
            _accept(con, feed, d, vdir)
            _count(con, stats[feed], feed)
            _drop_work(con, feed)
        _write_outputs(con, vdir)
        _write_files_table(con, vdir, d, stats)
        estimates = _estimates(con, paths, vdir, d, earlier)
        _quality_gate(con, vdir, d, stats, max_share, root)
        late = con.execute(
            "select coalesce(sum(n), 0) from (select count(*) n from out_orders where late "
            "union all select count(*) from out_usage where late)"
        ).fetchone()[0]
        warnings = _closed_month_warnings(paths, con)
        con.close()
        commit_version(part, vdir)
    except BaseException as exc:
        con.close()
        import shutil

        if vdir is not None:
            shutil.rmtree(vdir, ignore_errors=True)
        if isinstance(exc, duckdb.IOException | OSError) and not isinstance(exc, KoobillError):
            raise KoobillError(
                f"ingest of {day} failed while writing under {root}: "
                f"{str(exc).splitlines()[0]}; the previous state is unchanged"
            ) from exc
        raise
    from pipelines.warehouse import sync_partition

    sync_partition(root, "ingest", day)  # also moves the latest landing date, then publishes
    return IngestResult(day, stats, estimates, time.monotonic() - t0, ignored, int(late), warnings)


# --- staging -----------------------------------------------------------------------------------


def _stage_feed(
    con, paths: Paths, feed: str, day: str, echo: Echo, ignored: list[str]
) -> FeedStats:
    """Read the feed's files of the date into ``typ_<feed>``, typed as they are read."""
    table = f"typ_{feed}"

    def wrap(source: str) -> str:
        return rules.typed_rows(feed, source)

    create_staging(con, feed, table, wrap)
    files, skipped = landing_files(paths.landing_dir(feed, day))
    ignored += [str(p) for p in skipped]
    st = FeedStats(feed)
    for path in files:
        n = load_file(con, feed, path, table, progress=echo, wrap=wrap)
        st.files.append({"file": path.name, "rows_read": n})
        if n >= 1_000_000:
            echo(f"  {feed}/{path.name}: {n:,} rows read")
    return st


def _partner_snapshot(con, earlier) -> None:
    """The snapshot as of the date: today's partners if any landed and were accepted, else the
    latest earlier snapshot."""
    cols = "partner_id, partner_name, currency, tax_rate, discount_rate"
    con.execute(
        "create temp table prev_partners (partner_id varchar, partner_name varchar, "
        "currency varchar, tax_rate decimal(38,6), discount_rate decimal(38,6))"
    )
    for _v, p in reversed(earlier):
        f = p / "partners.parquet"
        if f.exists():
            n = con.execute(f"select count(*) from {parquet(f)}").fetchone()[0]
            if n:
                con.execute(f"insert into prev_partners select {cols} from {parquet(f)}")
                break


def _price_list(con, earlier) -> None:
    files = [p / "prices.parquet" for _v, p in earlier if (p / "prices.parquet").exists()]
    if files:
        con.execute(
            "create temp table prev_prices as select sku_code, unit, unit_price, currency, "
            f"effective_from, effective_to, landing_date, _file, _row, _hash from {parquet(files)}"
        )
    else:
        con.execute(
            "create temp table prev_prices (sku_code varchar, unit varchar, unit_price decimal(38,6), "
            "currency varchar, effective_from timestamptz, effective_to timestamptz, "
            "landing_date date, _file varchar, _row bigint, _hash varchar)"
        )


def _is_date(name: str) -> bool:
    try:
        return cal.parse_date(name).isoformat() == name
    except (ValueError, cal.DateError):
        return False


def _require_reference(con, paths: Paths, feed: str, d: dt.date, earlier, stats) -> None:
    """Stop the date when its records have no partner snapshot (or its usage no price list) at
    all: every row would be quarantined for a reason that is not the row's fault (the date
    was ingested before the one that brings the snapshot). Name the missing earlier data."""
    day = d.isoformat()
    if feed == "partners":
        needy = sum(stats[f].total("rows_read") for f in RECORD_FEEDS)
        have = con.execute("select count(*) from snapshot").fetchone()[0]
        what = "partner snapshot"
        why = f"its {needy:,} record row(s) cannot be checked against a partner"
    else:
        needy = stats["usage"].total("rows_read")
        have = con.execute("select count(*) from price_list").fetchone()[0]
        what = "price list"
        why = f"its {needy:,} usage row(s) cannot be rated"
    if not needy or have:
        return
    landing = paths.landing / feed
    folders = sorted(
        p.name
        for p in (landing.iterdir() if landing.is_dir() else [])
        if p.is_dir() and _is_date(p.name)
    )
    ingested = {v for v, _p in earlier}
    before = [f for f in folders if f < day]
    pending = [f for f in before if f not in ingested]
    if pending:
        hint = (
            f"the first landing date with a {feed} folder is {pending[0]} "
            f"({landing / pending[0]}), not ingested yet: ingest {pending[0]} first, then "
            "the dates after it in order"
        )
    elif day in folders:
        q, top = con.execute(
            f"select count(*), mode(_why) from res_{feed} where _status = 'quarantine'"
        ).fetchone()
        hint = (
            f"the {feed} folder of {day} has no valid row ({q:,} quarantined"
            f"{': ' + top if top else ''}) and no earlier date brought one"
        )
    elif before:
        hint = f"the {feed} landed on {', '.join(before)} accepted no row (see their quarantine)"
    else:
        later = [f for f in folders if f > day]
        hint = f"no landing date on or before {day} has a {feed} folder under {landing}" + (
            f" (the first is {later[0]})" if later else ""
        )
    raise KoobillError(
        f"cannot ingest {day}: no {what} has been ingested on or before {day}, so {why}; "
        f"{hint}. Nothing was written."
    )


# --- validation --------------------------------------------------------------------------------


def _validate(con, feed: str, d: dt.date, earlier) -> None:
    """Apply the rules that need the partner snapshot or the price list to the typed rows
    (``chk_<feed>``: every row with its ``_reason``), then dedupe.

    For a record feed ``chk_<feed>`` is a view: its failing rows are kept in ``rej_<feed>`` and
    its accepted rows are written straight to the lake, so the day is never stored twice."""
    if feed == "usage":
        _usage_prices(con)
    kind = "view" if feed in RECORD_FEEDS else "table"
    con.execute(
        f"create temp {kind} chk_{feed} as " + _checked(feed, d, staging_source(f"typ_{feed}"))
    )
    if feed == "partners":
        _dedupe_partners(con)
    elif feed == "prices":
        _dedupe_prices(con, d.isoformat())
    else:
        con.execute(
            f"create temp table rej_{feed} as select _file, _row, "
            f"cast(record_id as varchar) as _rid, _reason, _reason_codes, _raw from chk_{feed} "
            "where _reason is not null"
        )
        _dedupe_records(con, feed, d, earlier)
    _quarantine(con, feed, d.isoformat())


def _checked(feed: str, d: dt.date, source: str) -> str:
    """The SELECT of ``source``'s typed rows (numbered) with every rule applied: the typed
    columns, the snapshot and price columns, ``_reason`` (the readable text) and, on a failing
    row, ``_reason_codes`` (one stable code per broken rule, ``schema.REASON_CODES``) and
    ``_raw``."""
    extra_cols, feed_rules = _feed_rules(feed, d)
    joins = _feed_joins(feed)
    cols = [c.name for c in FEEDS[feed]]
    typed = ", ".join(f'"{c}"' for c in cols)
    extra_names = "".join(", " + e.split(" as ")[-1] for e in extra_cols.split(", ")[1:])
    reasons = [f"case when {c} then {t} end" for c, t, _k in feed_rules]
    codes = [f"case when {c} then '{k}' end" for c, _t, k in feed_rules]
    feed_reason = f"nullif(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "null"
    feed_codes = rules.codes_list(codes) if codes else "[]::varchar[]"
    typed_json = "to_json({" + ", ".join(f"'{c}': \"{c}\"" for c in cols) + "})::varchar"
    return f"""select _file, _row, {typed}{extra_names}, _reason,
               case when _reason is not null then _reason_codes end as _reason_codes,
               case when _reason is not null then coalesce(_raw, {typed_json}) end as _raw
        from (
          select t.*{extra_cols},
                 nullif(concat_ws('; ', t._type_reason, {feed_reason}), '') as _reason,
                 case when _reason is not null then
                   list_concat(coalesce(t._type_codes, []::varchar[]), {feed_codes})
                 end as _reason_codes
          from {source} t {joins}
        )"""


def _usage_prices(con) -> None:
    """``usage_prices``: the price in force for each distinct (partner, sku, unit, usage_start)
    of the day's usage, found with one ASOF join on the price timeline.

    A day of metered usage has millions of rows but few distinct keys (hourly records of a
    few thousand SKUs), so the rows themselves are then rated with a plain equi-join on
    these keys instead of an ASOF join that sorts every row; one row per key."""
    keys = ", ".join(f'"{c}"' for c in PRICE_KEY)
    con.execute(
        f"""create temp table usage_prices as
        with k as (select distinct {keys} from typ_usage)
        select k.partner_id as k_partner_id, k.sku_code as k_sku_code, k.unit as k_unit,
               k.usage_start as k_usage_start, p.unit_price, p.effective_from as price_from,
               strftime({_beijing_date("k.usage_start")}, '%Y-%m') as source_month
        from k join snapshot s on s.partner_id = k.partner_id
        asof left join price_timeline p
          on p.sku_code = k.sku_code and p.unit = k.unit and p.currency = s.currency
         and k.usage_start >= p.effective_from
        where k.sku_code is not null and k.unit is not null and k.usage_start is not null"""
    )


def _feed_joins(feed: str) -> str:
    if feed in ("partners", "prices"):
        return ""
    snap = "left join snapshot s on s.partner_id = t.partner_id"
    if feed == "usage":
        return snap + (
            " left join usage_prices p on p.k_partner_id = t.partner_id and "
            "p.k_sku_code = t.sku_code and p.k_unit = t.unit and p.k_usage_start = t.usage_start"
        )
    return snap


def _feed_rules(feed: str, d: dt.date) -> tuple[str, list[rules.Branch]]:
    """Extra typed columns and the feed's own rules (as of landing date d): one
    (condition, reason text, reason code) per rule."""
    if feed == "partners":
        return "", []
    if feed == "prices":
        return "", [
            ("t.unit_price < 0", "'unit_price is negative'", "sign_rule"),
            (
                "t.effective_to <= t.effective_from",
                "'effective_to is not after effective_from'",
                "bad_period",
            ),
        ]
    unknown = (
        "t.partner_id is not null and s.partner_id is null",
        "'partner ' || left(t.partner_id, 64) || ' is not in the partner snapshot'",
        "unknown_partner",
    )
    cur = (
        "s.partner_id is not null and t.currency <> s.currency",
        "'currency ' || t.currency || ' is not the partner''s currency ' || s.currency",
        "currency_mismatch",
    )
    future = (
        f"{_record_date(feed).replace(chr(34), '')} > "
        f"'{(d + dt.timedelta(days=1)).isoformat()}'::date",
        f"'{'bill_month' if feed in ('adjustments', 'coupons') else RECORD_TS[feed].strip(chr(34))}"
        " is more than 1 day after the landing date (from the future)'",
        "from_the_future",
    )
    if feed == "orders":
        return "", [
            (
                "t.amount <> t.official_amount - t.discount_amount",
                "'amount ' || t.amount || ' is not official_amount - discount_amount (' || "
                "(t.official_amount - t.discount_amount) || ')'",
                "amount_mismatch",
            ),
            (
                "t.order_type in ('NEW', 'RENEW', 'AUTO_RENEW') and t.amount < 0",
                "'amount is negative for order_type ' || t.order_type",
                "sign_rule",
            ),
            (
                "t.order_type = 'UNSUBSCRIBE' and t.amount > 0",
                "'amount is positive for order_type UNSUBSCRIBE'",
                "sign_rule",
            ),
            unknown,
            cur,
            future,
        ]
    if feed == "usage":
        cols = (
            ", s.currency as currency, s.discount_rate as discount_rate, "
            "p.unit_price as unit_price, p.price_from as price_from, "
            "p.source_month as _source_month"
        )
        no_price = (
            "t.sku_code is not null and t.unit is not null and t.usage_start is not null "
            "and s.partner_id is not null and p.unit_price is null",
            "'no price for sku ' || t.sku_code || ' in ' || t.unit || ' and ' || s.currency || "
            "' effective at usage_start'",
            "no_price",
        )
        # bound the rated amount before rating: DECIMAL(38,6) * DECIMAL(38,6) overflows past
        # 10^26, which would fail the whole date (the double is only a range check, not money)
        too_big = (
            "p.unit_price is not null and t.quantity is not null and "
            f"cast(t.quantity as double) * cast(p.unit_price as double) >= {float(MONEY_LIMIT)}",
            f"'quantity * unit_price is out of range (>= {MONEY_LIMIT:.0e})'",
            "out_of_range",
        )
        return cols, [
            ("t.usage_end < t.usage_start", "'usage_end is before usage_start'", "bad_period"),
            too_big,
            unknown,
            no_price,
            future,
        ]
    if feed in ("coupons", "payments"):
        return "", [
            ("t.amount <= 0", "'amount must be > 0'", "sign_rule"),
            unknown,
            cur,
            future,
        ]
    return "", [unknown, cur, future]  # adjustments


def _dedupe_partners(con) -> None:
    """A partner listed twice in one snapshot: identical rows are duplicates, a different row
    is quarantined; the first stands."""
    h = rules.content_hash("partners")
    con.execute(
        f"""create temp table ded_partners as
        select *, {h} as _hash,
          row_number() over (partition by partner_id, _reason is null order by _file, _row) as _k,
          first_value({h}) over (partition by partner_id, _reason is null order by _file, _row) as _first
        from chk_partners"""
    )
    con.execute(
        """create temp table res_partners as select *,
          case when _reason is not null then 'quarantine'
               when _k = 1 then 'accept'
               when _hash = _first then 'duplicate'
               else 'quarantine' end as _status,
          case when _reason is null and _k > 1 and _hash <> _first then
            'partner_id ' || partner_id || ' is listed twice in the snapshot with different values'
          else _reason end as _why,
          case when _reason is null and _k > 1 and _hash <> _first then
            ['conflicting_duplicate']
          else _reason_codes end as _why_codes
        from ded_partners"""
    )
    con.execute(
        "create temp table acc_partners as select * exclude (_k, _first, _status, _why, "
        "_why_codes, _reason, _reason_codes, _raw) from res_partners where _status = 'accept'"
    )
    con.execute(
        "create temp table snapshot as select partner_id, partner_name, currency, tax_rate, "
        "discount_rate from acc_partners"
    )
    if con.execute("select count(*) from snapshot").fetchone()[0] == 0:
        con.execute("insert into snapshot select * from prev_partners")


def _dedupe_prices(con, day: str) -> None:
    h = rules.content_hash("prices")
    con.execute(
        f"""create temp table res_prices as
        with c as (
          select *, {h} as _hash,
            row_number() over (partition by {h}, _reason is null order by _file, _row) as _k
          from chk_prices
        )
        select c.*,
          case when _reason is not null then 'quarantine'
               when _k > 1 or exists (select 1 from prev_prices pp where pp._hash = c._hash)
                 then 'duplicate'
               else 'accept' end as _status,
          _reason as _why,
          _reason_codes as _why_codes
        from c"""
    )
    con.execute(
        "create temp table acc_prices as select * exclude (_k, _status, _why, _why_codes, "
        "_reason, _reason_codes, _raw) "
        "from res_prices where _status = 'accept'"
    )
    # The price list in force for the date: for each key the latest landed row wins.
    con.execute(
        f"""create temp table price_list as
        with allp as (
          select sku_code, unit, unit_price, currency, effective_from, effective_to,
                 landing_date, _file, _row from prev_prices
          union all
          select sku_code, unit, unit_price, currency, effective_from, effective_to,
                 '{day}'::date, _file, _row from acc_prices
        )
        select * exclude (rn) from (
          select *, row_number() over (partition by sku_code, unit, currency, effective_from
                                       order by landing_date desc, _file desc, _row desc) rn
          from allp) where rn = 1"""
    )
    # Prices may overlap (a dated promotion over an open-ended list price): at each point in
    # time the price in force with the latest effective_from applies. One row per change point
    # lets usage find it with a single ASOF join; a null unit_price is a gap with no price.
    con.execute(
        """create temp table price_timeline as
        with pts as (
          select sku_code, unit, currency, effective_from as at from price_list
          union
          select sku_code, unit, currency, effective_to from price_list
          where effective_to is not null
        )
        select b.sku_code, b.unit, b.currency, b.at as effective_from,
               arg_max(p.unit_price, p.effective_from) as unit_price
        from pts b left join price_list p
          on p.sku_code = b.sku_code and p.unit = b.unit and p.currency = b.currency
         and p.effective_from <= b.at and (p.effective_to is null or b.at < p.effective_to)
        group by all"""
    )


def _dedupe_records(con, feed: str, d: dt.date, earlier) -> None:
    """``dup_<feed>``: the status of every valid row whose record_id repeats within the date
    or was accepted on an earlier date; every other valid row is simply accepted.

    Only the day's record_ids are looked up in the history (one column of the earlier
    partitions), and the ordering window runs only on the few repeated ids."""
    files = [p / f"{feed}.parquet" for _v, p in earlier if (p / f"{feed}.parquet").exists()]
    # The content hash is computed only for the few rows whose record_id repeats, on both
    # sides (the history stores the typed values, so the same expression applies).
    h = rules.content_hash(feed)
    # Candidates come from the typed rows (a superset of the valid ones: a row that later
    # fails a snapshot or price rule is dropped from the window below)
    typ = f"typ_{feed}"
    lo, hi = con.execute(
        f"select min(record_id), max(record_id) from {typ} where _type_reason is null"
    ).fetchone()
    if files and lo is not None:
        # The literal range lets the Parquet reader skip every row group of the history whose
        # record_id statistics lie outside the day's ids: with time-ordered ids (the usual
        # case) the lookup reads only the recent, overlapping part of the history.
        con.execute(
            f"""create temp table hist_{feed} as
            select record_id, {h} as _hash, landing_date from {parquet(files)} h
            where record_id between ? and ?
              and record_id in (select record_id from {typ} where _type_reason is null)""",
            [lo, hi],
        )
    else:
        con.execute(
            f"create temp table hist_{feed} (record_id varchar, _hash varchar, landing_date date)"
        )
    con.execute(
        f"""create temp table rep_{feed} as
        select record_id from {typ} where _type_reason is null
        group by record_id having count(*) > 1
        union
        select record_id from hist_{feed}"""
    )
    # the rules are applied to the few rows of repeated ids only (not the whole day)
    few = staging_source(typ, f"s.record_id in (select record_id from rep_{feed})")
    struct = ", ".join(f"'{c.name}': \"{c.name}\"" for c in FEEDS[feed])
    con.execute(
        f"""create temp table dup_{feed} as
        with c as (
          select _file, _row, record_id, {h} as _hash, to_json({{{struct}}})::varchar as _json
          from ({_checked(feed, d, few)})
          where _reason is null
        ),
        v as (
          select c._file, c._row, c.record_id, c._hash, c._json,
            row_number() over w as _k,
            first_value(c._hash) over w as _first,
            first_value(c._file) over w as _ffile,
            first_value(c._row) over w as _frow
          from c
          window w as (partition by c.record_id order by c._file, c._row)
        )
        select v._file, v._row, v.record_id, v._json,
          case when h.record_id is not null and h._hash = v._hash then 'duplicate'
               when h.record_id is not null then 'quarantine'
               when v._k = 1 then 'accept'
               when v._hash = v._first then 'duplicate'
               else 'quarantine' end as _status,
          case when h.record_id is not null and h._hash <> v._hash then
                 'conflicting duplicate: record_id ' || v.record_id ||
                 ' was accepted on ' || h.landing_date || ' with different content'
               when h.record_id is null and v._k > 1 and v._hash <> v._first then
                 'conflicting duplicate: record_id ' || v.record_id ||
                 ' was accepted earlier this date (' || v._ffile || ' row ' || v._frow ||
                 ') with different content'
          end as _why
        from v left join hist_{feed} h on h.record_id = v.record_id"""
    )


def _quarantine(con, feed: str, day: str) -> None:
    cols = [c.name for c in FEEDS[feed]]
    rid = (
        "record_id" if "record_id" in cols else ("partner_id" if feed == "partners" else "sku_code")
    )
    if feed in RECORD_FEEDS:
        con.execute(
            f"""insert into quarantine_rows
            select '{feed}', '{day}'::date, _file, _row,
                   case when not {rules.blank_sql("_rid")} then _rid end,
                   _reason_codes, _reason, _raw
            from rej_{feed}
            union all
            select '{feed}', '{day}'::date, _file, _row, cast(record_id as varchar),
                   ['conflicting_duplicate'], _why, _json
            from dup_{feed} where _status = 'quarantine'"""
        )
        return
    struct = ", ".join(f"'{c}': \"{c}\"" for c in cols)
    con.execute(
        f"""insert into quarantine_rows
        select '{feed}', '{day}'::date, _file, _row,
               case when not {rules.blank_sql(f"cast({rid} as varchar)")}
                    then cast({rid} as varchar) end,
               _why_codes, _why,
               coalesce(_raw, to_json({{{struct}}})::varchar)
        from res_{feed} where _status = 'quarantine'"""
    )


# --- outputs -----------------------------------------------------------------------------------


def _accept(con, feed: str, d: dt.date, vdir: Path) -> None:
    """Write the accepted rows with their landing date, bill month and rating straight to the
    version folder, and expose them as ``out_<feed>`` for the totals and the quality gate."""
    landed_month = cal.month_of(d - dt.timedelta(days=cal.CUTOFF_DAY))
    target = vdir / f"{feed}.parquet"
    if feed in ("partners", "prices"):
        src = f"acc_{feed}"
    else:
        src = (
            f"(select * from chk_{feed} c where _reason is null and not exists "
            f"(select 1 from dup_{feed} d where d._file = c._file and d._row = c._row "
            "and d._status <> 'accept'))"
        )
    # Usage, the feed at metering scale, is written in the order the parallel engine yields
    # it: sorting millions of wide rows would cost a third of the ingest. A rerun writes the
    # same rows; every other file keeps the landing files' order.
    order = "" if feed == "usage" else " order by _file, _row"
    con.execute(
        f"copy (select '{d.isoformat()}'::date as landing_date, "
        f"{_output_select(feed, landed_month)} from {src}{order}) "
        f"to {quote_path(target)} (format parquet, compression zstd)"
    )
    con.execute(f"create temp view out_{feed} as select * from {parquet(target)}")


def _drop_work(con, feed: str) -> None:
    con.execute(f"drop {'view' if feed in RECORD_FEEDS else 'table'} if exists chk_{feed}")
    for t in ("res", "dup", "hist", "rej", "rep", "typ"):
        con.execute(f"drop table if exists {t}_{feed}")
    con.execute(f"drop table if exists typ_{feed}_bases")
    con.execute(f"drop table if exists {feed}_prices")


def _write_outputs(con, vdir: Path) -> None:
    con.execute(
        f"copy (select * from quarantine_rows order by feed, file, row) to "
        f"{quote_path(vdir / 'quarantine.parquet')} (format parquet, compression zstd)"
    )


def _output_select(feed: str, landed_month: str) -> str:
    cols = [f'"{c.name}"' for c in FEEDS[feed]]
    # partners and prices keep their content hash (later dates dedupe against it); a record
    # feed's hash is computed only when its record_id repeats (``_dedupe_records``)
    base = ", ".join(
        cols + ["_file", "_row"] + (["_hash"] if feed in ("partners", "prices") else [])
    )
    if feed in ("partners", "prices"):
        return base
    src_month = f"strftime({_record_date(feed)}, '%Y-%m')"
    if feed == "usage":  # computed once per distinct usage_start with the price (every
        src_month = "_source_month"  # accepted usage row has one)
    bill = f"greatest({src_month}, '{landed_month}')"
    month_cols = (
        f", {src_month} as source_month, {bill} as bill_month_assigned, "
        f"{bill} > {src_month} as late"
    )
    if feed == "usage":
        rated = (
            ", currency, unit_price, discount_rate,"
            " cast(round(quantity * unit_price, 6) as decimal(38,6)) as official_amount,"
            " cast(round(cast(round(quantity * unit_price, 6) as decimal(38,6)) * discount_rate, 6)"
            " as decimal(38,6)) as discount_amount"
        )
        return f"{base}{month_cols}{rated}, official_amount - discount_amount as amount"
    if feed == "payments":
        return f"{base}, {_beijing_date(chr(34) + 'paid_at' + chr(34))} as paid_date"
    return base + month_cols


def _count(con, st: FeedStats, feed: str) -> None:
    if feed in RECORD_FEEDS:
        # accepted: counted in the file written; quarantined and duplicates: in the day's
        # rejected rows and duplicate statuses. Each file must add up to the rows read.
        rows = con.execute(
            f"""select _file, sum(a), sum(q), sum(dup) from (
                  select _file, count(*) as a, 0 as q, 0 as dup from out_{feed} group by _file
                  union all
                  select _file, 0, count(*), 0 from rej_{feed} group by _file
                  union all
                  select _file, 0, count(*) filter (where _status = 'quarantine'),
                         count(*) filter (where _status = 'duplicate')
                  from dup_{feed} group by _file)
                group by _file"""
        ).fetchall()
        top = con.execute(
            f"""select why, count(*) from (
                  select _reason as why from rej_{feed}
                  union all select _why from dup_{feed} where _status = 'quarantine')
                group by 1 order by 2 desc, 1 limit 5"""
        ).fetchall()
    else:
        rows = con.execute(
            f"""select _file,
                       count(*) filter (where _status = 'accept'),
                       count(*) filter (where _status = 'quarantine'),
                       count(*) filter (where _status = 'duplicate')
                from res_{feed} group by _file"""
        ).fetchall()
        top = con.execute(
            f"select _why, count(*) from res_{feed} where _status = 'quarantine' "
            "group by 1 order by 2 desc, 1 limit 5"
        ).fetchall()
    by_file = {r[0]: r[1:] for r in rows}
    for f in st.files:
        a, q, dup = by_file.get(f["file"], (0, 0, 0))
        f.update(accepted=int(a), quarantined=int(q), duplicates=int(dup))
        if f["rows_read"] != a + q + dup:
            raise KoobillError(
                f"internal reconciliation failed for {feed}/{f['file']}: read {f['rows_read']} "
                f"!= accepted {a} + quarantined {q} + duplicates {dup}"
            )
    st.top_reasons = [(r[0], int(r[1])) for r in top]


def _write_files_table(con, vdir: Path, d: dt.date, stats: dict[str, FeedStats]) -> None:
    con.execute(
        "create temp table files_rows (landing_date date, feed varchar, file varchar, "
        "rows_read bigint, accepted bigint, quarantined bigint, duplicates bigint)"
    )
    for feed, st in stats.items():
        for f in st.files:
            con.execute(
                "insert into files_rows values (?, ?, ?, ?, ?, ?, ?)",
                [
                    d,
                    feed,
                    f["file"],
                    f["rows_read"],
                    f["accepted"],
                    f["quarantined"],
                    f["duplicates"],
                ],
            )
    con.execute(
        f"copy (select * from files_rows order by feed, file) to "
        f"{quote_path(vdir / 'files.parquet')} (format parquet)"
    )


def _estimates(con, paths: Paths, vdir: Path, d: dt.date, earlier) -> list[dict]:
    """Per-date totals of the billed feeds, then the estimate of every open month as of d."""
    day = d.isoformat()
    con.execute(
        f"""copy (
          with lines as (
            select partner_id, bill_month_assigned as bill_month, currency,
                   case when amount > 0 then amount else 0 end as consume,
                   case when amount < 0 then -amount else 0 end as refunds,
                   0::decimal(38,6) as adjustments, 0::decimal(38,6) as coupons
            from out_orders
            union all
            select partner_id, bill_month_assigned, currency, amount, 0, 0, 0 from out_usage
            union all
            select partner_id, bill_month_assigned, currency, 0, 0, amount, 0 from out_adjustments
            union all
            select partner_id, bill_month_assigned, currency, 0, 0, 0, amount from out_coupons
          )
          select '{day}'::date as landing_date, partner_id, bill_month, currency,
                 sum(consume)::decimal(38,6) as consume, sum(refunds)::decimal(38,6) as refunds,
                 sum(adjustments)::decimal(38,6) as adjustments,
                 sum(coupons)::decimal(38,6) as coupons, count(*) as records
          from lines group by all order by all
        ) to {quote_path(vdir / "totals.parquet")} (format parquet)"""
    )
    months = cal.open_months(d)
    start = min(cal.landing_window(m)[0] for m in months).isoformat()
    files = [
        p / "totals.parquet" for v, p in earlier if v >= start and (p / "totals.parquet").exists()
    ]
    files.append(vdir / "totals.parquet")
    month_list = ", ".join(f"'{m}'" for m in months)
    con.execute(
        f"""create temp table est as
        with t as (
          select partner_id, bill_month, sum(consume) c, sum(refunds) r, sum(adjustments) a
          from {parquet(files)}
          where bill_month in ({month_list}) group by all
        ),
        m as (select unnest([{month_list}]) as bill_month)
        select s.partner_id, s.partner_name, m.bill_month, '{day}'::date as as_of_date, s.currency,
               round(coalesce(t.c, 0), 2)::decimal(38,2) as consume_amount,
               round(coalesce(t.r, 0), 2)::decimal(38,2) as refunds,
               round(coalesce(t.a, 0), 2)::decimal(38,2) as adjustments,
               (round(coalesce(t.c, 0), 2) - round(coalesce(t.r, 0), 2)
                + round(coalesce(t.a, 0), 2))::decimal(38,2) as estimate_amount
        from snapshot s cross join m
        left join t on t.partner_id = s.partner_id and t.bill_month = m.bill_month
        order by s.partner_id, m.bill_month"""
    )
    con.execute(f"copy est to {quote_path(vdir / 'estimates.parquet')} (format parquet)")
    cur = con.execute("select * from est")
    names = [x[0] for x in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _quality_gate(con, vdir: Path, d: dt.date, stats, max_share, root: Path) -> None:
    """Fail the date if a feed looks broken or its accepted rows break their suite."""
    from pipelines import quality

    rows = [
        {"feed": feed, "landing_date": d.isoformat(), **f, "top_reasons": st.top_reasons}
        for feed, st in stats.items()
        for f in st.files
    ]
    if max_share is None:
        quality.check_quarantine_share(rows)
    else:
        quality.check_quarantine_share(rows, threshold=max_share)
    for feed in RECORD_FEEDS:
        if con.execute(f"select count(*) from out_{feed}").fetchone()[0]:
            quality.validate_feed(
                con,
                feed,
                f"out_{feed}",
                d.isoformat(),
                Paths(root).quality / "ingest" / d.isoformat(),
            )


def _closed_month_warnings(paths: Paths, con) -> list[str]:
    closed = {v for v, _p in partitions(paths.bills, "bill_month")}
    if not closed:
        return []
    out = []
    for feed in BILLED_FEEDS:
        for m, n in con.execute(
            f"select bill_month_assigned, count(*) from out_{feed} group by 1"
        ).fetchall():
            if m in closed:
                out.append(
                    f"{n} {feed} record(s) belong to {m}, which is already closed: they appear in "
                    f"its bill only after `koobill close --month {m} --restate`"
                )
    return out


def print_ingest_result(r: IngestResult, echo: Echo, quiet: bool = False) -> None:
    if not quiet:
        echo(f"landing date {r.landing_date}")
        if r.empty:
            echo("  no feed had a folder for it: recorded as an empty day (--allow-empty)")
        echo(
            f"  {'feed':<12} {'files':>5} {'read':>12} {'accepted':>12} {'quarantined':>12} {'duplicates':>11}"
        )
        for feed, st in r.feeds.items():
            echo(
                f"  {feed:<12} {len(st.files):>5} {st.total('rows_read'):>12,} "
                f"{st.total('accepted'):>12,} {st.total('quarantined'):>12,} "
                f"{st.total('duplicates'):>11,}"
            )
            for reason, n in st.top_reasons[:3]:
                echo(f"      quarantined {n:,}: {reason}")
        for p in r.ignored_files:
            echo(f"  ignored (not .csv/.jsonl/.parquet): {p}")
        if r.late_records:
            echo(f"  late records (billed in a later month): {r.late_records:,}")
        for w in r.closed_month_warnings:
            echo(f"  warning: {w}")
        echo(f"  estimates as of {r.landing_date} (no tax, no coupons):")
        for e in r.estimates:
            echo(
                f"    {e['partner_id']:<20} {e['bill_month']}  {e['currency']} "
                f"{e['estimate_amount']:>16,.2f}  (consume {e['consume_amount']:,.2f}, "
                f"refunds {e['refunds']:,.2f}, adjustments {e['adjustments']:,.2f})"
            )
    read = sum(st.total("rows_read") for st in r.feeds.values())
    q = sum(st.total("quarantined") for st in r.feeds.values())
    empty = " (empty day)" if r.empty else ""
    echo(
        f"ingested {r.landing_date}{empty}: {read:,} rows read, {q:,} quarantined, "
        f"in {r.seconds:.1f} s"
    )


__all__ = ["IngestResult", "ingest_date", "landing_date_present", "print_ingest_result"]
