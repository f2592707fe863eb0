-- The current (closed) bill of each partner in a published partition ($bills).

select * from read_parquet($bills, hive_partitioning = false)
where status = 'closed'
order by partner_id
