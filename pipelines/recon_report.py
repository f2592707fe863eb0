"""What ``koobill reconcile`` and ``koobill explain`` print, and the XLSX export's
``reconciliation`` sheet (the tables are built by ``pipelines.reconcile``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines import calendar as cal
from pipelines.config import require_data_dir
from pipelines.errors import KoobillError
from pipelines.reconcile import NOT_RESIDUAL, Echo, MonthReport, query_rows

# --- reading and printing ----------------------------------------------------------------------


def published(data_dir: str | Path | None, query: str, params: list) -> list[dict]:
    """Rows of the published warehouse (read-only; never waits for a writer)."""
    from pipelines.warehouse import connect_published

    con = connect_published(require_data_dir(data_dir))
    try:
        return query_rows(con, query, params)
    finally:
        con.close()


def _num(v: Any, unit: str | None) -> str:
    if v is None:
        return "-"
    if unit in ("rows", "lines", "files"):
        return f"{int(v):,}"
    return f"{Decimal(v):,.2f}" if Decimal(v) == round(Decimal(v), 2) else f"{Decimal(v):,f}"


# how a row's status prints (a credit balance is listed, but it is no residual to clear)
_LABEL = {"ok": "ok", "credit_balance": "CREDIT"}


def print_reconciliation(report: MonthReport, echo: Echo, all_rows: bool = False) -> None:
    """The month's reconciliation, link by link; every residual with the rows behind it."""
    rows = report.reconciliation
    echo(f"reconciliation of {report.month} (payments as of {_as_of(rows)})")
    names = {
        1: "landed rows = accepted + quarantined + duplicates, per landing file",
        2: "accepted records -> bill lines (current versions)",
        3: "bill lines -> bills (every version)",
        4: "bills -> invoices and their exported documents",
        5: "payments -> the invoices they settle",
    }
    for step, title in names.items():
        mine = [r for r in rows if r["step"] == step]
        bad = [r for r in mine if r["status"] not in NOT_RESIDUAL]
        echo(f"  {step}. {title}: {len(mine)} checked, {len(bad)} residual(s)")
        for r in mine if all_rows else [r for r in mine if r["status"] != "ok"]:
            who = " ".join(
                x for x in (r["partner_id"], f"v{r['version']}" if r["version"] else None) if x
            )
            echo(
                f"     {_LABEL.get(r['status'], 'RESIDUAL'):<8} {who + ' ' if who else ''}"
                f"{r['subject']}: expected {_num(r['expected'], r['unit'])}, actual "
                f"{_num(r['actual'], r['unit'])}, residual {_num(r['residual'], r['unit'])} "
                f"{r['unit']}"
            )
            if r["detail"]:
                echo(f"              {r['detail']}")
    n = len(report.residuals)
    echo(
        f"{report.month}: every residual is zero"
        if n == 0
        else f"{report.month}: {n} residual(s) listed above"
    )


def _as_of(rows: list[dict]) -> str:
    return str(rows[0]["as_of_date"]) if rows else "-"


def explain(data_dir: str | Path | None, partner: str, month: str, version: int | None) -> dict:
    """The bill version, its provenance and its estimate variance, from the published
    warehouse."""
    from pipelines.config import check_partner_id

    cal.parse_month(month)
    try:
        check_partner_id(partner)
    except ValueError as exc:
        raise KoobillError(str(exc)) from None
    where = "partner_id = ? and bill_month = ? and " + (
        "version = ?" if version is not None else "status = 'closed'"
    )
    params: list = [partner, month] + ([version] if version is not None else [])
    bills = published(data_dir, f"select * from bills where {where}", params)
    if not bills:
        raise KoobillError(
            f"no {'version ' + str(version) + ' of the' if version else 'closed'} bill of "
            f"partner {partner} for {month}"
        )
    b = bills[0]
    key = [partner, month, b["version"]]
    q = "where partner_id = ? and bill_month = ? and version = ?"
    return {
        "bill": b,
        "provenance": published(
            data_dir, f"select * from bill_provenance {q} order by kind, name", key
        ),
        "variance": published(
            data_dir, f"select * from estimate_variance {q} order by term_no", key
        ),
    }


