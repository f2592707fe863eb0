-- A reference feed's rows per landing file. Template: resolved is its resolved rows.

select
    _file,
    count(*) filter (where _status = 'accept'),
    count(*) filter (where _status = 'quarantine'),
    count(*) filter (where _status = 'duplicate')
from {{ resolved }}
group by _file
