-- Every partner with a current bill of any month, once per currency its bills are in: a
-- payment of one of them that settles nothing is a credit balance.

select distinct
    partner_id,
    currency
from read_parquet($bills, union_by_name = true, hive_partitioning = false)
where status = 'closed'
