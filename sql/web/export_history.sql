-- One page of a partner's exports, newest first: of one month, or of every month ($month
-- null).

select * from export_history
where partner_id = $partner_id and ($month is null or bill_month = $month)
order by created_at desc, format asc
limit $row_limit offset $row_offset
