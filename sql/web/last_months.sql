-- The expenditure of a partner's last $months_shown months, oldest first: the closed bill of a
-- month, else its latest estimate.

with closed as (
    select
        bill_month,
        consume_amount,
        bill_amount,
        'closed' as kind
    from bills
    where partner_id = $partner_id and status = 'closed'
),

estimated as (
    select
        bill_month,
        consume_amount,
        estimate_amount as bill_amount,
        'open' as kind
    from estimates
    where
        partner_id = $partner_id
        and bill_month not in (select closed.bill_month from closed)
    qualify row_number() over (partition by bill_month order by as_of_date desc) = 1
),

newest as (
    select * from closed
    union all
    select * from estimated
    order by bill_month desc
    limit $months_shown
)

select * from newest
order by bill_month asc
