-- The rows of the view expenditure_by_product for the partners an export writes, in the view's
-- own order (sql/expenditure_by_product.sql).
select *
from expenditure_by_product
where bill_month = $month and partner_id = any($partner_ids::varchar[])
order by partner_id, bill_month, product_id = 'OTHERS', product_id, region
