"""The invoice's inputs: the settings file, the partner columns that flow from the partners feed
through the close onto the document, and the font's coverage of every text it prints."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ingest, land, order, partner, price

from pipelines import settings as st
from pipelines.close import close_month
from pipelines.exports import FONT_REGULAR, export_month
from pipelines.lake import KoobillError

MONTH = "2026-11"
WINDOW = ["2026-11-30", "2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
P1_RECIPIENT = {
    "legal_name": "Yunqi Technology (Beijing) Co., Ltd. 北京云启科技有限公司",
    "address": "北京市海淀区中关村大街 27 号\nBeijing 100080",
    "tax_id": "91110108TEST0001X",
    "billing_email": "ap@p1.example",
}


def pdf_text(path: Path) -> str:
    """The PDF's text with its white space collapsed (a long name may wrap)."""
    from pypdf import PdfReader

    return " ".join(" ".join(p.extract_text() for p in PdfReader(path).pages).split())


# --- settings ---------------------------------------------------------------------------------


def test_settings_default_to_the_bundled_demo_values(tmp_path):
    s = st.load_settings(tmp_path)
    assert s.source == st.DEFAULT_PATH
    assert s.issuer.name and s.issuer.address and s.issuer.tax_id
    assert s.terms_days == 30
    assert s.account_for("USD").currency == "USD" and s.account_for("CNY").currency == "CNY"
    assert s.account_for("EUR") is s.accounts[0]  # no EUR account: the first one


def test_the_data_dirs_settings_file_is_used_whole(tmp_path):
    (tmp_path / "settings.toml").write_text(
        '[issuer]\nname = "Own Operator"\naddress = "Line 1\\nLine 2"\n'
        "[payment]\nterms_days = 10\n",
        encoding="utf-8",
    )
    s = st.load_settings(tmp_path)
    assert s.source == tmp_path / "settings.toml"
    assert s.issuer.name == "Own Operator" and s.issuer.address == ("Line 1", "Line 2")
    assert s.terms_days == 10
    # nothing is taken from the demo file: no demo bank account on a real invoice
    assert s.accounts == () and s.issuer.tax_id is None and s.account_for("CNY") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[issuer]\naddress = "x"\n', "issuer.name is required"),
        ("[payment]\nterms_days = 30\n", r"the \[issuer\] table is required"),
        ('[issuer]\nname = "X"\n[payment]\nterms_days = "30"\n', "terms_days must be a whole"),
        ('[issuer]\nname = "X"\n[payment]\nterms_days = -1\n', "terms_days must be a whole"),
        ('[issuer\nname = "X"\n', "cannot read the settings"),
        ('[issuer]\nname = "X"\naddress = 5\n', "issuer.address must be text"),
    ],
)
def test_bad_settings_are_clear_errors(tmp_path, text, message):
    (tmp_path / "settings.toml").write_text(text, encoding="utf-8")
    with pytest.raises(st.SettingsError, match=message) as err:
        st.load_settings(tmp_path)
    assert "settings.toml" in str(err.value)
    assert isinstance(err.value, KoobillError)  # the CLI prints it as `error: ...`


def test_the_font_covers_every_text_the_invoice_may_print():
    """Every character of the bundled settings and of the demo partners' recipient columns has
    a glyph in the bundled CJK subset (the regular face; bold falls back to it)."""
    import tomllib

    from fontTools.ttLib import TTFont

    from pipelines.generate import PARTNER_POOL, PARTNER_RECIPIENTS

    cmap = TTFont(FONT_REGULAR).getBestCmap()

    def strings(v):
        if isinstance(v, str):
            yield v
        elif isinstance(v, dict):
            for x in v.values():
                yield from strings(x)
        elif isinstance(v, list | tuple):
            for x in v:
                yield from strings(x)

    texts = list(strings(tomllib.loads(st.DEFAULT_PATH.read_text(encoding="utf-8"))))
    texts += [t for rec in PARTNER_RECIPIENTS.values() for t in rec if t]
    texts += [p[1] for p in PARTNER_POOL]
    assert any("示例" in t for t in texts) and any("北京" in t for t in texts)
    missing = {ch for t in texts for ch in t if ch not in "\n" and ord(ch) not in cmap}
    assert missing == set()


# --- from the partners feed to the invoice ------------------------------------------------------


