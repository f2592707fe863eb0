-- Partners: every checked row with its status. A partner listed twice in one snapshot:
-- identical rows are duplicates, a different row is quarantined; the first stands.
--
-- Template: content_hash is the md5 of the feed's typed columns (rules.content_hash).

with hashed as (
    select
        *,
        {{ content_hash }} as _hash
    from partners_checked
),

ranked as (
    select
        *,
        row_number() over listing as _k,
        first_value(_hash) over listing as _first
    from hashed
    window listing as (partition by partner_id, _reason is null order by _file, _row)
),

conflicting as (
    select
        *,
        _reason is null and _k > 1 and _hash <> _first as _conflict
    from ranked
)

select
    * exclude (_conflict),
    case
        when _reason is not null then 'quarantine'
        when _k = 1 then 'accept'
        when _hash = _first then 'duplicate'
        else 'quarantine'
    end as _status,
    case
        when _conflict
            then
                'partner_id '
                || partner_id
                || ' is listed twice in the snapshot with different values'
        else _reason
    end as _why,
    case when _conflict then ['conflicting_duplicate'] else _reason_codes end as _why_codes
from conflicting
