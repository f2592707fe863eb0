-- Each billed partner with the version its new bill would have: one more than its latest
-- published version in $bills (1 for a partner never billed), with that version's invoice
-- number (the invoice a restated bill supersedes).

with latest as (
    select
        partner_id,
        max(version) as version,
        arg_max(invoice_no, version) as invoice_no
    from read_parquet($bills, hive_partitioning = false)
    group by partner_id
)

select
    bp.*,
    (coalesce(l.version, 0) + 1)::integer as version,
    l.invoice_no::varchar as supersedes_invoice_no
from bill_partners as bp
left join latest as l on bp.partner_id = l.partner_id
order by bp.partner_id
