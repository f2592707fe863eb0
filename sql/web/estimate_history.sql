-- Every estimate of a partner's month, oldest first (the estimate's chart).

select
    as_of_date,
    estimate_amount,
    currency
from estimates
where partner_id = $partner_id and bill_month = $month
order by as_of_date asc
