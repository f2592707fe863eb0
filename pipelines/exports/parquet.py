"""``bill-details-<partner>-<YYYY-MM>-v<n>.parquet``: one row per bill line, typed as
``bill_lines`` (amounts decimal128), zstd; the bill's components and status in the file's
key-value metadata."""

from __future__ import annotations

from pathlib import Path

from pipelines import schema
from pipelines.exports.bill import Bill
from pipelines.exports.common import COMPONENTS, DETAIL_COLUMNS, arrow_type, plain_decimal


def write_parquet(bill: Bill, tmp: Path) -> int:
    """Write the details of ``bill`` at ``tmp``; returns the number of bill lines."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field(n, arrow_type(t)) for n, t, _ in schema.BILL_LINES.columns]
    meta = {
        "koobill.kind": "bill details",
        "partner_id": bill.partner_id,
        "bill_month": bill.month,
        "version": str(bill.version),
        "bill_status": str(bill.header["status"]),
        "currency": bill.currency,
        "supersedes_invoice_no": bill.header.get("supersedes_invoice_no"),
    }
    for name, _label in COMPONENTS:
        meta[name] = plain_decimal(bill.header[name])
    arrow_schema = pa.schema(fields, metadata={k: v for k, v in meta.items() if v is not None})
    arrays = {n: [ln[n] for ln in bill.lines] for n in DETAIL_COLUMNS}
    table = pa.Table.from_pydict(arrays, schema=arrow_schema)
    pq.write_table(table, tmp, compression="zstd")
    return table.num_rows
