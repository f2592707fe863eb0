-- The ingest's work tables that start empty: the day's quarantine, and the reference data of
-- the earlier landing dates (filled by previous_snapshot.sql and previous_prices.sql).

create temp table quarantine_rows (
    feed varchar,
    landing_date date,
    file varchar,
    row bigint,
    record_id varchar,
    reason_codes varchar[],
    reason varchar,
    raw varchar
);

create temp table prev_partners (
    partner_id varchar,
    partner_name varchar,
    currency varchar,
    tax_rate decimal(38, 6),
    discount_rate decimal(38, 6)
);

create temp table prev_prices (
    sku_code varchar,
    unit varchar,
    unit_price decimal(38, 6),
    currency varchar,
    effective_from timestamptz,
    effective_to timestamptz,
    landing_date date,
    _file varchar,
    _row bigint,
    _hash varchar
);

create temp table files_rows (
    landing_date date,
    feed varchar,
    file varchar,
    rows_read bigint,
    accepted bigint,
    quarantined bigint,
    duplicates bigint
);

-- a record feed's earlier accepted rows with one of today's ids (history.sql), per feed
create temp table history (
    record_id varchar,
    _hash varchar,
    landing_date date
);
