"""The data-quality suite of staged bills (spec sections 4-6).

The suite validates the per-bill frame that ``pipelines.quality`` builds with DuckDB: one row
per bill (key, status, invoice_no, every money column and its expected value as exact decimal
*text*, never float) plus boolean columns that SQL computed with DECIMAL arithmetic. Rows for
bill lines that have no bill carry NULL in every bill rule (Great Expectations skips NULLs in
value checks) and ``False`` in ``lines_have_a_bill``.

Every expectation carries ``meta``: ``rule`` (its name in reports and errors) and ``show`` (the
columns printed beside the key for an offending row).
"""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from pipelines.patterns import INVOICE_NO, MONTH, PARTNER_ID, anchored

BILL_KEY = ["partner_id", "bill_month", "version"]
MONTH_REGEX = anchored(MONTH)
PARTNER_REGEX = anchored(PARTNER_ID)
INVOICE_REGEX = anchored(INVOICE_NO)


def _meta(rule: str, *show: str) -> dict:
    return {"rule": rule, "show": list(show)}


def _flag(rule: str, text: str, *show: str) -> gxe.Expectation:
    """A rule SQL evaluated exactly into the boolean column named ``rule``: all must be True."""
    return gxe.ExpectColumnValuesToBeInSet(
        column=rule,
        value_set=[True],
        description=f"{rule}: {text}",
        meta=_meta(rule, *show),
    )


def bills_suite() -> gx.ExpectationSuite:
    """The expectations a month's staged bills and bill lines must meet before publishing."""
    exps: list[gxe.Expectation] = [
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=BILL_KEY,
            description="bill_key_unique: one row per partner_id, bill_month, version",
            meta=_meta("bill_key_unique", "status", "invoice_no"),
        ),
        *(
            gxe.ExpectColumnValuesToNotBeNull(
                column=c,
                description=f"{c}_not_null: every bill has a {c}",
                meta=_meta(f"{c}_not_null"),
            )
            for c in BILL_KEY
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="partner_id",
            regex=PARTNER_REGEX,
            description=f"partner_id_format: partner_id matches {PARTNER_REGEX}",
            meta=_meta("partner_id_format"),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="bill_month",
            regex=MONTH_REGEX,
            description="bill_month_format: bill_month is YYYY-MM",
            meta=_meta("bill_month_format"),
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column="version",
            min_value=1,
            description="version_positive: version is 1 for the first close, n+1 per restatement",
            meta=_meta("version_positive"),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column="status",
            value_set=["closed", "superseded"],
            description="status_known: status is closed or superseded",
            meta=_meta("status_known", "status"),
        ),
        _flag(
            "one_closed_version",
            "at most one version of a partner's month is closed; the others are superseded",
            "status",
        ),
        _flag(
            "amounts_present",
            "no money column and no tax_rate is NULL",
            "consume_amount",
            "refunds",
            "adjustments",
            "coupon_total",
            "coupon_amount",
            "tax_rate",
            "tax_amount",
            "bill_amount",
            "amount_due",
        ),
        _flag(
            "lines_have_a_bill",
            "every bill line belongs to a staged bill (no orphan lines)",
            "line_count",
        ),
        _flag(
            "consume_matches_lines",
            "consume_amount = round2(exact sum of its consume lines)",
            "consume_amount",
            "expected_consume_amount",
        ),
        _flag(
            "refunds_match_lines",
            "refunds = -round2(exact sum of its refund lines), shown positive",
            "refunds",
            "expected_refunds",
        ),
        _flag(
            "adjustments_match_lines",
            "adjustments = round2(exact sum of its adjustment lines)",
            "adjustments",
            "expected_adjustments",
        ),
        _flag(
            "coupon_total_matches_lines",
            "coupon_total = round2(exact sum of its coupon lines)",
            "coupon_total",
            "expected_coupon_total",
        ),
        _flag(
            "line_count_matches",
            "line_count = number of bill lines behind the bill",
            "line_count",
            "lines_found",
        ),
        _flag(
            "line_components_known",
            "every bill line's component is consume, refund, adjustment or coupon",
            "lines_unknown_component",
        ),
        _flag(
            "line_signs_ok",
            "consume and coupon lines are >= 0, refund lines are <= 0",
            "lines_wrong_sign",
        ),
        _flag(
            "line_numbers_unique",
            "line_no is set and unique within a bill",
            "lines_bad_line_no",
        ),
        _flag(
            "line_currency_matches",
            "every bill line is in its bill's currency",
            "currency",
            "lines_other_currency",
        ),
        _flag(
            "components_not_negative",
            "consume_amount, refunds (a positive number), coupon_total and coupon_amount are >= 0",
            "consume_amount",
            "refunds",
            "coupon_total",
            "coupon_amount",
        ),
        _flag(
            "coupon_amount_capped",
            "coupon_amount = min(coupon_total, max(consume_amount - refunds + adjustments, 0))",
            "coupon_amount",
            "expected_coupon_amount",
            "coupon_total",
            "net_before_coupon",
        ),
        _flag(
            "coupon_within_net",
            "coupon_amount is never above the pre-coupon net max(consume - refunds + adjustments, 0)",
            "coupon_amount",
            "net_before_coupon",
        ),
        _flag(
            "tax_rate_in_range",
            "0 <= tax_rate < 1",
            "tax_rate",
        ),
        _flag(
            "tax_amount_ok",
            "tax_amount = round2(max(consume - refunds + adjustments - coupon_amount, 0) * tax_rate)",
            "tax_amount",
            "expected_tax_amount",
            "tax_rate",
        ),
        _flag(
            "bill_amount_adds_up",
            "bill_amount = consume_amount - refunds + adjustments - coupon_amount + tax_amount",
            "bill_amount",
            "expected_bill_amount",
        ),
        _flag(
            "amount_due_ok",
            "amount_due = max(bill_amount, 0)",
            "amount_due",
            "bill_amount",
        ),
        _flag(
            "invoice_no_iff_amount_due",
            "invoice_no is set exactly when amount_due > 0",
            "amount_due",
            "invoice_no",
        ),
        gxe.ExpectColumnValuesToBeUnique(
            column="invoice_no",
            description="invoice_no_unique: no two bills share an invoice number",
            meta=_meta("invoice_no_unique", "invoice_no"),
        ),
        gxe.ExpectColumnValuesToMatchRegex(
            column="invoice_no",
            regex=INVOICE_REGEX,
            description="invoice_no_format: invoice_no looks like INV-<partner_id>-<YYYYMM>[-V<n>]",
            meta=_meta("invoice_no_format", "invoice_no"),
        ),
        _flag(
            "invoice_no_matches_bill",
            "invoice_no = INV-<partner_id>-<YYYYMM>, plus -V<n> when version >= 2",
            "invoice_no",
            "expected_invoice_no",
        ),
        _flag(
            "versions_contiguous",
            "a partner's versions of a month are 1, 2, ... n (a restatement makes n+1 only for "
            "the partners whose bill changed)",
            "status",
        ),
        _flag(
            "supersedes_previous_invoice",
            "supersedes_invoice_no is the invoice_no of the partner's previous version (NULL for "
            "version 1)",
            "supersedes_invoice_no",
            "expected_supersedes_invoice_no",
        ),
    ]
    return gx.ExpectationSuite(name="koobill_bills", expectations=exps)
