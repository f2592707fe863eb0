-- Every line of every version of the month's bills ($lines: the month's bill lines file).

select * from read_parquet($lines, hive_partitioning = false)
