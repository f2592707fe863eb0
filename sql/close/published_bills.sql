-- A restatement's partition as it will be published: every published version ($bills), the
-- changed partners' closed bill now superseded, and their new versions.

select
    * replace (
        case
            when status = 'closed' and partner_id in (select c.partner_id from changed as c)
                then 'superseded'
            else status
        end as status
    )
from read_parquet($bills, hive_partitioning = false)
union all by name
select * from staged_bills
order by version, partner_id
