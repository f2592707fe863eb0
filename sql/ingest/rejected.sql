-- A record feed's rows that break a rule, kept for the quarantine and the counts (the valid
-- rows are written straight to the lake from the "checked" view).
-- Template: checked is the "checked" view, or for usage the same rules over the rows that may
-- break one (pipelines.ingest._usage_suspects).

select
    _file,
    _row,
    record_id::varchar as _rid,
    _reason,
    _reason_codes,
    _raw
from {{ checked }}
where _reason is not null
