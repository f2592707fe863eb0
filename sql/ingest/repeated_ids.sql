-- The record_ids whose status needs deciding: repeated within the day, or seen earlier.
-- Template: staged is the feed's typed table.

select record_id from {{ staged }}
where _type_reason is null
group by record_id
having count(*) > 1
union
select record_id from history
