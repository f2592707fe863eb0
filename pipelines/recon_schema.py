"""The public tables of spec section 9, built by ``pipelines.reconcile`` into
``lake/reconcile/bill_month=M/`` and listed in ``pipelines.schema.PUBLIC``."""

from __future__ import annotations

from pipelines.schema import M2, M6, Table

RECONCILIATION = Table(
    "reconciliation",
    "table",
    "one row per bill_month and thing checked (a landing file, a partner's component, a bill "
    "version's figure, an invoice, a payment); rebuilt after every close and by koobill "
    "reconcile",
    (
        ("bill_month", "VARCHAR", "Closed bill month YYYY-MM"),
        (
            "step",
            "INTEGER",
            "The link checked: 1 landed rows -> accepted + quarantined + duplicates (per landing "
            "file of the landing dates after the previous closed month's cutoff through this "
            "month's), 2 accepted records -> bill lines, 3 bill lines -> bills, 4 bills -> "
            "invoices and their exported PDFs, 5 payments -> the invoices they settle",
        ),
        (
            "check",
            "VARCHAR",
            "landed_rows, records_to_lines, lines_to_bill, bill_to_invoice, invoice_document, "
            "payment_to_invoice, invoice_settlement",
        ),
        ("partner_id", "VARCHAR", "Partner id; NULL for a landing file"),
        ("version", "INTEGER", "Bill version checked; NULL for files and payments"),
        (
            "subject",
            "VARCHAR",
            "What is checked: landing/<feed>/<date>/<file>, '<component> amount', a bills "
            "column, an invoice number, 'payment <record_id>'",
        ),
        ("unit", "VARCHAR", "rows, lines, or the currency of the amounts"),
        ("expected", M6, "What the upstream side says (rows read, records' sum, amount due, ...)"),
        ("actual", M6, "What the downstream side holds"),
        ("residual", M6, "expected - actual"),
        (
            "status",
            "VARCHAR",
            "ok; credit_balance: the part of a payment that settles no invoice of its partner "
            "(not a residual); or residual: the residual is not zero, or the link is broken (a "
            "file never ingested, counts that differ, a line missing, a payment of a partner "
            "without a bill in its currency); koobill reconcile exits 1",
        ),
        ("detail", "VARCHAR", "The rows behind the figures: counts, line keys, invoices settled"),
        (
            "as_of_date",
            "DATE",
            "Payments counted: paid on or before this date (latest landing date)",
        ),
    ),
)

ESTIMATE_VARIANCE = Table(
    "estimate_variance",
    "table",
    "one row per partner_id, bill_month, version and term; the terms of a version add up to "
    "bill_amount - estimate_amount exactly",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month YYYY-MM"),
        ("version", "INTEGER", "Bill version compared with the estimate"),
        ("currency", "VARCHAR", "Currency"),
        (
            "estimate_as_of",
            "DATE",
            "As-of date of the estimate: the latest made on or before the cutoff when version 1 "
            "was closed; NULL if none (the estimate then counts as 0)",
        ),
        ("estimate_amount", M2, "The estimate (no tax, no coupons)"),
        ("bill_amount", M2, "The bill version's bill_amount"),
        ("term_no", "INTEGER", "Order of the term"),
        (
            "term",
            "VARCHAR",
            "landed_after_estimate, late_records, restatement, coupons (negative), tax, "
            "unexplained (zero unless the bill's arithmetic is broken)",
        ),
        ("amount", M2, "The term's share of bill_amount - estimate_amount"),
        ("explanation", "VARCHAR", "What the term is, in words"),
    ),
)

BILL_PROVENANCE = Table(
    "bill_provenance",
    "table",
    "one row per partner_id, bill_month, version, kind and name, recorded at the close that "
    "published the version and never changed (bills.closed_at says when)",
    (
        ("partner_id", "VARCHAR", "Partner id"),
        ("bill_month", "VARCHAR", "Bill month YYYY-MM"),
        ("version", "INTEGER", "Bill version"),
        ("kind", "VARCHAR", "landing_file, code or setting"),
        (
            "name",
            "VARCHAR",
            "landing_file: its path under the data dir; code: koobill_version, git_commit; "
            "setting: its name (cutoff_day, tax_rate, discount_rate, ...)",
        ),
        ("value", "VARCHAR", "The code version or the setting's value; NULL for a file"),
        ("feed", "VARCHAR", "Feed of a landing file"),
        ("landing_date", "DATE", "Landing date of a landing file"),
        ("bytes", "BIGINT", "Size of the landing file at the close"),
        ("sha256", "VARCHAR", "SHA-256 of the landing file at the close"),
        ("rows_read", "BIGINT", "Rows the ingest read from the file"),
        (
            "records_billed",
            "BIGINT",
            "The partner's records from the file billed in the version; NULL for the partner "
            "snapshot and price files",
        ),
    ),
)

RECON_TABLES = (RECONCILIATION, ESTIMATE_VARIANCE, BILL_PROVENANCE)
