-- Amount due per current closed bill, as of the latest landing date ingested: the partner's
-- payments paid on or before that date settle its bills oldest first (spec section 5).
-- `set variable koobill_as_of = date '2026-12-31'` in a session to see it as of another date.
with

as_of as (
    select coalesce(
        cast(getvariable('koobill_as_of') as date),
        (select cast(value as date) from _meta where key = 'latest_landing_date'),
        current_date
    ) as as_of_date
),

closed_bills as (
    select
        b.partner_id,
        b.bill_month,
        b.version,
        b.currency,
        b.invoice_no,
        b.amount_due
    from bills as b, as_of as a
    where
        b.status = 'closed'
        and (b.bill_month || '-05')::date + interval 1 month <= a.as_of_date
),

paid as (
    select
        p.partner_id,
        sum(p.amount) as paid_total
    from payments as p, as_of as a
    where p.paid_date <= a.as_of_date
    group by p.partner_id
),

ordered as (
    select
        *,
        coalesce(sum(amount_due) over (
            partition by partner_id order by bill_month
            rows between unbounded preceding and 1 preceding
        ), 0) as older_due
    from closed_bills
)

select
    o.partner_id,
    o.bill_month,
    o.version,
    o.currency,
    o.invoice_no,
    o.amount_due,
    least(o.amount_due, greatest(0, coalesce(p.paid_total, 0) - o.older_due))::decimal(38, 6)
        as paid_amount,
    (o.amount_due - least(o.amount_due, greatest(0, coalesce(p.paid_total, 0) - o.older_due)))
    ::decimal(38, 6) as unpaid_amount,
    a.as_of_date
from ordered as o
cross join as_of as a
left join paid as p on o.partner_id = p.partner_id
order by o.partner_id, o.bill_month
