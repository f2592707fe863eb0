"""Finance exports: every format read back by an independent reader and checked to the cent."""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from pipelines import schema
from pipelines.config import init_data_dir
from pipelines.exports import export_month, list_exports, print_export_result, print_exports
from pipelines.lake import KoobillError, LockBusy, data_dir_lock
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
        "region": "cn-north-4" if product_id else "",
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
    line(7, "consume", "CHANGE", "C7", FORMULAS[5], "PR1", CN_PRODUCT, "5.25"),
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
    con, partner, name, currency, version, status, amounts, lines, invoice_no, month=MONTH
):
    row = {
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
        [row[c] for c in cols],
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


def make_data_dir(root: Path) -> Path:
    init_data_dir(root)
    con = open_warehouse(root)
    try:
        insert_bill(
            con, CN, CN_NAME, "CNY", 1, "superseded", OLD_CN_BILL, OLD_CN_LINES, f"INV-{CN}-202601"
        )
        insert_bill(con, CN, CN_NAME, "CNY", 2, "closed", CN_BILL, CN_LINES, f"INV-{CN}-202601-V2")
        insert_bill(con, US, "Acme Cloud Inc.", "USD", 1, "closed", US_BILL, US_LINES, None)
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


# ---------------------------------------------------------------------------------------------


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


def test_pdf_is_the_invoice_with_cjk_text(exported):
    from pypdf import PdfReader

    root, result = exported
    path = files_of(root, result, CN)["pdf"]
    text = pdf_text(path)
    # Chinese names are real text, not boxes
    assert CN_NAME in text
    assert CN_PRODUCT in text and "对象存储" in text
    for needle in (
        CN,
        MONTH,
        f"INV-{CN}-202601-V2",
        "1,415.88",
        "80.51",
        "-20.00",
        "30.00",
        "77.12",
        "1,362.49",
        "Others",
        "Refunds",
        "Adjustments",
        "Tax (6%)",
    ):
        assert needle in text, needle
    assert "SUPERSEDED" not in text
    # version 2 names the invoice it supersedes
    assert f"supersedes invoice INV-{CN}-202601" in text
    assert f"Supersedes invoice INV-{CN}-202601\n" in text or f"INV-{CN}-202601\n" in text
    reader = PdfReader(path)
    images = [img for page in reader.pages for img in page.images]
    assert len(images) >= 2  # top products and daily estimate charts
    # by product: the consumption of PR1 (1000.123456 + 100 + 5.25) rounded once, and the
    # rounding line that makes the products add up to the consume amount (1415.87 + 0.01)
    assert "1,105.37" in text and "250.00" in text and "60.50" in text
    assert "Rounding" in text and "0.01" in text and "Total consumption" in text
    us_text = pdf_text(files_of(root, result, US)["pdf"])
    assert "Bill statement" in us_text and "-100.00" in us_text and "none (nothing due)" in us_text
    assert "upersedes" not in us_text  # a version 1 supersedes nothing


def test_xlsx_sheets_formats_and_amounts(exported):
    import openpyxl

    root, result = exported
    wb = openpyxl.load_workbook(files_of(root, result, CN)["xlsx"])
    assert wb.sheetnames == ["summary", "by product", "by customer", "details"]
    for ws in wb:
        assert ws.freeze_panes == "A2", ws.title
        for row in ws.iter_rows():
            for c in row:
                assert c.data_type != "f", (ws.title, c.coordinate, c.value)

    summary = {ws_row[0].value: ws_row for ws_row in wb["summary"].iter_rows(min_row=2)}
    assert summary["Partner name"][1].value == CN_NAME
    assert summary["Invoice number"][1].value == f"INV-{CN}-202601-V2"
    labels = {
        "consume_amount": "Consume amount (expenditures)",
        "refunds": "Refunds",
        "adjustments": "Adjustments",
        "coupon_amount": "Coupons deducted",
        "tax_amount": "Tax",
        "bill_amount": "Bill amount (tax included)",
        "amount_due": "Amount due",
    }
    for name, label in labels.items():
        cell = summary[label][2]
        assert cell.data_type == "n" and isinstance(cell.value, int | float)
        assert cell.number_format == "#,##0.00"
        assert r2(D(str(cell.value))) == CN_BILL[name], name

    details = wb["details"]
    header = [c.value for c in details[1]]
    assert header == schema.BILL_LINES.column_names
    rows = [dict(zip(header, (c for c in r), strict=True)) for r in details.iter_rows(min_row=2)]
    assert len(rows) == len(CN_LINES)
    for r in rows:
        amount = r["amount"]
        assert amount.data_type == "n" and amount.number_format == "#,##0.00"
    refund = next(r for r in rows if r["component"].value == "refund")
    assert refund["amount"].value == -80.505  # a negative number stays a number
    got = sums_by_component((r["component"].value, D(str(r["amount"].value))) for r in rows)
    assert got == {k: CN_BILL[k] for k in got}

    # openpyxl leaves the OOXML escape of CR (_x000D_) as it is; Excel shows a CR
    names = [(r["customer_name"].value or "").replace("_x000D_", "\r") for r in rows]
    for f in FORMULAS:
        assert "'" + f in names, f
        assert f not in names
    assert CN_CUSTOMER in names

    by_product = list(wb["by product"].iter_rows(min_row=2, values_only=True))
    others = {r[1]: r for r in by_product if r[0] == "OTHERS"}
    assert D(str(others["Refunds"][5])) == CN_BILL["refunds"]
    assert D(str(others["Adjustments"][6])) == CN_BILL["adjustments"]
    # each product rounded to the cent from its exact sum, like expenditure_by_product
    products = {r[0]: D(str(r[4])) for r in by_product if r[0] != "OTHERS"}
    assert products == {"PR1": D("1105.37"), "PR2": D("250.00"), "PR3": D("60.50")}
    assert [r[1] for r in by_product][:2] == [CN_PRODUCT, "弹性云服务器"]
    by_customer = list(wb["by customer"].iter_rows(min_row=2, values_only=True))
    assert {r[1] for r in by_customer} >= {CN_CUSTOMER, "'" + FORMULAS[0]}
    customers = {r[0]: [D(str(v)) for v in r[3:]] for r in by_customer}
    assert customers["C1"] == [D("1000.12"), D("0"), D("0"), D("1000.12")]
    assert customers["C4"] == [D("0"), D("80.51"), D("0"), D("-80.51")]
    assert customers[None if "" not in customers else ""] == [D("0"), D("0"), D("-20"), D("-20")]
    assert len(customers) == 8  # C1..C7 and the partner-level adjustment; coupons are not


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
    lake = list((root / "lake" / "export_history").glob("*.parquet"))
    assert [p.name for p in lake] == [f"{result.export_run_id}.parquet"]
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
    assert len(list((fresh / "lake" / "export_history").glob("*.parquet"))) == 2
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


def test_superseded_version_is_marked(fresh):
    result = export_month(fresh, MONTH, partner=CN, version=1, formats=["pdf", "csv"])
    assert {f.bill_status for f in result.files} == {"superseded"}
    assert {f.version for f in result.files} == {1}
    text = pdf_text(fresh / result.files[0].path)
    assert "SUPERSEDED" in text and "10.60" in text and "1,362.49" not in text
    assert {r["bill_status"] for r in history(fresh)} == {"superseded"}


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


def test_lock_is_held_while_writing(fresh):
    with data_dir_lock(fresh, what="test"), pytest.raises(LockBusy):
        export_month(fresh, MONTH, lock_wait_s=0)


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
    for r in rows:
        assert r["sha256"][:12] in text and r["path"] in text
    out.clear()
    print_exports([], out.append)
    assert out == ["no exports recorded"]
