-- The price in force for each distinct (partner, sku, unit, usage_start) of the day's usage,
-- found with one ASOF join on the price timeline.
--
-- A day of metered usage has millions of rows but few distinct keys (hourly records of a few
-- thousand SKUs), so the rows themselves are then rated with a plain equi-join on these keys
-- instead of an ASOF join that sorts every row; one row per key.

with usage_keys as (
    select distinct
        partner_id,
        sku_code,
        unit,
        usage_start
    from typ_usage
)

select
    k.partner_id as k_partner_id,
    k.sku_code as k_sku_code,
    k.unit as k_unit,
    k.usage_start as k_usage_start,
    p.unit_price,
    p.effective_from as price_from,
    strftime((k.usage_start::timestamp + interval 8 hour)::date, '%Y-%m')
        as source_month
from usage_keys as k
inner join snapshot as s on k.partner_id = s.partner_id
asof left join price_timeline as p
    on
        k.sku_code = p.sku_code
        and k.unit = p.unit
        and s.currency = p.currency
        and k.usage_start >= p.effective_from
where k.sku_code is not null and k.unit is not null and k.usage_start is not null
