-- A record feed's quarantined rows: those that broke a rule, and the conflicting duplicates.
-- Template: blank_rid is true when the record_id is blank (rules.blank_sql).

insert into quarantine_rows
select
    cast($feed as varchar) as feed,
    getvariable('koobill_landing_date') as landing_date,
    _file,
    _row,
    case when not {{ blank_rid }} then _rid end as record_id,
    _reason_codes,
    _reason,
    _raw
from rejected
union all
select
    cast($feed as varchar) as feed,
    getvariable('koobill_landing_date') as landing_date,
    _file,
    _row,
    record_id::varchar as record_id,
    ['conflicting_duplicate'] as reason_codes,
    _why,
    _json
from duplicates
where _status = 'quarantine'
