-- The page's "By Customer" tab: per customer of the current bills, its expenditures, refunds,
-- adjustments and total. "View More" is bill_lines filtered on the customer.
with

current_lines as (
    select * from _current_bill_lines
    where component <> 'coupon'
),

sums as (
    select
        partner_id,
        bill_month,
        customer_id,
        any_value(customer_name) as customer_name,
        any_value(currency) as currency,
        round(coalesce(sum(amount) filter (where component = 'consume'), 0), 2) as consume_amount,
        round(-coalesce(sum(amount) filter (where component = 'refund'), 0), 2) as refunds,
        round(coalesce(sum(amount) filter (where component = 'adjustment'), 0), 2) as adjustments
    from current_lines
    group by partner_id, bill_month, customer_id
)

select
    partner_id,
    bill_month,
    customer_id,
    customer_name,
    currency,
    consume_amount::decimal(38, 2) as consume_amount,
    refunds::decimal(38, 2) as refunds,
    adjustments::decimal(38, 2) as adjustments,
    (consume_amount - refunds + adjustments)::decimal(38, 2) as total_amount
from sums
order by partner_id asc, bill_month asc, total_amount desc, customer_id asc
