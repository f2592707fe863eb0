"""Finance exports: every format read back by an independent reader and checked to the cent."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import subprocess
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipelines import delta, schema
from pipelines.config import init_data_dir
from pipelines.exports import export_month, list_exports, print_export_result, print_exports
from pipelines.lake import KoobillError, LockBusy, data_dir_lock, export_history_files
from pipelines.warehouse import open_warehouse, publish, rebuild

MONTH = "2026-01"
CN = "cn-partner"
US = "us_partner"
CN_NAME = "杭州云栖科技有限公司"
CN_CUSTOMER = "北京星云科技有限公司"
CN_PRODUCT = "云数据库服务"
FORMULAS = ['=HYPERLINK("x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx"]
US_STRINGS = ["Acme Cloud", "Globex Secret Customer", "SecretProductB", US]
CN_STRINGS = [CN_NAME, CN_CUSTOMER, CN_PRODUCT, "弹性云服务器", CN]
D = Decimal


def r2(x: Decimal) -> Decimal:
    return x.quantize(D("0.01"), rounding=ROUND_HALF_UP)


def line(
    n,
    component,
    charge_type,
    customer_id,
    customer_name,
    product_id,
    product_name,
    amount,
    description="",
    region="cn-north-4",
):
    return {
        "line_no": n,
        "component": component,
        "charge_type": charge_type,
        "customer_id": customer_id,
        "customer_name": customer_name,
        "product_id": product_id,
        "product_name": product_name,
        "sku_code": f"sku-{product_id}" if product_id else "",
        "region": region if product_id else "",
        "source_month": MONTH,
        "late": n == 2,
        "description": description,
        "quantity": D("3.5") if charge_type == "USAGE" else None,
        "official_amount": D(amount),
        "discount_amount": D("0"),
        "amount": D(amount),
        "record_count": 1,
    }


CN_LINES = [
    line(1, "consume", "NEW", "C1", CN_CUSTOMER, "PR1", CN_PRODUCT, "1000.123456"),
    line(2, "consume", "USAGE", "C2", FORMULAS[0], "PR2", "弹性云服务器", "250.004"),
    line(3, "consume", "AUTO_RENEW", "C3", FORMULAS[1], "PR1", CN_PRODUCT, "100"),
    line(4, "refund", "UNSUBSCRIBE", "C4", FORMULAS[2], "PR2", "弹性云服务器", "-80.505"),
    line(5, "consume", "RENEW", "C5", FORMULAS[3], "PR3", "对象存储", "50.5"),
    line(6, "consume", "NEW", "C6", FORMULAS[4], "PR3", "对象存储", "10"),
    line(7, "consume", "CHANGE", "C7", FORMULAS[5], "PR1", CN_PRODUCT, "5.25", region="cn-east-3"),
    line(8, "adjustment", "ADJUSTMENT", "", "", "", "", "-20.00", "compensation"),
    line(9, "coupon", "COUPON", "", "", "", "", "30.00", "CPN-1"),
]
US_LINES = [
    line(1, "consume", "NEW", "G1", "Globex Secret Customer", "PB", "SecretProductB", "500.00"),
    line(
        2,
        "refund",
        "UNSUBSCRIBE",
        "G1",
        "Globex Secret Customer",
        "PB",
        "SecretProductB",
        "-600.00",
    ),
]
OLD_CN_LINES = [line(1, "consume", "NEW", "C9", "旧版本客户", "PR1", CN_PRODUCT, "10")]

# the components, computed here by hand from the spec (section 4)
CN_BILL = {
    "consume_amount": D("1415.88"),  # round2(1415.877456)
    "refunds": D("80.51"),  # round2(80.505), half away from zero
    "adjustments": D("-20.00"),
    "coupon_total": D("30.00"),
    "coupon_amount": D("30.00"),
    "tax_rate": D("0.06"),
    "tax_amount": D("77.12"),  # round2(1285.37 * 0.06)
    "bill_amount": D("1362.49"),
    "amount_due": D("1362.49"),
}
US_BILL = {
    "consume_amount": D("500.00"),
    "refunds": D("600.00"),
    "adjustments": D("0.00"),
    "coupon_total": D("0.00"),
    "coupon_amount": D("0.00"),
    "tax_rate": D("0.1"),
    "tax_amount": D("0.00"),
    "bill_amount": D("-100.00"),
    "amount_due": D("0.00"),
}
OLD_CN_BILL = {
    "consume_amount": D("10.00"),
    "refunds": D("0.00"),
    "adjustments": D("0.00"),
    "coupon_total": D("0.00"),
    "coupon_amount": D("0.00"),
    "tax_rate": D("0.06"),
    "tax_amount": D("0.60"),
    "bill_amount": D("10.60"),
    "amount_due": D("10.60"),
}
COMPONENTS = [
    "consume_amount",
    "refunds",
    "adjustments",
    "coupon_amount",
    "tax_amount",
    "bill_amount",
    "amount_due",
]


def insert_bill(
    con,
    partner,
    name,
    currency,
    version,
    status,
    amounts,
    lines,
    invoice_no,
    month=MONTH,
    **extra,
):
    row = {
        **extra,
        "partner_id": partner,
        "partner_name": name,
        "bill_month": month,
        "version": version,
        "currency": currency,
        **amounts,
        "invoice_no": invoice_no,
        "status": status,
        "closed_at": datetime(2026, 2, 5, 1, 0, version, tzinfo=UTC),
        "cutoff_date": date(2026, 2, 4),
        "forced": False,
        "missing_dates": "",
        "line_count": len(lines),
        # version 2 restates version 1 and names its invoice
        "supersedes_invoice_no": f"INV-{partner}-202601" if version > 1 else None,
    }
    cols = schema.BILLS.column_names
    con.execute(
        f"insert into bills ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
        [row.get(c) for c in cols],
    )
    lcols = schema.BILL_LINES.column_names
    for ln in lines:
        full = {
            "partner_id": partner,
            "bill_month": month,
            "version": version,
            "currency": currency,
            **ln,
        }
        con.execute(
            f"insert into bill_lines ({', '.join(lcols)}) values ({', '.join('?' * len(lcols))})",
            [full[c] for c in lcols],
        )


# the invoice settings of the fixture's data dir (<data-dir>/settings.toml)
ISSUER = "示例云市场运营有限公司 Test Operator Ltd."
SETTINGS = f"""
[issuer]
name = "{ISSUER}"
address = "1 Test Road\\nShenzhen 518000"
tax_id = "TAX-ISSUER-001"

