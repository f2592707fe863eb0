-- The invoice number of every bill version of every month ($bills: every month's bills file).

select
    partner_id,
    bill_month,
    version,
    invoice_no
from read_parquet($bills, union_by_name = true, hive_partitioning = false)
