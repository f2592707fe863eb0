-- The estimate of every open month ($months) as of the landing date, for every partner of
-- the snapshot: the totals of the landing dates in the months' windows ($files), rounded per
-- component (no tax, no coupons).

with totals as (
    select
        partner_id,
        bill_month,
        sum(consume) as c,
        sum(refunds) as r,
        sum(adjustments) as a
    from read_parquet($files, hive_partitioning = false)
    where list_contains($months, bill_month)
    group by all
),

open_months as (
    select unnest($months) as bill_month
)

select
    s.partner_id,
    s.partner_name,
    m.bill_month,
    getvariable('koobill_landing_date') as as_of_date,
    s.currency,
    round(coalesce(t.c, 0), 2)::decimal(38, 2) as consume_amount,
    round(coalesce(t.r, 0), 2)::decimal(38, 2) as refunds,
    round(coalesce(t.a, 0), 2)::decimal(38, 2) as adjustments,
    (
        round(coalesce(t.c, 0), 2) - round(coalesce(t.r, 0), 2) + round(coalesce(t.a, 0), 2)
    )::decimal(38, 2) as estimate_amount
from snapshot as s
cross join open_months as m
left join totals as t on s.partner_id = t.partner_id and m.bill_month = t.bill_month
order by s.partner_id, m.bill_month