def print_explain(info: dict, echo: Echo) -> None:
    b = info["bill"]
    cur = b["currency"]
    echo(
        f"bill {b['partner_id']} {b['bill_month']} v{b['version']} ({b['status']}), "
        f"invoice {b['invoice_no'] or '-'}, closed at {b['closed_at']}"
    )
    echo(
        f"  bill amount {b['bill_amount']:,.2f} {cur} = consume {b['consume_amount']:,.2f} "
        f"- refunds {b['refunds']:,.2f} + adjustments {b['adjustments']:,.2f} "
        f"- coupons {b['coupon_amount']:,.2f} + tax {b['tax_amount']:,.2f}"
    )
    prov = info["provenance"]
    if not prov:
        echo("  provenance: none recorded (run koobill reconcile --month M)")
    for kind, title in (("code", "code"), ("setting", "settings that change amounts")):
        echo(f"  {title}:")
        for r in (r for r in prov if r["kind"] == kind):
            echo(f"    {r['name']} = {r['value']}")
    files = [r for r in prov if r["kind"] == "landing_file"]
    echo(f"  landing files ({len(files)}):")
    for r in files:
        billed = "" if r["records_billed"] is None else f", {r['records_billed']:,} billed"
        echo(
            f"    {r['name']}  {r['bytes']:,} bytes  sha256 {r['sha256']}  "
            f"{r['rows_read']:,} rows{billed}"
        )
    var = info["variance"]
    if var:
        v0 = var[0]
        as_of = v0["estimate_as_of"] or "none"
        echo(
            f"  estimate as of {as_of}: {v0['estimate_amount']:,.2f} -> bill "
            f"{v0['bill_amount']:,.2f} (difference {v0['bill_amount'] - v0['estimate_amount']:+,.2f})"
        )
        for r in var:
            echo(f"    {r['term']:<24}{r['amount']:>+16,.2f}  {r['explanation']}")


# --- the XLSX export's reconciliation sheet ----------------------------------------------------

XLSX_HEADERS = ("Step", "Check", "Subject", "Expected", "Actual", "Residual", "Status", "Detail")
XLSX_KINDS = ("int", "text", "text", "money2", "money2", "money2", "text", "text")


def xlsx_rows(bill: Any) -> list[list[Any]]:
    """The reconciliation of one exported bill version (a ``pipelines.exports.Bill``), from the
    bill itself: its lines -> its components and arithmetic, its invoice, and the payments
    applied to it as of the invoice date (the document's settlement)."""
    checks = _line_checks(bill) + _invoice_checks(bill)
    return [
        [step, check, subject, exp, act, exp - act, "ok" if exp == act else "residual", detail]
        for step, check, subject, exp, act, detail in checks
    ]


Check = tuple[int, str, str, Decimal, Decimal, str]


def _amount(header: dict, name: str) -> Decimal:
    return Decimal(header.get(name) or 0)


def _line_checks(bill: Any) -> list[Check]:
    """Step 3: the bill's components against its lines and its own arithmetic."""
    from pipelines.exports.common import round2

    h = bill.header
    zero = Decimal(0)
    sums = {"consume": zero, "refund": zero, "adjustment": zero, "coupon": zero}
    for ln in bill.lines:
        if ln["component"] in sums:
            sums[ln["component"]] += Decimal(ln["amount"])

    def d(name: str) -> Decimal:
        return _amount(h, name)

    net = d("consume_amount") - d("refunds") + d("adjustments")
    expected = (
        ("consume_amount", round2(sums["consume"]), "round2 of the consume lines"),
        ("refunds", round2(-sums["refund"]), "round2 of the refund lines, positive"),
        ("adjustments", round2(sums["adjustment"]), "round2 of the adjustment lines"),
        ("coupon_total", round2(sums["coupon"]), "round2 of the coupon lines"),
        (
            "coupon_amount",
            min(d("coupon_total"), max(net, zero)),
            "min(coupon_total, max(net, 0))",
        ),
        (
            "tax_amount",
            round2(max(net - d("coupon_amount"), zero) * d("tax_rate")),
            "round2(max(net - coupon_amount, 0) * tax_rate)",
        ),
        (
            "bill_amount",
            net - d("coupon_amount") + d("tax_amount"),
            "net - coupon_amount + tax_amount",
        ),
        ("amount_due", max(d("bill_amount"), zero), "max(bill_amount, 0)"),
    )
    return [(3, "lines_to_bill", name, exp, d(name), why) for name, exp, why in expected]


def _invoice_checks(bill: Any) -> list[Check]:
    """Step 4: the invoice number; step 5: the payments applied as of the invoice date."""
    zero = Decimal(0)
    want = f"INV-{bill.partner_id}-{bill.month.replace('-', '')}" + (
        f"-V{bill.version}" if bill.version > 1 else ""
    )
    due = _amount(bill.header, "amount_due")
    inv = bill.invoice_no
    ok = (inv == want) if due > 0 else inv is None
    checks: list[Check] = [
        (
            4,
            "bill_to_invoice",
            inv or "(no invoice)",
            due,
            due if ok else zero,
            ("invoiced in full" if due > 0 else "nothing due, no invoice")
            if ok
            else f"invoice number {inv or 'missing'}, expected {want if due > 0 else 'none'}",
        )
    ]
    if bill.invoice_date is not None and due > 0:
        paid = bill.paid_amount
        checks.append(
            (
                5,
                "invoice_settlement",
                inv or "(no invoice)",
                due,
                paid + bill.balance_due,
                f"paid {paid:,.2f}, balance {bill.balance_due:,.2f} as of the invoice date "
                f"{bill.invoice_date} (oldest bill first)",
            )
        )
    return checks


def xlsx_sheet(book: Any, bill: Any) -> None:
    """Add the ``reconciliation`` sheet to the workbook of ``bill``."""
    book.sheet("reconciliation", XLSX_HEADERS, xlsx_rows(bill), XLSX_KINDS)
