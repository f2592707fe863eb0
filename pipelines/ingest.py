"""Ingest one landing date: read, validate, dedupe, rate, assign bill months, refresh estimates.

The whole date is one transaction: everything is computed in an in-memory DuckDB, written into a
fresh version folder, validated, and only then committed (``lake.commit_version``) and mirrored
into the warehouse. Rerunning a date replaces exactly that date.

The SQL is in ``sql/ingest/``, one step per file; this module runs them in this order:

1. Read: every landing file (``read_csv.sql``, ``read_parquet.sql``, or Python for JSONL and
   damaged CSV) typed as it is read (``typed_rows.sql``) into ``typ_<feed>``.
2. Reference data of earlier dates: ``work_tables.sql``, ``previous_snapshot.sql``,
   ``previous_prices.sql``.
3. Partners, then prices: ``checked_rows.sql`` (every rule), ``partners_resolved.sql`` and
   ``snapshot.sql``; ``prices_resolved.sql``, ``price_list.sql``, ``price_timeline.sql``;
   ``quarantine_reference.sql``.
4. Each record feed: ``usage_prices.sql`` (usage), ``checked_rows.sql`` as the view
   ``checked``, ``rejected.sql``, ``history.sql``, ``repeated_ids.sql``, ``duplicates.sql``,
   ``quarantine_records.sql``.
5. Write each feed (``accepted.sql``, ``accepted_records.sql``, ``output_view.sql``), count
   it (``file_counts_*.sql``, ``top_reasons_*.sql``) and drop its work (``drop_work.sql``).
6. The date's ``totals.sql`` and the open months' ``estimates.sql``; ``late_records.sql``.

Values (the date, paths, limits) are bound parameters, or session variables read by the views
(``koobill_landing_date``, ``koobill_landed_month``, ``koobill_future_after``,
``koobill_future_from``); the only SQL made in Python is structure generated from
``config.FEEDS`` and the rules (``db.render``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from pipelines import calendar as cal
from pipelines import delta, rules
from pipelines.config import (
    FEED_ORDER,
    FEEDS,
    MONEY_LIMIT,
    RECORD_FEEDS,
    Paths,
    require_data_dir,
    resolve_data_dir,
)
from pipelines.db import connect, create_temp, database_path, lake_files, limit_memory, render, sql
from pipelines.errors import KoobillError
from pipelines.lake import (
    commit_version,
    data_dir_lock,
    lock_wait_s,
    memory_limit,
    new_version_dir,
    partitions,
)
from pipelines.readers import create_staging, landing_files, load_file, staging_source
from pipelines.record_index import (
    KEY_SQL,
    RecordIndex,
    keys_of,
    lake_file_ids,
    prepare_run,
    repeated,
)

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
    from pipelines import objectstore

    root = require_data_dir(data_dir)
    d = cal.parse_date(day) if isinstance(day, str) else day
    present = landing_date_present(root, d)
    if not present and not allow_empty:
        raise KoobillError(
            f"landing date {d} is not present: no feed has a folder "
            f"{objectstore.display(Paths(root).landing)}/<feed>/{d}/. Its files may not have "
            "arrived yet; if the "
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
    from pipelines import objectstore

    return any(objectstore.pull_dir(paths.landing_dir(feed, d)).is_dir() for feed in FEEDS)


def _ingest(root: Path, d: dt.date, echo: Echo, max_share: float | None) -> IngestResult:
    t0 = time.monotonic()
    paths = Paths(root)
    day = d.isoformat()
    part = paths.ingest_dir(day)
    earlier = [(v, p) for v, p in partitions(paths.ingest, "landing_date") if v < day]
    con = _open(root, d)
    vdir: Path | None = None
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="koobill-index")
    runs: dict[str, Future] = {}
    try:
        stats: dict[str, FeedStats] = {}
        ignored: list[str] = []
        for feed in FEED_ORDER:
            stats[feed] = _stage_feed(con, paths, feed, day, echo, ignored)
            _prewarm_if_needed(feed, stats[feed])
        _previous_reference(con, earlier)
        # the reference feeds first: a date whose records have no snapshot or price list at
        # all stops here, before anything is written
        for feed in ("partners", "prices"):
            _validate(con, feed, earlier, root, echo)
            _require_reference(con, paths, feed, d, earlier, stats)
        vdir = new_version_dir(part)
        for feed in FEED_ORDER:
            if feed in RECORD_FEEDS:
                keys = _validate(con, feed, earlier, root, echo)
                # the index's arrays of the feed's record ids, made while the day is written
                runs[feed] = background.submit(prepare_run, keys)
            _accept(con, feed, vdir)
            _count(con, stats[feed], feed)
            con.execute(_work_sql("drop_work", feed))
        _write_outputs(con, vdir, d, stats)
        estimates = _estimates(con, vdir, d, earlier)
        _quality_gate(con, vdir, d, stats, max_share, root)
        late = con.execute(sql("ingest/late_records")).fetchone()[0]
        warnings = _closed_month_warnings(paths, con)
        con.close()
        commit_version(part, vdir)
    except BaseException as exc:
        con.close()
        background.shutdown(wait=False, cancel_futures=True)
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

    # the record-id index takes the committed files while the warehouse takes the date: the
    # two share no file
    indexing = background.submit(_index_committed, root, day, runs, echo)
    try:
        sync_partition(root, "ingest", day)  # also moves the latest landing date, publishes
    finally:
        indexing.result()
        background.shutdown()
    return IngestResult(day, stats, estimates, time.monotonic() - t0, ignored, int(late), warnings)


def _open(root: Path, d: dt.date) -> duckdb.DuckDBPyConnection:
    """The ingest's in-memory database: memory limited (``$KOOBILL_MEMORY_LIMIT``), spilling
    under the data dir, with the date's values as session variables (the views read them)."""
    database_path(Paths(root).warehouse)  # the warehouse can be written there: fail up front
    con = connect(":memory:")
    try:
        tmp = root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        limit_memory(con, memory_limit(), tmp)
        con.execute("set variable koobill_landing_date = $d::date", {"d": d})
        # the bill month of a record dated before the cutoff of the month it landed in
        landed = cal.month_of(d - dt.timedelta(days=cal.CUTOFF_DAY))
        con.execute("set variable koobill_landed_month = $m::varchar", {"m": landed})
        future = d + dt.timedelta(days=1)  # a record dated after it is "from the future"
        con.execute("set variable koobill_future_after = $f::date", {"f": future})
        # the same rule for a timestamp: dated after `future` in Beijing is at or after the
        # instant the next Beijing day starts (one comparison, no date per row)
        after = cal.beijing_midnight(future + dt.timedelta(days=1))
        con.execute("set variable koobill_future_from = $t::timestamptz", {"t": after})
        con.execute(sql("ingest/work_tables"))
    except BaseException:
        con.close()
        raise
    return con