@pytest.fixture(scope="module")
def restated(tmp_path_factory):
    """A month whose partners snapshot gains the recipient columns, closed, exported, then
    restated after a late correction of a landing date, and exported again."""
    d = tmp_path_factory.mktemp("invoice") / "data"
    d.mkdir()
    # an old-style snapshot first (no optional columns), then one with them
    land(d, "partners", WINDOW[0], [partner("P1"), partner("P2")])
    land(d, "prices", WINDOW[0], [price()])
    land(
        d,
        "partners",
        WINDOW[2],
        [partner("P1", **P1_RECIPIENT), partner("P2", legal_name="", address="", tax_id="")],
    )
    for i, day in enumerate(WINDOW):
        land(d, "orders", day, [order(f"o{i}"), order(f"q{i}", partner_id="P2")])
    for day in WINDOW:
        ingest(d, day)
    close_month(d, MONTH)
    first = export_month(d, MONTH, formats=["pdf", "xlsx"])
    # a correction lands for the 3rd: the date is ingested again and the month restated
    land(d, "orders", WINDOW[3], [order("o3"), order("q3", partner_id="P2"), order("late-fix")])
    ingest(d, WINDOW[3])
    close_month(d, MONTH, restate=True)
    second = export_month(d, MONTH, partner="P1", formats=["pdf", "xlsx"])
    return d, first, second


def _file(result, partner: str, fmt: str, root: Path) -> Path:
    return root / next(f.path for f in result.files if f.partner_id == partner and f.format == fmt)


def test_recipient_columns_are_kept_by_the_ingest_and_carried_by_the_close(restated):
    import duckdb

    from pipelines import lake

    d, _first, _second = restated
    partners = lake.at(d / "lake" / "ingest" / f"landing_date={WINDOW[2]}") / "partners.parquet"
    snap = duckdb.sql(f"select * from read_parquet('{partners}') order by partner_id").fetchall()
    assert len(snap) == 2
    con = duckdb.connect(str(d / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(
            "select partner_id, version, legal_name, address, tax_id, billing_email from bills "
            "where bill_month = ? order by partner_id, version",
            [MONTH],
        ).fetchall()
    finally:
        con.close()
    p1 = [r for r in rows if r[0] == "P1"]
    assert p1 and all(r[2:] == tuple(P1_RECIPIENT.values()) for r in p1)
    # blank optional values are absent: NULL, never ''
    assert all(r[2:] == (None, None, None, None) for r in rows if r[0] == "P2")


def test_the_invoice_shows_the_recipient_or_the_partner_name_alone(restated):
    d, first, _second = restated
    text = pdf_text(_file(first, "P1", "pdf", d))
    assert "BILL TO" in text
    for needle in (
        P1_RECIPIENT["legal_name"],
        "北京市海淀区中关村大街 27 号 Beijing 100080",
        f"Tax ID: {P1_RECIPIENT['tax_id']}",
        f"E-mail: {P1_RECIPIENT['billing_email']}",
        "Partner ID: P1",
        "INV-P1-202611",
    ):
        assert needle in text, needle
    p2 = pdf_text(_file(first, "P2", "pdf", d))
    block = p2[p2.index("BILL TO") : p2.index("Balance due")]
    assert block == "BILL TO Partner P2 Partner ID: P2 "  # the partner name alone
    # the bundled demo issuer (this data dir has no settings.toml)
    issuer = st.load_settings(None).issuer
    assert issuer.name in text and issuer.tax_id in text


def test_the_restated_documents_name_the_invoice_they_replace(restated):
    import openpyxl

    d, first, second = restated
    assert "supersedes invoice" not in pdf_text(_file(first, "P1", "pdf", d))
    assert {f.version for f in second.files} == {2}
    text = pdf_text(_file(second, "P1", "pdf", d))
    assert "INV-P1-202611-V2" in text
    assert "This invoice (version 2) supersedes invoice INV-P1-202611:" in text
    wb = openpyxl.load_workbook(_file(second, "P1", "xlsx", d))
    facts = {r[0].value: r[1].value for r in wb["summary"].iter_rows(min_row=2)}
    assert facts["Invoice Number"] == "INV-P1-202611-V2"
    assert facts["Supersedes Invoice"] == "INV-P1-202611"


def test_a_broken_settings_file_stops_the_export_before_any_file(tmp_path, restated):
    import shutil

    d, _first, _second = restated
    copy = tmp_path / "data"
    shutil.copytree(d, copy)
    shutil.rmtree(copy / "exports")
    (copy / "settings.toml").write_text("[issuer]\n", encoding="utf-8")
    with pytest.raises(KoobillError, match="issuer.name is required"):
        export_month(copy, MONTH)
    assert not (copy / "exports").exists()
