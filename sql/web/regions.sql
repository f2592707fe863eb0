-- The regions of a partner's month (By Product's region picker); a blank region is none.

select distinct region from expenditure_by_product
where
    partner_id = $partner_id
    and bill_month = $month
    and product_id <> 'OTHERS'
    and nullif(region, '') is not null
order by region asc
