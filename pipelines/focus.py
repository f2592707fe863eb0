"""The FOCUS 1.2 cost-and-usage dataset of a closed bill (``koobill export --format focus``).

The FinOps Foundation's Open Cost and Usage Specification (FOCUS) is what finance teams and FinOps
tools read. For one bill version of one partner, ``write_focus`` writes under the export folder

- ``focus-<partner>-<YYYY-MM>-v<n>.parquet``: typed (decimal128 money, UTC timestamps);
- ``focus-<partner>-<YYYY-MM>-v<n>.csv``: UTF-8, ISO 8601 ``...Z`` date/times, plain decimals,
  formula-like text neutralised (spec section 6).

Rows: one per bill line (a usage line split per resource when the lake's usage records behind it
add up to the line exactly), one Tax row, and an Adjustment row for each bill component whose
published (rounded, or coupon-capped) figure differs from the exact sum of its lines, so that
``BilledCost`` summed per ``InvoiceId`` equals the bill's ``bill_amount`` to the last digit. In a
restated version (n >= 2) the rows that differ from version n-1 (new or changed amounts, and a
zero row for each line that disappeared) carry ``ChargeClass = Correction`` and
``x_PreviousBilledCost``. The mapping is documented in docs/focus.md.

Everything is read from the warehouse tables ``bills`` and ``bill_lines`` (plus, for units and
resources, the lake's accepted usage records); nothing here depends on the other export writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines.errors import KoobillError

FOCUS_VERSION = "1.2"
KIND = "focus"
CENT = Decimal("0.01")
ZERO = Decimal("0")
BEIJING = dt.timezone(dt.timedelta(hours=8))
# text a spreadsheet would run as a formula (spec section 6; the same rule as the other CSVs)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
SERVICE_CATEGORY = "Other"  # koobill does not know what a marketplace product does
SERVICE_SUBCATEGORY = "Other (Other)"
ORDER_UNIT = "Orders"  # orders carry no quantity: an order line's quantity is its order count

# (column, type, meaning) in file order: FOCUS columns (alphabetical), then koobill's x_ columns.
# Types: D money/quantity decimal, T UTC date/time, S string, I integer, B boolean.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("BilledCost", "D", "Amount invoiced for the row: the bill line's amount (coupons negative)"),
    ("BillingAccountId", "S", "Partner id (the billed account)"),
    ("BillingAccountName", "S", "Partner name from the bill"),
    ("BillingCurrency", "S", "Bill currency (ISO 4217)"),
    ("BillingPeriodEnd", "T", "Exclusive end of the bill month (Beijing midnight, in UTC)"),
    ("BillingPeriodStart", "T", "Start of the bill month (Beijing midnight, in UTC)"),
    ("ChargeCategory", "S", "Usage, Purchase, Credit, Adjustment or Tax (docs/focus.md)"),
    ("ChargeClass", "S", "Correction on a restated version's differences, else NULL"),
    ("ChargeDescription", "S", "What the row is, in words"),
    ("ChargeFrequency", "S", "One-Time, Recurring or Usage-Based"),
    ("ChargePeriodEnd", "T", "Exclusive end of the month the records are dated in"),
    ("ChargePeriodStart", "T", "Start of the month the records are dated in"),
    (
        "CommitmentDiscountStatus",
        "S",
        "Always NULL: koobill has no commitment discounts (focus-validator's usage rules read it)",
    ),
    ("ConsumedQuantity", "D", "Metered quantity (Usage rows)"),
    ("ConsumedUnit", "S", "Unit of the metered quantity (the price list's unit)"),
    ("ContractedCost", "D", "Cost at the partner's negotiated price: the amount after discount"),
    ("EffectiveCost", "D", "BilledCost; 0 on Purchase rows (upfront purchases, not amortised)"),
    ("InvoiceId", "S", "The bill's invoice number; NULL when nothing is due (no invoice)"),
    ("InvoiceIssuerName", "S", "The marketplace operator (settings.toml [issuer] name)"),
    ("ListCost", "D", "Official (list) amount before the partner's discount"),
    ("PricingQuantity", "D", "Usage: metered quantity; orders: number of orders"),
    ("PricingUnit", "S", "Usage: the price list's unit; orders: Orders"),
    ("ProviderName", "S", "The marketplace operator"),
    ("PublisherName", "S", "The marketplace operator (the seller of record of every product)"),
    ("RegionId", "S", "Region"),
    ("RegionName", "S", "Region (koobill has no separate display name)"),
    ("ResourceId", "S", "Usage resource, when the line covers usage of resources"),
    ("ResourceName", "S", "NULL: resources carry no display name"),
    ("ServiceCategory", "S", "Other"),
    ("ServiceName", "S", "Product name, else product id; the operator's marketplace otherwise"),
    ("ServiceSubcategory", "S", "Other (Other)"),
    ("SkuId", "S", "SKU code"),
    ("SubAccountId", "S", "Customer id (NULL for partner-level rows)"),
    ("SubAccountName", "S", "Customer name, else customer id"),
    ("x_BillingAccountName", "S", "Partner name as on the bill (any script)"),
    ("x_SubAccountName", "S", "Customer name as landed (any script)"),
    ("x_ServiceName", "S", "Product name as landed (any script)"),
    ("x_Description", "S", "Adjustment reason or coupon id as landed (any script)"),
    ("x_PriceListUnit", "S", "Unit as written in the price list (PricingUnit is its FOCUS form)"),
    ("x_BillMonth", "S", "Bill month YYYY-MM"),
    ("x_BillVersion", "I", "Bill version"),
    ("x_LineNo", "I", "bill_lines.line_no behind the row; NULL for tax and rounding rows"),
    ("x_Component", "S", "consume, refund, adjustment, coupon, tax or rounding"),
    ("x_ChargeType", "S", "bill_lines.charge_type (NEW, RENEW, ..., USAGE, ADJUSTMENT, COUPON)"),
    ("x_ProductId", "S", "Product id"),
    ("x_SourceMonth", "S", "Month the records are dated in (differs when late)"),
    ("x_Late", "B", "Records landed after their own month's cutoff"),
    ("x_RecordCount", "I", "Source records summed into the row"),
    ("x_PreviousBilledCost", "D", "Correction rows: BilledCost of the same row in version n-1"),
    ("x_SupersedesInvoiceId", "S", "Invoice of the version this one restates"),
)
COLUMN_NAMES = [c[0] for c in COLUMNS]
MONEY_COLUMNS = ("BilledCost", "ContractedCost", "EffectiveCost", "ListCost")
# what makes two versions' rows differ (the row's key is _key)
COMPARED = (*MONEY_COLUMNS, "PricingQuantity", "ConsumedQuantity")


# ---------------------------------------------------------------------------------------------
# small pure helpers


def neutralise(text: Any) -> str:
    """A CSV text cell a spreadsheet will not evaluate: formula-like text gets a leading ``'``."""
    s = "" if text is None else str(text)
    return "'" + s if s.startswith(FORMULA_PREFIXES) else s


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of a Beijing calendar month, in UTC."""
    y, m = int(month[:4]), int(month[5:7])
    start = dt.datetime(y, m, 1, tzinfo=BEIJING)
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=BEIJING)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def iso_z(ts: dt.datetime) -> str:
    """``2026-09-30T16:00:00Z``: FOCUS's date/time format (UTC, seconds, ``Z``)."""
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def file_names(partner_id: str, month: str, version: int) -> dict[str, str]:
    """The stable file name of each FOCUS format."""
    stem = f"focus-{partner_id}-{month}-v{version}"
    return {"parquet": f"{stem}.parquet", "csv": f"{stem}.csv"}