def _work_sql(name: str, feed: str, **parts: str) -> str:
    """``sql/ingest/<name>.sql`` for ``feed``: its work tables' names filled in."""
    names = {
        "staged": f"typ_{feed}",
        "checked": f"{feed}_checked" if feed not in RECORD_FEEDS else "checked",
        "resolved": f"{feed}_resolved",
        "accepted": f"{feed}_accepted",
    }
    text = sql(f"ingest/{name}")
    return render(
        f"ingest/{name}", **{k: v for k, v in names.items() if "{{ " + k + " }}" in text}, **parts
    )


# --- staging -----------------------------------------------------------------------------------


def _stage_feed(
    con, paths: Paths, feed: str, day: str, echo: Echo, ignored: list[str]
) -> FeedStats:
    """Read the feed's files of the date into ``typ_<feed>``, typed as they are read."""
    table = f"typ_{feed}"

    def wrap(source: str) -> str:
        return rules.typed_rows(feed, source)

    create_staging(con, feed, table, wrap)
    from pipelines import objectstore

    files, skipped = landing_files(objectstore.pull_dir(paths.landing_dir(feed, day)))
    ignored += [str(p) for p in skipped]
    st = FeedStats(feed)
    for path in files:
        n = load_file(con, feed, path, table, progress=echo, wrap=wrap)
        st.files.append({"file": path.name, "rows_read": n})
        if n >= 1_000_000:
            echo(f"  {feed}/{path.name}: {n:,} rows read")
    return st


