-- The month's inputs when a feed has no landing partition in the month's window: empty, typed
-- like the lake's files (orders_m, usage_m, adjustments_m and coupons_m are otherwise views
-- over the partitions, month_input.sql).

create temp table orders_none (
    partner_id varchar,
    amount decimal(38, 6),
    order_type varchar,
    customer_id varchar,
    customer_name varchar,
    product_id varchar,
    product_name varchar,
    sku_code varchar,
    region varchar,
    source_month varchar,
    late boolean,
    currency varchar,
    official_amount decimal(38, 6),
    discount_amount decimal(38, 6),
    event_time timestamptz,
    bill_month_assigned varchar
);

create temp table usage_none (
    partner_id varchar,
    customer_id varchar,
    customer_name varchar,
    product_id varchar,
    product_name varchar,
    sku_code varchar,
    region varchar,
    source_month varchar,
    late boolean,
    currency varchar,
    quantity decimal(38, 6),
    official_amount decimal(38, 6),
    discount_amount decimal(38, 6),
    amount decimal(38, 6),
    usage_start timestamptz,
    bill_month_assigned varchar
);

create temp table adjustments_none (
    partner_id varchar,
    customer_id varchar,
    product_id varchar,
    source_month varchar,
    late boolean,
    reason varchar,
    currency varchar,
    amount decimal(38, 6),
    bill_month_assigned varchar
);

create temp table coupons_none (
    partner_id varchar,
    source_month varchar,
    late boolean,
    coupon_id varchar,
    currency varchar,
    amount decimal(38, 6),
    bill_month_assigned varchar
);

create temp table bill_partners_none (
    partner_id varchar,
    partner_name varchar,
    currency varchar,
    tax_rate decimal(38, 6),
    legal_name varchar,
    address varchar,
    tax_id varchar,
    billing_email varchar
);
