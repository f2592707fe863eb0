-- The earlier landing dates' accepted rows whose record_id is among today's valid ids: the
-- only part of the history a duplicate can be found in.
--
-- The literal range ($lo, $hi: the day's smallest and largest id) lets the Parquet reader skip
-- every row group of the history whose record_id statistics lie outside it: with
-- time-ordered ids (the usual case) the lookup reads only the recent, overlapping part.
-- Template: staged is the feed's typed table; content_hash the md5 of its typed
-- columns (the history stores the typed values, so the same expression applies).

insert into history
select
    record_id,
    {{ content_hash }} as _hash,
    landing_date
from read_parquet($files, hive_partitioning = false)
where
    record_id between $lo and $hi
    and record_id in (
        select s.record_id from {{ staged }} as s
        where s._type_reason is null
    )
