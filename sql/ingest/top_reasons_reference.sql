-- A reference feed's five most frequent quarantine reasons. Template: resolved is its
-- resolved rows.

select
    _why,
    count(*) as n
from {{ resolved }}
where _status = 'quarantine'
group by 1
order by 2 desc, 1
limit 5
