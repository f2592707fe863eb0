-- Prices: every checked row with its status. A row identical to one landed earlier (or
-- earlier this date) is a duplicate.
--
-- Template: content_hash is the md5 of the feed's typed columns (rules.content_hash).

with hashed as (
    select
        *,
        {{ content_hash }} as _hash
    from prices_checked
),

ranked as (
    select
        *,
        row_number() over (partition by _hash, _reason is null order by _file, _row) as _k
    from hashed
)

select
    *,
    case
        when _reason is not null then 'quarantine'
        when
            _k > 1 or exists (
                select 1 from prev_prices as pp
                where pp._hash = ranked._hash
            )
            then 'duplicate'
        else 'accept'
    end as _status,
    _reason as _why,
    _reason_codes as _why_codes
from ranked
