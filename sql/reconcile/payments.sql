-- Every payment paid on or before $as_of ($payments: the lake's payment files).

select
    record_id,
    partner_id,
    amount,
    currency,
    paid_at,
    paid_date,
    reference,
    landing_date
from read_parquet($payments, union_by_name = true, hive_partitioning = false)
where paid_date <= $as_of::date
