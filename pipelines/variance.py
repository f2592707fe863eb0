"""Estimate variance: the estimate of a month as of its cutoff against the final bill, term by
term (spec section 9), one set of rows per partner and bill version.

The estimate E is the latest estimate of the month made on or before its cutoff (spec section
4: consume - refunds + adjustments of the records landed so far; no tax, no coupons), as it was
when version 1 was closed; every later version is compared with the same E. With
net(v) = consume_amount - refunds + adjustments of version v:

    bill_amount(v) - E =  landed_after_estimate      net(v1) - E, less the late records below
                        + late_records               late records from earlier months: those of
                                                     v1 landed after E's as-of date, and those a
                                                     restatement added or removed
                        + restatement                every other change of net from v1 to v
                        - coupon_amount(v)           cash coupons (not in an estimate)
                        + tax_amount(v)              tax (not in an estimate)
                        + unexplained                what is left: zero unless the bill's own
                                                     arithmetic is broken (see reconciliation)

Each split of a net is a difference of two nets computed like the bill (each component round2
of its exact sum), so the terms add up to bill_amount(v) - E exactly, to the cent.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines import calendar as cal
from pipelines.exports.common import round2  # the bills' rounding: half away from zero

ZERO = Decimal(0)
TERMS = (
    "landed_after_estimate",
    "late_records",
    "restatement",
    "coupons",
    "tax",
    "unexplained",
)


def net_of(rows: list[tuple[str, Decimal]]) -> Decimal:
    """consume - refunds + adjustments of (component, amount) rows, each component round2 of
    its exact sum, as the bill and the estimate compute it."""
    sums = {"consume": ZERO, "refund": ZERO, "adjustment": ZERO}
    for comp, amount in rows:
        if comp in sums:
            sums[comp] += Decimal(amount)
    return round2(sums["consume"]) - round2(-sums["refund"]) + round2(sums["adjustment"])


def bill_net(b: dict) -> Decimal:
    return Decimal(b["consume_amount"]) - Decimal(b["refunds"]) + Decimal(b["adjustments"])


def _estimate(con, partner_id: str, month: str) -> tuple[Any, Decimal | None]:
    row = con.execute(
        "select as_of_date, estimate_amount from rc_estimates "
        "where partner_id = ? and bill_month = ? and as_of_date <= ? "
        "order by as_of_date desc limit 1",
        [partner_id, month, cal.cutoff(month)],
    ).fetchone()
    return (row[0], Decimal(row[1])) if row else (None, None)


def _lines(con, partner_id: str, version: int) -> list[tuple[str, Decimal, bool]]:
    return [
        (c, Decimal(a), bool(late))
        for c, a, late in con.execute(
            "select component, amount, late from rc_lines where partner_id = ? and version = ?",
            [partner_id, version],
        ).fetchall()
    ]


def _late_after(con, partner_id: str, as_of) -> Decimal:
    """What the month's late records landed after the estimate's as-of date add to the net
    (all late records when there is no estimate), from the records in the lake."""
    # summed per component in DuckDB (exact DECIMAL): a month has millions of records
    sums = con.execute(
        "select component, sum(amount), "
        "coalesce(sum(amount) filter (where not coalesce(late and "
        "(?::date is null or landing_date > ?::date), false)), 0) "
        "from rc_records where partner_id = ? group by component order by component",
        [as_of, as_of, partner_id],
    ).fetchall()
    everything = [(c, Decimal(total)) for c, total, _kept in sums]
    without = [(c, Decimal(kept)) for c, _total, kept in sums]
    return net_of(everything) - net_of(without)


def variance_rows(
    con, root: Path, month: str, bills: list[dict], existing: list[dict]
) -> list[dict]:
    """The variance rows of ``bills`` (versions without rows yet). Reads the temp tables of
    ``pipelines.reconcile`` (rc_bills, rc_lines, rc_records, rc_estimates); the rows of a
    version 1 already stored (``existing``) give the estimate and the version-1 terms that
    later versions carry."""
    by_key = {(b["partner_id"], b["version"]): b for b in _all_bills(con)}
    v1_rows: dict[str, dict[str, dict]] = {}
    for r in existing:
        if r["version"] == 1:
            v1_rows.setdefault(r["partner_id"], {})[r["term"]] = r
    out: list[dict] = []
    for b in sorted(bills, key=lambda x: (x["partner_id"], x["version"])):
        pid, v = b["partner_id"], int(b["version"])
        v1 = by_key.get((pid, 1), b)
        if v > 1 and pid in v1_rows:
            first = v1_rows[pid]["landed_after_estimate"]
            as_of, est = first["estimate_as_of"], Decimal(first["estimate_amount"])
            landed_after = Decimal(first["amount"])
            late1 = Decimal(v1_rows[pid]["late_records"]["amount"])
        else:
            as_of, est = _estimate(con, pid, month)
            late1 = _late_after(con, pid, as_of) if v == 1 else ZERO
            landed_after = bill_net(v1) - (est or ZERO) - late1
        est_amount = est if est is not None else ZERO
        if v > 1:
            # the late records of version v in place of those of version 1, the rest as in v1
            mixed = [(c, a) for c, a, late in _lines(con, pid, 1) if not late]
            mixed += [(c, a) for c, a, late in _lines(con, pid, v) if late]
            x1 = net_of(mixed)
            late = late1 + (x1 - bill_net(v1))
            restatement = bill_net(b) - x1
        else:
            late, restatement = late1, ZERO
        coupons = -Decimal(b["coupon_amount"])
        tax = Decimal(b["tax_amount"])
        bill_amount = Decimal(b["bill_amount"])
        unexplained = bill_amount - est_amount - (landed_after + late + restatement + coupons + tax)
        amounts = dict(
            zip(TERMS, (landed_after, late, restatement, coupons, tax, unexplained), strict=True)
        )
        words = _explanations(as_of, v, b)
        for no, term in enumerate(TERMS, start=1):
            out.append(
                {
                    "partner_id": pid,
                    "bill_month": month,
                    "version": v,
                    "currency": b["currency"],
                    "estimate_as_of": as_of,
                    "estimate_amount": est_amount,
                    "bill_amount": bill_amount,
                    "term_no": no,
                    "term": term,
                    "amount": amounts[term],
                    "explanation": words[term],
                }
            )
        if v == 1:
            v1_rows[pid] = {r["term"]: r for r in out[-len(TERMS) :]}
    return out


def _all_bills(con) -> list[dict]:
    cur = con.execute("select * from rc_bills")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _explanations(as_of, version: int, b: dict) -> dict[str, str]:
    est = (
        f"the estimate as of {as_of}"
        if as_of is not None
        else "no estimate (none was made on or before the cutoff): the estimate counts as 0"
    )
    return {
        "landed_after_estimate": f"records in version 1 that {est} did not include (landed "
        "after its as-of date, or ingested after it was made), late records apart",
        "late_records": "late records from earlier months that the estimate did not include"
        + (", or that the restatement added or removed" if version > 1 else ""),
        "restatement": (
            f"other changes made by the restatement to version {version}"
            if version > 1
            else "none: version 1"
        ),
        "coupons": f"cash coupons deducted (coupon total {Decimal(b['coupon_total']):,.2f}, "
        "capped at the net); an estimate does not deduct them",
        "tax": f"tax at {(Decimal(b['tax_rate']) * 100).normalize():f}%; an estimate does not cover "
        "tax",
        "unexplained": "what no term explains: zero unless the bill's own arithmetic is broken",
    }
