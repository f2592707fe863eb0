-- The months of a partner ($partner_id), newest first: closed months (their current version)
-- and open months (their latest estimate).

with closed as (
    select
        bill_month,
        'closed' as kind,
        max(version) as version,
        null::date as as_of
    from bills
    where partner_id = $partner_id and status = 'closed'
    group by bill_month
),

open as (
    select
        bill_month,
        'open' as kind,
        null::integer as version,
        max(as_of_date) as as_of
    from estimates
    where
        partner_id = $partner_id
        and bill_month not in (select closed.bill_month from closed)
    group by bill_month
)

select * from closed
union all
select * from open
order by bill_month desc
