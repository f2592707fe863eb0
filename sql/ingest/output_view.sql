-- out_<feed>: the rows just written to the version folder, for the counts, the totals and the
-- quality gate. The file is the session variable variable (set from a bound parameter:
-- a view's definition cannot take one). Template: view, variable are names made
-- from the feed's name.

create or replace temp view {{ view }} as
select * from read_parquet(getvariable('{{ variable }}'), hive_partitioning = false)
