"""The data-quality suites of accepted feed records (spec section 2), one per record feed.

Each suite validates the frame that ``pipelines.quality`` builds with DuckDB from a feed's
accepted records of one landing date: the spec's columns as text (IDs trimmed, blank IDs as
NULL, amounts as exact decimal text, never float) plus boolean columns that SQL computed
exactly (sign rules, time windows, 6 decimal places). Every expectation carries ``meta``:
``rule`` (its name in reports and errors) and ``show`` (columns printed for an offending row).

A suite is plain data (``Suite``: each expectation's GX type, arguments, description and meta):
DuckDB counts every rule of a feed from it, and Great Expectations (1.5 s of CPU to import)
is imported only when it validates rows (``Suite.gx()`` builds the same suite as GX objects).
A big clean day hands GX no row, so it never pays for the import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelines.config import FEEDS, ORDER_TYPES, RECORD_FEEDS
from pipelines.patterns import MONTH, PARTNER_ID, anchored

MONTH_REGEX = anchored(MONTH)
PARTNER_REGEX = anchored(PARTNER_ID)
CURRENCY_REGEX = r"^[A-Z]{3}$"
# An accepted record may be dated at most 1 day after its landing date (later ones are "from
# the future", spec section 1) and, as a sanity bound, at most this many days before it.
MAX_RECORD_AGE_DAYS = 400
WINDOW = f"from {MAX_RECORD_AGE_DAYS} days before to 1 day after the landing date (Beijing dates)"

# Boolean columns computed in SQL per feed: (rule, description, columns to show).
FEED_FLAGS: dict[str, list[tuple[str, str, list[str]]]] = {
    "orders": [
        (
            "amount_is_official_minus_discount",
            "amount = official_amount - discount_amount exactly",
            ["amount", "official_amount", "discount_amount"],
        ),
        (
            "amount_sign_ok",
            "NEW, RENEW, AUTO_RENEW: amount >= 0; UNSUBSCRIBE: amount <= 0; CHANGE: either sign",
            ["order_type", "amount"],
        ),
        ("event_time_in_window", f"event_time is {WINDOW}", ["event_time"]),
    ],
    "usage": [
        ("quantity_not_negative", "quantity >= 0", ["quantity"]),
        ("usage_end_not_before_start", "usage_end >= usage_start", ["usage_start", "usage_end"]),
        ("usage_start_in_window", f"usage_start is {WINDOW}", ["usage_start"]),
    ],
    "adjustments": [
        ("bill_month_in_window", f"the 1st of bill_month is {WINDOW}", ["bill_month"]),
    ],
    "coupons": [
        ("amount_positive", "coupon amount > 0", ["amount"]),
        ("bill_month_in_window", f"the 1st of bill_month is {WINDOW}", ["bill_month"]),
    ],
    "payments": [
        ("amount_positive", "payment amount > 0", ["amount"]),
        ("paid_at_in_window", f"paid_at is {WINDOW}", ["paid_at"]),
    ],
}


def _meta(rule: str, *show: str) -> dict:
    return {"rule": rule, "show": list(show)}


@dataclass(frozen=True)
class Expectation:
    """One expectation as plain data: its GX type (``expect_...``), arguments (``kwargs``),
    description and meta."""

    expectation_type: str
    kwargs: dict
    description: str = ""
    meta: dict = field(default_factory=dict)

    def gx(self) -> Any:
        """The same expectation as a Great Expectations object (imports GX)."""
        import great_expectations.expectations as gxe

        cls = getattr(gxe, "".join(w.capitalize() for w in self.expectation_type.split("_")))
        return cls(**self.kwargs, description=self.description, meta=dict(self.meta))


@dataclass(frozen=True)
class Suite:
    """A suite as plain data; ``gx()`` builds the Great Expectations suite (imports GX)."""

    name: str
    expectations: list[Expectation]

    def gx(self) -> Any:
        import great_expectations as gx

        return gx.ExpectationSuite(name=self.name, expectations=[e.gx() for e in self.expectations])


def _exp(expectation_type: str, *, description: str, meta: dict, **kwargs: Any) -> Expectation:
    return Expectation(expectation_type, kwargs, description, meta)


def money_columns(feed: str) -> list[str]:
    return [c.name for c in FEEDS[feed] if c.kind in ("money", "qty")]


def feed_suite(feed: str) -> Suite:
    """The expectations the accepted records of ``feed`` on one landing date must meet."""
    if feed not in RECORD_FEEDS:
        raise ValueError(f"no quality suite for feed {feed!r}; expected one of {RECORD_FEEDS}")
    cols = FEEDS[feed]
    exps: list[Expectation] = []
    for c in cols:
        if c.required:
            exps.append(
                _exp(
                    "expect_column_values_to_not_be_null",
                    column=c.name,
                    description=f"{c.name}_not_null: {c.name} is required and never empty",
                    meta=_meta(f"{c.name}_not_null"),
                )
            )
    exps.append(
        _exp(
            "expect_column_values_to_be_unique",
            column="record_id",
            description="record_id_unique: record_id is unique in the feed",
            meta=_meta("record_id_unique", "partner_id"),
        )
    )
    exps.append(
        _exp(
            "expect_column_values_to_match_regex",
            column="partner_id",
            regex=PARTNER_REGEX,
            description=f"partner_id_format: partner_id matches {PARTNER_REGEX}",
            meta=_meta("partner_id_format"),
        )
    )
    kinds = {c.name: c.kind for c in cols}
    if "currency" in kinds:
        exps.append(
            _exp(
                "expect_column_values_to_match_regex",
                column="currency",
                regex=CURRENCY_REGEX,
                description="currency_format: currency is a 3-letter ISO code",
                meta=_meta("currency_format"),
            )
        )
    if "bill_month" in kinds:
        exps.append(
            _exp(
                "expect_column_values_to_match_regex",
                column="bill_month",
                regex=MONTH_REGEX,
                description="bill_month_format: bill_month is YYYY-MM",
                meta=_meta("bill_month_format"),
            )
        )
    if "order_type" in kinds:
        exps.append(
            _exp(
                "expect_column_values_to_be_in_set",
                column="order_type",
                value_set=list(ORDER_TYPES),
                description="order_type_known: order_type is one of " + ", ".join(ORDER_TYPES),
                meta=_meta("order_type_known"),
            )
        )
    flags = [
        (
            "landing_date_matches",
            "every record belongs to the landing date validated",
            ["landing_date"],
        )
    ]
    if money_columns(feed):
        flags.append(
            (
                "amounts_6dp",
                "amounts and quantities have at most 6 decimal places",
                money_columns(feed),
            )
        )
    flags.extend(FEED_FLAGS[feed])
    for rule, text, show in flags:
        exps.append(
            _exp(
                "expect_column_values_to_be_in_set",
                column=rule,
                value_set=[True],
                description=f"{rule}: {text}",
                meta=_meta(rule, *show),
            )
        )
    return Suite(name=f"koobill_feed_{feed}", expectations=exps)
