-- One page of a customer's lines of the current (closed) bill, $row_limit rows from
-- $row_offset, ordered by column $sort_by (a value of data.LINE_SORTS: any other orders by
-- nothing but the line number), descending when $sort_desc, nulls last, then by line number.

with current_version as (
    select max(version) as version
    from bills
    where partner_id = $partner_id and bill_month = $month and status = 'closed'
),

lines as (
    select
        l.*,
        case $sort_by
            when 'product_name' then l.product_name
            when 'region' then l.region
            when 'charge_type' then l.charge_type
            when 'sku_code' then l.sku_code
            when 'source_month' then l.source_month
        end as sort_text,
        case $sort_by
            when 'line_no' then l.line_no::decimal(38, 6)
            when 'quantity' then l.quantity
            when 'amount' then l.amount
        end as sort_number
    from bill_lines as l
    inner join current_version as v on l.version = v.version
    where
        l.partner_id = $partner_id
        and l.bill_month = $month
        and l.customer_id = $customer_id
)

select * exclude (sort_text, sort_number) from lines
order by
    case when not $sort_desc then sort_text end asc nulls last,
    case when $sort_desc then sort_text end desc nulls last,
    case when not $sort_desc then sort_number end asc nulls last,
    case when $sort_desc then sort_number end desc nulls last,
    line_no asc
limit $row_limit offset $row_offset
