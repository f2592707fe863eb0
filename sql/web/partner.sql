-- One partner ($partner_id): its name and currency, from its bills or its estimates.

with named as (
    select
        partner_id,
        partner_name,
        currency
    from bills
    where partner_id = $partner_id
    union all
    select
        partner_id,
        partner_name,
        currency
    from estimates
    where partner_id = $partner_id
)

select
    partner_id,
    max(partner_name) as partner_name,
    max(currency) as currency
from named
group by partner_id
