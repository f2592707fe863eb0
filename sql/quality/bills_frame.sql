-- The frame Great Expectations validates for a month's staged bills (expectations/bills.py):
-- one row per bill with its key, status, invoice numbers, every money column and the value the
-- spec expects for it as exact DECIMAL text (never a float), and one boolean column per rule
-- that needs arithmetic, computed here with DECIMAL arithmetic. Bill lines without a bill add a
-- row each where only lines_have_a_bill is set (NULL is "not applicable" to GX).
-- Parameters: $bills_table, $lines_table (names of tables with the columns of BILLS and
-- BILL_LINES).
with
bills_src as (
    select
        *,
        consume_amount - refunds + adjustments as net
    from query_table($bills_table)
),

bill_keys as (
    select
        partner_id,
        bill_month,
        version,
        any_value(currency) as currency
    from query_table($bills_table)
    group by partner_id, bill_month, version
),

line_sums as (
    select
        l.partner_id,
        l.bill_month,
        l.version,
        count(*) as lines_found,
        coalesce(sum(l.amount) filter (where l.component = 'consume'), 0) as lines_consume,
        coalesce(sum(l.amount) filter (where l.component = 'refund'), 0) as lines_refund,
        coalesce(sum(l.amount) filter (where l.component = 'adjustment'), 0) as lines_adjustment,
        coalesce(sum(l.amount) filter (where l.component = 'coupon'), 0) as lines_coupon,
        count(*) filter (
            where l.component is null
            or l.component not in ('consume', 'refund', 'adjustment', 'coupon')
        ) as lines_unknown_component,
        count(*) filter (
            where l.amount is null
            or (l.component in ('consume', 'coupon') and l.amount < 0)
            or (l.component = 'refund' and l.amount > 0)
        ) as lines_wrong_sign,
        count(*) - count(distinct l.line_no) as lines_bad_line_no,
        count(*) filter (where l.currency is distinct from k.currency) as lines_other_currency,
        count(k.version) = 0 as orphan
    from query_table($lines_table) as l
    left join bill_keys as k
        on l.partner_id = k.partner_id and l.bill_month = k.bill_month and l.version = k.version
    group by l.partner_id, l.bill_month, l.version
),

joined as (
    select
        b.*,
        coalesce(s.lines_found, 0) as lines_found,
        coalesce(s.lines_unknown_component, 0) as lines_unknown_component,
        coalesce(s.lines_wrong_sign, 0) as lines_wrong_sign,
        coalesce(s.lines_bad_line_no, 0) as lines_bad_line_no,
        coalesce(s.lines_other_currency, 0) as lines_other_currency,
        round(coalesce(s.lines_consume, 0), 2) as exp_consume,
        -round(coalesce(s.lines_refund, 0), 2) as exp_refunds,
        round(coalesce(s.lines_adjustment, 0), 2) as exp_adjustments,
        round(coalesce(s.lines_coupon, 0), 2) as exp_coupon_total,
        least(b.coupon_total, greatest(b.net, 0)) as exp_coupon_amount,
        round(greatest(b.net - b.coupon_amount, 0) * b.tax_rate, 2) as exp_tax,
        b.consume_amount - b.refunds + b.adjustments - b.coupon_amount + b.tax_amount
            as exp_bill_amount,
        'INV-' || b.partner_id || '-' || replace(b.bill_month, '-', '')
        || case when b.version >= 2 then '-V' || b.version::varchar else '' end
            as exp_invoice_no,
        count(*) filter (where b.status = 'closed')
            over (partition by b.partner_id, b.bill_month) as n_closed,
        -- versions are per partner: a restatement makes version n+1 only for the partners whose
        -- bill changed, and it names the invoice of version n it supersedes
        lag(b.version) over (partition by b.partner_id, b.bill_month order by b.version)
            as prev_version,
        lag(b.invoice_no) over (partition by b.partner_id, b.bill_month order by b.version)
            as prev_invoice_no
    from bills_src as b
    left join line_sums as s
        on b.partner_id = s.partner_id and b.bill_month = s.bill_month and b.version = s.version
)

