-- Every partner with a bill or an estimate (finance's partner picker).

with named as (
    select
        partner_id,
        partner_name
    from bills
    union all
    select
        partner_id,
        partner_name
    from estimates
)

select
    partner_id,
    max(partner_name) as partner_name
from named
group by partner_id
order by partner_id asc
