-- The status of every valid row whose record_id repeats within the date or was accepted on an
-- earlier date: the first row of an id is accepted, an identical copy is a duplicate, a
-- different one a conflicting duplicate (quarantined). Every other valid row is simply
-- accepted and never comes here.
--
-- Template: checked_repeated is checked_rows.sql over the rows of repeated ids only (the
-- rules run on the few, not the whole day); content_hash the md5 of the typed columns,
-- computed only for these rows; typed_json the typed record as JSON.

with candidates as (
    select
        _file,
        _row,
        record_id,
        {{ content_hash }} as _hash,
        {{ typed_json }} as _json
    from ({{ checked_repeated }}) as checked_repeated
    where _reason is null
),

ranked as (
    select
        c._file,
        c._row,
        c.record_id,
        c._hash,
        c._json,
        row_number() over by_id as _k,
        first_value(c._hash) over by_id as _first,
        first_value(c._file) over by_id as _ffile,
        first_value(c._row) over by_id as _frow
    from candidates as c
    window by_id as (partition by c.record_id order by c._file, c._row)
)

select
    v._file,
    v._row,
    v.record_id,
    v._json,
    case
        when h.record_id is not null and h._hash = v._hash then 'duplicate'
        when h.record_id is not null then 'quarantine'
        when v._k = 1 then 'accept'
        when v._hash = v._first then 'duplicate'
        else 'quarantine'
    end as _status,
    case
        when h.record_id is not null and h._hash <> v._hash
            then
                'conflicting duplicate: record_id ' || v.record_id
                || ' was accepted on ' || h.landing_date || ' with different content'
        when h.record_id is null and v._k > 1 and v._hash <> v._first
            then
                'conflicting duplicate: record_id ' || v.record_id
                || ' was accepted earlier this date (' || v._ffile || ' row ' || v._frow
                || ') with different content'
    end as _why
from ranked as v
left join history as h on v.record_id = h.record_id
