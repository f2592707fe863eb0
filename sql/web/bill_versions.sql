-- Every version of a partner's bill of a month, newest first.

select * from bills
where partner_id = $partner_id and bill_month = $month
order by version desc