def _prewarm_if_needed(feed: str, st: FeedStats) -> None:
    """Start importing Great Expectations in the background (``quality.prewarm``) as soon as a
    staged record feed is small enough for the quality gate to hand GX every row, so the
    import overlaps the reading and the checks. A day whose record feeds are all bigger than
    that (or empty) does not import GX at all unless DuckDB finds a row breaking a rule."""
    from pipelines import quality

    if feed in RECORD_FEEDS and 0 < st.total("rows_read") <= quality.MAX_GX_ROWS:
        quality.prewarm()


def _previous_reference(con, earlier) -> None:
    """``prev_partners``: the latest earlier snapshot that accepted partners (the date's own
    partners, if any, replace it); ``prev_prices``: every price accepted on an earlier date."""
    for _v, p in reversed(earlier):
        f = lake_files(p / "partners.parquet")
        if (p / "partners.parquet").exists() and _rows_in(con, f):
            con.execute(sql("ingest/previous_snapshot"), {"files": f})
            break
    files = [p / "prices.parquet" for _v, p in earlier if (p / "prices.parquet").exists()]
    if files:
        con.execute(sql("ingest/previous_prices"), {"files": lake_files(files)})


def _rows_in(con, files: list[str]) -> int:
    """The rows of lake files (from their footers)."""
    q = "select count(*) from read_parquet($files, hive_partitioning = false)"
    return int(con.execute(q, {"files": files}).fetchone()[0])


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
    from pipelines import objectstore

    landing = paths.landing / feed
    folders = [name for name in objectstore.subdirs(landing) if _is_date(name)]
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
        q, top = con.execute(_work_sql("quarantine_summary", feed)).fetchone()
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


def _validate(con, feed: str, earlier, root: Path, echo: Echo) -> np.ndarray | None:
    """Apply the rules that need the partner snapshot or the price list to the typed rows
    (``checked_rows.sql``: every row with its ``_reason``), then dedupe.

    A reference feed's checked rows are a table, then resolved (``<feed>_resolved``: every row
    with its status). A record feed's are the view ``checked``: its failing rows are kept in
    ``rejected`` and its accepted rows are written straight to the lake, so the day is never
    stored twice. A record feed's: the keys of its rows' record ids (for the index)."""
    if feed == "usage":
        create_temp(con, "usage_prices", sql("ingest/usage_prices"))
    typed = staging_source(f"typ_{feed}")
    if feed in RECORD_FEEDS:
        create_temp(con, "checked", _checked(feed, typed), view=True)
        checked = "checked"
        if feed in FEED_SUSPECTS:  # the rules applied to the rows that may break one
            checked = f"({_checked(feed, staging_source(f'typ_{feed}', FEED_SUSPECTS[feed]()))})"
        create_temp(con, "rejected", render("ingest/rejected", checked=checked))
        keys = _dedupe_records(con, feed, earlier, root, echo)
        quarantine = _work_sql("quarantine_records", feed, blank_rid=rules.blank_sql("_rid"))
        con.execute(quarantine, {"feed": feed})
        return keys
    create_temp(con, f"{feed}_checked", _checked(feed, typed))
    hashed = {"content_hash": rules.content_hash(feed)}
    create_temp(con, f"{feed}_resolved", render(f"ingest/{feed}_resolved", **hashed))
    accepted = f"select * from {feed}_resolved where _status = 'accept'"
    create_temp(con, f"{feed}_accepted", accepted)  # materialised: read twice
    if feed == "partners":
        create_temp(con, "snapshot", sql("ingest/snapshot"))
    else:
        create_temp(con, "price_list", sql("ingest/price_list"))
        create_temp(con, "price_timeline", sql("ingest/price_timeline"))
    rid = "cast(partner_id as varchar)" if feed == "partners" else "cast(sku_code as varchar)"
    con.execute(
        _work_sql(
            "quarantine_reference",
            feed,
            record_id=rid,
            blank_rid=rules.blank_sql(rid),
            typed_json=_typed_json(feed),
        ),
        {"feed": feed},
    )


def _typed_json(feed: str) -> str:
    """The typed record as JSON text (the quarantine's raw text of a row typed without error)."""
    return "to_json({" + ", ".join(f"'{c.name}': \"{c.name}\"" for c in FEEDS[feed]) + "})::varchar"