-- one row per bill; `union all by name` below adds the orphan lines' rows, whose other
-- columns are NULL
select  -- noqa: AM07
    partner_id,
    bill_month,
    version,
    status,
    currency,
    invoice_no,
    supersedes_invoice_no,
    line_count,
    lines_found,
    lines_unknown_component,
    lines_wrong_sign,
    lines_bad_line_no,
    lines_other_currency,
    consume_amount::varchar as consume_amount,
    refunds::varchar as refunds,
    adjustments::varchar as adjustments,
    coupon_total::varchar as coupon_total,
    coupon_amount::varchar as coupon_amount,
    tax_rate::varchar as tax_rate,
    tax_amount::varchar as tax_amount,
    bill_amount::varchar as bill_amount,
    amount_due::varchar as amount_due,
    net::varchar as net_before_coupon,
    exp_consume::varchar as expected_consume_amount,
    exp_refunds::varchar as expected_refunds,
    exp_adjustments::varchar as expected_adjustments,
    exp_coupon_total::varchar as expected_coupon_total,
    exp_coupon_amount::varchar as expected_coupon_amount,
    exp_tax::varchar as expected_tax_amount,
    exp_bill_amount::varchar as expected_bill_amount,
    exp_invoice_no as expected_invoice_no,
    true as lines_have_a_bill,
    coalesce(n_closed <= 1, false) as one_closed_version,
    coalesce(
        consume_amount is not null and refunds is not null and adjustments is not null
        and coupon_total is not null and coupon_amount is not null and tax_rate is not null
        and tax_amount is not null and bill_amount is not null and amount_due is not null,
        false
    ) as amounts_present,
    coalesce(consume_amount = exp_consume, false) as consume_matches_lines,
    coalesce(refunds = exp_refunds, false) as refunds_match_lines,
    coalesce(adjustments = exp_adjustments, false) as adjustments_match_lines,
    coalesce(coupon_total = exp_coupon_total, false) as coupon_total_matches_lines,
    coalesce(line_count = lines_found, false) as line_count_matches,
    lines_unknown_component = 0 as line_components_known,
    lines_wrong_sign = 0 as line_signs_ok,
    lines_bad_line_no = 0 as line_numbers_unique,
    lines_other_currency = 0 as line_currency_matches,
    coalesce(
        consume_amount >= 0 and refunds >= 0 and coupon_total >= 0 and coupon_amount >= 0, false
    ) as components_not_negative,
    coalesce(coupon_amount = exp_coupon_amount, false) as coupon_amount_capped,
    coalesce(coupon_amount <= greatest(net, 0), false) as coupon_within_net,
    coalesce(tax_rate >= 0 and tax_rate < 1, false) as tax_rate_in_range,
    coalesce(tax_amount = exp_tax, false) as tax_amount_ok,
    coalesce(bill_amount = exp_bill_amount, false) as bill_amount_adds_up,
    coalesce(amount_due = greatest(bill_amount, 0), false) as amount_due_ok,
    coalesce((invoice_no is not null) = (amount_due > 0), false) as invoice_no_iff_amount_due,
    coalesce(invoice_no is null or invoice_no = exp_invoice_no, false) as invoice_no_matches_bill,
    coalesce(
        (version = 1 and prev_version is null) or version = prev_version + 1, false
    ) as versions_contiguous,
    coalesce(
        supersedes_invoice_no = prev_invoice_no,
        supersedes_invoice_no is null and prev_invoice_no is null
    ) as supersedes_previous_invoice,
    prev_invoice_no::varchar as expected_supersedes_invoice_no
from joined

union all by name

-- lines without a bill: only lines_have_a_bill applies (NULL is "not applicable" to GX)
select
    partner_id,
    bill_month,
    version,
    lines_found,
    false as lines_have_a_bill
from line_sums
where orphan
