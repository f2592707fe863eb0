-- Checking: the typed rows of one feed with every rule applied, including the rules that need
-- the partner snapshot or the price list: the typed columns, the snapshot and price columns,
-- "_reason" (the readable text of every broken rule) and, on a failing row, "_reason_codes"
-- (one stable code per broken rule) and "_raw" (the record as it was read).
--
-- Template (pipelines.db.render), filled by pipelines.ingest from config.FEEDS and the feed's
-- rules (pipelines.ingest.FEED_RULES):
--   typed        the typed rows (a staging subquery over typ_<feed>)
--   joins        the snapshot and price joins the feed's rules read
--   extra_select the columns those joins add (with a leading comma, or nothing)
--   extra_names  their names
--   columns      the feed's typed column names
--   feed_guard   true on a row that breaks none of the feed's rules (then the texts of
--                feed_reason are all NULL and are not built: the fast path of a valid row)
--   feed_reason  the reason text of every broken feed rule, joined with "; "
--   feed_codes   their reason codes
--   typed_json   the typed record as JSON (the raw text of a row typed without error)
-- Values (the landing date of the "from the future" rule) are session variables set from
-- bound parameters: this SELECT may define a view.

with checked as (
    select
        t.*{{ extra_select }},
        case
            when {{ feed_guard }} then nullif(t._type_reason, '')
            else nullif(concat_ws('; ', t._type_reason, {{ feed_reason }}), '')
        end as _reason,
        case
            when _reason is not null
                then list_concat(coalesce(t._type_codes, []::varchar[]), {{ feed_codes }})
        end as _reason_codes
    from {{ typed }} as t
    {{ joins }}
)

select
    _file,
    _row,
    {{ columns }}{{ extra_names }},
    _reason,
    case when _reason is not null then _reason_codes end as _reason_codes,
    case when _reason is not null then coalesce(_raw, {{ typed_json }}) end as _raw
from checked