def _checked(feed: str, typed: str) -> str:
    """The SELECT of ``typed``'s rows (numbered) with every rule applied
    (``sql/ingest/checked_rows.sql``): the typed columns, the snapshot and price columns,
    ``_reason`` (the readable text) and, on a failing row, ``_reason_codes`` (one stable code
    per broken rule, ``schema.REASON_CODES``) and ``_raw``."""
    feed_rules = FEED_RULES[feed]()
    extra = EXTRA_COLUMNS.get(feed, [])
    reasons = [f"case when {c} then {t} end" for c, t, _k in feed_rules]
    codes = [f"case when {c} then '{k}' end" for c, _t, k in feed_rules]
    return render(
        "ingest/checked_rows",
        typed=typed,
        joins=FEED_JOINS.get(feed, ""),
        extra_select="".join(f", {expr} as {name}" for expr, name in extra),
        extra_names="".join(f", {name}" for _expr, name in extra),
        columns=", ".join(f'"{c.name}"' for c in FEEDS[feed]),
        feed_guard=" and ".join(f"not coalesce({c}, false)" for c, _t, _k in feed_rules) or "true",
        feed_reason=f"nullif(concat_ws('; ', {', '.join(reasons)}), '')" if reasons else "null",
        feed_codes=rules.codes_list(codes) if codes else "[]::varchar[]",
        typed_json=_typed_json(feed),
    )


# The joins a record feed's rules read: the partner snapshot (alias s) and, for usage, the
# price in force for its key (alias p, ``usage_prices.sql``).
_SNAPSHOT = "left join snapshot s on s.partner_id = t.partner_id"
FEED_JOINS = {
    **{feed: _SNAPSHOT for feed in RECORD_FEEDS},
    "usage": _SNAPSHOT + " left join usage_prices p on p.k_partner_id = t.partner_id and "
    "p.k_sku_code = t.sku_code and p.k_unit = t.unit and p.k_usage_start = t.usage_start",
}
# The columns those joins add to the checked rows: (expression, name).
EXTRA_COLUMNS = {
    "usage": [
        ("s.currency", "currency"),
        ("s.discount_rate", "discount_rate"),
        ("p.unit_price", "unit_price"),
        ("p.price_from", "price_from"),
        ("p.source_month", "_source_month"),
    ]
}


def _unknown_partner() -> rules.Branch:
    return (
        "t.partner_id is not null and s.partner_id is null",
        "'partner ' || left(t.partner_id, 64) || ' is not in the partner snapshot'",
        "unknown_partner",
    )


def _currency_mismatch() -> rules.Branch:
    return (
        "s.partner_id is not null and t.currency <> s.currency",
        "'currency ' || t.currency || ' is not the partner''s currency ' || s.currency",
        "currency_mismatch",
    )


def _from_the_future(feed: str) -> rules.Branch:
    """The record is dated after the day after its landing date (session variables): for a
    timestamp, it is at or after the instant the following Beijing day starts, which is its
    Beijing date being later (``_record_date``) without converting every row to a date."""
    if feed in RECORD_TS:
        column = RECORD_TS[feed].strip('"')
        predicate = f"{column} >= getvariable('koobill_future_from')"
    else:
        column = "bill_month"
        predicate = (
            f"{_record_date(feed).replace(chr(34), '')} > getvariable('koobill_future_after')"
        )
    return (
        predicate,
        f"'{column} is more than 1 day after the landing date (from the future)'",
        "from_the_future",
    )


def _price_rules() -> list[rules.Branch]:
    return [
        ("t.unit_price < 0", "'unit_price is negative'", "sign_rule"),
        (
            "t.effective_to <= t.effective_from",
            "'effective_to is not after effective_from'",
            "bad_period",
        ),
    ]


def _order_rules() -> list[rules.Branch]:
    return [
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
        _unknown_partner(),
        _currency_mismatch(),
        _from_the_future("orders"),
    ]


