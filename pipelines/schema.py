"""The public tables and views of the warehouse: one definition that the code creates the
tables from and that the analysts' data dictionary (docs/data-dictionary.md) is generated from.
Names are public interface (spec section 6); columns may be added, never renamed."""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.patterns import PARTNER_ID

M6 = "DECIMAL(38,6)"  # exact amounts as landed or rated
M2 = "DECIMAL(38,2)"  # published bill components, rounded half away from zero


@dataclass(frozen=True)
class Table:
    name: str
    kind: str  # table | view
    grain: str
    columns: tuple[tuple[str, str, str], ...]  # (name, DuckDB type, meaning)

    @property
    def column_names(self) -> list[str]:
        return [c[0] for c in self.columns]

    def ddl(self) -> str:
        cols = ", ".join(f'"{n}" {t}' for n, t, _ in self.columns)
        return f"create table if not exists {self.name} ({cols})"


BILLS = Table(
    "bills",
    "table",
    "one row per partner_id, bill_month, version",
    (
        ("partner_id", "VARCHAR", "Partner (seller) id"),
        ("partner_name", "VARCHAR", "Partner name from the snapshot applicable at the cutoff"),
        ("legal_name", "VARCHAR", "Partner's legal name (invoice recipient), from that snapshot"),
        ("address", "VARCHAR", "Partner's billing address, from that snapshot; NULL if none"),
        ("tax_id", "VARCHAR", "Partner's tax id, from that snapshot; NULL if none"),
        ("billing_email", "VARCHAR", "Partner's billing e-mail, from that snapshot; NULL if none"),
        ("bill_month", "VARCHAR", "Bill cycle YYYY-MM (Beijing calendar month)"),
        (
            "version",
            "INTEGER",
            "1 for the first close; n+1 for each restatement that changed this partner's bill",
        ),
        ("currency", "VARCHAR", "ISO currency of the partner"),
        ("consume_amount", M2, "Expenditures: orders with amount > 0 plus rated usage"),
        ("refunds", M2, "Unsubscriptions and specification changes, as a positive number"),
        ("adjustments", M2, "Signed sum of adjustments (credits negative)"),
        ("coupon_total", M2, "Sum of the month's cash coupons before the cap"),
        ("coupon_amount", M2, "Coupons deducted: min(coupon_total, max(net, 0))"),
        ("tax_rate", "DECIMAL(9,6)", "Partner tax rate at the cutoff"),
        ("tax_amount", M2, "round2(max(net - coupon_amount, 0) * tax_rate)"),
        ("bill_amount", M2, "consume - refunds + adjustments - coupon + tax (initial amount due)"),
        ("amount_due", M2, "max(bill_amount, 0)"),
        ("invoice_no", "VARCHAR", "INV-<partner_id>-<YYYYMM>[-V<n>] when amount_due > 0"),
        ("status", "VARCHAR", "closed, or superseded by a later version of the partner's bill"),
        ("closed_at", "TIMESTAMPTZ", "When this version was generated (UTC)"),
        ("cutoff_date", "DATE", "Last landing date included (the 4th of the next month)"),
        ("forced", "BOOLEAN", "Closed with --force while landing dates were missing"),
        ("missing_dates", "VARCHAR", "Landing dates not ingested at close time (forced closes)"),
        ("line_count", "BIGINT", "Number of bill_lines behind this bill"),
        (
            "supersedes_invoice_no",
            "VARCHAR",
            "Invoice number of the version this one restates (NULL for version 1, or when the "
            "restated version had nothing due and so no invoice)",
        ),
    ),
)

# The export formats (export_history.format): the invoice PDF, and the bill's details.
EXPORT_FORMATS = ("pdf", "xlsx", "csv", "parquet")
# opt-in export formats, never in the default set: the FOCUS 1.2 dataset (pipelines/focus.py)
EXTRA_EXPORT_FORMATS = ("focus",)

# The published components of a bill, in the order every output shows them (spec section 4):
# bill_amount = consume_amount - refunds + adjustments - coupon_amount + tax_amount, and
# amount_due = max(bill_amount, 0). Columns of BILLS (tests/test_dictionary.py checks it).
BILL_COMPONENTS = (
    "consume_amount",
    "refunds",
    "adjustments",
    "coupon_amount",
    "tax_amount",
    "bill_amount",
    "amount_due",
)

