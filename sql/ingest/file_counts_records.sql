-- A record feed's rows per landing file: accepted (counted in the file written), quarantined
-- and duplicates. Template: out is the feed's written rows (out_<feed>).

with counted as (
    select
        _file,
        count(*) as a,
        0 as q,
        0 as dup
    from {{ out }}
    group by _file
    union all
    select
        _file,
        0 as a,
        count(*) as q,
        0 as dup
    from rejected
    group by _file
    union all
    select
        _file,
        0 as a,
        count(*) filter (where _status = 'quarantine') as q,
        count(*) filter (where _status = 'duplicate') as dup
    from duplicates
    group by _file
)

select
    _file,
    sum(a) as accepted,
    sum(q) as quarantined,
    sum(dup) as duplicates
from counted
group by _file
