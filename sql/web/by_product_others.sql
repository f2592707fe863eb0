-- By Product: the Others row of a partner's month (refunds and adjustments).

select
    refunds,
    adjustments,
    currency
from expenditure_by_product
where partner_id = $partner_id and bill_month = $month and product_id = 'OTHERS'
