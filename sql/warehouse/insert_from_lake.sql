-- Load lake files ($files, glob-escaped) into a warehouse table, matching columns by name: a
-- column the files do not have (written before it existed) is NULL, so older lakes load.
-- Template: table, columns (the table's columns) and select (each column, or a typed NULL)
-- come from pipelines.schema.

insert into {{ table }} ({{ columns }})
select {{ select }}
from read_parquet($files, hive_partitioning = false, union_by_name = true)
