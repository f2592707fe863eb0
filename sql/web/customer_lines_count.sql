-- How many lines a customer has in the current (closed) bill.

with current_version as (
    select max(version) as version
    from bills
    where partner_id = $partner_id and bill_month = $month and status = 'closed'
)

select count(*) as lines from bill_lines as l
inner join current_version as v on l.version = v.version
where
    l.partner_id = $partner_id
    and l.bill_month = $month
    and l.customer_id = $customer_id
