-- The partner snapshot as of the landing date: the date's accepted partners if it has any,
-- else the latest earlier snapshot.

with accepted as (
    select
        partner_id,
        partner_name,
        currency,
        tax_rate,
        discount_rate
    from partners_accepted
)

select * from accepted
union all
select * from prev_partners
where not exists (select 1 from accepted)
