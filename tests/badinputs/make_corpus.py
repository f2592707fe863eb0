"""Regenerate the bad-input corpus (``python tests/badinputs/make_corpus.py``).

Each file is one hostile landing file; its name is ``<feed>__<case>.<ext>`` and the test that
lands it (tests/test_reliability.py, CASES) states what must happen: a clear error naming the
file and the reason, or quarantine rows with their reasons and counts that reconcile. The
files are tiny; the 2 GB file is generated at test time.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from helpers import _csv_cell, jsonl_line, order, partner, usage  # noqa: E402

ORDER_COLS = list(order().keys())


def csv_bytes(rows: list[dict], cols: list[str] | None = None) -> bytes:
    cols = cols or ORDER_COLS
    lines = [",".join(_csv_cell(c) for c in cols)]
    lines += [",".join(_csv_cell(r.get(c)) for c in cols) for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(jsonl_line(r) + "\n" for r in rows).encode("utf-8")


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def text_table(rows: list[dict], override: dict[str, pa.Array] | None = None) -> pa.Table:
    cols = list(rows[0].keys())
    arrays = {c: pa.array([r[c] for r in rows], pa.string()) for c in cols}
    arrays.update(override or {})
    return pa.table(arrays)


def zero_order(rid: str, **kw) -> dict:
    return order(rid, official_amount="0", discount_amount="0", amount="0", **kw)


def build() -> dict[str, bytes]:
    f: dict[str, bytes] = {}
    # --- whole-file problems: the date stops with an error naming the file -------------------
    f["orders__empty.csv"] = b""
    f["orders__empty.jsonl"] = b""
    f["orders__not_parquet.parquet"] = b"record_id,amount\nthis is a CSV wearing a .parquet name\n"
    good = parquet_bytes(text_table([order("x1"), order("x2")]))
    f["orders__truncated.parquet"] = good[: len(good) // 2]
    f["orders__missing_amount.csv"] = csv_bytes(
        [order("m1")], [c for c in ORDER_COLS if c != "amount"]
    )
    f["orders__missing_amount.jsonl"] = jsonl_bytes(
        [{k: v for k, v in order(f"m{i}").items() if k != "amount"} for i in range(2)]
    )
    f["orders__missing_amount.parquet"] = parquet_bytes(
        text_table([{k: v for k, v in order("m1").items() if k != "amount"}])
    )
    rows = [order("d1"), order("d2")]
    f["orders__double_amounts.parquet"] = parquet_bytes(
        text_table(
            rows,
            {
                "official_amount": pa.array([100.0, 100.0], pa.float64()),
                "discount_amount": pa.array([10.0, 10.0], pa.float64()),
                "amount": pa.array([90.0, 90.0], pa.float64()),
            },
        )
    )
    urows = [usage("fq1")]
    f["usage__float_quantity.parquet"] = parquet_bytes(
        text_table(urows, {"quantity": pa.array([2.0], pa.float32())})
    )
    f["orders__bad_utf8_header.csv"] = b"record_id,order_\xff_id\n" + csv_bytes([order("h1")])
    f["orders__duplicate_header.csv"] = csv_bytes([order("h2")], ORDER_COLS + ["amount"])
    f["orders__header_is_blank.csv"] = b"\n" + csv_bytes([order("h3")])

    # --- row problems: quarantined with a reason, the rest of the file goes on ---------------
    f["orders__header_only.csv"] = csv_bytes([])
    f["orders__blank_lines_only.jsonl"] = b"\n   \n\r\n"
    f["orders__nan_inf_exp.csv"] = csv_bytes(
        [
            order("nan", amount="NaN"),
            order("inf", official_amount="Infinity", discount_amount="0", amount="Infinity"),
            order(
                "ninf",
                order_type="UNSUBSCRIBE",
                official_amount="-inf",
                discount_amount="0",
                amount="-inf",
            ),
            order("exp", official_amount="1e2", discount_amount="1E1", amount="9e1"),
            order("hex", amount="0x5A"),
            order("ok"),
        ]
    )
    # JSON numbers that are not plain decimals (NaN, Infinity, exponents) and a good number
    f["orders__nan_inf_exp.jsonl"] = (
        b'{"record_id":"jnan","order_id":"x","partner_id":"P1","customer_id":"C1","product_id":"PR1",'
        b'"region":"r","order_type":"NEW","official_amount":NaN,"discount_amount":0,"amount":NaN,'
        b'"currency":"CNY","event_time":"2026-11-09T10:00:00+08:00"}\n'
        b'{"record_id":"jinf","order_id":"x","partner_id":"P1","customer_id":"C1","product_id":"PR1",'
        b'"region":"r","order_type":"NEW","official_amount":Infinity,"discount_amount":0,"amount":Infinity,'
        b'"currency":"CNY","event_time":"2026-11-09T10:00:00+08:00"}\n'
        b'{"record_id":"jexp","order_id":"x","partner_id":"P1","customer_id":"C1","product_id":"PR1",'
        b'"region":"r","order_type":"NEW","official_amount":1e2,"discount_amount":1.0E1,"amount":9E+1,'
        b'"currency":"CNY","event_time":"2026-11-09T10:00:00+08:00"}\n'
        b'{"record_id":"jok","order_id":"x","partner_id":"P1","customer_id":"C1","product_id":"PR1",'
        b'"region":"r","order_type":"NEW","official_amount":100.000001,"discount_amount":10,'
        b'"amount":90.000001,"currency":"CNY","event_time":"2026-11-09T10:00:00+08:00"}\n'
    )
    f["orders__seven_places.csv"] = csv_bytes(
        [
            order("p7", official_amount="100.0000001", discount_amount="10", amount="90.0000001"),
            order(
                "p7zero", official_amount="100.1234560", discount_amount="10", amount="90.1234560"
            ),
            order(
                "p6", official_amount="100.123456", discount_amount="10.000001", amount="90.123455"
            ),
        ]
    )
    f["orders__negative_zero.csv"] = csv_bytes(
        [
            order("nz_new", official_amount="-0", discount_amount="0.000", amount="-0.000000"),
            order(
                "nz_unsub",
                order_type="UNSUBSCRIBE",
                official_amount="-0",
                discount_amount="-0",
                amount="-0",
            ),
        ]
    )
    f["coupons__negative_zero.csv"] = csv_bytes(
        [
            {
                "record_id": "cz",
                "coupon_id": "cp",
                "partner_id": "P1",
                "amount": "-0",
                "currency": "CNY",
                "bill_month": "2026-11",
            },
            {
                "record_id": "cok",
                "coupon_id": "cp2",
                "partner_id": "P1",
                "amount": "0.01",
                "currency": "CNY",
                "bill_month": "2026-11",
            },
        ],
        ["record_id", "coupon_id", "partner_id", "amount", "currency", "bill_month"],
    )
    f["orders__offsets.csv"] = csv_bytes(
        [
            zero_order("naive", event_time="2026-11-09T10:00:00"),
            zero_order("naive_date", event_time="2026-11-09"),
            zero_order("nepal", event_time="2026-11-09T10:00:00+05:45"),
            zero_order("newfoundland", event_time="2026-11-08T22:00:00-03:30"),
            zero_order("nl_edge", event_time="2026-10-31T20:00:00-03:30"),  # Beijing 11-01 07:30
            zero_order("kiritimati", event_time="2026-11-01T05:00:00+14:00"),  # Beijing 10-31 23:00
            zero_order("nocolon", event_time="2026-11-09T10:00:00+0545"),
            zero_order("offset_bad", event_time="2026-11-09T10:00:00+5:45"),
            zero_order("zulu", event_time="2026-11-09T02:00:00Z"),
        ]
    )
    # real UTC offsets run from -12:00 to +14:00; +25:00 is no place on earth
    f["orders__offset_out_of_range.csv"] = csv_bytes(
        [
            zero_order("offset25", event_time="2026-11-09T10:00:00+25:00"),
            zero_order("offset99", event_time="2026-11-09T10:00:00-99:00"),
        ]
    )
    f["orders__feb29_2026.csv"] = csv_bytes(
        [
            zero_order("feb29", event_time="2026-02-29T10:00:00+08:00"),
            zero_order("feb28", event_time="2026-02-28T10:00:00+08:00"),
        ]
    )
    f["orders__partner_traversal.csv"] = csv_bytes(
        [
            order("t1", partner_id="../evil"),
            order("t2", partner_id=".."),
            order("t3", partner_id="P1/../P2"),
            order("t4", partner_id="P1\x00"),
            order("t5", partner_id="P１"),  # a full-width digit
            order("t6", partner_id="P1 "),
            order("t7", partner_id="x" * 65),
            order("tok"),
        ]
    )
    f["orders__partner_traversal.jsonl"] = jsonl_bytes(
        [
            order("jt1", partner_id="../../etc"),
            order("jt2", partner_id="P1\u0000"),
            order("jt3", partner_id="P1\n"),
            order("jtok"),
        ]
    )
    f["partners__traversal.csv"] = csv_bytes(
        [
            partner("P1"),
            partner("P2", currency="USD", discount_rate="0"),
            partner("../evil"),
            partner("ev\x00il"),
        ],
        list(partner().keys()),
    )
    long = "长" * 10_000
    f["orders__formula_and_long_names.csv"] = csv_bytes(
        [
            order("f1", customer_name='=HYPERLINK("http://evil.example","click")'),
            order("f2", customer_name="+1+1", product_name="-2"),
            order("f3", customer_name="@SUM(A1:A9)"),
            order("f4", customer_name="\tcmd", product_name="\rcr"),
            order(
                "f5", customer_name=long, product_name="A" * 10_000, record_id="f5" + "r" * 10_000
            ),
        ]
    )
    f["orders__formula_and_long_names.jsonl"] = jsonl_bytes(
        [
            order("jf1", customer_name="=1+1"),
            order("jf2", customer_name=long),
        ]
    )
    f["orders__currency.csv"] = csv_bytes(
        [
            order("cur_usd", currency="USD"),
            order("cur_lower", currency="cny"),
            order("cur_short", currency="CN"),
            order("cur_p2", partner_id="P2"),  # P2 bills in USD
        ]
    )
    f["orders__unknown_partner.csv"] = csv_bytes([order("unk", partner_id="P9"), order("known")])
    f["orders__duplicate_ids.csv"] = csv_bytes(
        [
            order("dup"),
            order("dup"),
            order("conf"),
            order("conf", amount="80", discount_amount="20"),
            order("dup"),
        ]
    )
    bad = csv_bytes([order("u1"), order("u2"), order("u3"), order("u4")]).split(b"\n")
    bad[2] = bad[2].replace(b"Customer One", b"Customer \xff\xfe One")
    bad[4] = bad[4].replace(b"Customer One", b"Caf\xe9 latin-1")
    f["orders__invalid_utf8.csv"] = b"\n".join(bad)
    jl = jsonl_bytes([order("ju1"), order("ju2"), order("ju3")]).split(b"\n")
    jl[1] = jl[1].replace(b"Customer One", b"Customer \xc3\x28 One")
    f["orders__invalid_utf8.jsonl"] = b"\n".join(jl)
    f["orders__broken_json.jsonl"] = (
        jsonl_line(order("b1"))
        + "\n"
        + jsonl_line(order("b2"))[:-20]
        + "\n"  # truncated
        + "[1, 2, 3]\n"
        + "\n"  # blank: not a record
        + '{"record_id": "b4", "amount": }\n'
        + "null\n"
        + jsonl_line(order("b5"))
        + "\n"
    ).encode()
    q = csv_bytes([order("q1"), order("q2"), order("q3"), order("q4")]).split(b"\n")
    q[2] = q[2].replace(b"Customer One", b'"Cust"omer')  # a stray quote
    f["orders__stray_quote.csv"] = b"\n".join(q)
    r = csv_bytes([order("r1"), order("r2"), order("r3")]).split(b"\n")
    r[1] += b",extra"
    r[2] = r[2].rsplit(b",", 2)[0]
    f["orders__ragged.csv"] = b"\n".join(r)
    inj = [dict(order("s1"), **{"x'); drop table stg_orders; --": "1", '"quoted"': "2"})]
    f["orders__sql_in_header.csv"] = csv_bytes(inj, list(inj[0].keys()))
    return f


def main() -> None:
    files = build()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"{len(files)} files written to {HERE}")


if __name__ == "__main__":
    main()
