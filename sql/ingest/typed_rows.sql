-- Typing: the staged records of one feed as typed columns, with every typing rule applied as
-- the records are read (so a day is held once, typed, and the text of a valid row is never
-- stored).
--
-- Template (pipelines.db.render), filled by pipelines.rules.typed_rows from config.FEEDS:
--   staged        the staging-shaped rows (a subquery from pipelines.readers)
--   typed_select  each column typed, and its raw text as "_s_<column>"
--   columns       the feed's typed column names
--   type_guard    true on a row none of whose typing rules can fail (the fast path)
--   type_reasons  the reason text of every broken typing rule, joined with "; "
--   type_codes    their reason codes, one per broken rule (schema.REASON_CODES)
--   raw_json      the record's raw text as JSON, kept only for a row that failed
-- Every placeholder is an identifier list or a predicate; the file has no value.

with typed as (
    select {{ typed_select }}
    from ({{ staged }})
),

reasoned as (
    select
        t.*,
        -- a record that could not be parsed (ragged, broken JSON) gets its parse error alone,
        -- not one "is missing" per column on top of it
        coalesce(t._error, case when {{ type_guard }} then null else {{ type_reasons }} end)
            as _type_reason,
        case
            when t._error is not null then [t._error_code]
            when {{ type_guard }} then null
            else {{ type_codes }}
        end as _type_codes
    from typed as t
)

select
    _file,
    _row,
    {{ columns }},
    _type_reason,
    _type_codes,
    case when _type_reason is not null then coalesce(_raw, {{ raw_json }}) end as _raw
from reasoned
