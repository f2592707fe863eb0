-- The accepted payments of one landing date with the boolean rules that expectations/feeds.py checks
-- (landing_date_matches, amounts_6dp and FEED_FLAGS["payments"]), computed exactly in DuckDB.
-- Parameters: $feed_view (the records: blank ids as NULL, amounts as DECIMAL, see
-- pipelines/quality.py), $landing_date, $first_day and $last_day (the window of record
-- dates, Beijing dates, both included).
with

records as (
    select * from query_table($feed_view)
),

-- the window's bounds as instants, computed once: a timestamp is in the window when its
-- Beijing date is, without converting every row to Beijing time
window_bounds as (
    select
        timezone('Asia/Shanghai', cast(cast($first_day as date) as timestamp)) as starts_at,
        timezone('Asia/Shanghai', cast(cast($last_day as date) + 1 as timestamp)) as ends_at
)

select
    records.*,
    coalesce(records.landing_date = cast($landing_date as date), false) as landing_date_matches,
    coalesce(amount = round(amount, 6), true) as amounts_6dp,
    coalesce(amount > 0, true) as amount_positive,
    coalesce(
        cast(paid_at as timestamptz) >= window_bounds.starts_at
        and cast(paid_at as timestamptz) < window_bounds.ends_at,
        true
    ) as paid_at_in_window
from records
cross join window_bounds