def _usage_rules() -> list[rules.Branch]:
    no_price = (
        "t.sku_code is not null and t.unit is not null and t.usage_start is not null "
        "and s.partner_id is not null and p.unit_price is null",
        "'no price for sku ' || t.sku_code || ' in ' || t.unit || ' and ' || s.currency || "
        "' effective at usage_start'",
        "no_price",
    )
    # bound the rated amount before rating: DECIMAL(38,6) * DECIMAL(38,6) overflows past
    # 10^26, which would fail the whole date (the double is only a range check, not money;
    # MONEY_LIMIT is a constant of the rule, not a value read from anywhere)
    too_big = (
        "p.unit_price is not null and t.quantity is not null and "
        f"cast(t.quantity as double) * cast(p.unit_price as double) >= {float(MONEY_LIMIT)}",
        f"'quantity * unit_price is out of range (>= {MONEY_LIMIT:.0e})'",
        "out_of_range",
    )
    return [
        ("t.usage_end < t.usage_start", "'usage_end is before usage_start'", "bad_period"),
        too_big,
        _unknown_partner(),
        no_price,
        _from_the_future("usage"),
    ]


def _usage_suspects() -> str:
    """A predicate over a typed usage row (alias s) that holds on every row that breaks a
    typing rule or one of ``_usage_rules``, and needs no join a row: the rejected rows are
    looked for among these alone, so the snapshot and the prices are joined to the few and not
    to the whole day. Each rule's condition implies its term here (a term may hold where the
    rule does not: those rows pass the rules and are not rejected):

    - a typing rule: ``_type_reason`` is set;
    - usage_end before usage_start, and "from the future": the rule's own condition;
    - a partner not in the snapshot: the same lookup, as NOT EXISTS (true, never NULL);
    - no price: the key is one of the day's keys with no price in force (``usage_prices``
      holds every key of the day whose partner is in the snapshot and whose sku, unit and
      start are set); an empty set, the usual case, costs no lookup;
    - quantity * unit_price out of range: it is with the day's highest price (a quantity
      that passed typing is not negative, and rounding a product of doubles is monotonic).
    """
    return " or ".join(
        [
            "s._type_reason is not null",
            "s.usage_end < s.usage_start",
            "s.usage_start >= getvariable('koobill_future_from')",
            "not exists (select 1 from snapshot x where x.partner_id = s.partner_id)",
            "exists (select 1 from usage_prices x where x.unit_price is null "
            "and x.k_partner_id = s.partner_id and x.k_sku_code = s.sku_code "
            "and x.k_unit = s.unit and x.k_usage_start = s.usage_start)",
            "cast(s.quantity as double) * (select max(cast(unit_price as double)) "
            f"from usage_prices) >= {float(MONEY_LIMIT)}",
        ]
    )


# The feeds whose rejected rows are looked for among suspects (see _usage_suspects).
FEED_SUSPECTS: dict[str, Callable[[], str]] = {"usage": _usage_suspects}


def _positive_amount_rules(feed: str) -> list[rules.Branch]:
    return [
        ("t.amount <= 0", "'amount must be > 0'", "sign_rule"),
        _unknown_partner(),
        _currency_mismatch(),
        _from_the_future(feed),
    ]


# Each feed's own rules, as of the landing date: one (condition, reason text, reason code) per
# rule, over the typed row (alias t) and the joins of FEED_JOINS.
FEED_RULES: dict[str, Callable[[], list[rules.Branch]]] = {
    "partners": lambda: [],
    "prices": _price_rules,
    "orders": _order_rules,
    "usage": _usage_rules,
    "coupons": lambda: _positive_amount_rules("coupons"),
    "payments": lambda: _positive_amount_rules("payments"),
    "adjustments": lambda: [
        _unknown_partner(),
        _currency_mismatch(),
        _from_the_future("adjustments"),
    ],
}


