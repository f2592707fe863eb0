-- The rows of the view expenditure_by_customer for the partners an export writes, in the view's
-- own order (sql/expenditure_by_customer.sql).
select *
from expenditure_by_customer
where bill_month = $month and partner_id = any($partner_ids::varchar[])
order by partner_id asc, bill_month asc, total_amount desc, customer_id asc