def is_ascii(value: str) -> bool:
    return all(ord(ch) < 128 for ch in value)


def ascii_or(value: str | None, fallback: str | None) -> str | None:
    """``value`` if it is ASCII, else ``fallback``: focus-validator 2.x accepts only ASCII in
    FOCUS string columns (FOCUS itself allows any Unicode); the text as landed is kept in the
    matching x_ column."""
    return value if value is None or is_ascii(value) else fallback


TIME_UNITS = {"second", "minute", "hour", "day", "month", "year"}
MULTIPLIERS = {"k": 1000, "m": 1000000}


def focus_unit(unit: str | None) -> str | None:
    """A price list unit in FOCUS Unit Format where its shape is known: ``hour`` -> ``Hours``,
    ``GB-hour`` -> ``GB-Hours``, ``1k-tokens`` -> ``1000 Tokens``; anything else as it is."""
    import re

    if unit is None:
        return None
    u = unit.strip()
    low = u.lower()
    if low.rstrip("s") in TIME_UNITS:
        return low.rstrip("s").capitalize() + "s"
    m = re.fullmatch(r"(\d+)([km]?)[- ]([A-Za-z][A-Za-z0-9 ]*)", u)
    if m:
        n = int(m.group(1)) * MULTIPLIERS.get(m.group(2).lower(), 1)
        word = m.group(3)
        return f"{n} {word[:1].upper()}{word[1:]}"
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)-([A-Za-z]+)", u)
    if m and m.group(2).lower().rstrip("s") in TIME_UNITS:
        first = m.group(1)
        if first.islower():
            first = first.capitalize()
        return f"{first}-{m.group(2).lower().rstrip('s').capitalize()}s"
    return u


