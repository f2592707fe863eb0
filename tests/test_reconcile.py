"""Reconciliation of a closed month (spec section 9): on a clean month every residual is zero;
each link broken on purpose (a dropped bill line, a tampered bill, a payment of a partner with
no bill, a file never ingested) is reported with the rows behind it, and `koobill reconcile`
exits 1. A payment that settles no invoice of a billed partner is its credit balance: listed,
not a residual."""

from __future__ import annotations

import os
import shutil
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from helpers import coupon, ingest, lake_state, land, order, partner, payment, price, usage

from pipelines import lake
from pipelines.cli import cli
from pipelines.close import close_month
from pipelines.reconcile import partition_dir, reconcile_month

MONTH = "2026-11"
WINDOW = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]


def build(d: Path) -> Path:
    d.mkdir(parents=True)
    first = WINDOW[0]
    land(d, "partners", first, [partner("P1"), partner("P2"), partner("P3")])
    land(d, "prices", first, [price()])
    # o2 is quarantined (unknown partner); z-dup.csv (read after orders.csv) repeats o1 exactly: a duplicate dropped
    land(d, "orders", first, [order("o1"), order("o2", partner_id="NOBODY")])
    land(d, "orders", first, [order("o1")], name="z-dup.csv")
    land(
        d,
        "orders",
        first,
        [order("o3", partner_id="P2", amount="40", official_amount="50")],
        name="p2.csv",
    )
    land(d, "usage", first, [usage("u1")])  # 2 h x 2.5 = 5.00, 10% off: 4.50
    land(d, "coupons", first, [coupon("c1")])  # 20
    land(d, "payments", first, [payment("pay1", amount="50")])
    for day in WINDOW:
        ingest(d, day, allow_empty=True)
    close_month(d, MONTH)
    return d


@pytest.fixture(scope="module")
def closed(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("recon") / "data")


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def residuals(d: Path) -> list[dict]:
    return reconcile_month(d, MONTH).residuals


def by_subject(rows: list[dict], check: str) -> dict[tuple, dict]:
    return {(r["partner_id"], r["subject"]): r for r in rows if r["check"] == check}


def rewrite(d: Path, name: str, query: str) -> None:
    """Replace a committed lake file of the month's bills with ``query`` over it (tampering)."""
    f = lake.at(d / "lake" / "bills" / f"bill_month={MONTH}") / name
    assert f.is_file(), f
    tmp = f.with_suffix(".tmp")
    con = duckdb.connect()
    con.execute(f"copy ({query.format(src=repr(str(f)))}) to '{tmp}' (format parquet)")
    con.close()
    os.replace(tmp, f)


def test_a_clean_month_reconciles_with_every_residual_zero(closed):
    r = reconcile_month(closed, MONTH)
    assert r.residuals == []
    files = by_subject(r.reconciliation, "landed_rows")
    o = files[(None, "landing/orders/2026-11-30/orders.csv")]
    assert (o["expected"], o["actual"]) == (2, 2)
    assert "accepted 1 + quarantined 1 + duplicates 0" in o["detail"]
    dup = files[(None, "landing/orders/2026-11-30/z-dup.csv")]
    assert "accepted 0 + quarantined 0 + duplicates 1" in dup["detail"]
    # records -> lines: P1 consume = order 90 + usage 4.5
    rec = by_subject(r.reconciliation, "records_to_lines")
    assert rec[("P1", "consume amount")]["expected"] == Decimal("94.5")
    assert rec[("P1", "consume amount")]["actual"] == Decimal("94.5")
    inv = by_subject(r.reconciliation, "bill_to_invoice")
    # 94.50 - 20 coupon = 74.50; tax 6% = 4.47; bill 78.97
    assert inv[("P1", "INV-P1-202611")]["expected"] == Decimal("78.97")
    assert inv[("P3", "(no invoice)")]["status"] == "ok"
    pay = by_subject(r.reconciliation, "payment_to_invoice")[("P1", "payment pay1")]
    assert pay["actual"] == Decimal(50) and "settles INV-P1-202611 50.00" in pay["detail"]
    settled = by_subject(r.reconciliation, "invoice_settlement")[("P1", "INV-P1-202611")]
    assert "unpaid 28.97" in settled["detail"]


