-- How many rows of a reference feed were quarantined, and the most frequent reason.
-- Template: resolved is its resolved rows.

select count(*), mode(_why)
from {{ resolved }}
where _status = 'quarantine'