def _text(value: Any) -> str | None:
    """NULL for an absent value ('' included: FOCUS forbids empty strings)."""
    if value is None:
        return None
    s = str(value)
    return s if s.strip() else None


def charge_category(component: str, charge_type: str, amount: Decimal) -> str:
    """The FOCUS ChargeCategory of a bill line (table in docs/focus.md)."""
    if component in ("consume", "refund"):
        return "Usage" if charge_type == "USAGE" else "Purchase"
    if component == "coupon":
        return "Credit"
    if component == "adjustment":
        return "Credit" if amount < 0 else "Adjustment"
    raise KoobillError(f"bill line component {component!r} has no FOCUS ChargeCategory")


def charge_frequency(charge_type: str) -> str:
    if charge_type == "USAGE":
        return "Usage-Based"
    if charge_type in ("RENEW", "AUTO_RENEW"):
        return "Recurring"
    return "One-Time"


# ---------------------------------------------------------------------------------------------
# reading


def _rows(cur) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _bill(con, partner_id: str, month: str, version: int) -> dict[str, Any] | None:
    rows = _rows(
        con.execute(
            "select * from bills where partner_id = ? and bill_month = ? and version = ?",
            [partner_id, month, version],
        )
    )
    return rows[0] if rows else None


def _lines(con, header: dict[str, Any]) -> list[dict[str, Any]]:
    return _rows(
        con.execute(
            "select * from bill_lines where partner_id = ? and bill_month = ? and version = ? "
            "order by line_no",
            [header["partner_id"], header["bill_month"], header["version"]],
        )
    )


USAGE_KEY = ("customer_id", "product_id", "sku_code", "region", "source_month", "late")


def usage_detail(root: Path | None, partner_id: str, month: str) -> dict[tuple, list[dict]]:
    """The lake's accepted usage records billed in ``month`` for the partner, summed per usage
    line key and (resource_id, unit): what a usage bill line is made of."""
    if root is None:
        return {}
    from pipelines.config import Paths
    from pipelines.db import connect, parquet
    from pipelines.lake import partitions

    parts = partitions(Paths(Path(root)).ingest, "landing_date")
    files = [p / "usage.parquet" for _v, p in parts if (p / "usage.parquet").exists()]
    if not files:
        return {}
    con = connect()
    try:
        cur = con.execute(
            f"""select customer_id, product_id, sku_code, region, source_month, late,
                   resource_id, unit,
                   sum(quantity)::decimal(38, 6) as quantity,
                   sum(official_amount)::decimal(38, 6) as official_amount,
                   sum(amount)::decimal(38, 6) as amount,
                   count(*) as record_count
            from {parquet(files, union_by_name=True)}
            where partner_id = ? and bill_month_assigned = ?
            group by all
            order by all""",
            [partner_id, month],
        )
        out: dict[tuple, list[dict]] = {}
        for r in _rows(cur):
            key = tuple(_text(r[k]) if k != "late" else bool(r[k]) for k in USAGE_KEY)
            out.setdefault(key, []).append(r)
        return out
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# building the rows


def _usage_parts(line: dict[str, Any], detail: dict[tuple, list[dict]]) -> list[dict]:
    """The resources behind a usage line, if they add up to it exactly; else the line whole
    (with its unit when the records agree on one)."""
    key = tuple(_text(line[k]) if k != "late" else bool(line[k]) for k in USAGE_KEY)
    parts = detail.get(key, [])
    whole = {
        "resource_id": None,
        "unit": None,
        "quantity": line["quantity"],
        "official_amount": line["official_amount"],
        "amount": line["amount"],
        "record_count": line["record_count"],
    }
    units = {p["unit"] for p in parts}
    if len(units) == 1:
        whole["unit"] = next(iter(units))
    sums = [
        sum((p[c] or ZERO for p in parts), ZERO) for c in ("quantity", "official_amount", "amount")
    ]
    exact = sums == [line["quantity"] or ZERO, line["official_amount"], line["amount"]]
    if parts and exact and all(_text(p["resource_id"]) for p in parts):
        return parts
    return [whole]


