-- The date's late records: billed in a month after their own.

select coalesce(sum(n), 0)
from (
    select count(*) as n from out_orders
    where late
    union all
    select count(*) as n from out_usage
    where late
) as counts
