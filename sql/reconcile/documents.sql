-- The invoice PDFs exported for the month's current bills (temp table rc_bills), each with
-- the SHA-256 that export_history ($history: its files) recorded last.

select
    h.partner_id,
    h.version,
    b.invoice_no,
    h.path,
    arg_max(h.sha256, h.created_at) as recorded
from read_parquet($history, union_by_name = true, hive_partitioning = false) as h
inner join rc_bills as b
    on
        h.partner_id = b.partner_id
        and h.version = b.version
        and b.status = 'closed'
where h.bill_month = $month and h.kind = 'summary' and h.format = 'pdf'
group by all
order by all