def _base(header: dict[str, Any], issuer: str) -> dict[str, Any]:
    start, end = month_bounds(header["bill_month"])
    return {
        "BillingAccountId": header["partner_id"],
        "BillingAccountName": ascii_or(_text(header.get("partner_name")), header["partner_id"])
        or header["partner_id"],
        "x_BillingAccountName": _text(header.get("partner_name")),
        "BillingCurrency": header["currency"],
        "BillingPeriodStart": start,
        "BillingPeriodEnd": end,
        "ChargePeriodStart": start,
        "ChargePeriodEnd": end,
        "ChargeClass": None,
        "InvoiceId": _text(header.get("invoice_no")),
        "InvoiceIssuerName": issuer,
        "ProviderName": issuer,
        "PublisherName": issuer,
        "ServiceCategory": SERVICE_CATEGORY,
        "ServiceSubcategory": SERVICE_SUBCATEGORY,
        "ServiceName": f"{issuer} marketplace",
        "x_BillMonth": header["bill_month"],
        "x_BillVersion": int(header["version"]),
        "x_Late": False,
        "x_SourceMonth": header["bill_month"],
        "x_SupersedesInvoiceId": _text(header.get("supersedes_invoice_no")),
    }


def _line_rows(
    base: dict[str, Any], line: dict[str, Any], detail: dict[tuple, list[dict]]
) -> list[dict]:
    component, charge_type = line["component"], line["charge_type"]
    sign = Decimal(-1) if component == "coupon" else Decimal(1)  # coupons reduce the bill
    amount = sign * line["amount"]
    customer = _text(line["customer_id"])
    product = _text(line["product_id"])
    region = _text(line["region"])
    source_month = _text(line["source_month"]) or base["x_BillMonth"]
    start, end = month_bounds(source_month)
    product_name = _text(line["product_name"])
    service = ascii_or(product_name, product) or product or base["ServiceName"]
    note = _text(line["description"])
    description = {
        "USAGE": f"Usage of {service}",
        "ADJUSTMENT": f"Adjustment: {ascii_or(note, 'reason in x_Description') or 'no reason'}",
        "COUPON": f"Cash coupon {ascii_or(note, '(id in x_Description)') or ''}".strip(),
    }.get(charge_type, f"{charge_type} order of {service}")
    customer_name = _text(line["customer_name"])
    if line["late"]:
        description += f" (late, dated {source_month})"
    row = {
        **base,
        "ChargeCategory": charge_category(component, charge_type, amount),
        "ChargeDescription": description,
        "ChargeFrequency": charge_frequency(charge_type),
        "ChargePeriodStart": start,
        "ChargePeriodEnd": end,
        "RegionId": region,
        "RegionName": region,
        "ServiceName": service,
        "SkuId": _text(line["sku_code"]),
        "SubAccountId": customer,
        "SubAccountName": (ascii_or(customer_name, customer) or customer) if customer else None,
        "x_SubAccountName": customer_name,
        "x_ServiceName": product_name,
        "x_Description": note,
        "x_LineNo": int(line["line_no"]),
        "x_Component": component,
        "x_ChargeType": charge_type,
        "x_ProductId": product,
        "x_SourceMonth": source_month,
        "x_Late": bool(line["late"]),
    }
    parts = [None]
    if charge_type == "USAGE":
        parts = _usage_parts(line, detail)
    out = []
    for part in parts:
        r = dict(row)
        if part is None:  # orders, adjustments, coupons
            r["BilledCost"] = amount
            r["ListCost"] = sign * line["official_amount"]
            r["x_RecordCount"] = int(line["record_count"])
            if r["ChargeCategory"] == "Purchase":
                r["PricingQuantity"] = Decimal(int(line["record_count"]))
                r["PricingUnit"] = ORDER_UNIT
        else:
            if part["unit"] is None:
                raise KoobillError(
                    f"bill {base['BillingAccountId']} {base['x_BillMonth']} line "
                    f"{line['line_no']}: no unit known for SKU {line['sku_code']!r} (the lake has "
                    "no usage records behind the line); the FOCUS export needs it"
                )
            r["BilledCost"] = part["amount"]
            r["ListCost"] = part["official_amount"]
            r["x_RecordCount"] = int(part["record_count"])
            r["ResourceId"] = _text(part["resource_id"])
            r["PricingQuantity"] = r["ConsumedQuantity"] = part["quantity"]
            r["PricingUnit"] = r["ConsumedUnit"] = focus_unit(part["unit"])
            r["x_PriceListUnit"] = part["unit"]
        r["ContractedCost"] = r["EffectiveCost"] = r["BilledCost"]
        if r["ChargeCategory"] == "Purchase":
            # FOCUS: a purchase that covers future charges has EffectiveCost 0 (its cost would be
            # amortised over the usage it covers, which koobill does not model)
            r["EffectiveCost"] = ZERO
        out.append(r)
    return out