def test_records_are_counted_one_by_one_in_a_file_with_many(tmp_path):
    """The reconciliation and the provenance count a partner's records per landing file (the
    month's records are summed per partner, component and file first): three orders of one
    file are three records, both in the records-to-lines check and in records_billed."""
    d = tmp_path / "data"
    d.mkdir()
    first = WINDOW[0]
    land(d, "partners", first, [partner("P1")])
    land(d, "prices", first, [price()])
    land(d, "orders", first, [order("o1"), order("o2"), order("o3")])
    for day in WINDOW:
        ingest(d, day, allow_empty=True)
    r = close_month(d, MONTH)
    assert r.changed
    rec = by_subject(reconcile_month(d, MONTH).reconciliation, "records_to_lines")
    assert rec[("P1", "consume amount")]["expected"] == Decimal(270)
    assert rec[("P1", "consume amount")]["detail"].startswith("3 accepted record(s), 3 ")
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    billed = con.execute(
        "select records_billed from bill_provenance where partner_id = 'P1' and name = ?",
        ["landing/orders/2026-11-30/orders.csv"],
    ).fetchone()[0]
    con.close()
    assert billed == 3


def test_the_table_is_published_and_a_rerun_writes_nothing(closed):
    con = duckdb.connect(str(closed / "warehouse.duckdb"), read_only=True)
    n = con.execute("select count(*) from reconciliation where bill_month = ?", [MONTH]).fetchone()
    con.close()
    assert n[0] > 0
    lake_dir = closed / "lake"
    before = {t: lake_state(lake_dir / t) for t in ("reconcile", "bills")}
    assert before["reconcile"] and before["bills"]
    assert partition_dir(closed, MONTH).parent == lake_dir / "reconcile"
    assert reconcile_month(closed, MONTH).written is False
    assert close_month(closed, MONTH).changed is False
    # no new commit: every member table at the same version, with the same files
    assert {t: lake_state(lake_dir / t) for t in ("reconcile", "bills")} == before


def test_the_tables_are_rebuilt_from_the_lake(closed, tmp_path):
    from pipelines.warehouse import rebuild

    d = copy_of(closed, tmp_path / "data")
    q = "select * from {t} order by all"

    def tables() -> dict:
        con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
        out = {t: con.execute(q.format(t=t)).fetchall() for t in TABLES}
        con.close()
        return out

    before = tables()
    assert all(before.values())
    (d / ".koobill" / "warehouse.duckdb").unlink()
    rebuild(d)
    assert tables() == before


TABLES = ("reconciliation", "estimate_variance", "bill_provenance")


def test_the_cli_exits_0_on_a_clean_month(closed):
    res = CliRunner().invoke(cli, ["--data-dir", str(closed), "reconcile", "--month", MONTH])
    assert res.exit_code == 0, res.output
    assert "every residual is zero" in res.output