def _dedupe_records(con, feed: str, earlier, root: Path, echo: Echo) -> np.ndarray:
    """``duplicates``: the status of every valid row whose record_id repeats within the date
    or was accepted on an earlier date; every other valid row is simply accepted.

    Only the earlier files that hold one of the day's record_ids are read (the record-id
    index, :mod:`pipelines.record_index`, names them), and only their rows with those ids;
    the ordering window runs only on the few repeated ids. Returns the keys of the date's
    record ids typed without error: a superset of the ids the date accepts, which the index
    keeps for this date's file (an id it names by mistake costs a read, never a miss)."""
    earlier_files = lake_file_ids(feed, earlier)
    # The content hash is computed only for the few rows whose record_id repeats, on both
    # sides (the history stores the typed values, so the same expression applies).
    h = rules.content_hash(feed)
    # Candidates come from the typed rows (a superset of the valid ones: a row that later
    # fails a snapshot or price rule is dropped from the window below)
    valid = "_type_reason is null"
    keys = keys_of(con, f"typ_{feed}", valid)
    if earlier_files and keys.size:
        holding = RecordIndex(root, feed).files_holding(con, keys, earlier_files, echo)
        if holding:
            lo, hi = con.execute(
                f"select min(record_id), max(record_id) from typ_{feed} where {valid}"
            ).fetchone()
            files = [delta.local_file(earlier_files[f]) for f in holding]
            con.execute(
                _work_sql("history", feed, content_hash=h),
                {"files": lake_files(files), "lo": lo, "hi": hi},
            )
    # an id repeated within the date has its key repeated in the sorted keys: only the rows
    # of those keys are grouped by their id (not the whole day)
    repeats = pa.array(repeated(keys), type=pa.uint64())
    con.register("repeated_keys", pa.table({"k": repeats}))
    try:
        create_temp(con, "repeated", _work_sql("repeated_ids", feed, key=KEY_SQL))
    finally:
        con.unregister("repeated_keys")
    # the rules are applied to the few rows of repeated ids only (not the whole day)
    few = staging_source(f"typ_{feed}", "s.record_id in (select record_id from repeated)")
    query = render(
        "ingest/duplicates",
        checked_repeated=_checked(feed, few),
        content_hash=h,
        typed_json=_typed_json(feed),
    )
    create_temp(con, "duplicates", query)
    return keys


def _index_committed(root: Path, day: str, runs: dict[str, Future], echo: Echo) -> None:
    """Add the files the ingest of ``day`` committed to the record-id index and compact it.
    ``runs``: each record feed's run arrays (``record_index.prepare_run`` of its keys), being
    made in the background. The index is a cache: a failure here is a warning (the next
    ingest indexes the date from the lake), never a failed ingest."""
    try:
        current = partitions(Paths(root).ingest, "landing_date")
        for feed in RECORD_FEEDS:
            ids = lake_file_ids(feed, current)
            index = RecordIndex(root, feed)
            for (d, name), _uri in ids.items():
                if d == day and runs.get(feed) is not None:
                    index.add(d, name, runs[feed].result())
            index.compact(ids, echo)
    except Exception as exc:  # noqa: BLE001  (a cache: warn, the lake is committed)
        echo(
            f"warning: the record-id index under {Path(root) / 'index'} was not updated "
            f"({type(exc).__name__}: {exc}); the next ingest indexes {day} from the lake"
        )


# --- outputs -----------------------------------------------------------------------------------


def _accept(con, feed: str, vdir: Path) -> None:
    """Write the accepted rows with their landing date, bill month and rating straight to the
    version folder, and expose them as ``out_<feed>`` for the totals and the quality gate."""
    target = vdir / f"{feed}.parquet"
    if feed in RECORD_FEEDS:
        accepted = f"({sql('ingest/accepted_records')})"
    else:
        accepted = f"{feed}_accepted"
    query = render(
        "ingest/accepted",
        output=output_columns(feed),
        accepted=accepted,
        order_by="" if feed == "usage" else "order by _file, _row",
    )
    if feed == "usage":
        # the usage file keeps no order (see accepted.sql): without insertion order DuckDB
        # writes it from every thread at once instead of reassembling the scan's order first
        con.execute("set preserve_insertion_order = false")
        try:
            con.execute(query, {"path": str(target)})
        finally:
            con.execute("set preserve_insertion_order = true")
    else:
        con.execute(query, {"path": str(target)})
    variable = f"koobill_out_{feed}"
    con.execute(f"set variable {variable} = $files", {"files": lake_files(target)})
    con.execute(render("ingest/output_view", view=f"out_{feed}", variable=variable))