def _summary_row(
    base: dict[str, Any],
    component: str,
    amount: Decimal,
    text: str,
    category: str = "Adjustment",
    charge_type: str | None = None,
) -> dict:
    """A row that is not a bill line: the tax, a rounding, the coupons not deducted."""
    return {
        **base,
        "ChargeCategory": category,
        "x_ChargeType": charge_type,
        "ChargeDescription": text,
        "ChargeFrequency": "One-Time",
        "BilledCost": amount,
        "ListCost": amount,
        "ContractedCost": amount,
        "EffectiveCost": amount,
        "x_Component": component,
        "x_RecordCount": 0,
    }


def bill_rows(
    header: dict[str, Any],
    lines: Sequence[dict[str, Any]],
    issuer: str,
    detail: dict[tuple, list[dict]] | None = None,
) -> list[dict[str, Any]]:
    """The FOCUS rows of one bill version (without the comparison to an earlier version)."""
    base = _base(header, issuer)
    detail = detail or {}
    rows: list[dict[str, Any]] = []
    sums = {"consume": ZERO, "refund": ZERO, "adjustment": ZERO, "coupon": ZERO}
    for line in lines:
        if line["component"] not in sums:
            raise KoobillError(f"bill line component {line['component']!r} is unknown")
        sums[line["component"]] += line["amount"]
        rows.extend(_line_rows(base, line, detail))

    def dec(name: str) -> Decimal:
        return Decimal(header.get(name) or 0)

    coupon_total = dec("coupon_total") if header.get("coupon_total") is not None else None
    published = [
        ("consume", dec("consume_amount"), sums["consume"], "consume amount"),
        ("refund", -dec("refunds"), sums["refund"], "refunds"),
        ("adjustment", dec("adjustments"), sums["adjustment"], "adjustments"),
    ]
    if coupon_total is not None:
        published.append(("coupon", -coupon_total, -sums["coupon"], "coupons"))
    for component, figure, exact, label in published:
        if figure != exact:
            rows.append(
                _summary_row(
                    base,
                    "rounding",
                    figure - exact,
                    f"Rounding of the {label} to the cent ({exact} to {figure})",
                    charge_type=component.upper(),
                )
            )
    deducted = -dec("coupon_amount")
    offered = -(coupon_total if coupon_total is not None else sums["coupon"])
    if deducted != offered:
        rows.append(
            _summary_row(
                base,
                "coupon_cap",
                deducted - offered,
                "Cash coupons not deducted: the deduction is capped at the net amount",
                category="Credit",
            )
        )
    tax = dec("tax_amount")
    if tax != 0 or dec("tax_rate") != 0:
        rate = format((dec("tax_rate") * 100).normalize(), "f")
        text = f"Tax at {rate}% of the net amount"
        rows.append(_summary_row(base, "tax", tax, text, category="Tax", charge_type="TAX"))
    total = sum((r["BilledCost"] for r in rows), ZERO)
    if total != dec("bill_amount"):
        raise KoobillError(
            f"bill {header['partner_id']} {header['bill_month']} v{header['version']}: FOCUS "
            f"rows sum to {total}, the bill to {header['bill_amount']}; not exported"
        )
    for r in rows:
        for c in COLUMN_NAMES:
            r.setdefault(c, None)
    return rows


def _key(row: dict[str, Any]) -> tuple:
    """What identifies a row across versions of one bill: the bill line's grain (and resource),
    or the summary row's component."""
    return (
        row["x_Component"],
        row["x_ChargeType"],
        row["SubAccountId"],
        row["x_ProductId"],
        row["SkuId"],
        row["RegionId"],
        row["x_SourceMonth"],
        row["x_Late"],
        row["x_Description"],  # the adjustment reason or coupon id, part of the line's grain
        row["ResourceId"],
    )


