-- The partner snapshot of the latest earlier landing date that accepted partners (the file is
-- chosen by pipelines.ingest): used when the date brings no valid partner of its own.

insert into prev_partners
select
    partner_id,
    partner_name,
    currency,
    tax_rate,
    discount_rate
from read_parquet($files, hive_partitioning = false)
