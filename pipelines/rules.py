"""The row rules of the spec (section 2) as SQL over a staging table.

``typed_select(feed)`` turns the all-text staging columns into typed columns plus one reason per
broken rule; ``feed_rules(feed)`` adds the rules that need the partner snapshot or the price
list. Column names come from ``config.FEEDS`` (never from input); values are bound.
"""

from __future__ import annotations

from pipelines.config import FEEDS, MONEY, ORDER_TYPE_ALIASES, ORDER_TYPES

DEC_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
TS_RE = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r" ?(Z|[+-][0-9]{2}(:?[0-9]{2})?)"
)
TS_NAIVE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
MONTH_RE = r"[0-9]{4}-(0[1-9]|1[0-2])"
PARTNER_RE = r"[A-Za-z0-9_-]{1,64}"


def _lit(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _blank(c: str) -> str:
    return f"nullif(trim(\"{c}\"), '') is null"


def _show(c: str) -> str:
    """The offending value, shortened, for a reason text."""
    return f"left(\"{c}\", 40)"


def _decimal(c: str, int_digits: int) -> tuple[str, str]:
    t = f'trim("{c}")'
    frac = f"length(rtrim(regexp_extract({t}, '\\.([0-9]*)$', 1), '0'))"
    ints = f"length(ltrim(regexp_extract({t}, '^[+-]?\\.?([0-9]*)', 1), '0'))"
    ok_shape = f"regexp_full_match({t}, {_lit(DEC_RE)})"
    value = (
        f"case when {ok_shape} and {frac} <= 6 and {ints} <= {int_digits} "
        f"then cast({t} as {MONEY}) end"
    )
    reason = (
        f"case when {ok_shape} = false then '{c} is not a plain decimal number (' || {_show(c)} || ')'"
        f" when {frac} > 6 then '{c} has more than 6 decimal places (' || {_show(c)} || ')'"
        f" when {ints} > {int_digits} then '{c} is out of range (' || {_show(c)} || ')' end"
    )
    return value, reason


def _column(col) -> tuple[str, str | None]:
    """(typed expression, reason expression or None) for one column."""
    c, kind = col.name, col.kind
    t = f'trim("{c}")'
    missing = f"'{c} is missing'" if col.required else "null"
    if kind in ("id", "text"):
        value = f'"{c}"' if col.required else f"nullif(\"{c}\", '')"
        return value, (f"case when {_blank(c)} then {missing} end" if col.required else None)
    if kind == "partner":
        return (
            f'"{c}"',
            f"case when {_blank(c)} then {missing} when not regexp_full_match(\"{c}\", "
            f"{_lit(PARTNER_RE)}) then '{c} is not a valid partner id (' || {_show(c)} || ')' end",
        )
    if kind == "currency":
        return (
            f"upper({t})",
            f"case when {_blank(c)} then {missing} when not regexp_full_match(upper({t}), "
            f"'[A-Z]{{3}}') then '{c} is not a 3-letter currency code (' || {_show(c)} || ')' end",
        )
    if kind in ("money", "qty", "rate"):
        value, reason = _decimal(c, 15 if kind == "money" else 12)
        extra = ""
        if kind == "qty":
            extra = f" when {value} < 0 then '{c} is negative (' || {_show(c)} || ')'"
        if kind == "rate":
            extra = f" when {value} < 0 or {value} >= 1 then '{c} must be >= 0 and < 1'"
        full = f"case when {_blank(c)} then {missing} else coalesce({reason[:-4]}{extra} end) end"
        return f"case when not {_blank(c)} then {value} end", full
    if kind == "ts":
        value = (
            f"case when regexp_full_match({t}, {_lit(TS_RE)}) then try_cast({t} as TIMESTAMPTZ) end"
        )
        reason = (
            f"case when {_blank(c)} then {missing}"
            f" when regexp_full_match({t}, {_lit(TS_NAIVE_RE)}) then '{c} has no UTC offset (' || {_show(c)} || ')'"
            f" when not regexp_full_match({t}, {_lit(TS_RE)}) or try_cast({t} as TIMESTAMPTZ) is null"
            f" then '{c} is not a valid ISO 8601 timestamp (' || {_show(c)} || ')' end"
        )
        return value, reason
    if kind == "month":
        return (
            f"case when regexp_full_match({t}, {_lit(MONTH_RE)}) then {t} end",
            f"case when {_blank(c)} then {missing} when not regexp_full_match({t}, "
            f"{_lit(MONTH_RE)}) then '{c} is not a month YYYY-MM (' || {_show(c)} || ')' end",
        )
    if kind == "order_type":
        cases = " ".join(f"when {_lit(k)} then {_lit(v)}" for k, v in ORDER_TYPE_ALIASES.items())
        names = ", ".join(_lit(v) for v in ORDER_TYPES)
        norm = f"case upper({t}) {cases} else upper({t}) end"
        value = f"case when {norm} in ({names}) then {norm} end"
        return value, (
            f"case when {_blank(c)} then {missing} when ({norm}) not in ({names}) then "
            f"'{c} is not one of NEW, RENEW, AUTO_RENEW, CHANGE, UNSUBSCRIBE or a bill_type "
            f"code (' || {_show(c)} || ')' end"
        )
    raise ValueError(kind)


def typed_select(feed: str) -> str:
    """SELECT list over the staging table: typed columns and ``_r_<col>`` reasons. A row that
    fails typing keeps its raw text (as JSON) in ``_raw`` for the quarantine."""
    out = ['"_file"', '"_row"', '"_error"']
    reasons = []
    for col in FEEDS[feed]:
        value, reason = _column(col)
        out.append(f'{value} as "{col.name}"')
        out.append(f'{reason or "null"} as "_r_{col.name}"')
        if reason:
            reasons.append(reason)
    struct = ", ".join(f"'{c.name}': \"{c.name}\"" for c in FEEDS[feed])
    out.append(
        f"coalesce(\"_raw\", case when concat_ws('', {', '.join(reasons)}) <> '' "
        f"then to_json({{{struct}}})::varchar end) as \"_raw\""
    )
    return ",\n  ".join(out)


def type_reasons(feed: str) -> list[str]:
    return ["_error"] + [f'"_r_{c.name}"' for c in FEEDS[feed]]


def content_hash(feed: str, extra: tuple[str, ...] = ()) -> str:
    """md5 over the canonical typed values of the feed's required columns."""
    parts = [f"coalesce(cast(\"{c.name}\" as varchar), chr(0))" for c in FEEDS[feed] if c.required]
    parts += [f"coalesce(cast({e} as varchar), chr(0))" for e in extra]
    return "md5(concat_ws(chr(31), " + ", ".join(parts) + "))"
