-- Every current bill with an amount due, of every month: the invoices payments settle.

select
    partner_id,
    bill_month,
    version,
    invoice_no,
    currency,
    amount_due
from read_parquet($bills, union_by_name = true, hive_partitioning = false)
where status = 'closed' and amount_due > 0
