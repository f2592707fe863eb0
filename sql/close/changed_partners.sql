-- The partners whose staged bill differs from their current published bill ($bills, $lines):
-- a component or a line, a new bill, or a partner no longer billed.
--
-- Template: bill_columns / published_columns are the compared bill columns (close._COMPARED)
-- of the staged (s) and the published (o) bill; line_columns every line column but version.

with published_bills as (
    select * from read_parquet($bills, hive_partitioning = false)
    where status = 'closed'
),

published_lines as (
    select l.*
    from read_parquet($lines, hive_partitioning = false) as l
    inner join published_bills as b
        on l.partner_id = b.partner_id and l.version = b.version
),

bill_diff as (
    select coalesce(s.partner_id, o.partner_id) as partner_id
    from staged_bills as s
    full join published_bills as o on s.partner_id = o.partner_id
    where
        s.partner_id is null
        or o.partner_id is null
        or row({{ bill_columns }}) is distinct from row({{ published_columns }})
),

line_diff as (
    (
        select {{ line_columns }} from staged_lines
        except all
        select {{ line_columns }} from published_lines
    )
    union all
    (
        select {{ line_columns }} from published_lines
        except all
        select {{ line_columns }} from staged_lines
    )
)

select partner_id from bill_diff
union
select partner_id from line_diff
order by partner_id
