"""``koobill generate``: a seeded landing zone, checked with real readers (csv, json,
pyarrow) against the spec's input contract (sections 1-2)."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.calendar import bill_month, date_range, month_of
from pipelines.config import FEEDS, PARTNER_ID_RE, required_columns
from pipelines.generate import generate
from pipelines.lake import KoobillError

START, END = "2025-01-28", "2025-02-11"  # crosses a month past its cutoff (late rows)
USAGE_N = 1500


# ---------------------------------------------------------------------------- readers


def read_file(path: Path) -> tuple[list[str], list[dict]]:
    """Columns and rows (values as str or None) of one landing file, with a real reader."""
    if path.suffix == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            rows = [{k: (v if v != "" else None) for k, v in r.items()} for r in reader]
            return list(reader.fieldnames or []), rows
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        cols = list(rows[0]) if rows else []
        return cols, [{k: None if v is None else str(v) for k, v in r.items()} for r in rows]
    assert path.suffix == ".parquet", path
    table = pq.read_table(path)
    rows = [{k: None if v is None else str(v) for k, v in r.items()} for r in table.to_pylist()]
    return table.column_names, rows


def landing(root: Path) -> dict[str, dict[str, list[tuple[Path, list[dict]]]]]:
    """feed -> landing date -> [(file, rows)] in name order."""
    out: dict = defaultdict(dict)
    for feed in FEEDS:
        base = root / "landing" / feed
        if not base.exists():
            continue
        for day in sorted(p.name for p in base.iterdir()):
            files = sorted(p for p in (base / day).iterdir() if not p.name.startswith("."))
            out[feed][day] = [(f, read_file(f)[1]) for f in files]
    return out


def all_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def ts(text: str | None) -> dt.datetime | None:
    """Parse an ISO 8601 timestamp; None when it is missing, invalid or has no offset."""
    try:
        t = dt.datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


BJ = dt.timezone(dt.timedelta(hours=8))


# ---------------------------------------------------------------------------- the row rules


def violations(data: dict) -> list[tuple[str, str, str, str]]:
    """(feed, landing date, record_id, reason) of every row breaking a row rule of the spec
    that can be checked cheaply, plus exact duplicates and late records (flagged apart)."""
    out = []
    snapshots = {d: rows for d, files in data["partners"].items() for _f, rows in files}
    price_rows = defaultdict(list)  # (sku, unit, currency) -> [(landed, from, to)]
    for d, files in data["prices"].items():
        for _f, rows in files:
            for p in rows:
                key = (p["sku_code"], p["unit"], p["currency"])
                to = ts(p["effective_to"]) if p["effective_to"] else None
                price_rows[key].append((d, ts(p["effective_from"]), to))
    seen: dict[str, dict[str, dict]] = defaultdict(dict)
    for feed in ("orders", "usage", "adjustments", "coupons", "payments"):
        req = required_columns(feed)
        money = [c.name for c in FEEDS[feed] if c.kind == "money"]
        for day, files in sorted(data[feed].items()):
            landed = dt.date.fromisoformat(day)
            snap_day = max(d for d in snapshots if d <= day)
            partners = {p["partner_id"]: p for p in snapshots[snap_day]}
            for _f, rows in files:
                for r in rows:
                    rid = r["record_id"]

                    def bad(reason, rid=rid, day=day, feed=feed):
                        out.append((feed, day, rid, reason))

                    if any(not r.get(c) for c in req):
                        bad("missing required value")
                        continue
                    amounts = {c: Decimal(r[c]) for c in money}
                    if any(a.as_tuple().exponent < -6 for a in amounts.values()):
                        bad("more than 6 decimals")
                    partner = partners.get(r["partner_id"])
                    if partner is None:
                        bad("unknown partner")
                        continue
                    if feed != "usage" and r["currency"] != partner["currency"]:
                        bad("currency not the partner's")
                    when = None
                    if feed == "orders":
                        when = ts(r["event_time"])
                        o, d, a = (
                            amounts[k] for k in ("official_amount", "discount_amount", "amount")
                        )
                        if a != o - d:
                            bad("amount != official - discount")
                        otype = {
                            "1": "NEW",
                            "2": "RENEW",
                            "3": "CHANGE",
                            "4": "UNSUBSCRIBE",
                            "8": "AUTO_RENEW",
                            "20": "CHANGE",
                            "24": "UNSUBSCRIBE",
                        }.get(r["order_type"], r["order_type"])
                        if otype in ("NEW", "RENEW", "AUTO_RENEW") and a < 0:
                            bad("negative amount")
                        if otype == "UNSUBSCRIBE" and a > 0:
                            bad("positive unsubscribe")
                        if otype not in ("NEW", "RENEW", "AUTO_RENEW", "CHANGE", "UNSUBSCRIBE"):
                            bad("unknown order_type")
                    elif feed == "usage":
                        when, end = ts(r["usage_start"]), ts(r["usage_end"])
                        if Decimal(r["quantity"]) < 0:
                            bad("negative quantity")
                        if when and end and end < when:
                            bad("usage_end < usage_start")
                        key = (r["sku_code"], r["unit"], partner["currency"])
                        if when and not any(
                            d <= day and frm <= when and (to is None or when < to)
                            for d, frm, to in price_rows[key]
                        ):
                            bad("no price")
                    elif feed == "payments":
                        when = ts(r["paid_at"])
                    if feed in ("coupons", "payments") and amounts["amount"] <= 0:
                        bad("amount <= 0")
                    if feed in ("orders", "usage", "payments") and when is None:
                        bad("timestamp without offset")
                        continue
                    record_date = (
                        when.astimezone(BJ).date()
                        if when
                        else dt.date.fromisoformat(r["bill_month"] + "-01")
                    )
                    if record_date > landed + dt.timedelta(days=1):
                        bad("from the future")
                    month = month_of(record_date)
                    if bill_month(month, landed) != month:
                        bad("late")
                    key = {c: r[c] for c in req}
                    if rid in seen[feed]:
                        bad("duplicate" if seen[feed][rid] == key else "conflicting duplicate")
                    else:
                        seen[feed][rid] = key
    return out


QUARANTINED = {"late", "duplicate"}  # the two that are not quarantined


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Zone:
    root: Path
    summary: str
    data: dict  # landing(root), read once


@pytest.fixture(scope="module")
def bad_zone(tmp_path_factory) -> Zone:
    root = tmp_path_factory.mktemp("bad")
    summary = generate(root, START, END, usage_rows_per_day=USAGE_N, bad_rows=True)
    return Zone(root, summary, landing(root))


@pytest.fixture(scope="module")
def clean_zone(tmp_path_factory) -> Zone:
    root = tmp_path_factory.mktemp("clean")
    summary = generate(root, START, END, usage_rows_per_day=USAGE_N, bad_rows=False)
    return Zone(root, summary, landing(root))


# ---------------------------------------------------------------------------- tests


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    lines: list[str] = []
    span = ("2025-02-27", "2025-03-03")
    generate(a, *span, seed=11, usage_rows_per_day=200, progress=lines.append)
    generate(str(b), *span, seed=11, usage_rows_per_day=200)
    generate(c, *span, seed=12, usage_rows_per_day=200)
    fa, fb, fc = all_bytes(a), all_bytes(b), all_bytes(c)
    assert fa and fa == fb
    assert fa.keys() == fc.keys()
    differing = {k for k in fa if fa[k] != fc[k]}
    assert any("usage" in k for k in differing) and any("orders" in k for k in differing)
    assert len([line for line in lines if line.startswith("2025-")]) == 5  # one per day


def test_rerun_replaces_the_folders_of_the_span(tmp_path):
    # a first run starting a day later lands prices and partners on 2025-03-02
    generate(tmp_path / "x", "2025-03-02", "2025-03-03", usage_rows_per_day=120)
    assert (tmp_path / "x/landing/prices/2025-03-02").exists()
    generate(tmp_path / "x", "2025-03-01", "2025-03-03", usage_rows_per_day=50)
    generate(tmp_path / "y", "2025-03-01", "2025-03-03", usage_rows_per_day=50)
    assert all_bytes(tmp_path / "x") == all_bytes(tmp_path / "y")


def test_every_feed_and_date_is_readable_with_required_columns(bad_zone):
    data = bad_zone.data
    days = [d.isoformat() for d in date_range(dt.date(2025, 1, 28), dt.date(2025, 2, 11))]
    assert sorted(data["orders"]) == days
    assert sorted(data["usage"]) == days
    assert sorted(data["partners"]) == ["2025-01-28", "2025-02-01", "2025-02-04"]
    assert sorted(data["prices"]) == ["2025-01-28"]
    assert sorted(data["adjustments"]) == ["2025-02-03", "2025-02-05"]
    assert sorted(data["coupons"]) == ["2025-02-10", "2025-02-11"]
    assert sorted(data["payments"]) == ["2025-02-08"]
    suffixes = Counter()
    for feed, by_day in data.items():
        for day, files in by_day.items():
            assert files, (feed, day)
            for f, rows in files:
                suffixes[f.suffix] += 1
                cols = list(rows[0])  # every reader gives every column of the file on each row
                missing = set(required_columns(feed)) - set(cols)
                assert not missing, (f, missing)
                assert rows, f
    assert suffixes[".csv"] > suffixes[".jsonl"] + suffixes[".parquet"]
    assert suffixes[".jsonl"] and suffixes[".parquet"]
    # several files in one folder on some days
    assert any(len(files) > 1 for files in data["usage"].values())
    assert any(len(files) > 1 for files in data["orders"].values())


def test_partners_snapshot_content_and_discount_change(bad_zone):
    data = bad_zone.data
    snaps = {d: files[0][1] for d, files in data["partners"].items()}
    first = snaps["2025-01-28"]
    assert len(first) == 4
    assert {p["currency"] for p in first} == {"CNY", "USD"}
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in p["partner_name"]) for p in first)
    for p in first:
        assert PARTNER_ID_RE.match(p["partner_id"])
        assert Decimal(p["tax_rate"]) in (Decimal("0"), Decimal("0.06"), Decimal("0.13"))
        assert Decimal("0") <= Decimal(p["discount_rate"]) <= Decimal("0.3")
    assert snaps["2025-02-01"] == first  # monthly re-land, unchanged
    changed = [
        (a["partner_id"], a["discount_rate"], b["discount_rate"])
        for a, b in zip(first, snaps["2025-02-04"], strict=True)
        if a != b
    ]
    assert len(changed) == 1 and changed[0][1] != changed[0][2]


def test_price_list_has_a_mid_month_change_landed_before_it_applies(bad_zone):
    data = bad_zone.data
    ((_f, rows),) = data["prices"]["2025-01-28"]
    by_key = defaultdict(list)
    for r in rows:
        assert ts(r["effective_from"]) and (not r["effective_to"] or ts(r["effective_to"]))
        Decimal(r["unit_price"])
        by_key[(r["sku_code"], r["unit"], r["currency"])].append(r)
    assert {k[2] for k in by_key} == {"CNY", "USD"}
    changes = []
    for chain in by_key.values():
        chain.sort(key=lambda r: ts(r["effective_from"]))
        assert chain[-1]["effective_to"] is None  # open-ended at the end
        for old, new in zip(chain, chain[1:], strict=False):
            assert old["effective_to"] == new["effective_from"]  # no gap, no overlap
            assert old["unit_price"] != new["unit_price"]
            changes.append(ts(new["effective_from"]).astimezone(BJ))
    assert changes, "no price change"
    for when in changes:
        assert 10 <= when.day <= 20 and when.date() > dt.date(2025, 1, 28)


def test_order_amounts_are_exact(clean_zone, bad_zone):
    def mismatches(zone):
        bad, n = 0, 0
        for files in zone.data["orders"].values():
            for _f, rows in files:
                for r in rows:
                    n += 1
                    o, d, a = (
                        Decimal(r[k]) for k in ("official_amount", "discount_amount", "amount")
                    )
                    bad += a != o - d
        return bad, n

    bad, n = mismatches(clean_zone)
    assert n > 15 * 30 and bad == 0
    bad, n = mismatches(bad_zone)
    assert 0 < bad < n * 0.01
    types = Counter(
        r["order_type"]
        for files in clean_zone.data["orders"].values()
        for _f, rows in files
        for r in rows
    )
    for t in ("NEW", "RENEW", "AUTO_RENEW", "CHANGE", "UNSUBSCRIBE"):
        assert types[t] > 0, t
    assert {"1", "2", "8"} & set(types) and {"4", "24", "3", "20"} & set(types)


def test_no_bad_rows_means_no_rule_broken(clean_zone):
    assert violations(clean_zone.data) == []


def test_bad_rows_are_injected_and_stay_under_the_quarantine_threshold(bad_zone):
    found = violations(bad_zone.data)
    reasons = Counter(reason for *_x, reason in found)
    for reason in (
        "late",
        "duplicate",
        "conflicting duplicate",
        "amount != official - discount",
        "timestamp without offset",
        "unknown partner",
        "currency not the partner's",
        "negative quantity",
    ):
        assert reasons[reason] > 0, (reason, reasons)
    assert reasons["no price"] == 0 and reasons["from the future"] == 0
    data = bad_zone.data
    quarantined = Counter((f, d) for f, d, _r, reason in found if reason not in QUARANTINED)
    total = sum(
        len(rows) for by_day in data.values() for files in by_day.values() for _f, rows in files
    )
    assert sum(quarantined.values()) < 0.01 * total
    for (feed, day), n in quarantined.items():
        rows = sum(len(r) for _f, r in data[feed][day])
        assert n / rows < 0.05, (feed, day, n, rows)
    assert "injected" in bad_zone.summary and "bad rows on" in bad_zone.summary


def test_usage_rows_per_day_is_exact(clean_zone, bad_zone):
    for files in clean_zone.data["usage"].values():
        assert sum(len(rows) for _f, rows in files) == USAGE_N
    for day, files in bad_zone.data["usage"].items():
        ids = [r["record_id"] for _f, rows in files for r in rows]
        prefix = f"u-{day.replace('-', '')}-"
        regular = {i for i in ids if i.startswith(prefix) and int(i[len(prefix) :]) < USAGE_N}
        assert len(regular) == USAGE_N
        # documented extras: late, bad, in-file and re-sent duplicates, a conflict: < 1%
        assert USAGE_N < len(ids) <= USAGE_N * 1.01


def test_usage_rows_are_hourly_with_exact_quantities(clean_zone):
    (_f, rows), *_ = clean_zone.data["usage"]["2025-02-01"]
    for r in rows:
        start, end = ts(r["usage_start"]), ts(r["usage_end"])
        assert end - start == dt.timedelta(hours=1)
        assert start.minute == start.second == 0
        whole, frac = r["quantity"].split(".")
        assert len(frac) == 6 and Decimal(r["quantity"]) > 0


@pytest.mark.parametrize(
    "args",
    [
        ("2025-02-02", "2025-02-01", {}),
        ("2025-2-1", "2025-02-01", {}),
        ("2025-02-01", "2025-02-01", {"n_partners": 0}),
        ("2025-02-01", "2025-02-01", {"usage_rows_per_day": -1}),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path, args):
    start, end, kw = args
    with pytest.raises(KoobillError):
        generate(tmp_path, start, end, **kw)
    assert not (tmp_path / "landing").exists()
