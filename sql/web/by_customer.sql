-- By Customer in one pass: the Total Amount area, the count of customers shown and one page
-- of them ($row_limit rows from $row_offset; zero customers shown when $show_zero). A row
-- without a customer id is the partner's own expenditure (partner_level).

with customers as (
    select
        *,
        row_number() over (
            order by total_amount desc, customer_id asc nulls last
        ) as pos,
        nullif(customer_id, '') is null as partner_level
    from expenditure_by_customer
    where partner_id = $partner_id and bill_month = $month
),

summary as (
    select
        count(*) as customers,
        count(*) filter (where total_amount = 0) as zero,
        coalesce(sum(total_amount), 0) as sum_total,
        coalesce(sum(consume_amount), 0) as sum_consume,
        any_value(currency) as sum_currency,
        count(*) filter (where $show_zero or total_amount <> 0) as shown
    from customers
),

-- the Total Amount area shows the bill's own figures: the customers' rows are each rounded to
-- the cent and may sum to a few cents more or less
bill as (
    select
        consume_amount as bill_consume,
        consume_amount - refunds + adjustments as bill_total
    from bills
    where partner_id = $partner_id and bill_month = $month and status = 'closed'
),

page as (
    select * from customers
    where $show_zero or total_amount <> 0
    order by pos asc
    limit $row_limit offset $row_offset
)

select
    summary.*,
    bill.*,
    page.*
from summary
left join bill on true
left join page on true
order by page.pos asc
