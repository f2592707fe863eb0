"""The JSON API of spec section 8 under ``/v2/bills/partner-bills/``: the pages' data with
Huawei Cloud's field names where they exist; money as decimal strings with 2 places."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from pipelines import patterns
from pipelines.accounts import User
from pipelines.web.auth import Viewer, not_found, resolve_viewer, signed_in_user
from pipelines.web.data import ID_RE, LINE_SORTS, Reader, reader
from pipelines.web.views import amount_due_of

router = APIRouter(prefix="/v2/bills/partner-bills", tags=["partner bills"])

MONTH_PATTERN = patterns.anchored(patterns.MONTH)
ID_PATTERN = patterns.anchored(patterns.PARTNER_ID)
BillCycle = Annotated[str, Query(pattern=MONTH_PATTERN, description="Bill month YYYY-MM")]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _db(request: Request, user: Annotated[User, Depends(signed_in_user)]) -> Iterator[Reader]:
    with reader(request.app.state.root) as db:
        yield db


def _viewer(
    request: Request,
    user: Annotated[User, Depends(signed_in_user)],
    db: Annotated[Reader, Depends(_db)],
    partner_id: Annotated[
        str | None,
        Query(pattern=ID_PATTERN, description="Finance users: the partner to read"),
    ] = None,
) -> Viewer:
    if user.is_finance and partner_id is None:
        raise HTTPException(400, "a finance user names the partner: partner_id=<id>")
    viewer = resolve_viewer(request, user, db, partner_id)
    if viewer.partner_id is None:
        raise not_found()
    return viewer


Db = Annotated[Reader, Depends(_db)]
View = Annotated[Viewer, Depends(_viewer)]


def m2(value: Any) -> str | None:
    """Money as a decimal string with 2 places (never a float)."""
    if value is None:
        return None
    return str(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _closed(db: Reader, viewer: Viewer, bill_cycle: str) -> tuple[dict, list[dict]]:
    versions = db.bill_versions(viewer.partner_id, bill_cycle)
    current = [v for v in versions if v["status"] == "closed"]
    if not current:
        raise not_found()
    return current[0], versions


@router.get("/bill-cycles", summary="Months with a bill or an estimate")
def bill_cycles(db: Db, viewer: View) -> dict:
    months = db.months(viewer.partner_id)
    return {
        "partner_id": viewer.partner_id,
        "bill_cycles": [
            {
                "bill_cycle": m["bill_month"],
                "status": m["kind"],
                "version": m["version"],
                "estimate_as_of": _iso(m["as_of"]),
            }
            for m in months
        ],
    }


@router.get("/amount-due", summary="The Amount Due pane")
def amount_due(request: Request, db: Db, viewer: View) -> dict:
    due = amount_due_of(request.app.state.root, db, viewer.partner_id)
    bills = due.bills if due else []
    return {
        "partner_id": viewer.partner_id,
        "currency": (due.currency if due else None) or viewer.currency,
        "as_of_date": _iso(due.as_of) if due else None,
        "amount_due": m2(due.total_due if due else 0),
        "credit_balance": m2(due.credit_balance if due else 0),
        "unpaid_bills": [
            {
                "bill_cycle": b["bill_month"],
                "version": b["version"],
                "invoice_no": b["invoice_no"],
                "amount_due": m2(b["amount_due"]),
                "paid_amount": m2(b["paid_amount"]),
                "unpaid_amount": m2(b["unpaid_amount"]),
                "currency": b["currency"],
            }
            for b in bills
            if b["unpaid_amount"] > 0
        ],
        "payment_records": [
            {
                "record_id": p["record_id"],
                "paid_at": _iso(p["paid_at"]),
                "amount": m2(p["amount"]),
                "currency": p["currency"],
                "method": p["method"],
                "reference": p["reference"],
            }
            for p in (due.payments if due else [])
        ],
    }


@router.get("/postpaid-bill-summary", summary="The month's bill (Amount Due area)")
def bill_summary(db: Db, viewer: View, bill_cycle: BillCycle) -> dict:
    bill, versions = _closed(db, viewer, bill_cycle)
    return {
        **_bill(bill),
        "versions": [_bill(v) for v in versions],
    }


def _bill(b: dict) -> dict:
    return {
        "partner_id": b["partner_id"],
        "bill_cycle": b["bill_month"],
        "version": b["version"],
        "status": b["status"],
        "currency": b["currency"],
        "consume_amount": m2(b["consume_amount"]),
        "refunds": m2(b["refunds"]),
        "adjustments": m2(b["adjustments"]),
        "coupon_amount": m2(b["coupon_amount"]),
        "tax_amount": m2(b["tax_amount"]),
        "initial_amount_due": m2(b["bill_amount"]),
        "amount_due": m2(b["amount_due"]),
        "invoice_no": b["invoice_no"],
        "supersedes_invoice_no": b.get("supersedes_invoice_no"),
        "closed_at": _iso(b["closed_at"]),
    }


@router.get("/estimates", summary="The open month's estimate and its history")
def estimates(db: Db, viewer: View, bill_cycle: BillCycle) -> dict:
    history = db.estimate_history(viewer.partner_id, bill_cycle)
    latest = db.estimate(viewer.partner_id, bill_cycle)
    if latest is None:
        raise not_found()
    return {
        "partner_id": viewer.partner_id,
        "bill_cycle": bill_cycle,
        "currency": latest["currency"],
        "as_of_date": _iso(latest["as_of_date"]),
        "consume_amount": m2(latest["consume_amount"]),
        "refunds": m2(latest["refunds"]),
        "adjustments": m2(latest["adjustments"]),
        "estimate_amount": m2(latest["estimate_amount"]),
        "note": "does not cover taxes and has not been deducted using cash coupons",
        "history": [
            {"as_of_date": _iso(h["as_of_date"]), "estimate_amount": m2(h["estimate_amount"])}
            for h in history
        ],
    }


@router.get("/by-product", summary="Expenditure by product; refunds and adjustments in Others")
def by_product(
    db: Db,
    viewer: View,
    bill_cycle: BillCycle,
    region: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    _closed(db, viewer, bill_cycle)
    products, others = db.by_product(viewer.partner_id, bill_cycle, region or None)
    return {
        "partner_id": viewer.partner_id,
        "bill_cycle": bill_cycle,
        "region": region or None,
        "regions": db.regions(viewer.partner_id, bill_cycle),
        "products": [
            {
                "product_id": p["product_id"],
                "product_name": p["product_name"],
                "regions": p["regions"],
                "currency": p["currency"],
                "consume_amount": m2(p["consume_amount"]),
            }
            for p in products
        ],
        "others": {
            "refunds": m2(others["refunds"] if others else 0),
            "adjustments": m2(others["adjustments"] if others else 0),
        },
    }


@router.get("/by-customer", summary="Expenditure by customer with the Total Amount")
def by_customer(
    db: Db,
    viewer: View,
    bill_cycle: BillCycle,
    offset: Offset = 0,
    limit: Limit = 100,
    include_zero: bool = False,
) -> dict:
    _closed(db, viewer, bill_cycle)
    page, summary = db.by_customer(viewer.partner_id, bill_cycle, include_zero, offset, limit)
    rows = page.rows
    return {
        "partner_id": viewer.partner_id,
        "bill_cycle": bill_cycle,
        "total_amount": m2(summary["total_amount"]),
        "currency": summary["currency"],
        "total_count": page.total,
        "customers": [
            {
                "customer_id": r["customer_id"] or None,
                "customer_name": r["customer_name"] or None,
                "consume_amount": m2(r["consume_amount"]),
                "refunds": m2(r["refunds"]),
                "adjustments": m2(r["adjustments"]),
                "total_amount": m2(r["total_amount"]),
            }
            for r in rows
        ],
    }


@router.get(
    "/customers/{customer_id}/bill-lines", summary="A customer's bill lines (View More), paged"
)
def customer_lines(
    db: Db,
    viewer: View,
    customer_id: str,
    bill_cycle: BillCycle,
    offset: Offset = 0,
    limit: Limit = 100,
    sort: Annotated[str, Query(pattern="^(" + "|".join(LINE_SORTS) + ")$")] = "line",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> dict:
    if not ID_RE.match(customer_id):
        raise not_found()
    if db.customer(viewer.partner_id, bill_cycle, customer_id) is None:
        raise not_found()
    page = db.customer_lines(
        viewer.partner_id, bill_cycle, customer_id, sort, order == "desc", offset, limit
    )
    rows = page.rows
    return {
        "partner_id": viewer.partner_id,
        "bill_cycle": bill_cycle,
        "customer_id": customer_id,
        "total_count": page.total,
        "bill_lines": [
            {
                "line_no": r["line_no"],
                "charge_type": r["charge_type"],
                "product_id": r["product_id"] or None,
                "product_name": r["product_name"] or None,
                "sku_code": r["sku_code"] or None,
                "region": r["region"] or None,
                "source_month": r["source_month"],
                "late": r["late"],
                "quantity": str(r["quantity"]) if r["quantity"] is not None else None,
                "official_amount": str(r["official_amount"]),
                "discount_amount": str(r["discount_amount"]),
                "amount": str(r["amount"]),
                "currency": r["currency"],
            }
            for r in rows
        ],
    }


@router.get("/export-history", summary="Export History")
def export_history(
    db: Db,
    viewer: View,
    bill_cycle: Annotated[str | None, Query(pattern=MONTH_PATTERN)] = None,
    offset: Offset = 0,
    limit: Limit = 100,
) -> dict:
    page = db.export_history(viewer.partner_id, offset, limit, bill_cycle)
    return {
        "partner_id": viewer.partner_id,
        "total_count": page.total,
        "exports": [
            {
                "export_id": e["export_id"],
                "bill_cycle": e["bill_month"],
                "version": e["version"],
                "bill_status": e["bill_status"],
                "kind": e["kind"],
                "format": e["format"],
                "rows": e["rows"],
                "bytes": e["bytes"],
                "sha256": e["sha256"],
                "created_at": _iso(e["created_at"]),
                "download_url": f"/exports/{e['export_id']}",
            }
            for e in page.rows
        ],
    }
