-- The accepted orders of one landing date with the boolean rules that
-- expectations/feeds.py checks (landing_date_matches, amounts_6dp and FEED_FLAGS["orders"]),
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
        event_time::timestamptz >= $starts_at::timestamptz
        and event_time::timestamptz < $ends_at::timestamptz,
        true
    ) as event_time_in_window
from records
