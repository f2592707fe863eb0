-- The current version of each partner's bill of the month (what sql/bill_lines.sql reads).

select
    partner_id,
    version
from rc_bills
where status = 'closed'
