-- The price list in force for the landing date: for each key the latest landed row wins.

with all_prices as (
    select
        sku_code,
        unit,
        unit_price,
        currency,
        effective_from,
        effective_to,
        landing_date,
        _file,
        _row
    from prev_prices
    union all
    select
        sku_code,
        unit,
        unit_price,
        currency,
        effective_from,
        effective_to,
        getvariable('koobill_landing_date') as landing_date,
        _file,
        _row
    from prices_accepted
),

ranked as (
    select
        *,
        row_number() over (
            partition by sku_code, unit, currency, effective_from
            order by landing_date desc, _file desc, _row desc
        ) as rn
    from all_prices
)

select * exclude (rn)
from ranked
where rn = 1