def test_a_dropped_bill_line_is_reported(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    rewrite(
        d,
        "bill_lines.parquet",
        "select * from read_parquet({src}) where not (partner_id = 'P1' and charge_type = 'USAGE')",
    )
    bad = residuals(d)
    rec = by_subject(bad, "records_to_lines")[("P1", "consume amount")]
    assert rec["residual"] == Decimal("4.5")
    assert "USAGE" in rec["detail"] and "line missing" in rec["detail"]
    lines = by_subject(bad, "lines_to_bill")
    assert lines[("P1", "consume_amount")]["residual"] == Decimal("-4.5")  # lines 90, bill 94.50
    assert lines[("P1", "line_count")]["residual"] == Decimal(-1)
    res = CliRunner().invoke(cli, ["--data-dir", str(d), "reconcile", "--month", MONTH])
    assert res.exit_code == 1 and "RESIDUAL" in res.output


def test_a_tampered_bill_is_reported(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    rewrite(
        d,
        "bills.parquet",
        "select * replace (case when partner_id = 'P2' then consume_amount + 1 "
        "else consume_amount end as consume_amount) from read_parquet({src})",
    )
    bad = by_subject(residuals(d), "lines_to_bill")
    assert set(bad) == {("P2", "consume_amount"), ("P2", "tax_amount"), ("P2", "bill_amount")}
    assert bad[("P2", "consume_amount")]["expected"] == Decimal(40)  # the lines
    assert bad[("P2", "consume_amount")]["actual"] == Decimal(41)
    # tax on 41 is 2.46, not the 2.40 the bill says
    assert bad[("P2", "tax_amount")]["residual"] == Decimal("0.06")
    # the bill says 42.40 but its own components give 41 + tax 2.40 = 43.40
    assert bad[("P2", "bill_amount")]["residual"] == Decimal(1)


def test_a_payment_to_no_invoice_is_a_credit_balance_listed_not_a_residual(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    # P3 has a zero bill: nothing to settle, the payment is P3's credit balance
    land(d, "payments", "2026-12-02", [payment("pay9", partner_id="P3", amount="30")])
    ingest(d, "2026-12-02")
    r = reconcile_month(d, MONTH)
    assert r.residuals == []
    row = by_subject(r.reconciliation, "payment_to_invoice")[("P3", "payment pay9")]
    assert row["status"] == "credit_balance" and row["residual"] == Decimal(30)
    assert "settles no invoice" in row["detail"] and "credit balance" in row["detail"]
    out = CliRunner().invoke(cli, ["--data-dir", str(d), "reconcile", "--month", MONTH])
    assert out.exit_code == 0, out.output
    assert "CREDIT" in out.output and "payment pay9" in out.output


def test_a_payment_of_a_partner_without_any_bill_is_a_residual(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    # P4 joins after the close: no bill of any month can take its payment
    land(d, "partners", "2026-12-02", [partner(p) for p in ("P1", "P2", "P3", "P4")])
    land(d, "payments", "2026-12-02", [payment("pay9", partner_id="P4", amount="30")])
    ingest(d, "2026-12-02")
    bad = by_subject(residuals(d), "payment_to_invoice")
    assert list(bad) == [("P4", "payment pay9")]
    assert bad[("P4", "payment pay9")]["residual"] == Decimal(30)
    assert "settles no invoice" in bad[("P4", "payment pay9")]["detail"]
    assert "the partner has no bill" in bad[("P4", "payment pay9")]["detail"]
    out = CliRunner().invoke(cli, ["--data-dir", str(d), "reconcile", "--month", MONTH])
    assert out.exit_code == 1


def test_a_file_landed_but_never_ingested_is_reported(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    land(d, "orders", "2026-12-01", [order("o7")], name="late-arrival.csv")
    bad = residuals(d)
    assert [r["subject"] for r in bad] == ["landing/orders/2026-12-01/late-arrival.csv"]
    assert "not ingested" in bad[0]["detail"]


def test_records_ingested_after_the_close_show_until_restated(closed, tmp_path):
    d = copy_of(closed, tmp_path / "data")
    land(
        d,
        "orders",
        "2026-12-03",
        [order("o8", amount="10", official_amount="20", discount_amount="10")],
        name="more.csv",
    )
    ingest(d, "2026-12-03")
    rec = by_subject(residuals(d), "records_to_lines")
    assert rec[("P1", "consume amount")]["residual"] == Decimal(10)
    close_month(d, MONTH, restate=True)  # the hook reconciles the restated month
    assert residuals(d) == []


def test_the_xlsx_export_has_a_reconciliation_sheet(closed, tmp_path):
    import openpyxl

    from pipelines.exports import export_month

    d = copy_of(closed, tmp_path / "data")
    res = export_month(d, MONTH, partner="P1", formats=["xlsx"])
    wb = openpyxl.load_workbook(d / next(f.path for f in res.files if f.format == "xlsx"))
    ws = wb["reconciliation"]
    rows = {(r[1], r[2]): r for r in ws.iter_rows(min_row=2, values_only=True)}
    assert [c.value for c in ws[1]][:7] == [
        "Step",
        "Check",
        "Subject",
        "Expected",
        "Actual",
        "Residual",
        "Status",
    ]
    assert {r[6] for r in rows.values()} == {"ok"}
    assert rows[("lines_to_bill", "bill_amount")][3] == pytest.approx(78.97)
    assert rows[("bill_to_invoice", "INV-P1-202611")][4] == pytest.approx(78.97)
    # settled as of the invoice date: pay1 50.00 paid, 28.97 left
    assert "paid 50.00, balance 28.97" in rows[("invoice_settlement", "INV-P1-202611")][7]


def test_a_tampered_invoice_document_is_reported(closed, tmp_path):
    from pipelines.exports import export_month

    d = copy_of(closed, tmp_path / "data")
    res = export_month(d, MONTH, partner="P1", formats=["pdf"])
    pdf = next(f.path for f in res.files if f.format == "pdf")
    docs = by_subject(reconcile_month(d, MONTH).reconciliation, "invoice_document")
    assert docs[("P1", pdf)]["status"] == "ok"
    with open(d / pdf, "ab") as fh:
        fh.write(b"%% edited")
    bad = by_subject(residuals(d), "invoice_document")
    assert list(bad) == [("P1", pdf)] and "differs from the recorded" in bad[("P1", pdf)]["detail"]
    (d / pdf).unlink()
    assert "missing" in by_subject(residuals(d), "invoice_document")[("P1", pdf)]["detail"]


def test_reconcile_refuses_a_month_not_closed(closed):
    res = CliRunner().invoke(cli, ["--data-dir", str(closed), "reconcile", "--month", "2026-12"])
    assert res.exit_code == 1 and "has not been closed" in res.output
