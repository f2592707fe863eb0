-- The date's totals of the billed feeds per partner, bill month and currency ($path: the
-- version folder's totals.parquet); the estimates add them up over the open months.

copy (
    with lines as (
        select
            partner_id,
            bill_month_assigned as bill_month,
            currency,
            case when amount > 0 then amount else 0 end as consume,
            case when amount < 0 then -amount else 0 end as refunds,
            0::decimal(38, 6) as adjustments,
            0::decimal(38, 6) as coupons
        from out_orders
        union all
        select
            partner_id,
            bill_month_assigned as bill_month,
            currency,
            amount as consume,
            0 as refunds,
            0 as adjustments,
            0 as coupons
        from out_usage
        union all
        select
            partner_id,
            bill_month_assigned as bill_month,
            currency,
            0 as consume,
            0 as refunds,
            amount as adjustments,
            0 as coupons
        from out_adjustments
        union all
        select
            partner_id,
            bill_month_assigned as bill_month,
            currency,
            0 as consume,
            0 as refunds,
            0 as adjustments,
            amount as coupons
        from out_coupons
    )

    select
        getvariable('koobill_landing_date') as landing_date,
        partner_id,
        bill_month,
        currency,
        sum(consume)::decimal(38, 6) as consume,
        sum(refunds)::decimal(38, 6) as refunds,
        sum(adjustments)::decimal(38, 6) as adjustments,
        sum(coupons)::decimal(38, 6) as coupons,
        count(*) as records
    from lines
    group by all
    order by all
) to $path (format parquet)
