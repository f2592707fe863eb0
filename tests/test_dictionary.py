"""The data dictionary cannot drift: docs/data-dictionary.md is what ``render()`` gives, and
every documented column of every public table and view exists with its documented type in a
real warehouse built by an ingest and a close (and in the lake files it is loaded from)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from helpers import adjustment, coupon, ingest, land, order, partner, payment, price, usage

from pipelines import dictionary, lake, schema
from pipelines.close import close_month

DAY = "2026-11-30"
LAKE = {  # warehouse table -> lake partition and member file it is loaded from
    "bills": ("bills/bill_month=2026-11", "bills.parquet"),
    "bill_lines": ("bills/bill_month=2026-11", "bill_lines.parquet"),
    "payments": (f"ingest/landing_date={DAY}", "payments.parquet"),
    "quarantine": (f"ingest/landing_date={DAY}", "quarantine.parquet"),
    "ingest_files": (f"ingest/landing_date={DAY}", "files.parquet"),
    "estimates": (f"ingest/landing_date={DAY}", "estimates.parquet"),
}


@pytest.fixture(scope="module")
def dd(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dictionary") / "data"
    d.mkdir()
    land(d, "partners", DAY, [partner("P1"), partner("P2")])
    land(d, "prices", DAY, [price()])
    land(d, "orders", DAY, [order("o1"), order("o2", partner_id="NOBODY")])  # o2 quarantined
    land(d, "usage", DAY, [usage("u1")])
    land(
        d,
        "adjustments",
        DAY,
        [
            adjustment("a1"),
            # a partner-level adjustment: no customer, no product (blank and white space)
            adjustment("a2", customer_id="", product_id="  ", amount="3", reason="late fee"),
        ],
    )
    land(d, "orders", DAY, [order("o3", sku_code="", customer_name=" ")], name="blank.csv")
    land(d, "orders", DAY, [order(" ", amount="x")], name="bad.csv")  # quarantined, no id
    land(d, "coupons", DAY, [coupon("c1")])
    land(d, "payments", DAY, [payment("pay1", method="", reference="\t")])
    ingest(d, DAY)
    close_month(d, "2026-11", force=True)
    return d


def canonical(con, t: str) -> str:
    return con.execute(f"select typeof(null::{t})").fetchone()[0]


def test_the_doc_file_is_up_to_date():
    assert dictionary.DOC_PATH.exists(), "run: python -m pipelines.dictionary"
    assert dictionary.DOC_PATH.read_text(encoding="utf-8") == dictionary.render(), (
        "docs/data-dictionary.md is stale: run python -m pipelines.dictionary"
    )


def test_the_doc_covers_every_public_table_and_column():
    text = dictionary.render()
    for t in schema.PUBLIC:
        assert f"## `{t.name}`" in text and f"- kind: {t.kind}" in text
        for n, ty, _m in t.columns:
            assert f"| `{n}` | `{ty}` |" in text, (t.name, n)
    assert "koobill_as_of" in text and "View More" in text


def test_every_documented_column_exists_with_its_type_in_the_warehouse(dd):
    con = duckdb.connect(str(dd / "warehouse.duckdb"), read_only=True)
    try:
        kinds = dict(
            con.execute(
                "select table_name, case table_type when 'VIEW' then 'view' else 'table' end "
                "from information_schema.tables where table_schema = 'main'"
            ).fetchall()
        )
        public = {k: v for k, v in kinds.items() if not k.startswith("_")}
        assert public == {t.name: t.kind for t in schema.PUBLIC}  # nothing undocumented
        for t in schema.PUBLIC:
            got = [(r[0], r[1]) for r in con.execute(f"describe {t.name}").fetchall()]
            want = [(n, canonical(con, ty)) for n, ty, _m in t.columns]
            assert got == want, t.name
    finally:
        con.close()


def test_the_lake_files_carry_every_documented_column_with_its_type(dd):
    con = duckdb.connect()
    try:
        for table, (partition, name) in LAKE.items():
            f = lake.at(dd / "lake" / partition) / name
            assert f.exists(), f
            got = dict(
                (r[0], r[1])
                for r in con.execute(f"describe select * from read_parquet('{f}')").fetchall()
            )
            t = next(x for x in schema.PUBLIC if x.name == table)
            for n, ty, _m in t.columns:
                assert got.get(n) == canonical(con, ty), (table, n, got.get(n), ty)
    finally:
        con.close()


def test_the_example_queries_run(dd):
    con = duckdb.connect(str(dd / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(dictionary.VIEW_MORE_QUERY).fetchall()
        assert {r[1] for r in rows} == {"consume", "adjustment"}  # o1 + u1, a1 of C1
        for stmt in [s for s in dictionary.AS_OF_QUERY.split(";") if s.strip()]:
            con.execute(stmt)
        con.execute("set variable koobill_as_of = date '2026-12-05'")
        assert (
            con.execute("select count(*) from amount_due where partner_id = 'P1'").fetchone()[0]
            == 1
        )
    finally:
        con.close()


def test_absent_values_are_null_never_empty_text(dd):
    """Spec section 6: an absent value is NULL in every public table and view, never ''."""
    con = duckdb.connect(str(dd / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from bill_lines where customer_id = ''").fetchone() == (
            0,
        )
        adj = con.execute(
            "select description, product_id, region, sku_code from bill_lines "
            "where customer_id is null and component = 'adjustment'"
        ).fetchall()
        assert adj == [("late fee", None, None, None)]
        assert con.execute(
            "select count(*) from expenditure_by_customer where customer_id is null"
        ).fetchone() == (1,)
        assert con.execute(
            "select count(*) from expenditure_by_product where product_id = 'OTHERS' and region is null"
        ).fetchone() == (1,)
        assert con.execute("select method, reference from payments").fetchall() == [(None, None)]
        for t in schema.PUBLIC:
            for n, ty, _m in t.columns:
                if ty == "VARCHAR":
                    blank = con.execute(
                        f"select count(*) from {t.name} where trim(\"{n}\") = ''"
                    ).fetchone()[0]
                    assert blank == 0, (t.name, n)
        assert con.execute(
            "select count(*) from quarantine where record_id is null"
        ).fetchone() == (1,)
    finally:
        con.close()
