-- How many exports a partner has: of one month, or of every month ($month null).

select count(*) as exports from export_history
where partner_id = $partner_id and ($month is null or bill_month = $month)
