-- The invoice PDFs exported for a bill version, newest first.

select * from export_history
where
    partner_id = $partner_id
    and bill_month = $month
    and version = $version
    and format = 'pdf'
order by created_at desc
