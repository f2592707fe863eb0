-- A record feed's five most frequent quarantine reasons.

with reasons as (
    select _reason as why from rejected
    union all
    select _why from duplicates
    where _status = 'quarantine'
)

select
    why,
    count(*) as n
from reasons
group by 1
order by 2 desc, 1
limit 5
