-- The detail behind the bills of one month: the accepted records billed in $month (late ones
-- included), summed per line key. Reads the temp views orders_m, usage_m, adjustments_m and
-- coupons_m (the month's landing partitions) and bill_partners (with each partner's version).
-- An absent value (a coupon's customer, an adjustment's region, ...) is NULL, never ''.
with

orders_src as (
    select
        partner_id,
        case when amount < 0 then 'refund' else 'consume' end as component,
        order_type as charge_type,
        customer_id,
        customer_name,
        product_id,
        product_name,
        sku_code,
        region,
        source_month,
        late,
        null::varchar as description,
        currency,
        null::decimal(38, 6) as quantity,
        official_amount,
        discount_amount,
        amount,
        event_time as ts
    from orders_m
    where bill_month_assigned = $month
),

usage_src as (
    select
        partner_id,
        'consume' as component,
        'USAGE' as charge_type,
        customer_id,
        customer_name,
        product_id,
        product_name,
        sku_code,
        region,
        source_month,
        late,
        null::varchar as description,
        currency,
        quantity,
        official_amount,
        discount_amount,
        amount,
        usage_start as ts
    from usage_m
    where bill_month_assigned = $month
),

adjustments_src as (
    select
        partner_id,
        'adjustment' as component,
        'ADJUSTMENT' as charge_type,
        customer_id,
        null::varchar as customer_name,
        product_id,
        null::varchar as product_name,
        null::varchar as sku_code,
        null::varchar as region,
        source_month,
        late,
        reason as description,
        currency,
        null::decimal(38, 6) as quantity,
        amount as official_amount,
        0::decimal(38, 6) as discount_amount,
        amount,
        null::timestamptz as ts
    from adjustments_m
    where bill_month_assigned = $month
),

coupons_src as (
    select
        partner_id,
        'coupon' as component,
        'COUPON' as charge_type,
        null::varchar as customer_id,
        null::varchar as customer_name,
        null::varchar as product_id,
        null::varchar as product_name,
        null::varchar as sku_code,
        null::varchar as region,
        source_month,
        late,
        coupon_id as description,
        currency,
        null::decimal(38, 6) as quantity,
        amount as official_amount,
        0::decimal(38, 6) as discount_amount,
        amount,
        null::timestamptz as ts
    from coupons_m
    where bill_month_assigned = $month
),

records as (
    select * from orders_src
    union all
    select * from usage_src
    union all
    select * from adjustments_src
    union all
    select * from coupons_src
),

summed as materialized (
    select
        partner_id,
        component,
        charge_type,
        customer_id,
        product_id,
        sku_code,
        region,
        source_month,
        late,
        description,
        currency,
        sum(quantity)::decimal(38, 6) as quantity,
        sum(official_amount)::decimal(38, 6) as official_amount,
        sum(discount_amount)::decimal(38, 6) as discount_amount,
        sum(amount)::decimal(38, 6) as amount,
        count(*) as record_count,
        -- names: per line the greatest name and the latest time it was seen, so that the
        -- month's records are read once; the names of a customer and of a product are then
        -- those of their most recent line (ties broken by the name, so reruns agree)
        max(customer_name) as customer_name,
        max(ts) filter (where customer_name is not null) as customer_ts,
        max(product_name) as product_name,
        max(ts) filter (where product_name is not null) as product_ts
    from records
    group by all
),

customer_names as (
    select
        partner_id,
        customer_id,
        max((customer_ts, customer_name)) filter (where customer_name is not null)[2]
            as customer_name
    from summed
    group by all
),

product_names as (
    select
        partner_id,
        product_id,
        max((product_ts, product_name)) filter (where product_name is not null)[2]
            as product_name
    from summed
    group by all
)

select
    s.partner_id,
    $month as bill_month,
    bp.version::integer as version,
    row_number() over (
        partition by s.partner_id
        order by
            case s.component
                when 'consume' then 1 when 'refund' then 2 when 'adjustment' then 3 else 4
            end,
            s.charge_type,
            s.customer_id nulls first,
            s.product_id nulls first,
            s.sku_code nulls first,
            s.region nulls first,
            s.source_month,
            s.late,
            s.description nulls first
    )::integer as line_no,
    s.component,
    s.charge_type,
    s.customer_id,
    c.customer_name,
    s.product_id,
    p.product_name,
    s.sku_code,
    s.region,
    s.source_month,
    s.late,
    s.description,
    s.currency,
    s.quantity,
    s.official_amount,
    s.discount_amount,
    s.amount,
    s.record_count
from summed as s
inner join bill_partners as bp on s.partner_id = bp.partner_id
left join customer_names as c on s.partner_id = c.partner_id and s.customer_id = c.customer_id
left join product_names as p on s.partner_id = p.partner_id and s.product_id = p.product_id
order by s.partner_id, line_no
