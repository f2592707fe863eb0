-- The accepted orders of one landing date with the boolean rules that expectations/feeds.py checks
-- (landing_date_matches, amounts_6dp and FEED_FLAGS["orders"]), computed exactly in DuckDB.
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
    coalesce(official_amount = round(official_amount, 6), true)
    and coalesce(discount_amount = round(discount_amount, 6), true)
    and coalesce(amount = round(amount, 6), true) as amounts_6dp,
    coalesce(
        amount = official_amount - discount_amount,
        amount is null or official_amount is null or discount_amount is null
    ) as amount_is_official_minus_discount,
    not coalesce(
        (order_type in ('NEW', 'RENEW', 'AUTO_RENEW') and amount < 0)
        or (order_type = 'UNSUBSCRIBE' and amount > 0),
        false
    ) as amount_sign_ok,
    coalesce(
        cast(event_time as timestamptz) >= window_bounds.starts_at
        and cast(event_time as timestamptz) < window_bounds.ends_at,
        true
    ) as event_time_in_window
from records
cross join window_bounds
