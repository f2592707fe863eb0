-- A record feed's accepted rows: checked without a reason, and not a duplicate or a
-- conflicting one.
select *
from checked as c
where
    _reason is null
    and not exists (
        select 1 from duplicates as d
        where d._file = c._file and d._row = c._row and d._status <> 'accept'
    )
