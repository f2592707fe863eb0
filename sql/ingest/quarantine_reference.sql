-- A reference feed's (partners, prices) quarantined rows.
-- Template: resolved is the feed's resolved rows; record_id the column that names
-- a row (partner_id, sku_code) as text; blank_rid true when it is blank;
-- typed_json the typed record as JSON.

insert into quarantine_rows
select
    cast($feed as varchar) as feed,
    getvariable('koobill_landing_date') as landing_date,
    _file,
    _row,
    case when not {{ blank_rid }} then {{ record_id }} end as record_id,
    _why_codes,
    _why,
    coalesce(_raw, {{ typed_json }}) as raw
from {{ resolved }}
where _status = 'quarantine'
