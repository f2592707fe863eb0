"""Quality reports that open offline.

Great Expectations renders its validation page for a hosted site: Bootstrap, jQuery, Vega and
Font Awesome from CDNs, its logo from the web, a "Home" link to a Data Docs index that koobill
does not build, and a newsletter bar. Finance and auditors often read the reports offline, so
``make_offline`` rewrites the page to need nothing but itself: remote styles and scripts are
removed, a small bundled stylesheet (``assets/report.css``) and two lines of plain JavaScript
take their place, the logo is embedded, and "Home" leads to ``quality/index.html``, the list of
every report of the data dir that ``write_index`` keeps.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import os
import re
from functools import cache
from pathlib import Path

from pipelines.files import write_text

_ASSETS = Path(__file__).resolve().parent / "assets"

_REMOTE_TAG = re.compile(
    r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//[^>]*>(?:\s*</script>)?",
    re.I,
)
_SCRIPT = re.compile(r"<script\b[^>]*>.*?</script>", re.I | re.S)
_FOOTER = re.compile(r"<footer\b.*?</footer>", re.I | re.S)
_REMOTE_IMG = re.compile(r"(<img\b[^>]*\bsrc\s*=\s*)[\"'](?:https?:)?//[^\"']*[\"']", re.I)
_REMOTE_CSS_URL = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", re.I)
_LOCAL_ICON = re.compile(r"<link\b[^>]*rel=[\"']shortcut icon[\"'][^>]*>", re.I)
_DATA_DOCS_LINK = re.compile(r"href=\"(?:\.\./)+(?:index|expectations/[^\"]*)\.html\"", re.I)

# The page's "Show All" / "Failed Only" buttons, without jQuery.
_FILTER_JS = """<script>
function _koobillShow(show) {
  document.querySelectorAll('.hide-succeeded-validation-target-child').forEach(function (e) {
    e.parentElement.style.display = show ? '' : 'none'; });
  document.querySelectorAll('.hide-succeeded-validation-target').forEach(function (e) {
    e.style.display = show ? '' : 'none'; });
}
function showAllValidations() { _koobillShow(true); }
function hideSucceededValidations() { _koobillShow(false); }
</script>"""


@cache
def _css() -> str:
    return (_ASSETS / "report.css").read_text(encoding="utf-8")


@cache
def _logo() -> str:
    """GX's own logo from its package, embedded as a data URI (empty if it is not there).
    The package is found, not imported: a report that DuckDB alone counted does not pay for
    importing Great Expectations."""
    spec = importlib.util.find_spec("great_expectations")
    if spec is None or spec.origin is None:
        return ""
    png = Path(spec.origin).parent / "render/view/static/images/logo-long.png"
    try:
        return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
    except OSError:
        return ""


def quality_root(report_dir: Path) -> Path:
    """The data dir's ``quality/`` folder that holds ``report_dir``."""
    report_dir = Path(report_dir)
    for p in (report_dir, *report_dir.parents):
        if p.name == "quality":
            return p
    return report_dir


def stylesheet() -> str:
    """The bundled stylesheet of the reports."""
    return _css()


def index_href(report_dir: Path) -> str:
    """The relative link from a report in ``report_dir`` to ``quality/index.html``."""
    return os.path.relpath(quality_root(report_dir) / "index.html", report_dir)


def make_offline(page: str, report_dir: Path) -> str:
    """The GX page rewritten to open with no network (see the module docstring)."""
    index = index_href(report_dir)
    page = _REMOTE_TAG.sub("", page)
    page = _SCRIPT.sub("", page)
    page = _FOOTER.sub("", page)
    page = _LOCAL_ICON.sub("", page)
    page = _REMOTE_CSS_URL.sub("none", page)
    logo = _logo()
    page = _REMOTE_IMG.sub(lambda m: f'{m.group(1)}"{logo}"', page)
    page = _DATA_DOCS_LINK.sub(f'href="{html.escape(index)}"', page)
    head = f"<style>{_css()}</style>{_FILTER_JS}"
    m = re.search(r"</head>", page, re.I)
    return page[: m.start()] + head + page[m.start() :] if m else head + page


def write_index(root: Path, report: Path | None = None, success=None) -> Path:
    """``quality/index.html``: every report of the data dir with its result, newest group
    first. The results are kept in ``quality/index.json`` (``report`` and ``success`` record
    the report just written)."""
    import json

    root = Path(root)
    results_path = root / "index.json"
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = {}
    if report is not None:
        results[Path(report).relative_to(root).as_posix()] = bool(success)
    groups: dict[str, list[str]] = {}
    for p in sorted(root.rglob("*.html")):
        if (p.name == "index.html" and p.parent == root) or p.name.startswith("."):
            continue
        rel = p.relative_to(root).as_posix()
        groups.setdefault(p.parent.relative_to(root).as_posix(), []).append(rel)
    results = {k: v for k, v in results.items() if (root / k).is_file()}
    write_text(results_path, json.dumps(results, indent=1, sort_keys=True))
    e = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>koobill quality reports</title>",
        f"<style>{_css()}</style></head><body><div class='container-fluid p-3'>",
        "<h2>koobill quality reports</h2>",
        "<p>Great Expectations validation reports of this data dir: the bills of each closed "
        "month (one per version) and the feeds of each landing date. Each opens offline.</p>",
        "<table class='table table-sm'><tr><th>report</th><th>result</th></tr>",
    ]
    # the bills of each month first, then the feeds of each landing date, newest first
    for group in sorted(sorted(groups, reverse=True), key=lambda g: not g.startswith("bills")):
        out.append(f"<tr><th colspan='2'>{e(group)}</th></tr>")
        for rel in groups[group]:
            ok = results.get(rel)
            status = {
                True: "<span class='text-success'>passed</span>",
                False: "<span class='text-danger'><b>FAILED</b></span>",
            }.get(ok, "unknown")
            name = e(Path(rel).stem)
            out.append(f"<tr><td><a href='{e(rel)}'>{name}</a></td><td>{status}</td></tr>")
    out.append("</table></div></body></html>")
    path = root / "index.html"
    write_text(path, "\n".join(out))
    return path
