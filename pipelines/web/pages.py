"""The HTML routes of spec section 8. Thin: validate, ask ``data`` with the viewer's partner,
render."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse

from pipelines.accounts import User, verify_password
from pipelines.web import charts, views
from pipelines.web.auth import (
    Viewer,
    check_csrf,
    not_found,
    resolve_viewer,
    sign_in,
    signed_in_user,
)
from pipelines.web.data import (
    EXPORT_ID_RE,
    ID_RE,
    INVOICE_RE,
    LINE_SORTS,
    MONTH_RE,
    PAGE_SIZES,
    Reader,
    export_file,
    reader,
)
from pipelines.web.i18n import Formatter
from pipelines.web.jobs import run_export
from pipelines.web.render import render

router = APIRouter(include_in_schema=False)


def root_of(request: Request) -> Path:
    return request.app.state.root


def get_db(request: Request, user: Annotated[User, Depends(signed_in_user)]) -> Iterator[Reader]:
    with reader(root_of(request)) as db:
        yield db


def get_viewer(
    request: Request,
    user: Annotated[User, Depends(signed_in_user)],
    db: Annotated[Reader, Depends(get_db)],
    partner: str | None = None,
) -> Viewer:
    return resolve_viewer(request, user, db, partner)


Db = Annotated[Reader, Depends(get_db)]
View = Annotated[Viewer, Depends(get_viewer)]


def month_of(db: Reader, viewer: Viewer, month: str) -> dict:
    """The month's entry for this partner (closed or open), else 404."""
    return month_ctx(db, viewer, month)["entry"]


def month_ctx(db: Reader, viewer: Viewer, month: str) -> dict:
    """The month, its entry (closed or open) and the picker's months; 404 if not the partner's."""
    if not MONTH_RE.match(month) or viewer.partner_id is None:
        raise not_found()
    months = db.months(viewer.partner_id)
    for m in months:
        if m["bill_month"] == month:
            return {"month": month, "entry": m, "months": months}
    raise not_found()


def _fmt(request: Request) -> Formatter:
    return Formatter(request.state.lang)


def _window(page: int, size: int) -> tuple[int, int]:
    """(offset, size) of a page number; sizes from a short list."""
    size = size if size in PAGE_SIZES else PAGE_SIZES[0]
    return (max(1, min(page, 1_000_000)) - 1) * size, size


# --- signing in and out ---------------------------------------------------------------------------


