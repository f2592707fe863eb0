"""What the home and month pages show, assembled from ``data`` (no SQL here) and the Amount
Due of ``pipelines.amount_due`` (one definition of the settlement)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

from pipelines.calendar import BEIJING
from pipelines.web import charts
from pipelines.web.auth import Viewer
from pipelines.web.data import CACHE, Reader
from pipelines.web.i18n import Formatter


@dataclass(frozen=True)
class Issuer:
    """Where partners send their payments (Repay): the issuer and its bank account in the
    partner's currency, from the same settings as the invoice (``pipelines.settings``)."""

    name: str
    bank: str
    account: str
    swift: str

    @classmethod
    def from_settings(cls, root: Path, currency: str | None) -> Issuer:
        from pipelines.settings import load_settings

        settings = load_settings(root)
        account = settings.account_for(currency)
        fields = dict(account.fields) if account else {}
        return cls(
            name=fields.get("Account name") or settings.issuer.name,
            bank=fields.get("Bank", ""),
            account=fields.get("Account number") or fields.get("IBAN", ""),
            swift=fields.get("SWIFT/BIC", ""),
        )


def link(viewer: Viewer | None, path: str, **params) -> str:
    q = {**(viewer.query() if viewer else {}), **params}
    q = {k: v for k, v in q.items() if v is not None and v != ""}
    return path + ("?" + urlencode(q) if q else "")


def amount_due_of(root: Path, db: Reader, partner_id: str):
    """The Amount Due pane of ``pipelines.amount_due`` (one definition of the settlement),
    kept per published file and Beijing day (its default as-of date may be today)."""
    from pipelines.amount_due import amount_due
    from pipelines.errors import KoobillError

    def compute():
        try:
            return amount_due(root, partner_id)
        except KoobillError:  # no bill and no payment yet: nothing due
            return None

    if db.ident is None:
        return compute()
    today = dt.datetime.now(BEIJING).date()
    return CACHE.get((db.ident, "amount_due", partner_id, today), compute)


def home(root: Path, db: Reader, viewer: Viewer, t: Formatter) -> dict:
    pid = viewer.partner_id
    if pid is None:
        return {"due": None, "months": [], "chart12": "", "open_month": None}
    due = amount_due_of(root, db, pid)
    months = db.months(pid)
    last = db.last_months(pid, 12)
    cur = viewer.currency
    chart12 = charts.bars(
        t("Expenditure of the last 12 months"),
        [(t.month(m["bill_month"]), m["consume_amount"]) for m in last],
        lambda v: t.money(v, cur),
    )
    open_months = [m for m in months if m["kind"] == "open"]
    open_month = None
    if open_months:
        month = open_months[0]["bill_month"]
        open_month = {"month": month, **_estimate(db, pid, month, t, cur)}
    return {
        "due": due,
        "months": months,
        "chart12": chart12,
        "open_month": open_month,
        "issuer": Issuer.from_settings(root, cur),
    }


def _estimate(db: Reader, pid: str, month: str, t: Formatter, cur: str | None) -> dict:
    history = db.estimate_history(pid, month)
    chart = charts.line(
        t("Estimate day by day"),
        [(t.date(h["as_of_date"]), h["estimate_amount"]) for h in history],
        lambda v: t.money(v, cur),
    )
    return {"estimate": db.estimate(pid, month), "estimate_chart": chart}


def month(db: Reader, viewer: Viewer, entry: dict, t: Formatter) -> dict:
    pid, m = viewer.partner_id, entry["bill_month"]
    ctx: dict = {"entry": entry, "month": m, "months": db.months(pid)}
    if entry["kind"] == "open":
        ctx.update(_estimate(db, pid, m, t, viewer.currency))
        return ctx
    versions = db.bill_versions(pid, m)
    current = next(v for v in versions if v["status"] == "closed")
    ctx.update(
        bill=current,
        versions=versions,
        negative=current["bill_amount"] < Decimal(0),
        variance=db.variance(pid, m, current["version"]),  # recon hook
    )
    return ctx
