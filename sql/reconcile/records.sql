-- The accepted records billed in $month, as the close reads them (from the temp views
-- <feed>_m over the month's landing window): one row per record, with its bill component.

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
