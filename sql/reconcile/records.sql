-- The accepted records billed in $month, as the close reads them (from the temp views
-- <feed>_m over the month's landing window), summed per partner, bill component, late flag
-- and landing file: amount (exact) and n, the records. Every reader of rc_records sums at
-- most this grain (a month has millions of records, a few thousand such groups).

with records as (
    select
        partner_id,
        case when amount < 0 then 'refund' else 'consume' end as component,
        amount,
        late,
        landing_date,
        'orders' as feed,
        _file
    from orders_m
    where bill_month_assigned = $month
    union all
    select
        partner_id,
        'consume' as component,
        amount,
        late,
        landing_date,
        'usage' as feed,
        _file
    from usage_m
    where bill_month_assigned = $month
    union all
    select
        partner_id,
        'adjustment' as component,
        amount,
        late,
        landing_date,
        'adjustments' as feed,
        _file
    from adjustments_m
    where bill_month_assigned = $month
    union all
    select
        partner_id,
        'coupon' as component,
        amount,
        late,
        landing_date,
        'coupons' as feed,
        _file
    from coupons_m
    where bill_month_assigned = $month
)

select
    partner_id,
    component,
    late,
    landing_date,
    feed,
    _file,
    sum(amount) as amount,
    count(*) as n
from records
group by all
