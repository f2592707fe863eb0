-- The record_ids whose status needs deciding: repeated within the day, or seen earlier.
-- Template: staged is the feed's typed table; key the record id's key (record_index.KEY_SQL).
-- repeated_keys holds the keys that repeat within the day (from the day's sorted keys), so
-- only their rows are grouped by id; a key shared by two ids is settled by the count.

select record_id from {{ staged }}
where
    _type_reason is null
    and {{ key }} in (select r.k from repeated_keys as r)
group by record_id
having count(*) > 1
union
select record_id from history