def _write_outputs(con, vdir: Path, d: dt.date, stats: dict[str, FeedStats]) -> None:
    """The day's quarantine and its per-file counts, beside the feeds' files."""
    q = "copy (select * from quarantine_rows order by feed, file, row) to $path"
    con.execute(
        q + " (format parquet, compression zstd)", {"path": str(vdir / "quarantine.parquet")}
    )
    keys = ("rows_read", "accepted", "quarantined", "duplicates")
    rows = [
        [d, feed, f["file"], *(f[k] for k in keys)] for feed, st in stats.items() for f in st.files
    ]
    if rows:
        con.executemany("insert into files_rows values (?, ?, ?, ?, ?, ?, ?)", rows)
    q = "copy (select * from files_rows order by feed, file) to $path (format parquet)"
    con.execute(q, {"path": str(vdir / "files.parquet")})


def output_columns(feed: str) -> str:
    """The select list of a feed's lake file (after its landing date): the feed's columns,
    ``_file``, ``_row``; the bill month of a billed feed; the rating of usage."""
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
    bill = f"greatest({src_month}, getvariable('koobill_landed_month'))"
    month_cols = (
        f", {src_month} as source_month, {bill} as bill_month_assigned, "
        f"{bill} > {src_month} as late"
    )
    if feed == "usage":
        official = _round6_product("quantity", "unit_price")
        rated = (
            ", currency, unit_price, discount_rate,"
            f" {official} as official_amount,"
            f" {_round6_product(official, 'discount_rate')} as discount_amount"
        )
        return f"{base}{month_cols}{rated}, official_amount - discount_amount as amount"
    if feed == "payments":
        return f"{base}, {_beijing_date(chr(34) + 'paid_at' + chr(34))} as paid_date"
    return base + month_cols


def _round6_product(a: str, b: str) -> str:
    """``round(a * b, 6)`` as DECIMAL(38,6), for two DECIMAL(38,6) amounts: the product is
    exact (DECIMAL(38,12)); rounding it is a 128-bit division per row, so a product below
    10^6 in magnitude (it fits DECIMAL(18,12)) is rounded in 64 bits instead. Same value, same
    half-away-from-zero rounding, either way."""
    p = f"{a} * {b}"
    return (
        f"cast(case when abs({p}) < 1000000 then round(cast({p} as decimal(18,12)), 6) "
        f"else round({p}, 6) end as decimal(38,6))"
    )


def _count(con, st: FeedStats, feed: str) -> None:
    """Each file's accepted, quarantined and duplicate rows; they must add up to the rows read.

    A record feed's accepted rows are counted in the file written; its quarantined rows and
    duplicates in the day's rejected rows and duplicate statuses."""
    if feed in RECORD_FEEDS:
        rows = con.execute(render("ingest/file_counts_records", out=f"out_{feed}")).fetchall()
        top = con.execute(sql("ingest/top_reasons_records")).fetchall()
    else:
        rows = con.execute(_work_sql("file_counts_reference", feed)).fetchall()
        top = con.execute(_work_sql("top_reasons_reference", feed)).fetchall()
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


def _estimates(con, vdir: Path, d: dt.date, earlier) -> list[dict]:
    """Per-date totals of the billed feeds, then the estimate of every open month as of d."""
    totals = vdir / "totals.parquet"
    con.execute(sql("ingest/totals"), {"path": str(totals)})
    months = cal.open_months(d)
    start = min(cal.landing_window(m)[0] for m in months).isoformat()
    files = [
        p / "totals.parquet" for v, p in earlier if v >= start and (p / "totals.parquet").exists()
    ]
    params = {"files": lake_files([*files, totals]), "months": list(months)}
    create_temp(con, "est", sql("ingest/estimates"), params)
    q = "copy est to $path (format parquet)"
    con.execute(q, {"path": str(vdir / "estimates.parquet")})
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
    sizes = {
        feed: con.execute(f"select count(*) from out_{feed}").fetchone()[0] for feed in RECORD_FEEDS
    }
    quality.validate_feeds(
        con,
        [(feed, f"out_{feed}") for feed in RECORD_FEEDS if sizes[feed]],
        d.isoformat(),
        Paths(root).quality / "ingest" / d.isoformat(),
        sizes=sizes,
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
