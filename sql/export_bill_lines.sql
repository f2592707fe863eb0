-- The bill lines of the bill versions an export writes ($partner_ids[i] at version
-- $versions[i]), in file order.
with

exported as (
    select
        unnest($partner_ids::varchar[]) as partner_id,
        unnest($versions::integer[]) as version
)

select l.*
from bill_lines as l
inner join exported as e
    on l.partner_id = e.partner_id and l.version = e.version
where l.bill_month = $month
order by l.partner_id, l.version, l.line_no
