"""A small published data dir for the page's tests: two partners whose every name is unique,
so that a test can assert that no byte of one partner reaches the other's answers.

Bills are written straight into the warehouse (as tests/test_exports.py does), their components
computed here from their lines by the rules of spec section 4."""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from pipelines import schema

D = Decimal
A, B = "pa-cn", "pb-us"
A_NAME, B_NAME = "杭州云栖科技有限公司", "Globex Secret Corp"
B_CUSTOMER = "Globex Secret Customer"
B_STRINGS = [B, B_NAME, B_CUSTOMER, "G1-secret", "SecretProductB", "INV-pb-us-202609", "USD"]
PASSWORDS = {
    "alice": "alice-password-1",
    "bob": "bob-password-1",
    "fiona": "fiona-password-1",
    "dave": "dave-password-1",
}
CLOSED, RESTATED, OPEN = "2026-09", "2026-10", "2026-11"


def r2(x: Decimal) -> Decimal:
    return x.quantize(D("0.01"), rounding=ROUND_HALF_UP)


def _line(n, component, charge, cid, cname, pid, pname, region, amount, **kw):
    return {
        "line_no": n,
        "component": component,
        "charge_type": charge,
        "customer_id": cid,
        "customer_name": cname,
        "product_id": pid,
        "product_name": pname,
        "sku_code": f"sku-{pid}" if pid else None,
        "region": region,
        "source_month": kw.get("source_month"),
        "late": False,
        "description": kw.get("description"),
        "quantity": D(kw.get("quantity", "1")) if charge == "USAGE" else None,
        "official_amount": D(amount),
        "discount_amount": D(0),
        "amount": D(amount),
        "record_count": 1,
    }


def a_lines(month: str, scale: int = 1) -> list[dict]:
    """45 customers; C001 has 120 lines (paging); C045 nets to zero; one partner-level
    adjustment (customer NULL); two regions."""
    lines = []
    n = 0
    for i in range(120):
        n += 1
        region = "cn-north-4" if i % 2 else "ap-southeast-1"
        lines.append(
            _line(
                n,
                "consume",
                "USAGE",
                "C001",
                "北京星云科技有限公司",
                "PR1",
                "云数据库服务",
                region,
                f"{(i + 1) * scale}.125",
                quantity=str(i + 1),
            )
        )
    for c in range(2, 45):
        n += 1
        lines.append(
            _line(
                n,
                "consume",
                "NEW",
                f"C{c:03d}",
                f"客户 {c}",
                "PR2",
                "弹性云服务器",
                "cn-north-4",
                f"{c * 10 * scale}.00",
            )
        )
    n += 1
    lines.append(
        _line(
            n, "consume", "NEW", "C045", "零消费客户", "PR2", "弹性云服务器", "cn-north-4", "10.00"
        )
    )
    n += 1
    lines.append(
        _line(
            n,
            "refund",
            "UNSUBSCRIBE",
            "C045",
            "零消费客户",
            "PR2",
            "弹性云服务器",
            "cn-north-4",
            "-10.00",
        )
    )
    n += 1
    lines.append(
        _line(
            n,
            "adjustment",
            "ADJUSTMENT",
            None,
            None,
            None,
            None,
            None,
            "-20.00",
            description="compensation",
        )
    )
    for ln in lines:
        ln["source_month"] = month
    return lines


def b_lines(month: str, negative: bool) -> list[dict]:
    lines = [
        _line(
            1,
            "consume",
            "NEW",
            "G1-secret",
            B_CUSTOMER,
            "PB",
            "SecretProductB",
            "us-east-1",
            "500.00",
        ),
    ]
    if negative:
        lines.append(
            _line(
                2,
                "refund",
                "UNSUBSCRIBE",
                "G1-secret",
                B_CUSTOMER,
                "PB",
                "SecretProductB",
                "us-east-1",
                "-600.00",
            )
        )
    for ln in lines:
        ln["source_month"] = month
    return lines


def bill_of(partner, name, currency, tax_rate, month, version, status, lines, coupons="0"):
    sums = {"consume": D(0), "refund": D(0), "adjustment": D(0)}
    for ln in lines:
        sums[ln["component"]] += ln["amount"]
    consume, refunds, adjustments = r2(sums["consume"]), r2(-sums["refund"]), r2(sums["adjustment"])
    net = consume - refunds + adjustments
    coupon = min(r2(D(coupons)), max(net, D(0)))
    tax = r2(max(net - coupon, D(0)) * D(tax_rate))
    bill_amount = net - coupon + tax
    due = max(bill_amount, D(0))
    yyyymm = month.replace("-", "")
    invoice = None
    if due > 0:
        invoice = f"INV-{partner}-{yyyymm}" + (f"-V{version}" if version > 1 else "")
    return {
        "partner_id": partner,
        "partner_name": name,
        "bill_month": month,
        "version": version,
        "currency": currency,
        "consume_amount": consume,
        "refunds": refunds,
        "adjustments": adjustments,
        "coupon_total": r2(D(coupons)),
        "coupon_amount": coupon,
        "tax_rate": D(tax_rate),
        "tax_amount": tax,
        "bill_amount": bill_amount,
        "amount_due": due,
        "invoice_no": invoice,
        "status": status,
        "closed_at": dt.datetime(int(month[:4]), int(month[5:]), 28, 1, 0, version, tzinfo=dt.UTC)
        + dt.timedelta(days=8),
        "cutoff_date": dt.date(2026, 11, 4),
        "forced": False,
        "missing_dates": None,
        "line_count": len(lines),
    }


