-- The daily estimates of the month for the partners an export writes, for the invoice's chart.
select
    partner_id,
    as_of_date,
    estimate_amount
from estimates
where
    bill_month = $month
    and estimate_amount is not null
    and partner_id = any($partner_ids::varchar[])
order by partner_id, as_of_date
