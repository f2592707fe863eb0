-- The page's "By Product" tab: expenditures per product and region of the current bills;
-- refunds and adjustments are shown under product_id OTHERS (the "Others" area), whose region
-- is NULL.
with

current_lines as (
    select * from _current_bill_lines
),

products as (
    select
        partner_id,
        bill_month,
        product_id,
        any_value(product_name) as product_name,
        region,
        any_value(currency) as currency,
        round(sum(amount), 2)::decimal(38, 2) as consume_amount,
        0::decimal(38, 2) as refunds,
        0::decimal(38, 2) as adjustments
    from current_lines
    where component = 'consume'
    group by partner_id, bill_month, product_id, region
),

others as (
    select
        partner_id,
        bill_month,
        'OTHERS' as product_id,
        'Refunds and adjustments' as product_name,
        null::varchar as region,
        any_value(currency) as currency,
        0::decimal(38, 2) as consume_amount,
        round(-coalesce(sum(amount) filter (where component = 'refund'), 0), 2)::decimal(38, 2)
            as refunds,
        round(coalesce(sum(amount) filter (where component = 'adjustment'), 0), 2)
        ::decimal(38, 2) as adjustments
    from current_lines
    where component in ('refund', 'adjustment')
    group by partner_id, bill_month
),

unioned as (
    select * from products
    union all
    select * from others
)

-- ordered outside the union: DuckDB 1.x (which analysts' tools embed) cannot order a union by
-- an expression
select * from unioned
order by partner_id, bill_month, product_id = 'OTHERS', product_id, region
