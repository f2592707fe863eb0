"""The FOCUS 1.2 export: columns and types, BilledCost per invoice to the cent, tax and rounding
rows, a restated version's corrections, neutralised CSV text, and the FinOps Foundation's
validator when its venv exists (``make focus-check`` builds it)."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipelines import focus, schema
from pipelines.config import init_data_dir
from pipelines.exports import export_month
from pipelines.lake import KoobillError
from pipelines.warehouse import open_warehouse, publish

D = Decimal
MONTH = "2026-01"
CN, US = "cn-partner", "us_partner"
CN_NAME = "杭州云栖科技有限公司"
CN_CUSTOMER = "北京星云科技有限公司"
FORMULA = '=HYPERLINK("x")'
ISSUER = "Test Operator Ltd."
REPO = Path(__file__).resolve().parents[1]
FOCUS_VENV = REPO / ".venv-focus"
MANDATORY = [  # FOCUS 1.2 columns whose feature level is Mandatory
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
]


def ln(n, component, charge_type, customer, name, product, amount, **kw):
    row = {
        "line_no": n,
        "component": component,
        "charge_type": charge_type,
        "customer_id": customer,
        "customer_name": name,
        "product_id": product,
        "product_name": {"PR1": "云数据库服务", "PR2": "Elastic Server", "PR3": "Backup"}.get(
            product
        ),
        "sku_code": f"sku-{product}" if product else None,
        "region": "cn-north-4" if product else None,
        "source_month": MONTH,
        "late": False,
        "description": None,
        "quantity": None,
        "official_amount": D(amount),
        "discount_amount": D("0"),
        "amount": D(amount),
        "record_count": 1,
    }
    row.update(kw)
    return row


NEW_V2 = ln(1, "consume", "NEW", "C1", CN_CUSTOMER, "PR1", "1000.123456", record_count=2)
NEW_V2["official_amount"] = D("1100.123456")
NEW_V2["discount_amount"] = D("100")
USAGE = ln(
    2,
    "consume",
    "USAGE",
    "C2",
    FORMULA,
    "PR2",
    "250.004",
    quantity=D("3.5"),
    late=True,
    source_month="2025-12",
    record_count=3,
)
REFUND = ln(3, "refund", "UNSUBSCRIBE", "C3", "+1", "PR1", "-80.505")
ADJUST = ln(4, "adjustment", "ADJUSTMENT", None, None, None, "-20.00", description="补偿")
COUPON = ln(5, "coupon", "COUPON", None, None, None, "30.00", description="CPN-1")
CN_V2_LINES = [NEW_V2, USAGE, REFUND, ADJUST, COUPON]
# hand-computed (spec section 4): consume round2(1250.127456) = 1250.13; refunds 80.51;
# adjustments -20.00; coupons 30.00 (net 1149.62 covers them); tax round2(1119.62 * 0.06) =
# round2(67.1772) = 67.18; bill 1119.62 + 67.18 = 1186.80
CN_V2 = {
    "consume_amount": D("1250.13"),
    "refunds": D("80.51"),
    "adjustments": D("-20.00"),
    "coupon_total": D("30.00"),
    "coupon_amount": D("30.00"),
    "tax_rate": D("0.06"),
    "tax_amount": D("67.18"),
    "bill_amount": D("1186.80"),
    "amount_due": D("1186.80"),
}
# version 1: the NEW line at 900.123456, the same refund, a RENEW line v2 no longer has
CN_V1_LINES = [
    ln(1, "consume", "NEW", "C1", CN_CUSTOMER, "PR1", "900.123456", record_count=2),
    ln(2, "consume", "RENEW", "C9", "Old Customer", "PR3", "10.00"),
    {**REFUND, "line_no": 3},
]
# consume round2(910.123456) = 910.12; refunds 80.51; net 829.61; tax round2(49.7766) = 49.78
CN_V1 = {
    "consume_amount": D("910.12"),
    "refunds": D("80.51"),
    "adjustments": D("0.00"),
    "coupon_total": D("0.00"),
    "coupon_amount": D("0.00"),
    "tax_rate": D("0.06"),
    "tax_amount": D("49.78"),
    "bill_amount": D("879.39"),
    "amount_due": D("879.39"),
}
US_LINES = [
    ln(1, "consume", "NEW", "G1", "Globex", "PR3", "500.00"),
    ln(2, "refund", "UNSUBSCRIBE", "G1", "Globex", "PR3", "-600.00"),
]
US_BILL = {  # refunds exceed expenditures: -100.00, nothing due, no invoice
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
# the usage records behind USAGE in the lake: two resources that add up to the line exactly
USAGE_RECORDS = [
    ("r-1", D("1.5"), D("100.004")),
    ("r-2", D("2"), D("150.000")),
]


def insert_bill(con, partner, name, currency, version, status, amounts, lines, invoice_no, sup):
    row = {
        "partner_id": partner,
        "partner_name": name,
        "bill_month": MONTH,
        "version": version,
        "currency": currency,
        **amounts,
        "invoice_no": invoice_no,
        "status": status,
        "closed_at": datetime(2026, 2, 5, 1, 0, version, tzinfo=UTC),
        "cutoff_date": date(2026, 2, 4),
        "forced": False,
        "line_count": len(lines),
        "supersedes_invoice_no": sup,
    }
    cols = schema.BILLS.column_names
    con.execute(
        f"insert into bills ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
        [row.get(c) for c in cols],
    )
    lcols = schema.BILL_LINES.column_names
    for line in lines:
        full = {"partner_id": partner, "bill_month": MONTH, "version": version}
        full.update(currency=currency, **line)
        con.execute(
            f"insert into bill_lines ({', '.join(lcols)}) values ({', '.join('?' * len(lcols))})",
            [full[c] for c in lcols],
        )


def land_usage(root: Path) -> None:
    import pyarrow as pa
    from helpers import commit_lake_files

    rows = [
        {
            "partner_id": CN,
            "customer_id": "C2",
            "product_id": "PR2",
            "sku_code": "sku-PR2",
            "region": "cn-north-4",
            "source_month": "2025-12",
            "late": True,
            "bill_month_assigned": MONTH,
            "resource_id": rid,
            "unit": "GB-hour",
            "quantity": q,
            "official_amount": a,
            "amount": a,
        }
        for rid, q, a in USAGE_RECORDS
    ]
    money = pa.decimal128(38, 6)
    types = {"late": pa.bool_(), "quantity": money, "official_amount": money, "amount": money}
    fields = [pa.field(c, types.get(c, pa.string())) for c in rows[0]]
    t = pa.Table.from_pylist(rows, schema=pa.schema(fields))
    # committed as an ingest of 2026-01-10 (its files member, the marker, with no landing file)
    files = pa.schema(
        [("landing_date", pa.date32()), ("feed", pa.string()), ("file", pa.string())]
        + [(c, pa.int64()) for c in ("rows_read", "accepted", "quarantined", "duplicates")]
    ).empty_table()
    partition = root / "lake" / "ingest" / "landing_date=2026-01-10"
    commit_lake_files(partition, {"usage": t, "files": files})


def make_data_dir(root: Path, with_usage: bool = True) -> Path:
    init_data_dir(root)
    con = open_warehouse(root)
    try:
        inv1, inv2 = f"INV-{CN}-202601", f"INV-{CN}-202601-V2"
        insert_bill(con, CN, CN_NAME, "CNY", 1, "superseded", CN_V1, CN_V1_LINES, inv1, None)
        insert_bill(con, CN, CN_NAME, "CNY", 2, "closed", CN_V2, CN_V2_LINES, inv2, inv1)
        insert_bill(con, US, "Acme Cloud", "USD", 1, "closed", US_BILL, US_LINES, None, None)
    finally:
        con.close()
    publish(root)
    (root / "settings.toml").write_text(
        f'[issuer]\nname = "{ISSUER}"\n\n[payment]\nterms_days = 15\n', encoding="utf-8"
    )
    if with_usage:
        land_usage(root)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = make_data_dir(tmp_path_factory.mktemp("focus") / "data")
    result = export_month(root, MONTH, formats=["focus"])
    return root, result


def files(root, result, partner) -> dict[str, Path]:
    return {f.format: root / f.path for f in result.files if f.partner_id == partner}


def parquet_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def csv_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


# ---------------------------------------------------------------------------------------------


def test_files_names_and_history(exported):
    root, result = exported
    assert sorted((f.partner_id, f.kind, f.format) for f in result.files) == sorted(
        (p, "focus", f) for p in (CN, US) for f in ("parquet", "csv")
    )
    cn = files(root, result, CN)
    assert cn["parquet"] == root / "exports" / CN / MONTH / f"focus-{CN}-{MONTH}-v2.parquet"
    assert cn["csv"] == root / "exports" / CN / MONTH / f"focus-{CN}-{MONTH}-v2.csv"
    con = open_warehouse(root)
    try:
        hist = con.execute(
            "select kind, format, path, rows, bytes, sha256, version from export_history "
            "order by path"
        ).fetchall()
    finally:
        con.close()
    assert len(hist) == 4
    for kind, _fmt, path, rows, size, digest, version in hist:
        data = (root / path).read_bytes()
        assert kind == "focus" and size == len(data)
        assert digest == hashlib.sha256(data).hexdigest()
        assert rows == len(parquet_rows((root / path).with_suffix(".parquet")))
        assert version == (2 if CN in path else 1)
    # nothing left behind by the atomic writes
    assert not list((root / "exports").rglob("*.tmp"))


def test_focus_is_opt_in_and_unknown_formats_are_refused(tmp_path):
    root = make_data_dir(tmp_path / "data")
    result = export_month(root, MONTH, partner=US, formats=["csv"])
    assert [f.format for f in result.files] == ["csv"]
    with pytest.raises(KoobillError, match="focus"):
        export_month(root, MONTH, formats=["focux"])


def test_columns_and_types(exported):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, result = exported
    table = pq.read_table(files(root, result, CN)["parquet"])
    names = table.schema.names
    assert names == focus.COLUMN_NAMES
    assert set(MANDATORY) <= set(names)
    for c in ("InvoiceId", "SubAccountId", "RegionId", "SkuId", "ResourceId", "ConsumedQuantity"):
        assert c in names
    # FOCUS columns first, then the x_ custom columns
    first_x = min(i for i, n in enumerate(names) if n.startswith("x_"))
    assert all(n.startswith("x_") for n in names[first_x:])
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", n) for n in names[:first_x])
    for c in ("BilledCost", "ListCost", "EffectiveCost", "ContractedCost", "PricingQuantity"):
        assert table.schema.field(c).type == pa.decimal128(38, 6)
    for c in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"):
        assert table.schema.field(c).type == pa.timestamp("ms", tz="UTC")
    assert table.schema.metadata[b"focus.version"] == b"1.2"
    rows = table.to_pylist()
    # the Beijing month in UTC: 2026-01-01 00:00 +08:00 is 2025-12-31 16:00 Z
    assert {r["BillingPeriodStart"] for r in rows} == {datetime(2025, 12, 31, 16, tzinfo=UTC)}
    assert {r["BillingPeriodEnd"] for r in rows} == {datetime(2026, 1, 31, 16, tzinfo=UTC)}
    assert {r["BillingCurrency"] for r in rows} == {"CNY"}
    assert {r["InvoiceIssuerName"] for r in rows} == {ISSUER}
    assert {r["ProviderName"] for r in rows} == {ISSUER}
    # allowed values, row by row (the validator only sees whether some row has each value)
    assert {r["ChargeCategory"] for r in rows} <= {
        "Usage",
        "Purchase",
        "Tax",
        "Credit",
        "Adjustment",
    }
    assert {r["ChargeFrequency"] for r in rows} <= {"One-Time", "Recurring", "Usage-Based"}
    assert {(r["ServiceCategory"], r["ServiceSubcategory"]) for r in rows} == {
        ("Other", "Other (Other)")
    }
    # ConsumedQuantity and ConsumedUnit on Usage rows only (the validator's model cannot check
    # the quantity: its ConsumedQuantity-C-006-C condition is inverted)
    for r in rows:
        usage = r["ChargeCategory"] == "Usage"
        assert (r["ConsumedQuantity"] is not None) == usage, r
        assert (r["ConsumedUnit"] is not None) == usage, r
        assert r["CommitmentDiscountStatus"] is None
    for r in rows:  # not-nullable columns
        for c in ("BilledCost", "ListCost", "EffectiveCost", "ContractedCost", "ServiceName"):
            assert r[c] is not None, (c, r)
        # no empty strings anywhere (FOCUS: NULL for an absent value)
        assert all(v != "" for v in r.values())
    header = next(csv.reader(io.StringIO(files(root, result, CN)["csv"].read_text("utf-8"))))
    assert header == focus.COLUMN_NAMES
    text = files(root, result, CN)["csv"].read_text("utf-8")
    assert not text.startswith("\ufeff")
    for r in csv_rows(files(root, result, CN)["csv"]):
        for c in ("BillingPeriodStart", "ChargePeriodStart", "ChargePeriodEnd"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r[c]), r[c]


def test_billed_cost_per_invoice_equals_the_bill(exported):
    root, result = exported
    for fmt, read in (("parquet", parquet_rows), ("csv", csv_rows)):
        rows = read(files(root, result, CN)[fmt])
        by_invoice: dict[str, Decimal] = {}
        for r in rows:
            by_invoice[r["InvoiceId"]] = by_invoice.get(r["InvoiceId"], D(0)) + D(r["BilledCost"])
        assert by_invoice == {f"INV-{CN}-202601-V2": D("1186.80")}, fmt
        us = read(files(root, result, US)[fmt])
        assert {r["InvoiceId"] or None for r in us} == {None}  # nothing due: no invoice
        assert sum(D(r["BilledCost"]) for r in us) == D("-100.00")


def test_rows_lines_tax_and_rounding(exported):
    root, result = exported
    rows = parquet_rows(files(root, result, CN)["parquet"])
    by_line = {}
    for r in rows:
        if r["x_LineNo"] is not None:
            by_line.setdefault(r["x_LineNo"], []).append(r)
    assert sorted(by_line) == [1, 2, 3, 4, 5]  # every bill line is there
    new = by_line[1][0]
    assert (new["ChargeCategory"], new["ChargeFrequency"]) == ("Purchase", "One-Time")
    assert new["BilledCost"] == D("1000.123456") and new["ListCost"] == D("1100.123456")
    assert new["ContractedCost"] == D("1000.123456") and new["EffectiveCost"] == 0
    assert (new["PricingQuantity"], new["PricingUnit"]) == (D(2), "Orders")
    assert new["SubAccountId"] == "C1" and new["x_SubAccountName"] == CN_CUSTOMER
    assert new["SubAccountName"] == "C1"  # the validator accepts ASCII only; the name is in x_
    assert new["ServiceName"] == "PR1" and new["x_ServiceName"] == "云数据库服务"
    assert new["RegionId"] == "cn-north-4" and new["SkuId"] == "sku-PR1"
    # the usage line, split per resource as in the lake; each part exact
    usage = sorted(by_line[2], key=lambda r: r["ResourceId"])
    assert [(r["ResourceId"], r["ConsumedQuantity"], r["BilledCost"]) for r in usage] == [
        (rid, q, a) for rid, q, a in USAGE_RECORDS
    ]
    assert {(r["ChargeCategory"], r["ChargeFrequency"]) for r in usage} == {
        ("Usage", "Usage-Based")
    }
    assert {(r["PricingUnit"], r["ConsumedUnit"], r["x_PriceListUnit"]) for r in usage} == {
        ("GB-Hours", "GB-Hours", "GB-hour")
    }
    # a late line's charge period is its own month
    assert {(r["x_Late"], r["ChargePeriodStart"]) for r in usage} == {
        (True, datetime(2025, 11, 30, 16, tzinfo=UTC))
    }
    assert by_line[3][0]["ChargeCategory"] == "Purchase"  # a refund of a purchase
    assert by_line[3][0]["BilledCost"] == D("-80.505")
    adj = by_line[4][0]
    assert (adj["ChargeCategory"], adj["SubAccountId"], adj["x_Description"]) == (
        "Credit",
        None,
        "补偿",
    )
    coupon = by_line[5][0]
    assert (coupon["ChargeCategory"], coupon["BilledCost"]) == ("Credit", D("-30"))
    tax = [r for r in rows if r["ChargeCategory"] == "Tax"]
    assert len(tax) == 1 and tax[0]["BilledCost"] == D("67.18")
    assert tax[0]["SkuId"] is None and tax[0]["PricingQuantity"] is None
    rounding = {r["x_ChargeType"]: r["BilledCost"] for r in rows if r["x_Component"] == "rounding"}
    # consume 1250.13 - 1250.127456; refunds -80.51 - (-80.505)
    assert rounding == {"CONSUME": D("0.002544"), "REFUND": D("-0.005")}


def test_restated_version_marks_its_differences_as_corrections(exported):
    root, result = exported
    rows = parquet_rows(files(root, result, CN)["parquet"])
    corr = [r for r in rows if r["ChargeClass"] == "Correction"]
    plain = [r for r in rows if r["ChargeClass"] is None]
    assert {r["ChargeClass"] for r in rows} <= {None, "Correction"}
    # unchanged since version 1: the refund line and the refunds' rounding
    assert sorted((r["x_Component"], r["x_ChargeType"]) for r in plain) == [
        ("refund", "UNSUBSCRIBE"),
        ("rounding", "REFUND"),
    ]
    prev = {(r["x_Component"], r["x_ChargeType"], r["ResourceId"]): r for r in corr}
    assert prev[("consume", "NEW", None)]["x_PreviousBilledCost"] == D("900.123456")
    assert prev[("consume", "USAGE", "r-1")]["x_PreviousBilledCost"] == 0  # new in v2
    assert prev[("tax", "TAX", None)]["x_PreviousBilledCost"] == D("49.78")
    assert prev[("rounding", "CONSUME", None)]["x_PreviousBilledCost"] == D("-0.003456")
    gone = prev[("consume", "RENEW", None)]  # billed in v1, not in v2: a zero row
    assert gone["BilledCost"] == 0 and gone["x_PreviousBilledCost"] == D("10.00")
    assert gone["InvoiceId"] == f"INV-{CN}-202601-V2" and gone["x_BillVersion"] == 2
    assert {r["x_SupersedesInvoiceId"] for r in rows} == {f"INV-{CN}-202601"}
    # the previous amounts and the corrections reconcile the two invoices
    total_prev = sum(r["x_PreviousBilledCost"] for r in corr) + sum(r["BilledCost"] for r in plain)
    assert total_prev == D("879.39")  # version 1's bill_amount
    # a first version has no corrections
    us = parquet_rows(files(root, result, US)["parquet"])
    assert {r["ChargeClass"] for r in us} == {None}


def test_superseded_version_exports_without_corrections(tmp_path):
    root = make_data_dir(tmp_path / "data")
    result = export_month(root, MONTH, partner=CN, version=1, formats=["focus"])
    rows = parquet_rows(files(root, result, CN)["parquet"])
    assert sum(r["BilledCost"] for r in rows) == D("879.39")
    assert {r["InvoiceId"] for r in rows} == {f"INV-{CN}-202601"}
    assert {r["ChargeClass"] for r in rows} == {None}
    assert {f.bill_status for f in result.files} == {"superseded"}


def test_csv_text_is_neutralised_and_amounts_stay_numbers(exported):
    root, result = exported
    rows = csv_rows(files(root, result, CN)["csv"])
    names = {r["SubAccountName"] for r in rows}
    assert "'" + FORMULA in names and "'+1" in names
    assert FORMULA not in names and "+1" not in names
    for r in rows:
        for c, v in r.items():
            if c not in focus.MONEY_COLUMNS and c != "x_PreviousBilledCost":
                assert not v.startswith(focus.FORMULA_PREFIXES), (c, v)
    refund = next(r for r in rows if r["x_ChargeType"] == "UNSUBSCRIBE")
    assert refund["BilledCost"] == "-80.505000"  # a negative number is not neutralised
    assert {r["x_SubAccountName"] for r in rows} >= {CN_CUSTOMER}  # Unicode kept in x_


def test_line_sums_that_miss_the_bill_are_not_exported(tmp_path):
    root = make_data_dir(tmp_path / "data")
    con = open_warehouse(root)
    try:
        con.execute(
            "update bills set bill_amount = bill_amount + 0.01 where partner_id = ? and version = 2",
            [CN],
        )
    finally:
        con.close()
    publish(root)
    con = open_warehouse(root)
    try:
        header = focus._bill(con, CN, MONTH, 2)
        with pytest.raises(KoobillError, match="FOCUS rows sum to 1186.800000"):
            focus.write_focus(con, header, tmp_path / "out", issuer=ISSUER, root=root)
    finally:
        con.close()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_usage_without_a_known_unit_is_refused(tmp_path):
    root = make_data_dir(tmp_path / "data", with_usage=False)
    with pytest.raises(KoobillError, match="no unit known for SKU 'sku-PR2'"):
        export_month(root, MONTH, partner=CN, formats=["focus"])


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("hour", "Hours"),  # FOCUS time units are capitalised, plural
        ("GB-hour", "GB-Hours"),  # <unit>-<plural time unit>
        ("node-hour", "Node-Hours"),
        ("vCPU-hour", "vCPU-Hours"),  # a mixed-case unit keeps its case
        ("1k-tokens", "1000 Tokens"),  # <quantity> <units>
        ("1k-calls", "1000 Calls"),
        ("GB", "GB"),
        ("Requests", "Requests"),
    ],
)
def test_focus_unit(unit, expected):
    assert focus.focus_unit(unit) == expected


@pytest.mark.parametrize(
    ("component", "charge_type", "amount", "category"),
    [
        ("consume", "USAGE", "1", "Usage"),
        ("consume", "NEW", "1", "Purchase"),
        ("consume", "AUTO_RENEW", "1", "Purchase"),
        ("refund", "UNSUBSCRIBE", "-1", "Purchase"),  # FOCUS: purchases include refunds
        ("refund", "CHANGE", "-1", "Purchase"),
        ("adjustment", "ADJUSTMENT", "5", "Adjustment"),
        ("adjustment", "ADJUSTMENT", "-5", "Credit"),  # compensation
        ("coupon", "COUPON", "-30", "Credit"),
    ],
)
def test_charge_category(component, charge_type, amount, category):
    assert focus.charge_category(component, charge_type, D(amount)) == category


def test_the_foundations_validator_finds_no_failure(exported, tmp_path):
    if not (FOCUS_VENV / "bin" / "python").exists():
        pytest.skip(
            f"no validator venv at {FOCUS_VENV}: `make focus-check` builds it (Python 3.12, "
            "requirements/focus.txt)"
        )
    root, result = exported
    paths = [str(files(root, result, CN)[f]) for f in ("parquet", "csv")]
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "focus-check"),
            "--venv",
            str(FOCUS_VENV),
            "--report-dir",
            str(tmp_path / "reports"),
            *paths,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 of 2 datasets valid" in proc.stdout
    assert len(list((tmp_path / "reports").glob("*.xml"))) == 2


def test_the_check_fails_on_a_broken_dataset(exported, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not (FOCUS_VENV / "bin" / "python").exists():
        pytest.skip(f"no validator venv at {FOCUS_VENV}: `make focus-check` builds it")
    root, result = exported
    table = pq.read_table(files(root, result, CN)["parquet"])
    # one row without BilledCost (the validator checks allowed values only dataset-wide: an OR
    # of "some row is Usage", "some row is Purchase", ...; nullability it checks per row)
    cost = table.column("BilledCost").to_pylist()
    cost[0] = None
    i = table.schema.get_field_index("BilledCost")
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.set_column(i, "BilledCost", pa.array(cost, pa.decimal128(38, 6))), broken)
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "focus-check"),
            "--venv",
            str(FOCUS_VENV),
            "--report-dir",
            str(tmp_path / "reports"),
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL BilledCost-C-003-M" in proc.stdout
    assert "0 of 1 datasets valid" in proc.stdout


def test_corrections_tell_adjustments_apart_by_their_reason():
    """Two adjustments whose reasons are not ASCII share their ChargeDescription; the reason as
    landed (x_Description) still tells them apart, so only the new one is a correction."""

    def header(version, adjustments):
        return {
            "partner_id": "P",
            "partner_name": "P",
            "bill_month": MONTH,
            "version": version,
            "currency": "CNY",
            "consume_amount": D("0"),
            "refunds": D("0"),
            "adjustments": D(adjustments),
            "coupon_total": D("0"),
            "coupon_amount": D("0"),
            "tax_rate": D("0"),
            "tax_amount": D("0"),
            "bill_amount": D(adjustments),
            "invoice_no": None,
        }

    first = ln(1, "adjustment", "ADJUSTMENT", None, None, None, "-10", description="补偿一")
    second = ln(2, "adjustment", "ADJUSTMENT", None, None, None, "-20", description="补偿二")
    v1 = focus.bill_rows(header(1, "-10.00"), [first], ISSUER)
    v2 = focus.bill_rows(header(2, "-30.00"), [first, second], ISSUER)
    assert v2[0]["ChargeDescription"] == v2[1]["ChargeDescription"]
    marked = focus.mark_corrections(v2, v1)
    assert [(r["x_Description"], r["ChargeClass"]) for r in marked] == [
        ("补偿一", None),
        ("补偿二", "Correction"),
    ]
    assert sum(r["BilledCost"] for r in marked) == D("-30.00")


def test_coupons_beyond_the_net_amount_show_as_not_deducted():
    # consume 10.00, coupons 30.00: coupon_amount = min(30.00, max(10.00, 0)) = 10.00; tax
    # round2(0 * 0.06) = 0.00; bill 0.00. The 20.00 not deducted is a Credit row of +20.00.
    header = {
        "partner_id": "P",
        "partner_name": "P",
        "bill_month": MONTH,
        "version": 1,
        "currency": "CNY",
        "consume_amount": D("10.00"),
        "refunds": D("0.00"),
        "adjustments": D("0.00"),
        "coupon_total": D("30.00"),
        "coupon_amount": D("10.00"),
        "tax_rate": D("0.06"),
        "tax_amount": D("0.00"),
        "bill_amount": D("0.00"),
        "invoice_no": None,
    }
    lines = [
        ln(1, "consume", "NEW", "C1", "Customer", "PR1", "10"),
        ln(2, "coupon", "COUPON", None, None, None, "30", description="CPN-9"),
    ]
    rows = focus.bill_rows(header, lines, ISSUER)
    got = [(r["ChargeCategory"], r["x_Component"], r["BilledCost"]) for r in rows]
    assert got == [
        ("Purchase", "consume", D("10")),
        ("Credit", "coupon", D("-30")),
        ("Credit", "coupon_cap", D("20.00")),
        ("Tax", "tax", D("0.00")),
    ]
    assert rows[-1]["ChargeDescription"] == "Tax at 6% of the net amount"
    assert sum(r["BilledCost"] for r in rows) == header["bill_amount"]
