-- The reconciliation of one closed month $month (spec section 9): every link from the landed
-- rows to the invoices and the payments that settle them, one row per thing checked, with
-- expected, actual and the residual (expected - actual), which is zero or listed as such.
--
-- Reads temp tables staged by pipelines/reconcile.py:
--   rc_files      the ingest's per-file counts of the month's landing dates
--   rc_disk       the files lying in those landing folders (to find one never ingested)
--   rc_accepted   accepted rows per landing file, counted in the lake
--   rc_quarantine quarantined rows per landing file, counted in the lake
--   rc_records    the accepted records billed in $month, summed per partner, component,
--                 late flag and landing file (amount, n: the records)
--   rc_relines    the bill lines recomputed from those records (sql/bill_lines.sql)
--   rc_bills      every version of the month's bills; rc_lines their lines
--   rc_invoices   every current bill with an amount due, all months (settled oldest first)
--   rc_documents  the invoice PDFs exported for the month's current bills, with their sha256
--   rc_payments   every payment paid on or before $as_of
--   rc_billed     every partner with a current bill (any month), per currency
with

-- 1. landed rows = accepted + quarantined + duplicates, per landing file -----------------------
landed as (
    select
        coalesce(f.landing_date, d.landing_date) as landing_date,
        coalesce(f.feed, d.feed) as feed,
        coalesce(f.file, d.file) as file,
        f.rows_read,
        f.duplicates,
        f.accepted as files_accepted,
        f.quarantined as files_quarantined,
        coalesce(a.n, 0) as lake_accepted,
        coalesce(q.n, 0) as lake_quarantined
    from rc_files as f
    full join rc_disk as d
        on f.landing_date = d.landing_date and f.feed = d.feed and f.file = d.file
    left join rc_accepted as a
        on
            coalesce(f.landing_date, d.landing_date) = a.landing_date
            and coalesce(f.feed, d.feed) = a.feed
            and coalesce(f.file, d.file) = a.file
    left join rc_quarantine as q
        on
            coalesce(f.landing_date, d.landing_date) = q.landing_date
            and coalesce(f.feed, d.feed) = q.feed
            and coalesce(f.file, d.file) = q.file
),

landed_checks as (
    select
        1 as step,
        'landed_rows' as "check",
        null::varchar as partner_id,
        null::integer as version,
        'landing/' || feed || '/' || strftime(landing_date, '%Y-%m-%d') || '/' || file as subject,
        'rows' as unit,
        rows_read::decimal(38, 6) as expected,
        case
            when rows_read is not null
                then (lake_accepted + lake_quarantined + duplicates)::decimal(38, 6)
        end as actual,
        case
            when rows_read is null
                then
                    'in the landing folder but not ingested: rerun koobill ingest --date '
                    || strftime(landing_date, '%Y-%m-%d')
            else
                'read ' || rows_read || ' = accepted ' || lake_accepted || ' + quarantined '
                || lake_quarantined || ' + duplicates ' || duplicates
                || case
                    when lake_accepted <> files_accepted or lake_quarantined <> files_quarantined
                        then
                            '; the ingest counted accepted ' || files_accepted
                            || ', quarantined ' || files_quarantined
                    else ''
                end
        end as detail,
        (
            rows_read is null
            or lake_accepted <> files_accepted
            or lake_quarantined <> files_quarantined
        ) as broken
    from landed
),

