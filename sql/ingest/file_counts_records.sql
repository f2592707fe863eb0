-- A record feed's rows per landing file: accepted (counted in the file written), quarantined
-- and duplicates. Template: out is the feed's written rows (out_<feed>).

with counted as (
    select _file, count(*) as a, 0 as q, 0 as dup from {{ out }} group by _file
    union all
    select _file, 0, count(*), 0 from rejected group by _file
    union all
    select
        _file,
        0,
        count(*) filter (where _status = 'quarantine'),
        count(*) filter (where _status = 'duplicate')
    from duplicates
    group by _file
)

select _file, sum(a), sum(q), sum(dup)
from counted
group by _file