BILL_LINES = Table(
    "bill_lines",
    "table",
    "one row per bill version and distinct (component, charge_type, customer, product, sku, "
    "region, source_month, late, description)",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month YYYY-MM"),
        ("version", "INTEGER", "Bill version the line belongs to"),
        ("line_no", "INTEGER", "1-based position of the line in its bill"),
        ("component", "VARCHAR", "consume | refund | adjustment | coupon"),
        (
            "charge_type",
            "VARCHAR",
            "NEW, RENEW, AUTO_RENEW, CHANGE, UNSUBSCRIBE, USAGE, ADJUSTMENT or COUPON",
        ),
        (
            "customer_id",
            "VARCHAR",
            "Customer id; NULL for coupons and partner-level adjustments",
        ),
        ("customer_name", "VARCHAR", "Latest customer name seen in the month; NULL if none"),
        ("product_id", "VARCHAR", "Product id; NULL for coupons and adjustments without one"),
        ("product_name", "VARCHAR", "Latest product name seen in the month; NULL if none"),
        ("sku_code", "VARCHAR", "SKU code; NULL for adjustments, coupons and orders without one"),
        ("region", "VARCHAR", "Region; NULL for adjustments and coupons"),
        ("source_month", "VARCHAR", "Month the records are dated in (differs when late)"),
        ("late", "BOOLEAN", "Records landed after the cutoff of their own month"),
        ("description", "VARCHAR", "Adjustment reason or coupon id; NULL otherwise"),
        ("currency", "VARCHAR", "Currency"),
        ("quantity", M6, "Metered quantity (usage lines)"),
        ("official_amount", M6, "List amount before discount"),
        ("discount_amount", M6, "Discount"),
        ("amount", M6, "Exact signed amount (refunds negative); components are round2 of sums"),
        ("record_count", "BIGINT", "Source records summed into the line"),
    ),
)

ESTIMATES = Table(
    "estimates",
    "table",
    "one row per partner_id, bill_month, as_of_date (history kept day by day)",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("partner_name", "VARCHAR", "Partner name from the snapshot as of the date"),
        ("bill_month", "VARCHAR", "Open bill month YYYY-MM"),
        ("as_of_date", "DATE", "Landing date the estimate is as of"),
        ("currency", "VARCHAR", "Currency"),
        ("consume_amount", M2, "Expenditures so far"),
        ("refunds", M2, "Refunds so far (positive)"),
        ("adjustments", M2, "Adjustments so far"),
        ("estimate_amount", M2, "consume_amount - refunds + adjustments (no tax, no coupons)"),
    ),
)

QUARANTINE = Table(
    "quarantine",
    "table",
    "one row per rejected input row",
    (
        ("feed", "VARCHAR", "Feed name"),
        ("landing_date", "DATE", "Landing date folder"),
        ("file", "VARCHAR", "File name inside the landing folder"),
        ("row", "BIGINT", "1-based record number in the file (header excluded)"),
        ("record_id", "VARCHAR", "record_id when it could be read"),
        (
            "reason_codes",
            "VARCHAR[]",
            "One code per reason in reason, in the same order (a rule broken by two columns "
            "appears twice); the fixed set is listed under Reason codes. Count rows per code "
            "with count(distinct (file, row)) or list_distinct(reason_codes)",
        ),
        ("reason", "VARCHAR", "Every rule the row breaks, readable, separated by '; '"),
        ("raw", "VARCHAR", "The raw record as JSON text"),
    ),
)

INGEST_FILES = Table(
    "ingest_files",
    "table",
    "one row per landed file and landing date: the reconciliation of every file",
    (
        ("landing_date", "DATE", "Landing date"),
        ("feed", "VARCHAR", "Feed"),
        ("file", "VARCHAR", "File name"),
        ("rows_read", "BIGINT", "Records read"),
        ("accepted", "BIGINT", "Records accepted"),
        ("quarantined", "BIGINT", "Records quarantined"),
        ("duplicates", "BIGINT", "Exact duplicates dropped"),
    ),
)

PAYMENTS = Table(
    "payments",
    "table",
    "one row per accepted payment record",
    (
        ("record_id", "VARCHAR", "Payment record id"),
        ("partner_id", "VARCHAR", "Partner id"),
        ("amount", M6, "Amount paid (> 0)"),
        ("currency", "VARCHAR", "Currency"),
        ("paid_at", "TIMESTAMPTZ", "Payment time (UTC)"),
        ("paid_date", "DATE", "Beijing date of paid_at"),
        ("method", "VARCHAR", "Payment method"),
        ("reference", "VARCHAR", "Payment reference"),
        ("landing_date", "DATE", "Landing date"),
    ),
)

AMOUNT_DUE = Table(
    "amount_due",
    "view",
    "one row per partner_id, bill_month of the current bills published on or before the as-of "
    "date (default now: the later of today's Beijing date and the latest landing date)",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month"),
        ("version", "INTEGER", "Current bill version"),
        ("currency", "VARCHAR", "Currency"),
        ("invoice_no", "VARCHAR", "Invoice number"),
        ("amount_due", M2, "Amount due of the bill"),
        (
            "paid_amount",
            M2,
            "Settled by the partner's payments paid on or before as_of_date, oldest bill first",
        ),
        ("unpaid_amount", M2, "amount_due - paid_amount"),
        (
            "published_on",
            "DATE",
            "Date the bill counts from: Beijing date of the first close of the partner's month "
            "(version 1), or the 5th of M+1 if earlier",
        ),
        (
            "as_of_date",
            "DATE",
            "The as-of date: variable koobill_as_of, else the later of today (Beijing) and the "
            "latest landing date ingested",
        ),
    ),
)

