"""The facts the finance documents share (the invoice PDF, ``pipelines.exports.pdf``, and the
workbook's summary sheet, ``pipelines.exports.xlsx``), computed once from a ``Bill``: the title,
the recipient, the signed components, the settlement as of the invoice date, the typed facts
and the by-product groups.

Sign convention of every document: refunds and coupons are negative amounts with a minus sign,
so each amount column adds up to the bill.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pipelines.exports.bill import Bill
from pipelines.exports.common import ZERO, round2

COMPONENT_TITLES = {
    "consume": "Consume Amount",
    "refund": "Refunds",
    "adjustment": "Adjustments",
    "coupon": "Coupons",
}


@dataclass(frozen=True)
class Rate:
    """A rate shown as a percentage (the workbook writes it as a typed percent cell)."""

    value: Decimal

    def __str__(self) -> str:
        return percent(self.value)


def percent(rate: Any) -> str:
    """``Decimal('0.060000')`` -> ``'6%'``."""
    text = format(Decimal(rate) * 100, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def document_title(bill: Bill) -> str:
    return "Invoice" if bill.amount_due > 0 else "Bill statement"


def recipient_lines(bill: Bill) -> list[str]:
    """The "Bill to" block: the legal name (else the partner name), the address lines, the tax
    id and billing e-mail when the partner snapshot gave them."""
    h = bill.header
    name = (h.get("legal_name") or "").strip() or h.get("partner_name") or bill.partner_id
    out = [name]
    address = (h.get("address") or "").strip()
    out += [ln.strip() for ln in address.replace("\r", "\n").split("\n") if ln.strip()]
    if h.get("tax_id"):
        out.append(f"Tax ID: {h['tax_id']}")
    if h.get("billing_email"):
        out.append(f"E-mail: {h['billing_email']}")
    return out


def signed_components(bill: Bill) -> list[tuple[str, Decimal]]:
    """The bill's components with the documents' signs; they add up to ``bill_amount``."""
    h = bill.header
    tax = "Tax"
    if h.get("tax_rate") is not None:
        tax = f"Tax ({percent(h['tax_rate'])})"
    return [
        ("Consume Amount (Expenditures)", h["consume_amount"]),
        ("Refunds (Unsubscriptions and Changes)", -h["refunds"]),
        ("Adjustments", h["adjustments"]),
        ("Coupons Deducted", -h["coupon_amount"]),
        (tax, h["tax_amount"]),
    ]


def settlement(bill: Bill) -> list[tuple[str, str | None, Decimal]]:
    """Amount due, payments applied and balance as of the invoice date, as the Amount Due pane
    settles them (oldest bill first); then the partner's account as of that date."""
    d = bill.invoice_date
    rows: list[tuple[str, str | None, Decimal]] = [
        ("Amount Due", "max(bill amount, 0)", bill.amount_due)
    ]
    if bill.account is None:
        return rows
    rows.append(
        ("Payments Applied", f"as of {d}, oldest bill first", -bill.paid_amount),
    )
    rows.append(("Balance Due", f"as of {d}", bill.balance_due))
    acc = bill.account
    if bill.pane_row is None:  # the pane does not count this bill yet as of that date
        return rows
    rows.append(
        ("Account: Total Amount Due", f"this and earlier bills, as of {d}", _cents(acc.total_due))
    )
    if acc.credit_balance:
        rows.append(
            ("Account: Credit Balance", f"unapplied payments, as of {d}", acc.credit_balance)
        )
    return rows


def _cents(v: Decimal) -> Decimal:

    return round2(Decimal(v))


def facts(bill: Bill) -> list[tuple[str, Any]]:
    """The document's facts, label and typed value (dates as dates, numbers as numbers)."""
    h = bill.header
    s = bill.settings
    out: list[tuple[str, Any]] = [
        (
            "Document",
            document_title(bill) if bill.amount_due > 0 else "Bill statement (no amount due)",
        ),
        ("Invoice Number", bill.invoice_no or "none (nothing due)"),
    ]
    if bill.supersedes_invoice_no:
        out.append(("Supersedes Invoice", bill.supersedes_invoice_no))
    out += [
        ("Invoice Date", bill.invoice_date),
        ("Due Date", bill.due_date),
    ]
    if bill.invoice_no and bill.amount_due > 0:
        out.append(("Payment Reference", bill.invoice_no))
    out += [
        ("Partner ID", bill.partner_id),
        ("Partner Name", h.get("partner_name")),
        ("Legal Name", h.get("legal_name")),
        ("Address", h.get("address")),
        ("Tax ID", h.get("tax_id")),
        ("Billing E-mail", h.get("billing_email")),
    ]
    if s is not None:
        out += [("Issuer", s.issuer.name), ("Issuer Tax ID", s.issuer.tax_id)]
    out += [
        ("Bill Month", bill.month),
        ("Version", bill.version),
        ("Status", str(h.get("status"))),
        ("Currency", bill.currency),
        ("Closed At (UTC)", _ts(h.get("closed_at"))),
        ("Cutoff Date", h.get("cutoff_date")),
        ("Tax Rate", Rate(h["tax_rate"]) if h.get("tax_rate") is not None else None),
        ("Bill Lines", len(bill.lines)),
    ]
    return [(k, v) for k, v in out if v is not None and v != ""]


def _ts(value: Any) -> str:
    from datetime import UTC

    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if value is None else str(value)


def product_groups(bill: Bill) -> list[dict[str, Any]]:
    """``expenditure_by_product`` rows grouped by product: each product with its region rows
    (by region) and its subtotal (the sum of its rows), products by subtotal, largest first."""
    groups: dict[str, dict[str, Any]] = {}
    for p in bill.products:
        if p["product_id"] == "OTHERS":
            continue
        g = groups.setdefault(
            p["product_id"],
            {"product_id": p["product_id"], "product_name": "", "rows": [], "subtotal": ZERO},
        )
        g["product_name"] = g["product_name"] or p["product_name"] or ""
        g["rows"].append(p)
        g["subtotal"] += p["consume_amount"]
    for g in groups.values():
        g["rows"].sort(key=lambda r: r["region"] or "")
    return sorted(groups.values(), key=lambda g: (-g["subtotal"], g["product_id"]))
