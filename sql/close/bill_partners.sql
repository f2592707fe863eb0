-- The partners billed in $month: the snapshot at the cutoff (the latest landed on or before
-- it, landed on $latest) plus any partner with records in the month; attributes from the
-- latest snapshot that lists the partner. $snapshots are the non-empty partner snapshots of
-- the landing dates through the cutoff.
--
-- Template: recipient is the optional recipient columns (legal_name, ...) or NULL for a
-- snapshot landed before they existed; recipient_names their names.

with all_snapshots as (
    select
        landing_date,
        partner_id,
        partner_name,
        currency,
        tax_rate,
        {{ recipient }}
    from read_parquet($snapshots, hive_partitioning = false, union_by_name = true)
),

latest as (
    select * exclude (rn)
    from (
        select
            *,
            row_number() over (partition by partner_id order by landing_date desc) as rn
        from all_snapshots
    ) as numbered
    where rn = 1
),

wanted as (
    select partner_id from all_snapshots
    where landing_date = $latest
    union
    select partner_id from orders_m
    where bill_month_assigned = $month
    union
    select partner_id from usage_m
    where bill_month_assigned = $month
    union
    select partner_id from adjustments_m
    where bill_month_assigned = $month
    union
    select partner_id from coupons_m
    where bill_month_assigned = $month
)

select
    l.partner_id,
    l.partner_name,
    l.currency,
    l.tax_rate,
    {{ recipient_names }}
from latest as l
inner join wanted as w on l.partner_id = w.partner_id
order by l.partner_id
