-- A record feed's quarantined rows: those that broke a rule, and the conflicting duplicates.
-- Template: blank_rid is true when the record_id is blank (rules.blank_sql).

insert into quarantine_rows
select
    cast($feed as varchar),
    getvariable('koobill_landing_date'),
    _file,
    _row,
    case when not {{ blank_rid }} then _rid end,
    _reason_codes,
    _reason,
    _raw
from rejected
union all
select
    cast($feed as varchar),
    getvariable('koobill_landing_date'),
    _file,
    _row,
    cast(record_id as varchar),
    ['conflicting_duplicate'],
    _why,
    _json
from duplicates
where _status = 'quarantine'
