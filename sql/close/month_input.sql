-- One feed's accepted records of the month's landing window, as the view <feed>_m the bill
-- lines read. The files are the session variable named by variable (set from a bound
-- parameter: a view's definition cannot take one). Template: view and variable are names
-- made from the feed's name.

create or replace temp view {{ view }} as
select *
from read_parquet(getvariable('{{ variable }}'), hive_partitioning = false, union_by_name = true)
