-- By Product: the products of a partner's month, in one region ($region) or in every region
-- ($region null), largest first.

select
    product_id,
    any_value(product_name) as product_name,
    string_agg(distinct region, ', ' order by region) as regions,
    any_value(currency) as currency,
    sum(consume_amount) as consume_amount
from expenditure_by_product
where
    partner_id = $partner_id
    and bill_month = $month
    and product_id <> 'OTHERS'
    and ($region is null or region = $region)
group by product_id
order by consume_amount desc, product_id asc
