-- The accepted usage of one landing date with the boolean rules that
-- expectations/feeds.py checks (landing_date_matches, amounts_6dp and FEED_FLAGS["usage"]),
-- computed exactly in DuckDB.
-- Parameters: $feed_view (the records: blank ids as NULL, amounts as DECIMAL, see
-- pipelines/quality.py), $landing_date, and the window of record dates (Beijing dates):
-- $first_day and $last_day, both included, and the same as instants, $starts_at (the first
-- day's Beijing midnight) and $ends_at (the Beijing midnight after the last day), so that a
-- timestamp is compared with two bounds instead of converting every row to Beijing time.
with

records as (
    select * from query_table($feed_view)
)

select
    *,
    coalesce(landing_date = $landing_date::date, false) as landing_date_matches,
    coalesce(quantity = round(quantity, 6), true) as amounts_6dp,
    coalesce(quantity >= 0, true) as quantity_not_negative,
    coalesce(usage_end >= usage_start, true) as usage_end_not_before_start,
    coalesce(
        usage_start::timestamptz >= $starts_at::timestamptz
        and usage_start::timestamptz < $ends_at::timestamptz,
        true
    ) as usage_start_in_window
from records
