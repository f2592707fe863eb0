-- The yardstick of `make bench`: the irreducible work of a usage landing day in one DuckDB
-- statement, as fast as it can be made (bench/run.py, `_lower_ingest`, prints it beside the
-- figures). Read the day's usage CSV, type it with the narrowest exact types the accepted
-- ranges allow (billing-rules.md section 2, pipelines/rules.py: at most 6 decimals;
-- 0 <= quantity < 10^12 fits DECIMAL(18,6), a price < 10^15 DECIMAL(21,6), a rate in [0, 1)
-- DECIMAL(7,6)), rate each row with an as-of join on the price list landed so far (same sku,
-- unit and the partner's currency; effective_from <= usage_start < effective_to) and the
-- partner's discount from the latest snapshot, round half-up to 6 places (section 3: the
-- amounts are never negative, where half-up and DuckDB's half-away-from-zero agree) and write
-- Parquet. Bound values: $usage, $prices, $partners (lists of CSV files), $path (the output).
copy (
    with partners as (
        select partner_id, currency, discount_rate
        from read_csv(
            $partners,
            header = true,
            types = {'partner_id': 'VARCHAR', 'currency': 'VARCHAR', 'discount_rate': 'DECIMAL(7,6)'}
        )
    ),

    prices as (
        select sku_code, unit, currency, unit_price, effective_from, effective_to
        from read_csv(
            $prices,
            header = true,
            union_by_name = true,
            types = {
                'sku_code': 'VARCHAR', 'unit': 'VARCHAR', 'unit_price': 'DECIMAL(21,6)',
                'currency': 'VARCHAR', 'effective_from': 'TIMESTAMPTZ',
                'effective_to': 'TIMESTAMPTZ'
            }
        )
    ),

    usage as (
        select *
        from read_csv(
            $usage,
            header = true,
            auto_detect = false,
            ignore_errors = true,
            columns = {
                'record_id': 'VARCHAR', 'partner_id': 'VARCHAR', 'customer_id': 'VARCHAR',
                'customer_name': 'VARCHAR', 'product_id': 'VARCHAR', 'product_name': 'VARCHAR',
                'sku_code': 'VARCHAR', 'region': 'VARCHAR', 'resource_id': 'VARCHAR',
                'usage_start': 'TIMESTAMPTZ', 'usage_end': 'TIMESTAMPTZ',
                'quantity': 'DECIMAL(18,6)', 'unit': 'VARCHAR'
            }
        )
    ),

    -- the as-of join runs on the distinct rating keys only (usage is metered in whole
    -- periods, so a day has few), not on every row; a hash join brings the rate back
    rate_keys as (
        select distinct partner_id, sku_code, unit, usage_start from usage
    ),

    rates as (
        select k.*, s.currency, s.discount_rate, p.unit_price
        from rate_keys as k
        inner join partners as s on k.partner_id = s.partner_id
        asof inner join prices as p
            on
                k.sku_code = p.sku_code
                and k.unit = p.unit
                and s.currency = p.currency
                and k.usage_start >= p.effective_from
        where p.effective_to is null or k.usage_start < p.effective_to
    ),

    rated as (
        select
            u.*,
            r.currency,
            r.unit_price,
            r.discount_rate,
            round(u.quantity * r.unit_price, 6)::decimal(21, 6) as official_amount
        from usage as u
        inner join rates as r
            on
                u.partner_id = r.partner_id
                and u.sku_code = r.sku_code
                and u.unit = r.unit
                and u.usage_start = r.usage_start
    )

    select
        *,
        round(official_amount * discount_rate, 6)::decimal(21, 6) as discount_amount,
        (official_amount - discount_amount)::decimal(21, 6) as amount
    from rated
) to $path (format parquet, compression zstd, return_stats)