EXPENDITURE_BY_PRODUCT = Table(
    "expenditure_by_product",
    "view",
    "one row per partner_id, bill_month, product_id, product_name, region of current bills; "
    "refunds and adjustments as rows under product_id OTHERS",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month"),
        ("product_id", "VARCHAR", "Product id, or OTHERS"),
        ("product_name", "VARCHAR", "Product name, or Refunds / Adjustments under OTHERS"),
        ("region", "VARCHAR", "Region (filter on it); NULL under OTHERS"),
        ("currency", "VARCHAR", "Currency"),
        ("consume_amount", M2, "Expenditures of the product (round2 of exact sum)"),
        ("refunds", M2, "Refunds (OTHERS rows only)"),
        ("adjustments", M2, "Adjustments (OTHERS rows only)"),
    ),
)

EXPENDITURE_BY_CUSTOMER = Table(
    "expenditure_by_customer",
    "view",
    "one row per partner_id, bill_month, customer_id of current bills",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month"),
        ("customer_id", "VARCHAR", "Customer id; NULL for partner-level adjustments"),
        ("customer_name", "VARCHAR", "Customer name; NULL if none"),
        ("currency", "VARCHAR", "Currency"),
        ("consume_amount", M2, "Expenditures"),
        ("refunds", M2, "Refunds (positive)"),
        ("adjustments", M2, "Adjustments"),
        ("total_amount", M2, "consume_amount - refunds + adjustments"),
    ),
)

EXPORT_HISTORY = Table(
    "export_history",
    "table",
    "one row per export file written",
    (
        ("export_id", "VARCHAR", "Unique id of the export run and file"),
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month"),
        ("version", "INTEGER", "Bill version exported"),
        (
            "bill_status",
            "VARCHAR",
            "Status of the exported bill version: closed, or superseded once a restatement "
            "replaced it (the lake record keeps the status at export time)",
        ),
        (
            "kind",
            "VARCHAR",
            "summary (the invoice PDF), details (XLSX, CSV, Parquet), or focus (the FOCUS 1.2 "
            "dataset, CSV and Parquet)",
        ),
        ("format", "VARCHAR", " | ".join(EXPORT_FORMATS)),
        ("path", "VARCHAR", "Path relative to the data dir"),
        ("rows", "BIGINT", "Detail rows in the file (bill lines; FOCUS rows for focus)"),
        ("bytes", "BIGINT", "File size"),
        ("sha256", "VARCHAR", "SHA-256 of the file"),
        ("created_at", "TIMESTAMPTZ", "When the file was written (UTC)"),
    ),
)

# quarantine.reason_codes: the fixed set, one code per broken rule (pipelines/rules.py for the
# typing rules, pipelines/ingest.py for the rules that need the snapshot, the price list or the
# history, pipelines/readers.py for records that cannot be parsed). Codes are never renamed.
REASON_CODES: dict[str, str] = {
    "blank_required": "A required column is missing, empty or white space only",
    "bad_partner_id": f"partner_id does not match ^{PARTNER_ID}$",
    "bad_currency": "currency is not a 3-letter code",
    "bad_decimal": "An amount, quantity or rate is not a plain decimal number (NaN, Infinity, "
    "exponent, text)",
    "too_many_decimals": "An amount, quantity or rate has more than 6 decimal places",
    "out_of_range": "A number is out of its range (|amount| >= 10^15, quantity >= 10^12, a "
    "rate not in [0, 1), a rated usage amount too large)",
    "sign_rule": "The sign is wrong: a negative quantity or unit price, a negative NEW/RENEW/"
    "AUTO_RENEW or positive UNSUBSCRIBE amount, a coupon or payment amount not > 0",
    "bad_timestamp": "A timestamp is not valid ISO 8601 (or an impossible date or offset)",
    "missing_offset": "A timestamp has no UTC offset",
    "bad_month": "bill_month is not YYYY-MM",
    "bad_enum": "order_type is not NEW, RENEW, AUTO_RENEW, CHANGE, UNSUBSCRIBE or a bill_type code",
    "bad_period": "usage_end is before usage_start, or effective_to is not after effective_from",
    "amount_mismatch": "An order's amount is not official_amount - discount_amount",
    "unknown_partner": "The partner is not in the partner snapshot applicable to the record",
    "currency_mismatch": "The currency is not the partner's currency",
    "no_price": "No price of the usage's sku, unit and currency is in force at usage_start",
    "from_the_future": "The record is dated more than 1 day after its landing date",
    "conflicting_duplicate": "The record_id (partner_id in a snapshot) was accepted before "
    "with different content",
    "unreadable_record": "The record cannot be parsed (malformed CSV quoting, invalid JSON, "
    "a JSON line that is not an object)",
    "ragged_record": "A CSV record with more or fewer fields than the header",
    "invalid_utf8": "The record is not valid UTF-8",
}

# recon hook: the tables of spec section 9 (reconciliation, variance, provenance)
from pipelines.recon_schema import RECON_TABLES  # noqa: E402

PUBLIC = (
    BILLS,
    BILL_LINES,
    ESTIMATES,
    EXPENDITURE_BY_PRODUCT,
    EXPENDITURE_BY_CUSTOMER,
    AMOUNT_DUE,
    PAYMENTS,
    QUARANTINE,
    INGEST_FILES,
    EXPORT_HISTORY,
    *RECON_TABLES,  # recon hook
)
