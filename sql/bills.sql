-- One bill per partner of the month (zero bills included) from its staged bill lines, at the
-- version bill_partners gives it (1, or n+1 when a restatement changes the partner's bill).
-- Each component is round2 (half away from zero) of the exact sum of its lines, so the
-- published components add up to bill_amount to the cent.
with

components as (
    select
        partner_id,
        round(coalesce(sum(amount) filter (where component = 'consume'), 0), 2) as consume_amount,
        round(-coalesce(sum(amount) filter (where component = 'refund'), 0), 2) as refunds,
        round(coalesce(sum(amount) filter (where component = 'adjustment'), 0), 2) as adjustments,
        round(coalesce(sum(amount) filter (where component = 'coupon'), 0), 2) as coupon_total,
        count(*) as line_count
    from staged_lines
    group by partner_id
),

netted as (
    select
        bp.partner_id,
        bp.partner_name,
        bp.currency,
        bp.tax_rate,
        bp.version,
        bp.supersedes_invoice_no,
        coalesce(c.consume_amount, 0) as consume_amount,
        coalesce(c.refunds, 0) as refunds,
        coalesce(c.adjustments, 0) as adjustments,
        coalesce(c.coupon_total, 0) as coupon_total,
        coalesce(c.line_count, 0) as line_count,
        coalesce(c.consume_amount, 0) - coalesce(c.refunds, 0)
        + coalesce(c.adjustments, 0) as net
    from bill_partners as bp
    left join components as c on bp.partner_id = c.partner_id
),

couponed as (
    select
        *,
        least(coupon_total, greatest(net, 0)) as coupon_amount
    from netted
),

taxed as (
    select
        *,
        round(greatest(net - coupon_amount, 0) * tax_rate, 2) as tax_amount
    from couponed
),

final as (
    select
        *,
        net - coupon_amount + tax_amount as bill_amount
    from taxed
)

select
    partner_id,
    partner_name,
    $month as bill_month,
    version::integer as version,
    currency,
    consume_amount::decimal(38, 2) as consume_amount,
    refunds::decimal(38, 2) as refunds,
    adjustments::decimal(38, 2) as adjustments,
    coupon_total::decimal(38, 2) as coupon_total,
    coupon_amount::decimal(38, 2) as coupon_amount,
    tax_rate::decimal(9, 6) as tax_rate,
    tax_amount::decimal(38, 2) as tax_amount,
    bill_amount::decimal(38, 2) as bill_amount,
    greatest(bill_amount, 0)::decimal(38, 2) as amount_due,
    case
        when bill_amount > 0
            then
                'INV-' || partner_id || '-' || replace($month, '-', '')
                || case when version > 1 then '-V' || version else '' end
    end as invoice_no,
    'closed' as status,
    $closed_at::timestamptz as closed_at,
    $cutoff::date as cutoff_date,
    $forced::boolean as forced,
    $missing::varchar as missing_dates,
    line_count::bigint as line_count,
    supersedes_invoice_no::varchar as supersedes_invoice_no
from final
order by partner_id
