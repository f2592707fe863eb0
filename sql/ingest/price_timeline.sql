-- Prices may overlap (a dated promotion over an open-ended list price): at each point in time
-- the price in force with the latest effective_from applies. One row per change point lets
-- usage find it with a single ASOF join; a null unit_price is a gap with no price.

with change_points as (
    select
        sku_code,
        unit,
        currency,
        effective_from as at
    from price_list
    union
    select
        sku_code,
        unit,
        currency,
        effective_to
    from price_list
    where effective_to is not null
)

select
    b.sku_code,
    b.unit,
    b.currency,
    b.at as effective_from,
    arg_max(p.unit_price, p.effective_from) as unit_price
from change_points as b
left join price_list as p
    on
        b.sku_code = p.sku_code
        and b.unit = p.unit
        and b.currency = p.currency
        and b.at >= p.effective_from
        and (p.effective_to is null or b.at < p.effective_to)
group by all
