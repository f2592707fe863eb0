-- The estimate against a bill version, term by term.

select * from estimate_variance
where partner_id = $partner_id and bill_month = $month and version = $version
order by term_no asc