# \A..\Z, not ^..$: `$` also matches before a final newline
SAFE_NEXT = re.compile(r"\A/([^/\\\x00-\x20\x7f][^\\\x00-\x1f\x7f]*)?\Z")


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (no //host, no backslash, no
    control characters), else the home page."""
    return target if target and SAFE_NEXT.match(target) else "/"


@router.get("/healthz")
def healthz() -> PlainTextResponse:
    return PlainTextResponse("ok")


@router.get("/login")
def login_form(request: Request, next: str | None = None):
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form(max_length=200)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
):
    check_csrf(request, csrf_token)
    throttle = request.app.state.throttle
    keys = (f"user:{username.lower()}", f"ip:{request.client.host if request.client else '-'}")
    t = _fmt(request)
    wait = throttle.wait_s(*keys)
    if wait > 0:
        msg = t("Too many failed sign-ins. Try again in %(s)s seconds.", s=int(wait) + 1)
        resp = render(request, "login.html", status_code=429, next=_safe_next(next), error=msg)
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    user = await asyncio.to_thread(verify_password, root_of(request), username, password)
    if user is None:
        throttle.failed(*keys)
        await asyncio.sleep(0.3)  # every failure costs the caller time
        msg = t("Wrong user name or password, or the account is disabled.")
        return render(request, "login.html", status_code=401, next=_safe_next(next), error=msg)
    throttle.succeeded(*keys)
    sign_in(request, user)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.get("/logout")
def logout_form(request: Request, user: Annotated[User, Depends(signed_in_user)]):
    return render(request, "logout.html")


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form(max_length=200)] = ""):
    check_csrf(request, csrf_token)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- the pages ------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, db: Db, viewer: View):
    t = _fmt(request)
    ctx = views.home(root_of(request), db, viewer, t)
    return render(request, "home.html", viewer, **ctx)


@router.get("/bills")
def pick_month(request: Request, viewer: View, month: str = ""):
    if not MONTH_RE.match(month):
        raise not_found()
    return RedirectResponse(views.link(viewer, f"/bills/{month}"), status_code=303)


@router.get("/bills/{month}")
def month_page(request: Request, month: str, db: Db, viewer: View):
    entry = month_of(db, viewer, month)
    ctx = views.month(db, viewer, entry, _fmt(request))
    return render(request, "month.html", viewer, tab="summary", **ctx)


@router.get("/bills/{month}/by-product")
def by_product(request: Request, month: str, db: Db, viewer: View, region: str | None = None):
    ctx = month_ctx(db, viewer, month)
    regions = db.regions(viewer.partner_id, month)
    region = region or None
    if region is not None and region not in regions:
        raise not_found()
    products, others = db.by_product(viewer.partner_id, month, region)
    t = _fmt(request)
    chart = charts.hbars(
        t("Expenditure by product"),
        [(p["product_name"] or p["product_id"], p["consume_amount"]) for p in products[:15]],
        lambda v: t.money(v, viewer.currency),
    )
    return render(
        request,
        "by_product.html",
        viewer,
        tab="product",
        **ctx,
        regions=regions,
        region=region,
        products=products,
        others=others,
        chart=chart,
    )


@router.get("/bills/{month}/by-customer")
def by_customer(
    request: Request,
    month: str,
    db: Db,
    viewer: View,
    zero: bool = False,
    page: Annotated[int, Query(ge=1)] = 1,
    size: int = 20,
):
    ctx = month_ctx(db, viewer, month)
    offset, size = _window(page, size)
    result, summary = db.by_customer(viewer.partner_id, month, zero, offset, size)
    path = request.url.path
    return render(
        request,
        "by_customer.html",
        viewer,
        tab="customer",
        **ctx,
        result=result,
        summary=summary,
        zero=zero,
        pager_url=lambda p: views.link(viewer, path, zero=1 if zero else None, page=p, size=size),
    )


@router.get("/bills/{month}/customers/{customer_id}")
def customer_lines(
    request: Request,
    month: str,
    customer_id: str,
    db: Db,
    viewer: View,
    sort: str = "line",
    dir: str = "asc",
    page: Annotated[int, Query(ge=1)] = 1,
    size: int = 50,
):
    ctx = month_ctx(db, viewer, month)
    if not ID_RE.match(customer_id):
        raise not_found()
    customer = db.customer(viewer.partner_id, month, customer_id)
    if customer is None:
        raise not_found()
    sort = sort if sort in LINE_SORTS else "line"
    offset, size = _window(page, size)
    dir = "desc" if dir == "desc" else "asc"
    lines = db.customer_lines(
        viewer.partner_id, month, customer_id, sort, dir == "desc", offset, size
    )
    path = request.url.path
    return render(
        request,
        "customer.html",
        viewer,
        tab="customer",
        **ctx,
        customer=customer,
        lines=lines,
        sort=sort,
        dir=dir,
        pager_url=lambda p: views.link(viewer, path, sort=sort, dir=dir, page=p, size=size),
    )


@router.get("/invoices/{invoice_no}")
def invoice(
    request: Request,
    invoice_no: str,
    user: Annotated[User, Depends(signed_in_user)],
    partner: str | None = None,
):
    """The invoice PDF of a bill version: the exported summary, exported now if need be."""
    if not INVOICE_RE.match(invoice_no):
        raise not_found()
    root = root_of(request)
    with reader(root) as db:  # closed before an export runs
        viewer = resolve_viewer(request, user, db, partner)
        bill = db.invoice_bill(viewer.partner_id, invoice_no) if viewer.partner_id else None
        if bill is None:
            raise not_found()
        done = [export_file(root, r) for r in db.summary_export(*_key(bill))]
    path = next((p for p in done if p is not None), None)
    if path is None:
        outcome = run_export(root, bill["bill_month"], bill["partner_id"], ["pdf"], bill["version"])
        if outcome.busy:
            raise HTTPException(503, _busy(request), headers={"Retry-After": "30"})
        made = [f for f in outcome.files if f["format"] == "pdf"]
        path = (root / made[0]["path"]) if outcome.ok and made else None
        if path is None or not path.is_file():
            raise HTTPException(404, _fmt(request)("The invoice document cannot be produced."))
    return FileResponse(path, media_type="application/pdf", filename=f"{invoice_no}.pdf")


def _key(bill: dict) -> tuple[str, str, int]:
    return bill["partner_id"], bill["bill_month"], bill["version"]


def _busy(request: Request) -> str:
    return _fmt(request)(
        "Another koobill job (an ingest, a close or an export) is running. Try again in a minute."
    )


@router.get("/exports")
def exports_page(
    request: Request,
    db: Db,
    viewer: View,
    month: str | None = None,
    page: Annotated[int, Query(ge=1)] = 1,
    done: int | None = None,
):
    if month is not None and not MONTH_RE.match(month):
        month = None
    offset, size = _window(page, 20)
    closed = (
        [m for m in db.months(viewer.partner_id) if m["kind"] == "closed"]
        if (viewer.partner_id)
        else []
    )
    history = (
        db.export_history(viewer.partner_id, offset, size, month) if viewer.partner_id else None
    )
    return render(
        request,
        "exports.html",
        viewer,
        closed=closed,
        history=history,
        month=month,
        done=done,
        pager_url=lambda p: views.link(viewer, "/exports", month=month, page=p),
    )


@router.post("/exports")
def export_now(
    request: Request,
    user: Annotated[User, Depends(signed_in_user)],
    month: Annotated[str, Form(max_length=7)] = "",
    formats: Annotated[list[str], Form()] = (),
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    partner: Annotated[str | None, Form(max_length=64)] = None,
):
    """Export (bill summary PDF, bill details XLSX) of one closed month of the viewer's partner."""
    check_csrf(request, csrf_token)
    root = root_of(request)
    with reader(root) as db:
        viewer = resolve_viewer(request, user, db, partner)
        entry = month_of(db, viewer, month) if MONTH_RE.match(month) else None
    if entry is None or entry["kind"] != "closed":
        raise not_found()
    fmts = [f for f in ("pdf", "xlsx") if f in set(formats)] or ["pdf", "xlsx"]
    outcome = run_export(root, month, viewer.partner_id, fmts)
    if not outcome.ok:
        status = 503 if outcome.busy else 500
        message = _busy(request) if outcome.busy else _fmt(request)("The export failed.")
        raise HTTPException(
            status, message, headers={"Retry-After": "30"} if outcome.busy else None
        )
    return RedirectResponse(
        views.link(viewer, "/exports", month=month, done=len(outcome.files)), status_code=303
    )


@router.get("/exports/{export_id}")
def export_download(request: Request, export_id: str, db: Db, viewer: View):
    if not EXPORT_ID_RE.match(export_id) or viewer.partner_id is None:
        raise not_found()
    row = db.export(viewer.partner_id, export_id)
    path = export_file(root_of(request), row) if row else None
    if path is None:
        raise not_found()
    media = {
        "pdf": "application/pdf",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "csv": "text/csv; charset=utf-8",
        "parquet": "application/vnd.apache.parquet",
    }.get(str(row["format"]), "application/octet-stream")
    return FileResponse(path, media_type=media, filename=path.name)
