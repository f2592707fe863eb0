-- Amount due per current published bill as of a date D (spec section 5): the partner's
-- payments paid on or before D (Beijing date of paid_at) settle its bills oldest first.
--
-- D is the session variable koobill_as_of when set (`set variable koobill_as_of =
-- date '2026-12-06'`), else "now": the later of today's Beijing date and the latest landing
-- date ingested, so that every published bill and every landed payment counts.
--
-- A bill counts from its publication: the Beijing date of the first close of that partner's
-- month (the closed_at of version 1; a restatement corrects a bill that was already due, it
-- does not make it due again later), or the 5th of M+1 if that is earlier, since a bill of M
-- is published on the 5th by the calendar and a close replayed or backfilled later (Airflow
-- catchup, a rebuild) must not move the date it became due. The amounts are those of the
-- current version.
with

as_of as (
    select coalesce(
        getvariable('koobill_as_of')::date,
        greatest(
            timezone('Asia/Shanghai', now())::date,
            (
                select value::date
                from _meta
                where key = 'latest_landing_date'
            )
        )
    ) as as_of_date
),

first_published as (
    select
        partner_id,
        bill_month,
        least(
            timezone('Asia/Shanghai', min(closed_at))::date,
            ((bill_month || '-05')::date + interval 1 month)::date
        ) as published_on
    from bills
    group by partner_id, bill_month
),

published_bills as (
    select
        b.partner_id,
        b.bill_month,
        b.version,
        b.currency,
        b.invoice_no,
        b.amount_due,
        f.published_on
    from bills as b
    inner join first_published as f
        on b.partner_id = f.partner_id and b.bill_month = f.bill_month
    cross join as_of as a
    where
        b.status = 'closed'
        and f.published_on <= a.as_of_date
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
    from published_bills
),

settled as (
    select
        o.*,
        -- published money: round2 of the exact settlement; unpaid is the rest of the bill, so
        -- paid_amount + unpaid_amount = amount_due to the cent
        round(
            least(o.amount_due, greatest(0, coalesce(p.paid_total, 0) - o.older_due)), 2
        )::decimal(38, 2) as paid_amount
    from ordered as o
    left join paid as p on o.partner_id = p.partner_id
)

select
    s.partner_id,
    s.bill_month,
    s.version,
    s.currency,
    s.invoice_no,
    s.amount_due::decimal(38, 2) as amount_due,
    s.paid_amount,
    (s.amount_due - s.paid_amount)::decimal(38, 2) as unpaid_amount,
    s.published_on,
    a.as_of_date
from settled as s
cross join as_of as a
order by s.partner_id, s.bill_month
