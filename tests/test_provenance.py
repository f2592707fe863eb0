"""Provenance of a bill version (spec section 9): the landing files behind it with their size
and SHA-256, the code version and the settings that change amounts; made once per version
(a rerun changes nothing, a restatement adds the new version's own); `koobill explain`."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from helpers import ingest, land, order, partner, price, usage

from pipelines import __version__
from pipelines.cli import cli
from pipelines.close import close_month

MONTH = "2026-11"
WINDOW = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]


@pytest.fixture(scope="module")
def closed(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prov") / "data"
    d.mkdir()
    land(d, "partners", WINDOW[0], [partner("P1"), partner("P2")])
    land(d, "prices", WINDOW[0], [price()])
    land(d, "orders", WINDOW[0], [order("o1"), order("o2", partner_id="P2")])
    land(d, "usage", "2026-12-01", [usage("u1")])
    for day in WINDOW:
        ingest(d, day, allow_empty=True)
    close_month(d, MONTH)
    return d


def provenance(d: Path, partner_id: str = "P1", version: int = 1) -> list[dict]:
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    cur = con.execute(
        "select * from bill_provenance where partner_id = ? and bill_month = ? and version = ? "
        "order by kind, name",
        [partner_id, MONTH, version],
    )
    names = [c[0] for c in cur.description]
    out = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    con.close()
    return out


def test_the_landing_files_behind_a_bill_with_their_sha256(closed):
    files = {r["name"]: r for r in provenance(closed) if r["kind"] == "landing_file"}
    assert set(files) == {
        "landing/orders/2026-11-30/orders.csv",
        "landing/usage/2026-12-01/usage.csv",
        "landing/partners/2026-11-30/partners.csv",
        "landing/prices/2026-11-30/prices.csv",  # P1 has usage: the price list rated it
    }
    for name, r in files.items():
        data = (closed / name).read_bytes()
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        assert r["bytes"] == len(data)
    o = files["landing/orders/2026-11-30/orders.csv"]
    assert (o["rows_read"], o["records_billed"]) == (2, 1)  # o2 is P2's
    # P2 has no usage: no price file behind its bill
    p2 = {r["name"] for r in provenance(closed, "P2") if r["kind"] == "landing_file"}
    assert p2 == {
        "landing/orders/2026-11-30/orders.csv",
        "landing/partners/2026-11-30/partners.csv",
    }


def test_code_version_and_the_settings_that_change_amounts(closed):
    rows = {(r["kind"], r["name"]): r["value"] for r in provenance(closed)}
    assert rows[("code", "koobill_version")] == __version__
    assert rows[("setting", "tax_rate")] == "0.060000"
    assert rows[("setting", "discount_rate")] == "0.100000"
    assert rows[("setting", "cutoff_day")].startswith("4 ")


def test_a_rerun_keeps_the_rows_and_a_restatement_adds_its_own(closed, tmp_path):
    d = shutil.copytree(closed, tmp_path / "data", symlinks=True)
    before = provenance(d)
    assert close_month(d, MONTH).changed is False
    assert provenance(d) == before
    land(
        d,
        "orders",
        "2026-12-03",
        [order("o3", amount="10", official_amount="20", discount_amount="10")],
        name="more.csv",
    )
    ingest(d, "2026-12-03")
    close_month(d, MONTH, restate=True)
    assert provenance(d) == before  # version 1's provenance is kept as it was made
    v2 = {r["name"] for r in provenance(d, version=2) if r["kind"] == "landing_file"}
    assert "landing/orders/2026-12-03/more.csv" in v2
    assert provenance(d, "P2", 2) == []  # P2's bill did not change: no version 2
    args = ["--data-dir", str(d), "explain", "--partner", "P1", "--month", MONTH]
    old = CliRunner().invoke(cli, [*args, "--version", "1"])
    assert old.exit_code == 0 and "v1 (superseded)" in old.output
    assert "more.csv" not in old.output
    new = CliRunner().invoke(cli, args)
    assert "v2 (closed)" in new.output and "landing/orders/2026-12-03/more.csv" in new.output


def test_explain_prints_the_provenance_and_the_variance(closed):
    res = CliRunner().invoke(
        cli, ["--data-dir", str(closed), "explain", "--partner", "P1", "--month", MONTH]
    )
    assert res.exit_code == 0, res.output
    sha = hashlib.sha256((closed / "landing/orders/2026-11-30/orders.csv").read_bytes())
    assert sha.hexdigest() in res.output
    assert "koobill_version = " + __version__ in res.output
    assert "tax" in res.output and "estimate as of 2026-12-04" in res.output
    res = CliRunner().invoke(
        cli, ["--data-dir", str(closed), "explain", "--partner", "NOPE", "--month", MONTH]
    )
    assert res.exit_code == 1 and "no closed bill of partner NOPE" in res.output