-- 2. accepted records -> bill lines (the current version of each partner's bill) -------------
current_bills as (
    select * from rc_bills
    where status = 'closed'
),

current_lines as (
    select l.*
    from rc_lines as l
    inner join current_bills as b on l.partner_id = b.partner_id and l.version = b.version
),

components as (
    select unnest(['consume', 'refund', 'adjustment', 'coupon']) as component
),

record_sums as (
    select
        partner_id,
        component,
        sum(amount) as amount,
        sum(n) as n
    from rc_records
    group by all
),

line_sums as (
    select
        partner_id,
        component,
        sum(amount) as amount,
        sum(record_count) as n
    from current_lines
    group by all
),

billed_partners as (
    select partner_id from current_bills
    union
    select partner_id from rc_records
),

line_key_diff as (
    -- the lines behind a residual: recomputed from the records against the published ones
    select
        coalesce(r.partner_id, l.partner_id) as partner_id,
        coalesce(r.component, l.component) as component,
        coalesce(r.component, l.component) || ' ' || coalesce(r.charge_type, l.charge_type)
        || coalesce(' customer ' || coalesce(r.customer_id, l.customer_id), '')
        || coalesce(' product ' || coalesce(r.product_id, l.product_id), '')
        || coalesce(' sku ' || coalesce(r.sku_code, l.sku_code), '')
        || coalesce(' region ' || coalesce(r.region, l.region), '')
        || ' ' || coalesce(r.source_month, l.source_month)
        || case when coalesce(r.late, l.late) then ' late' else '' end
        || coalesce(' ' || coalesce(r.description, l.description), '')
        || ': records ' || coalesce(r.amount::varchar, 'none')
        || ' (' || coalesce(r.record_count, 0) || ')'
        || ', line ' || coalesce('#' || l.line_no || ' ' || l.amount::varchar, 'missing')
        || coalesce(' (' || l.record_count || ')', '') as what
    from rc_relines as r
    full join current_lines as l
        on
            r.partner_id = l.partner_id
            and r.component = l.component
            and r.charge_type = l.charge_type
            and r.customer_id is not distinct from l.customer_id
            and r.product_id is not distinct from l.product_id
            and r.sku_code is not distinct from l.sku_code
            and r.region is not distinct from l.region
            and r.source_month = l.source_month
            and r.late = l.late
            and r.description is not distinct from l.description
            and r.currency = l.currency
    where
        r.amount is distinct from l.amount
        or r.record_count is distinct from l.record_count
),

diff_text as (
    select
        partner_id,
        component,
        string_agg(what, '; ' order by what) as what
    from line_key_diff
    group by all
),

record_checks as (
    select
        2 as step,
        'records_to_lines' as "check",
        p.partner_id,
        b.version,
        c.component || ' amount' as subject,
        coalesce(b.currency, 'money') as unit,
        coalesce(r.amount, 0)::decimal(38, 6) as expected,
        coalesce(l.amount, 0)::decimal(38, 6) as actual,
        coalesce(r.n, 0) || ' accepted record(s), ' || coalesce(l.n, 0)
        || ' in the bill''s lines'
        || case when b.partner_id is null then '; the partner has no bill' else '' end
        || coalesce('; ' || d.what, '') as detail,
        (b.partner_id is null and r.n is not null) or coalesce(r.n, 0) <> coalesce(l.n, 0)
            as broken
    from billed_partners as p
    cross join components as c
    left join current_bills as b on p.partner_id = b.partner_id
    left join record_sums as r on p.partner_id = r.partner_id and c.component = r.component
    left join line_sums as l on p.partner_id = l.partner_id and c.component = l.component
    left join diff_text as d on p.partner_id = d.partner_id and c.component = d.component
),

-- 3. bill lines -> bills (every version), and each bill's own arithmetic ---------------------
version_sums as (
    select
        b.partner_id,
        b.version,
        round(coalesce(sum(l.amount) filter (where l.component = 'consume'), 0), 2) as consume,
        round(-coalesce(sum(l.amount) filter (where l.component = 'refund'), 0), 2) as refunds,
        round(coalesce(sum(l.amount) filter (where l.component = 'adjustment'), 0), 2)
            as adjustments,
        round(coalesce(sum(l.amount) filter (where l.component = 'coupon'), 0), 2)
            as coupon_total,
        count(l.line_no) as line_count
    from rc_bills as b
    left join rc_lines as l on b.partner_id = l.partner_id and b.version = l.version
    group by all
),

bill_terms as (
    select
        b.*,
        s.consume,
        s.refunds as line_refunds,
        s.adjustments as line_adjustments,
        s.coupon_total as line_coupon_total,
        s.line_count as lines_counted,
        b.consume_amount - b.refunds + b.adjustments as net
    from rc_bills as b
    inner join version_sums as s on b.partner_id = s.partner_id and b.version = s.version
),

bill_pairs as (
    select
        partner_id,
        version,
        currency,
        unnest([
            'consume_amount', 'refunds', 'adjustments', 'coupon_total', 'coupon_amount',
            'tax_amount', 'bill_amount', 'amount_due', 'line_count'
        ]) as subject,
        unnest([
            consume, line_refunds, line_adjustments, line_coupon_total,
            least(coupon_total, greatest(net, 0)),
            round(greatest(net - coupon_amount, 0) * tax_rate, 2),
            net - coupon_amount + tax_amount,
            greatest(bill_amount, 0),
            lines_counted
        ]) as expected,
        unnest([
            consume_amount, refunds, adjustments, coupon_total, coupon_amount, tax_amount,
            bill_amount, amount_due, line_count
        ]) as actual,
        unnest([
            'round2 of its lines', 'round2 of its refund lines, positive',
            'round2 of its adjustment lines', 'round2 of its coupon lines',
            'min(coupon_total, max(net, 0))', 'round2(max(net - coupon_amount, 0) * tax_rate)',
            'net - coupon_amount + tax_amount', 'max(bill_amount, 0)', 'lines in bill_lines'
        ]) as detail
    from bill_terms
),

bill_checks as (
    select
        3 as step,
        'lines_to_bill' as "check",
        partner_id,
        version,
        subject,
        case when subject = 'line_count' then 'lines' else currency end as unit,
        expected::decimal(38, 6) as expected,
        actual::decimal(38, 6) as actual,
        detail,
        false as broken
    from bill_pairs
),

-- 4. bills -> invoices ------------------------------------------------------------------------
invoice_uses as (
    select
        invoice_no,
        count(*) as n
    from rc_invoices_all
    where invoice_no is not null
    group by all
),

-- the invoice number each bill version must have (spec section 5)
wanted_invoices as (
    select
        partner_id,
        version,
        'INV-' || partner_id || '-' || replace(bill_month, '-', '')
        || case when version > 1 then '-V' || version else '' end as want
    from rc_bills
),

invoice_checks as (
    select
        4 as step,
        'bill_to_invoice' as "check",
        b.partner_id,
        b.version,
        coalesce(b.invoice_no, '(no invoice)') as subject,
        b.currency as unit,
        b.amount_due::decimal(38, 6) as expected,
        case
            when b.amount_due > 0 and b.invoice_no = e.want and u.n = 1 then b.amount_due
            when b.amount_due <= 0 and b.invoice_no is null then 0
            else 0
        end::decimal(38, 6) as actual,
        case
            when b.amount_due > 0 and b.invoice_no is null then 'amount due but no invoice'
            when b.amount_due > 0 and b.invoice_no <> e.want
                then 'invoice number ' || b.invoice_no || ' is not ' || e.want
            when b.amount_due > 0 and u.n > 1
                then 'invoice number used by ' || u.n || ' bills'
            when b.amount_due <= 0 and b.invoice_no is not null
                then 'nothing due but invoice ' || b.invoice_no
            when b.amount_due > 0 then 'invoiced in full'
            else 'nothing due, no invoice'
        end as detail,
        (b.amount_due <= 0 and b.invoice_no is not null) as broken
    from rc_bills as b
    inner join wanted_invoices as e
        on b.partner_id = e.partner_id and b.version = e.version
    left join invoice_uses as u on b.invoice_no = u.invoice_no
),

document_checks as (
    -- each exported invoice document is the file export_history recorded
    select
        4 as step,
        'invoice_document' as "check",
        partner_id,
        version,
        path as subject,
        'files' as unit,
        1::decimal(38, 6) as expected,
        case when on_disk = recorded then 1 else 0 end::decimal(38, 6) as actual,
        coalesce(invoice_no || ': ', '')
        || case
            when on_disk is null then 'the exported file is missing'
            when on_disk = recorded then 'sha256 as recorded in export_history'
            else 'sha256 ' || on_disk || ' differs from the recorded ' || recorded
        end as detail,
        false as broken
    from rc_documents
),

-- 5. payments -> the invoices they settle (oldest invoice first, spec section 5) -------------
pay_ranges as (
    select
        *,
        coalesce(sum(amount) over (
            partition by partner_id, currency order by paid_at, record_id
            rows between unbounded preceding and 1 preceding
        ), 0) as p0
    from rc_payments
),

inv_ranges as (
    select
        *,
        coalesce(sum(amount_due) over (
            partition by partner_id, currency order by bill_month
            rows between unbounded preceding and 1 preceding
        ), 0) as b0
    from rc_invoices
),

applied as (
    select
        p.record_id,
        p.partner_id,
        i.invoice_no,
        i.bill_month,
        greatest(
            0, least(p.p0 + p.amount, i.b0 + i.amount_due) - greatest(p.p0, i.b0)
        ) as amount
    from pay_ranges as p
    inner join inv_ranges as i on p.partner_id = i.partner_id and p.currency = i.currency
),

pay_applied as (
    select
        record_id,
        partner_id,
        sum(amount) filter (where amount > 0) as applied,
        string_agg(invoice_no || ' ' || amount::decimal(38, 2), ', ' order by bill_month)
        filter (where amount > 0) as settles
    from applied
    group by all
),

payers as (
    select distinct partner_id from rc_billed
),

-- A payment, or the part of it, that settles no invoice is the partner's credit balance
-- (status credit_balance, listed, not a residual). A payment of a partner without any bill, or
-- in a currency none of its bills is in, can never settle anything: that one is a residual.
payment_checks as (
    select
        5 as step,
        'payment_to_invoice' as "check",
        p.partner_id,
        null::integer as version,
        'payment ' || p.record_id as subject,
        p.currency as unit,
        p.amount::decimal(38, 6) as expected,
        coalesce(a.applied, 0)::decimal(38, 6) as actual,
        'paid ' || strftime(p.paid_date, '%Y-%m-%d')
        || coalesce(' ref ' || p.reference, '')
        || coalesce('; settles ' || a.settles, '; settles no invoice')
        || case
            when payer.partner_id is null
                then '; the partner has no bill: check the partner id of the payment'
            when billed.partner_id is null
                then '; no bill of the partner is in ' || p.currency
            when p.amount > coalesce(a.applied, 0)
                then
                    '; unapplied ' || (p.amount - coalesce(a.applied, 0))::decimal(38, 2)::varchar
                    || ' (credit balance: no open invoice to settle as of '
                    || strftime($as_of::date, '%Y-%m-%d') || ')'
            else ''
        end as detail,
        billed.partner_id is null as broken
    from rc_payments as p
    left join pay_applied as a on p.record_id = a.record_id and p.partner_id = a.partner_id
    left join payers as payer on p.partner_id = payer.partner_id
    left join rc_billed as billed
        on p.partner_id = billed.partner_id and p.currency = billed.currency
    where p.landing_date between $file_lo::date and $file_hi::date
),

invoice_settled as (
    select
        i.partner_id,
        i.version,
        i.invoice_no,
        i.currency,
        i.amount_due,
        coalesce(sum(a.amount), 0) as paid,
        string_agg(a.record_id || ' ' || a.amount::decimal(38, 2), ', ' order by a.record_id)
        filter (where a.amount > 0) as by_payments
    from rc_invoices as i
    left join applied as a on i.invoice_no = a.invoice_no
    where i.bill_month = $month
    group by all
),

settlement_checks as (
    select
        5 as step,
        'invoice_settlement' as "check",
        partner_id,
        version,
        invoice_no as subject,
        currency as unit,
        amount_due::decimal(38, 6) as expected,
        amount_due::decimal(38, 6) as actual,
        'paid ' || paid::decimal(38, 2) || coalesce(' by ' || by_payments, '')
        || '; unpaid ' || (amount_due - paid)::decimal(38, 2) || ' as of '
        || strftime($as_of::date, '%Y-%m-%d') as detail,
        false as broken
    from invoice_settled
),

checks as (
    select * from landed_checks
    union all
    select * from record_checks
    union all
    select * from bill_checks
    union all
    select * from invoice_checks
    union all
    select * from document_checks
    union all
    select * from payment_checks
    union all
    select * from settlement_checks
)

select
    $month as bill_month,
    step::integer as step,
    "check",
    partner_id,
    version,
    subject,
    unit,
    expected,
    actual,
    (expected - actual)::decimal(38, 6) as residual,
    case
        when broken or expected is null or actual is null then 'residual'
        when "check" = 'payment_to_invoice' and actual < expected then 'credit_balance'
        when expected <> actual then 'residual'
        else 'ok'
    end as status,
    detail,
    $as_of::date as as_of_date
from checks
order by step, "check", partner_id nulls first, version nulls first, subject
