-- A restatement's lines as they will be published: every published version's ($lines) and the
-- changed partners' new ones.

select * from read_parquet($lines, hive_partitioning = false)
union all by name
select * from staged_lines
order by version, partner_id, line_no
