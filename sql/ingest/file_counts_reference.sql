-- A reference feed's rows per landing file. Template: resolved is its resolved rows.

select
    _file,
    count(*) filter (where _status = 'accept') as accepted,
    count(*) filter (where _status = 'quarantine') as quarantined,
    count(*) filter (where _status = 'duplicate') as duplicates
from {{ resolved }}
group by _file
