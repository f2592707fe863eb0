-- Every version of the month's bills ($bills: the month's published bills file).

select * from read_parquet($bills, hive_partitioning = false)
order by partner_id asc, version asc
