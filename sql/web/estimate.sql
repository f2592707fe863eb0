-- The latest estimate of a partner's open month.

select * from estimates
where partner_id = $partner_id and bill_month = $month
order by as_of_date desc
limit 1
