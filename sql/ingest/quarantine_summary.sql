-- How many rows of a reference feed were quarantined, and the most frequent reason.
-- Template: resolved is its resolved rows.

select
    count(*) as quarantined,
    mode(_why) as top_reason
from {{ resolved }}
where _status = 'quarantine'