[payment]
terms_days = 15

[[payment.accounts]]
currency = "CNY"
account_name = "Test Operator"
bank = "Test Bank"
account_number = "6222 1111 2222"
"""
CN_RECIPIENT = {
    "legal_name": "杭州云栖科技股份有限公司",
    "address": "浙江省杭州市西湖区云栖小镇 1 号\n310024",
    "tax_id": "91330100TEST0001X",
    "billing_email": "finance@cn-partner.example",
}
# payments of CN: 1,000.00 before the invoice date (applied), 500.00 after it (not yet)
PAYMENTS = [
    ("pay-1", CN, D("1000.00"), datetime(2026, 2, 3, 2, 0, tzinfo=UTC)),
    ("pay-2", CN, D("500.00"), datetime(2026, 2, 10, 2, 0, tzinfo=UTC)),
]
INVOICE_DATE = date(2026, 2, 5)  # closed_at 2026-02-05 01:00 UTC, 09:00 in Beijing
DUE_DATE = date(2026, 2, 20)  # + 15 days of terms


def make_data_dir(root: Path) -> Path:
    init_data_dir(root)
    con = open_warehouse(root)
    try:
        insert_bill(
            con, CN, CN_NAME, "CNY", 1, "superseded", OLD_CN_BILL, OLD_CN_LINES, f"INV-{CN}-202601"
        )
        insert_bill(
            con,
            CN,
            CN_NAME,
            "CNY",
            2,
            "closed",
            CN_BILL,
            CN_LINES,
            f"INV-{CN}-202601-V2",
            **CN_RECIPIENT,
        )
        insert_bill(con, US, "Acme Cloud Inc.", "USD", 1, "closed", US_BILL, US_LINES, None)
        pcols = schema.PAYMENTS.column_names
        for rid, pid, amount, paid_at in PAYMENTS:
            row = {
                "record_id": rid,
                "partner_id": pid,
                "amount": amount,
                "currency": "CNY",
                "paid_at": paid_at,
                "paid_date": (paid_at + timedelta(hours=8)).date(),
                "method": "bank",
                "reference": f"INV-{CN}-202601-V2",
                "landing_date": (paid_at + timedelta(hours=8)).date(),
            }
            con.execute(
                f"insert into payments ({', '.join(pcols)}) values ({', '.join('?' * len(pcols))})",
                [row.get(c) for c in pcols],
            )
        for day, amount in [(3, "400.00"), (15, "900.10"), (31, "1315.37"), (33, "1315.37")]:
            con.execute(
                "insert into estimates (partner_id, partner_name, bill_month, as_of_date, "
                "currency, estimate_amount) values (?, ?, ?, date '2026-01-01' + ?::integer, "
                "'CNY', ?)",
                [CN, CN_NAME, MONTH, day - 1, D(amount)],
            )
    finally:
        con.close()
    publish(root)
    (root / "settings.toml").write_text(SETTINGS, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = make_data_dir(tmp_path_factory.mktemp("exports") / "data")
    result = export_month(root, MONTH)
    return root, result


@pytest.fixture()
def fresh(tmp_path):
    return make_data_dir(tmp_path / "data")


def files_of(root: Path, result, partner: str) -> dict[str, Path]:
    return {f.format: root / f.path for f in result.files if f.partner_id == partner}


def history(root: Path) -> list[dict]:
    con = open_warehouse(root)
    try:
        cur = con.execute("select * from export_history order by export_id")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def sums_by_component(amounts_and_components) -> dict[str, Decimal]:
    out = {"consume": D(0), "refund": D(0), "adjustment": D(0)}
    for comp, amount in amounts_and_components:
        if comp in out:
            out[comp] += amount
    return {
        "consume_amount": r2(out["consume"]),
        "refunds": r2(-out["refund"]),
        "adjustments": r2(out["adjustment"]),
    }


def pdf_text(path: Path) -> str:
    from pypdf import PdfReader

    return "\n".join(p.extract_text() for p in PdfReader(path).pages)


def xlsx_strings(path: Path) -> str:
    import openpyxl

    wb = openpyxl.load_workbook(path)
    return "\n".join(
        str(c.value) for ws in wb for row in ws.iter_rows() for c in row if c.value is not None
    )


def view_rows(root: Path, view: str, partner: str, month: str = MONTH) -> list[dict]:
    """The rows analysts see in a view of the published warehouse."""
    from pipelines.warehouse import connect_published

    con = connect_published(root)
    try:
        cur = con.execute(
            f"select * from {view} where partner_id = ? and bill_month = ?", [partner, month]
        )
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def pdf_words(path: Path) -> list[tuple[int, str, float, float]]:
    """(page, text, x, y) of every text run of the PDF, y measured from the top of the page."""
    from pypdf import PdfReader

    out = []
    for i, page in enumerate(PdfReader(path).pages):
        height = float(page.mediabox.height)

        def visit(text, cm, tm, _font, _size, i=i, height=height):
            if text.strip():
                x = tm[4] * cm[0] + cm[4]
                y = tm[5] * cm[3] + cm[5]
                out.append((i, text.strip(), x, height - y))

        page.extract_text(visitor_text=visit)
    return out


def where(words, needle: str) -> tuple[int, float, float]:
    hits = [(p, x, y) for p, t, x, y in words if needle in t]
    assert hits, f"{needle!r} not found in the PDF"
    return hits[0]


# ---------------------------------------------------------------------------------------------


def test_pdf_is_the_invoice_with_cjk_text(exported):
    from pypdf import PdfReader

    from pipelines.amount_due import amount_due

    root, result = exported
    path = files_of(root, result, CN)["pdf"]
    text = pdf_text(path)
    # Chinese names are real text, not boxes
    assert CN_NAME in text
    assert CN_PRODUCT in text and "对象存储" in text
    # issuer, from <data-dir>/settings.toml
    for needle in (ISSUER, "1 Test Road", "Shenzhen 518000", "TAX-ISSUER-001"):
        assert needle in text, needle
    # recipient, from the bill's partner columns (the address keeps its lines)
    for needle in CN_RECIPIENT.values():
        for ln in needle.split("\n"):
            assert ln in text, ln
    # invoice number, dates, payment reference and bank details
    for needle in (
        "INVOICE",
        f"INV-{CN}-202601-V2",
        f"Invoice date {INVOICE_DATE}",
        f"Due date {DUE_DATE}",
        f"Payment reference: INV-{CN}-202601-V2",
        "6222 1111 2222",
        "Test Bank",
    ):
        assert needle in text, needle
    # the bill's own figures, refunds and coupons negative
    for needle in (
        "Consume Amount (Expenditures) 1,415.88",
        "Refunds (Unsubscriptions and Changes) -80.51",
        "Adjustments -20.00",
        "Coupons Deducted -30.00",
        "Tax (6%) 77.12",
        "Bill amount (tax included) 1,362.49",
    ):
        assert needle in text, needle
    # payments applied and the balance as of the invoice date agree with the Amount Due pane
    pane = amount_due(root, CN, as_of=INVOICE_DATE)
    row = next(b for b in pane.bills if b["bill_month"] == MONTH)
    assert r2(row["paid_amount"]) == D("1000.00")  # pay-2 (10 February) comes later
    assert r2(row["unpaid_amount"]) == D("362.49")
    assert f"Payments Applied as of {INVOICE_DATE}, oldest bill first -1,000.00" in text
    assert f"Balance Due as of {INVOICE_DATE} 362.49" in text
    assert "362.49 CNY" in text and f"Due by {DUE_DATE}" in text
    assert f"Please pay 362.49 CNY by {DUE_DATE}" in text
    # version 2 names the invoice it replaces
    assert f"supersedes invoice INV-{CN}-202601:" in text
    assert "SUPERSEDED" not in text
    # by product: grouped by product, its region rows and subtotal; each row rounded once
    for needle in (
        "cn-east-3 5.25",
        "cn-north-4 1,100.12",
        f"Subtotal {CN_PRODUCT} 1,105.37",
        "250.00",
        "60.50",
        "Rounding (each row is rounded to the cent) 0.01",
        "Total consumption 1,415.88",
        "Total before coupons and tax 1,315.37",
    ):
        assert needle in text, needle
    # one sign convention: every refund is a negative amount, never "- | 80.51"
    assert text.count("-80.51") == 2 and "- 80.51" not in text
    reader = PdfReader(path)
    # the charts are vector shapes with real text: no raster images, their titles, labels and
    # amounts are text
    assert not [img for page in reader.pages for img in page.images]
    assert "Top products by consumption (CNY)" in text
    assert "Daily estimate of 2026-01 against the bill (CNY)" in text
    assert "Daily estimate (no tax, no coupons)" in text and "Bill: 1,362.49" in text

    # layout: the issuer top left, the title and the invoice number top right, the recipient
    # under the issuer, the amounts under both
    words = pdf_words(path)
    page_w = float(reader.pages[0].mediabox.width)
    issuer = where(words, "Test Operator")
    title = where(words, "INVOICE")
    number = where(words, f"INV-{CN}-202601-V2")
    bill_to = where(words, "BILL TO")
    legal = where(words, CN_RECIPIENT["legal_name"])
    components = where(words, "Bill components")
    assert issuer[0] == title[0] == bill_to[0] == components[0] == 0
    assert issuer[1] < page_w / 2 < title[1] and number[1] > page_w / 2
    assert abs(issuer[2] - title[2]) < 15  # side by side at the top
    assert issuer[2] < bill_to[2] < legal[2] < components[2]


def test_pdf_without_amount_due_is_a_statement(exported):
    root, result = exported
    text = pdf_text(files_of(root, result, US)["pdf"])
    assert "BILL STATEMENT" in text and "No amount due" in text
    assert "none (nothing due)" in text and "-100.00 USD" in text
    assert "Refunds (Unsubscriptions and Changes) -600.00" in text
    assert "no payment is requested" in text
    # no request for payment: no due date, no bank details, no balance line
    for absent in ("INVOICE", "Due date", "How to pay", "Payment reference", "Balance Due"):
        assert absent not in text, absent
    # no recipient columns: the partner name alone, and the issuer from the settings
    assert "Acme Cloud Inc." in text and "Tax ID: TAX-ISSUER-001" in text
    assert "E-mail:" not in text
    assert "upersedes" not in text  # a version 1 supersedes nothing


def test_pdf_pages_render(exported, tmp_path):
    """Render every page to PNG with pdftoppm (kept under tmp_path for a look) and check that
    no page is a near-empty one."""
    from PIL import Image

    root, result = exported
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (Debian package poppler-utils) is not installed")
    for partner in (CN, US):
        pdf = files_of(root, result, partner)["pdf"]
        out = tmp_path / partner
        subprocess.run(["pdftoppm", "-r", "60", "-png", str(pdf), str(out)], check=True)
        pngs = sorted(tmp_path.glob(f"{partner}-*.png"))
        from pypdf import PdfReader

        assert len(pngs) == len(PdfReader(pdf).pages) >= 1
        for png in pngs:
            img = Image.open(png).convert("L")
            w, h = img.size
            px = img.load()
            # rows of the page that hold ink, the footer excluded
            inked = [y for y in range(int(h * 0.93)) if any(px[x, y] < 200 for x in range(0, w, 2))]
            assert inked, png
            assert len(inked) > 0.15 * h, f"{png.name}: a near-empty page"


def test_xlsx_sheets_equal_views_and_bill(exported):
    import openpyxl

    from pipelines.exports import neutralise

    root, result = exported
    wb = openpyxl.load_workbook(files_of(root, result, CN)["xlsx"])
    assert wb.sheetnames == [
        "summary",
        "by product",
        "by customer",
        "details",
        "reconciliation",  # recon hook
    ]
    for ws in wb:
        assert ws.freeze_panes == "A2", ws.title
        header = [c.value for c in ws[1]]
        for h in header:  # one header style: Title Case everywhere
            assert all(w[0].isupper() or w[0] == "(" for w in h.split()), (ws.title, h)
        for row in ws.iter_rows():
            for c in row:
                assert c.data_type != "f", (ws.title, c.coordinate, c.value)

    def amount(cell, places=2):
        assert cell.data_type == "n" and isinstance(cell.value, int | float), cell.coordinate
        assert cell.number_format == "#,##0." + "0" * places, (cell.coordinate, cell.number_format)
        return D(str(cell.value))

    # every amount cell of every sheet is a number with the places it carries
    amount_columns = {
        "summary": {"Amount (CNY)": 2},
        "by product": {"Consume Amount": 2, "Refunds": 2, "Adjustments": 2},
        "by customer": {"Consume Amount": 2, "Refunds": 2, "Adjustments": 2, "Total Amount": 2},
        "details": {"Official Amount": 6, "Discount Amount": 6, "Amount": 6},
        "reconciliation": {"Expected": 2, "Actual": 2, "Residual": 2},  # recon hook
    }
    for ws in wb:
        header = [c.value for c in ws[1]]
        for name, places in amount_columns[ws.title].items():
            col = header.index(name)
            cells = [r[col] for r in ws.iter_rows(min_row=2) if r[col].value is not None]
            assert len(cells) >= 5, (ws.title, name)
            for c in cells:
                amount(c, places)

    # summary: typed facts, the signed components adding up to the bill, payments, balance
    summary = {r[0].value: r for r in wb["summary"].iter_rows(min_row=2) if r[0].value}
    assert summary["Partner Name"][1].value == CN_NAME
    assert summary["Legal Name"][1].value == CN_RECIPIENT["legal_name"]
    assert summary["Invoice Number"][1].value == f"INV-{CN}-202601-V2"
    assert summary["Supersedes Invoice"][1].value == f"INV-{CN}-202601"
    assert summary["Payment Reference"][1].value == f"INV-{CN}-202601-V2"
    assert summary["Invoice Date"][1].value == datetime(2026, 2, 5)
    assert summary["Due Date"][1].value == datetime(2026, 2, 20)
    assert summary["Version"][1].value == 2 and summary["Version"][1].data_type == "n"
    assert summary["Bill Lines"][1].value == len(CN_LINES)
    rate = summary["Tax Rate"][1]
    assert rate.data_type == "n" and D(str(rate.value)) == D("0.06") and "%" in rate.number_format
    signed = {
        "Consume Amount (Expenditures)": CN_BILL["consume_amount"],
        "Refunds (Unsubscriptions and Changes)": -CN_BILL["refunds"],
        "Adjustments": CN_BILL["adjustments"],
        "Coupons Deducted": -CN_BILL["coupon_amount"],
        "Tax (6%)": CN_BILL["tax_amount"],
    }
    for label, value in signed.items():
        assert amount(summary[label][2]) == value, label
    total = amount(summary["Bill Amount (Tax Included)"][2])
    assert total == sum(signed.values()) == CN_BILL["bill_amount"]
    assert amount(summary["Amount Due"][2]) == CN_BILL["amount_due"]
    assert amount(summary["Payments Applied"][2]) == D("-1000.00")
    assert amount(summary["Balance Due"][2]) == D("362.49")

    # by product: each row is the view's row (refunds shown negative), then rounding and total
    ws = wb["by product"]
    view = view_rows(root, "expenditure_by_product", CN)
    rows = list(ws.iter_rows(min_row=2))
    assert len(rows) == len(view) + 2
    for r, v in zip(rows, view, strict=False):
        assert r[0].value == v["product_id"] and r[1].value == v["product_name"]
        assert (r[2].value or None) == (v["region"] or None) and r[3].value == v["currency"]
        assert amount(r[4]) == v["consume_amount"]
        assert amount(r[5]) == -v["refunds"]
        assert amount(r[6]) == v["adjustments"]
    assert [v["product_id"] for v in view] == ["PR1", "PR1", "PR2", "PR3", "OTHERS"]
    rounding, totals = rows[-2], rows[-1]
    assert rounding[1].value.startswith("Rounding") and amount(rounding[4]) == D("0.01")
    assert totals[0].value == "Total"
    want = [CN_BILL["consume_amount"], -CN_BILL["refunds"], CN_BILL["adjustments"]]
    assert [amount(c) for c in totals[4:7]] == want
    for i, w in zip(range(4, 7), want, strict=True):  # the column adds up to its total
        assert sum((amount(r[i]) for r in rows[:-1] if r[i].value is not None), D(0)) == w

    # by customer: the view's rows, the partner-level row named, totals equal the bill
    ws = wb["by customer"]
    view = view_rows(root, "expenditure_by_customer", CN)
    rows = list(ws.iter_rows(min_row=2))
    data = rows[: len(view)]
    assert len(view) == 8  # C1..C7 and the partner-level adjustment; coupons are not
    for r, v in zip(data, view, strict=True):
        assert r[0].value == (v["customer_id"] or "(partner-level)")
        # the name as the view has it, neutralised (openpyxl keeps CR as _x000D_)
        assert (r[1].value or "").replace("_x000D_", "\r") == neutralise(v["customer_name"])
        assert amount(r[3]) == v["consume_amount"]
        assert amount(r[4]) == -v["refunds"]
        assert amount(r[5]) == v["adjustments"]
        assert amount(r[6]) == v["total_amount"]
    partner_level = next(r for r in data if r[0].value == "(partner-level)")
    assert amount(partner_level[5]) == D("-20.00")
    totals = rows[-1]
    net = CN_BILL["consume_amount"] - CN_BILL["refunds"] + CN_BILL["adjustments"]
    assert totals[0].value == "Total"
    assert [amount(c) for c in totals[3:7]] == [
        CN_BILL["consume_amount"],
        -CN_BILL["refunds"],
        CN_BILL["adjustments"],
        net,
    ]
    for i in range(3, 7):
        got = sum((amount(r[i]) for r in rows[:-1] if r[i].value is not None), D(0))
        assert got == amount(totals[i]), i

    # details: every bill line with its 6 places, and totals that round to the bill
    details = wb["details"]
    header = [c.value for c in details[1]]
    assert header[:4] == ["Partner ID", "Bill Month", "Version", "Line No."]
    assert "Customer ID" in header and "SKU Code" in header and "Amount" in header
    assert len(header) == len(schema.BILL_LINES.column_names)
    rows = [dict(zip(header, r, strict=True)) for r in details.iter_rows(min_row=2)]
    lines, totals = rows[: len(CN_LINES)], rows[len(CN_LINES) :]
    for r, ln in zip(lines, CN_LINES, strict=True):
        assert amount(r["Amount"], 6) == ln["amount"]
        assert amount(r["Official Amount"], 6) == ln["official_amount"]
        assert r["Line No."].value == ln["line_no"] and r["Line No."].data_type == "n"
    refund = next(r for r in lines if r["Component"].value == "refund")
    assert refund["Amount"].value == -80.505  # a negative number stays a number
    by_label = {r["Component"].value: amount(r["Amount"], 6) for r in totals}
    assert r2(by_label["Total consume"]) == CN_BILL["consume_amount"]
    assert r2(by_label["Total refunds"]) == -CN_BILL["refunds"]
    assert r2(by_label["Total adjustments"]) == CN_BILL["adjustments"]
    assert by_label["Total consume"] == D("1415.877456")  # exact, not the rounded figure
    got = sums_by_component((r["Component"].value, D(str(r["Amount"].value))) for r in lines)
    assert got == {k: CN_BILL[k] for k in got}

    # openpyxl leaves the OOXML escape of CR (_x000D_) as it is; Excel shows a CR
    names = [(r["Customer Name"].value or "").replace("_x000D_", "\r") for r in lines]
    for f in FORMULAS:
        assert "'" + f in names, f
        assert f not in names
    assert CN_CUSTOMER in names


def test_restated_version_names_the_invoice_it_replaces_and_superseded_is_marked(fresh):
    import openpyxl

    current = export_month(fresh, MONTH, partner=CN, formats=["pdf", "xlsx"])
    text = pdf_text(fresh / next(f.path for f in current.files if f.format == "pdf"))
    assert f"supersedes invoice INV-{CN}-202601:" in text
    wb = openpyxl.load_workbook(fresh / next(f.path for f in current.files if f.format == "xlsx"))
    facts = {r[0].value: r[1].value for r in wb["summary"].iter_rows(min_row=2)}
    assert facts["Supersedes Invoice"] == f"INV-{CN}-202601"

    old = export_month(fresh, MONTH, partner=CN, version=1, formats=["pdf", "xlsx"])
    assert {f.bill_status for f in old.files} == {"superseded"}
    text = pdf_text(fresh / next(f.path for f in old.files if f.format == "pdf"))
    assert "SUPERSEDED" in text and "10.60" in text and "1,362.49" not in text
    assert "supersedes invoice" not in text and "How to pay" not in text
    # its by product sheet: the view's SQL over version 1 alone
    wb = openpyxl.load_workbook(fresh / next(f.path for f in old.files if f.format == "xlsx"))
    rows = list(wb["by product"].iter_rows(min_row=2, values_only=True))
    assert rows[0][:3] == ("PR1", CN_PRODUCT, "cn-north-4") and D(str(rows[0][4])) == D("10")
    assert rows[-1][0] == "Total" and D(str(rows[-1][4])) == OLD_CN_BILL["consume_amount"]


def test_files_and_names(exported):
    root, result = exported
    assert sorted({(f.partner_id, f.format) for f in result.files}) == sorted(
        (p, f) for p in (CN, US) for f in ("pdf", "xlsx", "csv", "parquet")
    )
    cn = files_of(root, result, CN)
    folder = root / "exports" / CN / MONTH
    assert cn["pdf"] == folder / f"bill-{CN}-{MONTH}-v2.pdf"
    for fmt in ("xlsx", "csv", "parquet"):
        assert cn[fmt] == folder / f"bill-details-{CN}-{MONTH}-v2.{fmt}"
    assert files_of(root, result, US)["pdf"] == root / "exports" / US / MONTH / (
        f"bill-{US}-{MONTH}-v1.pdf"
    )
    assert all(p.stat().st_size > 0 for p in cn.values())


def test_csv_lines_neutralised_and_exact(exported):
    root, result = exported
    raw = files_of(root, result, CN)["csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert len(rows) == len(CN_LINES)
    assert list(rows[0]) == schema.BILL_LINES.column_names
    got = sums_by_component((r["component"], D(r["amount"])) for r in rows)
    assert got == {k: CN_BILL[k] for k in got}
    refund = next(r for r in rows if r["component"] == "refund")
    assert refund["amount"] == "-80.505000"  # amounts are plain decimals, never neutralised
    names = [r["customer_name"] for r in rows]
    for f in FORMULAS:
        assert "'" + f in names, f
        assert f not in names
    assert CN_CUSTOMER in names
    assert all(not r["customer_name"].startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows)


def test_parquet_typed_decimals(exported):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, result = exported
    table = pq.read_table(files_of(root, result, CN)["parquet"])
    assert table.num_rows == len(CN_LINES)
    assert table.schema.field("amount").type == pa.decimal128(38, 6)
    assert table.schema.field("version").type == pa.int32()
    assert table.schema.field("late").type == pa.bool_()
    rows = table.to_pylist()
    assert all(isinstance(r["amount"], Decimal) for r in rows)
    got = sums_by_component((r["component"], r["amount"]) for r in rows)
    assert got == {k: CN_BILL[k] for k in got}
    assert {r["partner_id"] for r in rows} == {CN} and {r["version"] for r in rows} == {2}
    assert FORMULAS[0] in {r["customer_name"] for r in rows}  # typed data is kept as is


def test_partners_never_leak(exported):
    import pyarrow.parquet as pq

    root, result = exported
    for partner, foreign in ((CN, US_STRINGS + ["旧版本客户"]), (US, CN_STRINGS)):
        f = files_of(root, result, partner)
        texts = {
            "pdf": pdf_text(f["pdf"]),
            "xlsx": xlsx_strings(f["xlsx"]),
            "csv": f["csv"].read_text(encoding="utf-8-sig"),
            "parquet": str(pq.read_table(f["parquet"]).to_pylist()),
        }
        for fmt, text in texts.items():
            for s in foreign:
                assert s not in text, (partner, fmt, s)
        assert pq.read_table(f["parquet"]).column("partner_id").unique().to_pylist() == [partner]
        # and the partner's own data is there
        own = CN_PRODUCT if partner == CN else "SecretProductB"
        assert all(own in t for t in texts.values())


def test_history_matches_files(exported):
    import pyarrow.parquet as pq

    root, result = exported
    rows = history(root)
    assert len(rows) == 8
    expected_rows = {CN: len(CN_LINES), US: len(US_LINES)}
    for r in rows:
        path = root / r["path"]
        assert not Path(r["path"]).is_absolute()
        data = path.read_bytes()
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert r["bytes"] == len(data)
        assert r["rows"] == expected_rows[r["partner_id"]]
        assert r["kind"] == ("summary" if r["format"] == "pdf" else "details")
        assert r["bill_status"] == "closed" and r["bill_month"] == MONTH
        assert r["version"] == (2 if r["partner_id"] == CN else 1)
        assert r["created_at"].tzinfo is not None
    # one file, committed by the run (the commit names it), holds the run's rows
    lake = export_history_files(root)
    assert len(lake) == 1 and lake[0].is_file()
    commits = delta.history(root / "lake" / "export_history")
    assert [c["koobill"] for c in commits] == [f"export run {result.export_run_id}"]
    assert sorted(pq.read_table(lake[0]).column("sha256").to_pylist()) == sorted(
        r["sha256"] for r in rows
    )
    listed = list_exports(root, partner=US)
    assert len(listed) == 4 and {r["partner_id"] for r in listed} == {US}


def test_export_twice_appends_history_and_leaves_no_temp_files(fresh):
    first = export_month(fresh, MONTH, partner=CN)
    second = export_month(fresh, MONTH, partner=CN, formats=["pdf", "csv", "xlsx", "parquet"])
    assert len(first.files) == len(second.files) == 4
    assert len(history(fresh)) == 8
    assert len(list_exports(fresh, partner=CN, month=MONTH)) == 8
    assert len(export_history_files(fresh)) == 2
    leftovers = [p for p in fresh.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    on_disk = sorted(p.name for p in (fresh / "exports" / CN / MONTH).iterdir())
    assert on_disk == sorted(Path(f.path).name for f in second.files)
    # run it twice, get the same bytes
    assert {f.format: f.sha256 for f in first.files} == {f.format: f.sha256 for f in second.files}
    assert not (fresh / "exports" / US).exists()
    # the warehouse's history can be rebuilt from the lake
    copy = fresh.parent / "copy"
    shutil.copytree(fresh, copy)
    rebuild(copy)
    assert len(history(copy)) == 8


def test_workbook_cells_written_directly_give_the_public_api_bytes(fresh, monkeypatch):
    """The workbook's data cells go straight into xlsxwriter's cell table, and their XML is
    written in one call each (together 0.082 -> 0.058 s of CPU a partner): the file has the
    bytes of xlsxwriter's write_string, write_number and own Worksheet, for every kind of cell
    (CJK and formula-like text, money, quantities, blanks, dates, booleans) and for a text
    longer than the direct path takes (xlsxwriter truncates it at Excel's limit)."""
    from pipelines.exports import xlsx
    from pipelines.exports.bill import Bill

    real = Bill.reconcile

    def workbook(direct: bool, longer: bool) -> bytes:
        monkeypatch.setattr(xlsx, "FAST_CELLS", direct)

        def reconcile(self):
            real(self)
            if longer:  # a line's text past half of Excel's 32,767 characters
                self.lines[0]["description"] = "=" + "长" * 40_000

        monkeypatch.setattr(Bill, "reconcile", reconcile)
        result = export_month(fresh, MONTH, partner=CN, formats=["xlsx"])
        return (fresh / result.files[0].path).read_bytes()

    assert workbook(True, False) == workbook(False, False)
    long_direct, long_public = workbook(True, True), workbook(False, True)
    assert long_direct == long_public
    assert long_direct != workbook(True, False)

    # a sheet without a totals row: its extent comes from the data rows alone
    def sheet(direct: bool) -> bytes:
        monkeypatch.setattr(xlsx, "FAST_CELLS", direct)
        path = fresh / f"sheet-{direct}.xlsx"
        owner = SimpleNamespace(partner_id=CN, month=MONTH, version=1, header={})
        book = xlsx._Book(path, owner)
        rows = [("a", Decimal("1.5"), "2.000001"), (None, None, None), ("+b", Decimal(-2), "3")]
        book.sheet("s", ["Text", "Money", "Quantity"], rows, ["text", "money2", "qty"])
        book.close()
        return path.read_bytes()

    assert sheet(True) == sheet(False)

    # cells without a format of their own take their row's, else their column's
    def formats(worksheet_class) -> bytes:
        import xlsxwriter

        path = fresh / "formats.xlsx"
        wb = xlsxwriter.Workbook(str(path), {"in_memory": True})
        wb.set_properties({"created": datetime(2000, 1, 1)})
        bold, money = wb.add_format({"bold": True}), wb.add_format({"num_format": "0.00"})
        ws = wb.add_worksheet("s", worksheet_class=worksheet_class)
        ws.set_row(1, None, bold)
        ws.set_column(2, 2, 12, money)
        for r in range(3):
            for c in range(3):
                ws.write_string(r, c, f"{r}-{c}")
            ws.write_number(r, 3, r / 3)
            ws.write_number(r, 2, r, money if r == 2 else None)
        wb.close()
        return path.read_bytes()

    assert formats(xlsx._worksheet_class()) == formats(None)


def test_worker_processes_write_the_same_files_recorded_once_in_order(exported, fresh):
    """Two worker processes (spawned) write each partner's files whole; the parent records
    them once, in partner and format order; every file has the bytes of the in-process run."""
    root, in_process = exported
    pooled = export_month(fresh, MONTH, workers=2)
    assert [(f.partner_id, f.format) for f in pooled.files] == [
        (p, fmt) for p in (CN, US) for fmt in ("pdf", "xlsx", "csv", "parquet")
    ]
    assert [(f.path, f.sha256, f.rows, f.bytes) for f in pooled.files] == [
        (f.path, f.sha256, f.rows, f.bytes) for f in in_process.files
    ]
    rows = history(fresh)
    assert sorted(r["export_id"] for r in rows) == sorted(f.export_id for f in pooled.files)
    assert len(export_history_files(fresh)) == 1
    assert not [p for p in fresh.rglob("*") if p.name.endswith(".tmp")]


def test_a_file_that_cannot_be_written_fails_the_run_after_the_others_are_recorded(fresh):
    """One partner's file cannot be written (a folder holds its name): the run fails naming
    it, and every file that did reach the disk, the other partner's too, is on record."""
    blocker = fresh / "exports" / CN / MONTH / f"bill-details-{CN}-{MONTH}-v2.csv"
    blocker.mkdir(parents=True)
    with pytest.raises(KoobillError, match=r"cannot write .*v2\.csv"):
        export_month(fresh, MONTH)
    recorded = {(r["partner_id"], r["format"]) for r in history(fresh)}
    assert recorded == {(CN, "pdf"), (CN, "xlsx")} | {
        (US, fmt) for fmt in ("pdf", "xlsx", "csv", "parquet")
    }
    for r in history(fresh):
        assert hashlib.sha256((fresh / r["path"]).read_bytes()).hexdigest() == r["sha256"]


def test_worker_count():
    from pipelines.exports.run import BILLS_PER_WORKER, worker_count

    assert worker_count(3) == 1  # a few bills: not worth starting processes
    assert worker_count(BILLS_PER_WORKER * 64) >= 1
    assert worker_count(5, workers=8) == 5  # never more processes than bills
    assert worker_count(5, workers=0) == 1


def test_worker_count_from_the_environment(monkeypatch):
    from pipelines.exports.run import worker_count

    monkeypatch.setenv("KOOBILL_EXPORT_WORKERS", "2")
    assert worker_count(100) == 2
    monkeypatch.setenv("KOOBILL_EXPORT_WORKERS", "two")
    with pytest.raises(KoobillError, match="KOOBILL_EXPORT_WORKERS"):
        worker_count(100)


def test_partner_id_that_escapes_is_refused(fresh):
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(KoobillError, match="invalid partner id"):
            export_month(fresh, MONTH, partner=bad)
        with pytest.raises(ValueError):
            export_month(fresh, MONTH, partner=bad)
    with pytest.raises(KoobillError, match="invalid partner id"):
        list_exports(fresh, partner="../x")
    assert not (fresh / "x").exists() and not (fresh / "exports").exists()


def test_month_not_closed_and_partner_without_bill(fresh):
    with pytest.raises(KoobillError, match="not closed"):
        export_month(fresh, "2026-02")
    with pytest.raises(KoobillError, match="partner nobody has no closed bill"):
        export_month(fresh, MONTH, partner="nobody")
    with pytest.raises(KoobillError, match="invalid month"):
        export_month(fresh, "2026-13")
    with pytest.raises(KoobillError, match="unknown export format"):
        export_month(fresh, MONTH, formats=["docx"])
    assert history(fresh) == []


def test_lines_that_do_not_reproduce_the_bill_are_not_exported(fresh):
    con = open_warehouse(fresh)
    try:
        insert_bill(
            con,
            CN,
            CN_NAME,
            "CNY",
            1,
            "closed",
            CN_BILL,
            CN_LINES[:2],
            f"INV-{CN}-202603",
            month="2026-03",
        )
    finally:
        con.close()
    with pytest.raises(KoobillError, match="do not reproduce"):
        export_month(fresh, "2026-03")
    assert not (fresh / "exports").exists()


def test_lock_is_held_while_writing(fresh, capsys):
    with data_dir_lock(fresh, what="test"), pytest.raises(LockBusy):
        export_month(fresh, MONTH, lock_wait_s=0)
    # a command that waits says so at once, naming the holder, and then stops clearly
    with data_dir_lock(fresh, what="close 2026-10"), pytest.raises(LockBusy, match="holds"):
        export_month(fresh, MONTH, lock_wait_s=0.5)
    err = capsys.readouterr().err
    assert f"export {MONTH} waits for the lock on {fresh}" in err
    assert "close 2026-10" in err and "up to 0.5 s" in err


def test_printed_summaries(exported):
    root, result = exported
    out: list[str] = []
    print_export_result(result, out.append)
    text = "\n".join(out)
    assert "exported 8 files" in text and "2 partners" in text
    for f in result.files:
        assert f.path in text
    out.clear()
    rows = list_exports(root, month=MONTH)
    print_exports(rows, out.append)
    text = "\n".join(out)
    assert text.splitlines()[0].startswith("created_at (UTC)")
    assert text.splitlines()[0].split()[6:8] == ["kind", "format"]  # what a file is, then its type
    assert {r["kind"] for r in rows} == {"summary", "details"}
    assert all(f" {r['kind']} " in text for r in rows)
    for r in rows:
        assert r["sha256"][:12] in text and r["path"] in text
    out.clear()
    print_exports([], out.append)
    assert out == ["no exports recorded"]


def test_pdf_table_wraps_a_long_name_only_and_keeps_all_of_it(tmp_path):
    """The invoice's tables write one line a row, and wrap a text that does not fit its column
    (at spaces, else between CJK characters) without losing any of it."""
    from fpdf import FPDF

    from pipelines.exports import fonts
    from pipelines.exports import pdf as invoice

    pdf = FPDF(unit="mm", format="A4")
    fonts.add_fonts(pdf)
    pdf.set_margins(16, 14, 16)
    pdf.add_page()
    pdf.set_font("cjk", "", 8.5)
    long_en = "Enterprise Data Warehouse Platform with Real-Time Analytics Extension Pack"
    long_cn = "企业级数据仓库平台实时分析扩展包企业级数据仓库平台实时分析扩展包"
    t = invoice._Table(pdf, [40, 30, 30, 30], ("L", "L", "L", "R"), 4.8, head=["A", "B", "C", "D"])
    y0 = pdf.get_y()
    t.row(["short", "PID", "cn-north-4", "1.00"])
    assert pdf.get_y() - y0 == pytest.approx(4.8)  # one line
    for name in (long_en, long_cn):
        y0 = pdf.get_y()
        t.row([name, "PID", "cn-north-4", "1,234.56"])
        assert pdf.get_y() - y0 >= 2 * 4.8  # wrapped
        lines = invoice._wrap(pdf, name, 40 - 2 * invoice.PAD)
        assert len(lines) >= 2 and all(invoice._width(pdf, ln) <= 38 for ln in lines)
        assert "".join(lines).replace(" ", "") == name.replace(" ", "")
    out = tmp_path / "t.pdf"
    pdf.output(str(out))
    text = pdf_text(out).replace("\n", "").replace(" ", "")
    assert long_en.replace(" ", "") in text and long_cn in text


def test_font_subsets_made_from_the_process_universe_are_those_of_the_whole_face():
    """pipelines.exports.fonts subsets a small font of the glyphs used so far (it grows when a
    document needs more): the PDF must be the bytes FPDF.add_font gives, in any order."""
    from datetime import datetime

    from fpdf import FPDF

    from pipelines import exports
    from pipelines.exports import fonts

    def doc(text: str, ours: bool) -> bytes:
        pdf = FPDF()
        if ours:
            fonts.add_fonts(pdf)
        else:
            pdf.add_font("cjk", "", str(exports.FONT_REGULAR))
            pdf.add_font("cjk", "B", str(exports.FONT_BOLD))
        pdf.set_creation_date(datetime(2026, 1, 1))
        pdf.add_page()
        pdf.set_font("cjk", "B", 10)
        pdf.cell(0, 5, "Subtotal 1,234.56")
        pdf.set_font("cjk", "", 10)
        pdf.cell(0, 5, text)
        return bytes(pdf.output())

    fonts._UNIVERSE.clear()
    fonts._SUBSETS.clear()
    texts = ["云ERP企业版 CloudERP 对象存储", "对象 Cloud", "智能文字识别 OCR Pro …", "云 ERP"]
    for text in texts:  # a new universe, a subset of it, growth, a subset again
        assert doc(text, ours=True) == doc(text, ours=False), text


@pytest.mark.parametrize(
    ("start_y", "pages", "side_by_side"),
    [
        (60, 1, True),  # room: side by side under the text
        (225, 1, True),  # a little short: side by side, lower, in the room left
        (250, 2, False),  # too short: a page of their own, one above the other at full width
    ],
)
def test_charts_never_sit_small_and_alone_on_a_page(
    exported, tmp_path, start_y, pages, side_by_side
):
    from fpdf import FPDF
    from pypdf import PdfReader

    from pipelines import exports
    from pipelines.exports import loader
    from pipelines.exports import pdf as invoice
    from pipelines.warehouse import connect_published

    root, _result = exported
    con = connect_published(root)
    try:
        bill = loader.load_bill(con, loader.bill_headers(con, MONTH, CN, None)[0])
    finally:
        con.close()
    pdf = FPDF(unit="mm", format="A4")
    pdf.add_font("cjk", "", str(exports.FONT_REGULAR))
    pdf.add_font("cjk", "B", str(exports.FONT_BOLD))
    pdf.set_auto_page_break(True, margin=16)
    pdf.set_margins(16, 14, 16)
    pdf.add_page()
    pdf.set_y(start_y)
    invoice._charts(pdf, bill)
    out = tmp_path / "charts.pdf"
    pdf.output(str(out))
    reader = PdfReader(out)
    assert len(reader.pages) == pages
    words = pdf_words(out)
    last = len(reader.pages) - 1
    products = where(words, "Top products by consumption")
    daily = where(words, "Daily estimate of")
    assert products[0] == daily[0] == last  # both charts on the same page
    page_w = float(reader.pages[0].mediabox.width)
    if side_by_side:
        assert abs(products[2] - daily[2]) < 1 and products[1] < page_w / 2 < daily[1]
    else:
        assert daily[2] - products[2] > 100  # one above the other
    # every text of the charts (axis amounts, dates, legend) above the bottom margin (16 mm)
    bottom = float(reader.pages[0].mediabox.height) - 16 * 72 / 25.4
    assert all(y <= bottom for p, _t, _x, y in words if p == last)


def test_invoices_outside_the_demo_without_settings_warn(fresh):
    """Demo issuer and bank details must not reach a real partner unnoticed: an export of
    documents from a data dir with no settings.toml (and not made by the demo) warns."""
    assert export_month(fresh, MONTH, formats=["pdf"]).warnings == []  # its own settings
    (fresh / "settings.toml").unlink()
    warned = export_month(fresh, MONTH, formats=["pdf"]).warnings
    assert len(warned) == 1 and "settings.toml" in warned[0], warned
    assert export_month(fresh, MONTH, formats=["csv"]).warnings == []  # no document, no issuer
    (fresh / ".koobill-demo").touch()
    assert export_month(fresh, MONTH, formats=["pdf"]).warnings == []


def test_export_of_a_batch_of_partners_writes_the_same_files_as_one_call_each(fresh) -> None:
    """Airflow's mapped exports pass a batch of partners to one call: the files are those of
    one call per partner, byte for byte, and a partner without a bill is named."""
    one = {}
    for p in (CN, US):
        for f in export_month(fresh, MONTH, partner=p, formats=["csv", "parquet"]).files:
            one[f.path] = f.sha256
    batch = export_month(fresh, MONTH, partner=[US, CN], formats=["csv", "parquet"])
    assert {f.path: f.sha256 for f in batch.files} == one
    assert batch.partners == sorted([CN, US])
    with pytest.raises(KoobillError, match="partner nobody has no closed bill"):
        export_month(fresh, MONTH, partner=[CN, "nobody"], formats=["csv"])
