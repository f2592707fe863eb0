-- The floor of `make bench`: the least work any implementation of the spec's usage rules must
-- do on a landing day, in one DuckDB statement (bench/run.py, `_floor_ingest`). Not a koobill
-- path: it tells how close koobill can come to the yardstick (bench/yardstick.sql) while it
-- keeps the rules, and how far a pandas peer is from the best that keeps them.
--
-- Beyond the yardstick it does what the spec asks of every row and that no implementation can
-- skip: the records are read as text and typed with the typing rules (billing-rules.md section
-- 2: the same expressions as koobill, pipelines/rules.py), a row breaking a rule is left out,
-- an id repeated within the day is written once (one of its rows that pass every rule), and
-- the lake's columns are written with the lake's types (section 6: record money
-- DECIMAL(38,6)). It is generous to itself: no reason text, no quarantine file, no per-file
-- counts, no earlier dates' ids, no quality gate, no estimates, no commit, no warehouse; the
-- records are not numbered (the lake's "_row" is not written), the partner snapshot and the
-- price list are read as they landed (koobill types them, keeps the latest snapshot that
-- accepted partners and resolves the price timeline), and a repeated id keeps any one of its
-- passing rows (koobill keeps the first and quarantines a conflicting copy).
--
-- Template (bench/run.py `floor_sql`, from pipelines.rules and pipelines.ingest):
--   typed_select   the typed columns and their text as "_s_<column>" (rules.typed_select)
--   type_guard     true on a row that breaks no typing rule (rules.type_guard, alias t)
--   official       round(quantity * unit_price, 6) as koobill computes it
--   discount       round(official_amount * discount_rate, 6) as koobill computes it
-- Bound values: $usage, $prices, $partners (lists of CSV files), $landing_date, $landed_month
-- (the bill month of a record dated before the cutoff), $future_from, $path (the output).
copy (
    with partners as (
        select partner_id, currency, discount_rate
        from read_csv(
            $partners,
            header = true,
            types = {
                'partner_id': 'VARCHAR', 'currency': 'VARCHAR', 'discount_rate': 'DECIMAL(38,6)'
            }
        )
    ),

    prices as (
        select sku_code, unit, currency, unit_price, effective_from, effective_to
        from read_csv(
            $prices,
            header = true,
            union_by_name = true,
            types = {
                'sku_code': 'VARCHAR', 'unit': 'VARCHAR', 'unit_price': 'DECIMAL(38,6)',
                'currency': 'VARCHAR', 'effective_from': 'TIMESTAMPTZ',
                'effective_to': 'TIMESTAMPTZ'
            }
        )
    ),

    text_rows as (
        select
            parse_filename(filename) as _file,
            null::bigint as _row,
            null::varchar as _error,
            null::varchar as _error_code,
            null::varchar as _raw,
            * exclude (filename)
        from read_csv(
            $usage,
            header = true,
            auto_detect = false,
            all_varchar = true,
            filename = true,
            columns = {
                'record_id': 'VARCHAR', 'partner_id': 'VARCHAR', 'customer_id': 'VARCHAR',
                'customer_name': 'VARCHAR', 'product_id': 'VARCHAR', 'product_name': 'VARCHAR',
                'sku_code': 'VARCHAR', 'region': 'VARCHAR', 'resource_id': 'VARCHAR',
                'usage_start': 'VARCHAR', 'usage_end': 'VARCHAR', 'quantity': 'VARCHAR',
                'unit': 'VARCHAR'
            }
        )
    ),

    -- the typed day, held once (read for its ids, its rating keys and its rows), with "_ok":
    -- the row breaks no typing rule, its period is in order and it is not from the future. A
    -- column, not a WHERE: a filter here is pushed through the typing and evaluates its
    -- patterns twice (measured: 12 s instead of 9.5 s on the 5M-row day)
    usage as materialized (
        select
            t.record_id, t.partner_id, t.customer_id, t.customer_name, t.product_id,
            t.product_name, t.sku_code, t.region, t.resource_id, t.usage_start, t.usage_end,
            t.quantity, t.unit, t._file, hash(t.record_id) as _h,
            ({{ type_guard }})
            and t.usage_end >= t.usage_start
            and t.usage_start < $future_from as _ok
        from (select {{ typed_select }} from text_rows) as t
    ),

    rate_keys as (
        select distinct partner_id, sku_code, unit, usage_start from usage where _ok
    ),

    rates as (
        select
            k.*,
            s.currency,
            s.discount_rate,
            p.unit_price,
            strftime((k.usage_start::timestamp + interval 8 hour)::date, '%Y-%m')
                as source_month
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

    -- ids repeated within the day, on a 64-bit hash of the id (a collision only adds
    -- candidates, told apart below by record_id itself)
    repeated as (
        select _h from usage where _ok group by _h having count(*) > 1
    ),

    -- every rule applied (typing, period, future; partner, price, the rated amount's range)
    passing as not materialized (
        select
            u.* exclude (_ok),
            r.source_month, r.currency, r.unit_price, r.discount_rate
        from usage as u
        inner join rates as r
            on
                u.partner_id = r.partner_id
                and u.sku_code = r.sku_code
                and u.unit = r.unit
                and u.usage_start = r.usage_start
        where u._ok and cast(u.quantity as double) * cast(r.unit_price as double) < 1e15
    ),

    -- a repeated id is written once: one of its rows that pass every rule
    kept as (
        select * from passing as u
        where not exists (select 1 from repeated as r where r._h = u._h)
        union all
        select * exclude (_n)
        from (
            select *, row_number() over (partition by record_id) as _n
            from passing
            where _h in (select _h from repeated)
        )
        where _n = 1
    ),

    rated as (
        select
            $landing_date::date as landing_date,
            u.* exclude (_file, _h, source_month, currency, unit_price, discount_rate),
            u._file,
            u.source_month,
            greatest(u.source_month, $landed_month) as bill_month_assigned,
            greatest(u.source_month, $landed_month) > u.source_month as late,
            u.currency,
            u.unit_price,
            u.discount_rate,
            {{ official }} as official_amount
        from kept as u
    )

    select
        *,
        {{ discount }} as discount_amount,
        official_amount - discount_amount as amount
    from rated
) to $path (format parquet, compression zstd, compression_level 1, row_group_size 40960, return_stats)
