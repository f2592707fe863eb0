-- Every price row accepted on an earlier landing date (the price list is rebuilt from them).

insert into prev_prices
select
    sku_code,
    unit,
    unit_price,
    currency,
    effective_from,
    effective_to,
    landing_date,
    _file,
    _row,
    _hash
from read_parquet($files, hive_partitioning = false)