def mark_corrections(rows: list[dict], previous: list[dict]) -> list[dict]:
    """Version n's rows with its differences from version n-1 marked ``Correction``: new rows and
    rows whose amounts or quantities changed, plus a zero row for each row that disappeared."""
    before = {_key(r): r for r in previous}
    seen = set()
    out = []
    for r in rows:
        k = _key(r)
        seen.add(k)
        old = before.get(k)
        if old is None or any(old[c] != r[c] for c in COMPARED):
            r = {**r, "ChargeClass": "Correction"}
            r["x_PreviousBilledCost"] = old["BilledCost"] if old is not None else ZERO
        out.append(r)
    template = rows[0] if rows else None
    for k, old in before.items():
        if k in seen:
            continue
        gone = {**old, "ChargeClass": "Correction", "x_PreviousBilledCost": old["BilledCost"]}
        for c in MONEY_COLUMNS:
            gone[c] = ZERO
        for c in ("PricingQuantity", "ConsumedQuantity"):
            if gone[c] is not None:
                gone[c] = ZERO
        if template is not None:  # the row belongs to the new version and its invoice
            for c in ("InvoiceId", "x_BillVersion", "x_SupersedesInvoiceId"):
                gone[c] = template[c]
        gone["x_LineNo"] = None
        gone["x_RecordCount"] = 0
        gone["ChargeDescription"] = f"No longer billed: {old['ChargeDescription']}"
        out.append(gone)
    return out


def focus_rows(
    con, header: dict[str, Any], issuer: str, root: Path | None = None
) -> list[dict[str, Any]]:
    """The FOCUS rows of a bill version, read from ``bills`` and ``bill_lines`` (and the lake's
    usage records under ``root`` for units and resources); corrections marked from version 2."""
    detail = usage_detail(root, header["partner_id"], header["bill_month"])
    rows = bill_rows(header, _lines(con, header), issuer, detail)
    version = int(header["version"])
    if version > 1:
        prev = _bill(con, header["partner_id"], header["bill_month"], version - 1)
        if prev is not None:
            previous = bill_rows(prev, _lines(con, prev), issuer, detail)
            rows = mark_corrections(rows, previous)
    return rows


# ---------------------------------------------------------------------------------------------
# writing


def arrow_schema(header: dict[str, Any] | None = None):
    import pyarrow as pa

    types = {
        "D": pa.decimal128(38, 6),
        "T": pa.timestamp("ms", tz="UTC"),  # Parquet has no seconds unit
        "S": pa.string(),
        "I": pa.int64(),
        "B": pa.bool_(),
    }
    meta = {"focus.version": FOCUS_VERSION, "focus.dataset": "CostAndUsage"}
    if header is not None:
        meta.update(
            {
                "partner_id": header["partner_id"],
                "bill_month": header["bill_month"],
                "version": str(header["version"]),
                "bill_amount": format(Decimal(header["bill_amount"]), "f"),
            }
        )
    return pa.schema([pa.field(n, types[t]) for n, t, _ in COLUMNS], metadata=meta)


def write_parquet(rows: Sequence[dict], header: dict[str, Any], path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(header)
    table = pa.Table.from_pylist([{c: r[c] for c in COLUMN_NAMES} for r in rows], schema=schema)
    pq.write_table(table, path, compression="zstd")
    return table.num_rows


def csv_cell(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "D":
        return format(Decimal(value), "f")
    if kind == "T":
        return iso_z(value)
    if kind == "B":
        return "true" if value else "false"
    if kind == "I":
        return str(int(value))
    return neutralise(value)


def write_csv(rows: Sequence[dict], path: Path) -> int:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\r\n")
        w.writerow(COLUMN_NAMES)
        for r in rows:
            w.writerow([csv_cell(t, r[n]) for n, t, _ in COLUMNS])
    return len(rows)


def write_focus(
    con, header: dict[str, Any], folder: Path, *, issuer: str, root: Path | None = None
) -> list[tuple[str, str, Path, int]]:
    """Write the FOCUS dataset of one bill version into ``folder``, each file atomically (temp
    file, fsync, rename). Returns (kind, format, path, rows) per file written."""
    from pipelines.lake import atomic_path

    if not _text(issuer):
        raise KoobillError("the FOCUS export needs the invoice issuer's name (settings.toml)")
    rows = focus_rows(con, header, issuer, root)
    names = file_names(header["partner_id"], header["bill_month"], int(header["version"]))
    out = []
    for fmt, writer in (
        ("parquet", lambda r, p: write_parquet(r, header, p)),
        ("csv", write_csv),
    ):
        target = Path(folder) / names[fmt]
        with atomic_path(target) as tmp:
            n = writer(rows, tmp)
        out.append((KIND, fmt, target, n))
    return out