def _insert(con, table: schema.Table, rows: list[dict]) -> None:
    cols = table.column_names
    con.executemany(
        f"insert into {table.name} ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
        [[r.get(c) for c in cols] for r in rows],
    )


def build(root: Path, *, exports: bool = True) -> dict:
    """Write the warehouse, the exports and the accounts; return the facts tests check."""
    from pipelines import accounts
    from pipelines.exports import export_month
    from pipelines.warehouse import open_warehouse, publish, set_meta

    (root / "landing").mkdir(parents=True, exist_ok=True)  # a koobill data dir
    bills, lines = [], []

    def add(bill, blines):
        bills.append(bill)
        for ln in blines:
            lines.append(
                {
                    **ln,
                    "partner_id": bill["partner_id"],
                    "bill_month": bill["bill_month"],
                    "version": bill["version"],
                    "currency": bill["currency"],
                }
            )

    a_sep = a_lines(CLOSED)
    add(bill_of(A, A_NAME, "CNY", "0.06", CLOSED, 1, "closed", a_sep), a_sep)
    a_old = a_lines(RESTATED)
    add(bill_of(A, A_NAME, "CNY", "0.06", RESTATED, 1, "superseded", a_old), a_old)
    a_new = a_lines(RESTATED, scale=2)
    restated = bill_of(A, A_NAME, "CNY", "0.06", RESTATED, 2, "closed", a_new, coupons="30")
    add({**restated, "supersedes_invoice_no": f"INV-{A}-202610"}, a_new)
    b_sep = b_lines(CLOSED, negative=False)
    add(bill_of(B, B_NAME, "USD", "0.1", CLOSED, 1, "closed", b_sep), b_sep)
    b_oct = b_lines(RESTATED, negative=True)
    add(bill_of(B, B_NAME, "USD", "0.1", RESTATED, 1, "closed", b_oct), b_oct)

    estimates = []
    for p, name, cur, base in [(A, A_NAME, "CNY", D("1000")), (B, B_NAME, "USD", D("77"))]:
        for day in range(1, 7):
            amount = base * day
            estimates.append(
                {
                    "partner_id": p,
                    "partner_name": name,
                    "bill_month": OPEN,
                    "as_of_date": dt.date(2026, 11, day),
                    "currency": cur,
                    "consume_amount": amount,
                    "refunds": D(0),
                    "adjustments": D(0),
                    "estimate_amount": amount,
                }
            )
    payments = [
        {
            "record_id": "pay-a-1",
            "partner_id": A,
            "amount": D("1000.00"),
            "currency": "CNY",
            "paid_at": dt.datetime(2026, 10, 20, 2, 0, tzinfo=dt.UTC),
            "paid_date": dt.date(2026, 10, 20),
            "method": "bank_transfer",
            "reference": "INV-pa-cn-202609",
            "landing_date": dt.date(2026, 10, 20),
        }
    ]
    con = open_warehouse(root)
    try:
        _insert(con, schema.BILLS, bills)
        _insert(con, schema.BILL_LINES, lines)
        _insert(con, schema.ESTIMATES, estimates)
        _insert(con, schema.PAYMENTS, payments)
        set_meta(con, "latest_landing_date", "2026-11-06")
    finally:
        con.close()
    publish(root)
    if exports:
        export_month(root, RESTATED, formats=["pdf", "xlsx"], lock_wait_s=0)
        export_month(root, CLOSED, partner=B, formats=["pdf"], lock_wait_s=0)
    accounts.add_user(root, "alice", "partner", PASSWORDS["alice"], A)
    accounts.add_user(root, "bob", "partner", PASSWORDS["bob"], B)
    accounts.add_user(root, "fiona", "finance", PASSWORDS["fiona"])
    accounts.add_user(root, "dave", "partner", PASSWORDS["dave"], A)
    accounts.disable_user(root, "dave")
    return {"bills": bills, "a_oct": bills[2], "b_oct": bills[4], "a_sep": bills[0]}


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    return CSRF_RE.search(html).group(1)


def login(client, username: str, password: str | None = None, expect: int = 303):
    page = client.get("/login")
    r = client.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "csrf_token": csrf_of(page.text),
            "next": "/",
        },
        follow_redirects=False,
    )
    assert r.status_code == expect, r.text[:500]
    return r
