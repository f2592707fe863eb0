"""What the page reads: every query of the Partner Bills page, each bound to one partner.

Every function takes the partner the signed-in user may see (resolved once per request by
``auth.viewer``) and binds it as a parameter: no query here reads a row of another partner.
Reads go to the newest *published* analysts' database through a read-only connection opened
per request; the page never takes the data dir's writer lock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pipelines import patterns
from pipelines.db import sql

MONTH_RE = patterns.MONTH_RE
ID_RE = patterns.PARTNER_ID_RE  # partner and customer ids in paths
INVOICE_RE = patterns.INVOICE_NO_RE
EXPORT_ID_RE = re.compile(r"\A[A-Za-z0-9_-]{1,200}\Z")
# View More sorts by these columns only (name in the URL -> SQL expression)
LINE_SORTS = {
    "line": "line_no",
    "product": "product_name",
    "region": "region",
    "type": "charge_type",
    "sku": "sku_code",
    "month": "source_month",
    "quantity": "quantity",
    "amount": "amount",
}
PAGE_SIZES = (20, 50, 100)


_published_lock = threading.Lock()
_published: dict[Path, tuple[tuple, Any]] = {}


def _connect_published(root: Path):
    """A read-only cursor on the newest published analysts' database.

    The published file is replaced by a rename at each publication. One in-memory DuckDB per
    file identity (device, inode, mtime, size) holds it attached read-only, and each request
    gets a cursor of it: cheap, and a new publication is seen by the next request. (A plain
    ``duckdb.connect(path)`` would hand back the old file while any connection to that path is
    still open in the process: DuckDB caches database instances by path.)"""
    import duckdb

    from pipelines import objectstore

    # object storage: the bucket's newest publication, fetched into the mirror when it changed
    # (looked up at most every 2 seconds)
    path = objectstore.refresh(Path(root) / "warehouse.duckdb")
    try:
        st = path.stat()
    except FileNotFoundError:
        from pipelines.warehouse import connect_published

        return connect_published(Path(root)), None  # nothing published: empty tables
    ident = (str(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    with _published_lock:
        hit = _published.get(path)
        if hit is None or hit[0] != ident:
            con = duckdb.connect(":memory:")
            con.execute("attach $path as published (read_only)", {"path": str(path)})
            _published[path] = (ident, con)  # the old one goes once its cursors are done
            hit = _published[path]
        cur = hit[1].cursor()
    cur.execute("use published")
    cur.execute("set TimeZone = 'UTC'")
    return cur, ident


@contextlib.contextmanager
def reader(root: Path) -> Iterator[Reader]:
    con, ident = _connect_published(root)
    try:
        yield Reader(con, ident)
    finally:
        con.close()


class SnapshotCache:
    """Answers computed from one published file, kept while it is the published one: a file is
    never changed once published (a publication renames a new file into place), so an answer
    keyed by the file's identity is never stale. Least recently used answers go first."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._lock = threading.Lock()
        self._data: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple, compute):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = compute()
        if _rows_in(value) > MAX_CACHED_ROWS:
            return value  # big API pages are read again rather than held
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value


MAX_CACHED_ROWS = 200


def _rows_in(value: Any) -> int:
    if isinstance(value, Page):
        return len(value.rows)
    if isinstance(value, (list, tuple)):
        return sum(_rows_in(v) if isinstance(v, (Page, list, tuple)) else 1 for v in value)
    return 1


CACHE = SnapshotCache(size=2048)


def snapshot(method):
    """Cache a Reader method's answer per published file and arguments."""

    @functools.wraps(method)
    def cached(self: Reader, *args):
        if self.ident is None:
            return method(self, *args)
        return CACHE.get((self.ident, method.__name__, *args), lambda: method(self, *args))

    return cached


@dataclass
class Page:
    """One window of rows (LIMIT/OFFSET in SQL) and the count of all."""

    rows: list[dict[str, Any]]
    total: int
    offset: int
    size: int

    @property
    def page(self) -> int:
        return self.offset // self.size + 1

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


class Reader:
    def __init__(self, con, ident: tuple | None = None):
        self.con = con
        self.ident = ident  # the published file's identity (None: nothing published)

    def rows(self, query: str, params: dict | None = None) -> list[dict[str, Any]]:
        cur = self.con.execute(query, params or {})
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def one(self, query: str, params: dict | None = None) -> dict[str, Any] | None:
        found = self.rows(query, params)
        return found[0] if found else None

    # --- partners and months --------------------------------------------------------------

    @snapshot
    def partners(self) -> list[dict[str, Any]]:
        """Every partner with a bill or an estimate (finance's picker)."""
        return self.rows(sql("web/partners"))

    @snapshot
    def partner(self, partner_id: str) -> dict[str, Any] | None:
        return self.one(sql("web/partner"), {"partner_id": partner_id})

    @snapshot
    def months(self, partner_id: str) -> list[dict[str, Any]]:
        """Closed months (current version) and open months (latest estimate), newest first."""
        return self.rows(sql("web/months"), {"partner_id": partner_id})

    # --- the month ---------------------------------------------------------------------------

    @snapshot
    def bill_versions(self, partner_id: str, month: str) -> list[dict[str, Any]]:
        return self.rows(sql("web/bill_versions"), {"partner_id": partner_id, "month": month})

    @snapshot
    def variance(self, partner_id: str, month: str, version: int) -> list[dict[str, Any]]:
        """recon hook: the estimate against the bill version, term by term (none before the
        estimate_variance table was published)."""
        import duckdb

        params = {"partner_id": partner_id, "month": month, "version": version}
        try:
            return self.rows(sql("web/variance"), params)
        except duckdb.CatalogException:
            return []

    @snapshot
    def estimate(self, partner_id: str, month: str) -> dict[str, Any] | None:
        return self.one(sql("web/estimate"), {"partner_id": partner_id, "month": month})

    @snapshot
    def estimate_history(self, partner_id: str, month: str) -> list[dict[str, Any]]:
        return self.rows(sql("web/estimate_history"), {"partner_id": partner_id, "month": month})

    @snapshot
    def last_months(self, partner_id: str, n: int = 12) -> list[dict[str, Any]]:
        """Expenditure of the last ``n`` months: closed bills, else the latest estimate."""
        return self.rows(sql("web/last_months"), {"partner_id": partner_id, "months_shown": n})

    # --- By Product ----------------------------------------------------------------------------

    @snapshot
    def regions(self, partner_id: str, month: str) -> list[str]:
        params = {"partner_id": partner_id, "month": month}
        return [r["region"] for r in self.rows(sql("web/regions"), params)]

    @snapshot
    def by_product(
        self, partner_id: str, month: str, region: str | None
    ) -> tuple[list[dict], dict | None]:
        """(products of the region or of every region, the Others row)."""
        params = {"partner_id": partner_id, "month": month}
        products = self.rows(sql("web/by_product"), {**params, "region": region})
        others = self.one(sql("web/by_product_others"), params)
        return products, others

    # --- By Customer ---------------------------------------------------------------------------

    @snapshot
    def by_customer(
        self, partner_id: str, month: str, show_zero: bool, offset: int, size: int
    ) -> tuple[Page, dict[str, Any]]:
        # one pass over the customers: the Total Amount area, the count shown and one page
        rows = self.rows(
            sql("web/by_customer"),
            {
                "partner_id": partner_id,
                "month": month,
                "show_zero": show_zero,
                "row_limit": size,
                "row_offset": offset,
            },
        )
        head = rows[0]
        summary = {
            "customers": head["customers"],
            "zero": head["zero"],
            "total_amount": head["sum_total"] if head["bill_total"] is None else head["bill_total"],
            "consume_amount": (
                head["sum_consume"] if head["bill_consume"] is None else head["bill_consume"]
            ),
            "currency": head["sum_currency"],
        }
        total = head["shown"]
        rows = [r for r in rows if r["pos"] is not None]
        return Page(rows, total, offset, size), summary

    @snapshot
    def customer(self, partner_id: str, month: str, customer_id: str) -> dict[str, Any] | None:
        return self.one(
            sql("web/customer"),
            {"partner_id": partner_id, "month": month, "customer_id": customer_id},
        )

    @snapshot
    def customer_lines(
        self,
        partner_id: str,
        month: str,
        customer_id: str,
        sort: str,
        descending: bool,
        offset: int,
        size: int,
    ) -> Page:
        """One page of the customer's lines of the current bill (LIMIT/OFFSET in SQL)."""
        params = {"partner_id": partner_id, "month": month, "customer_id": customer_id}
        total = self.con.execute(sql("web/customer_lines_count"), params).fetchone()[0]
        rows = self.rows(
            sql("web/customer_lines"),
            {
                **params,
                "sort_by": LINE_SORTS[sort],
                "sort_desc": descending,
                "row_limit": size,
                "row_offset": offset,
            },
        )
        return Page(rows, total, offset, size)

    # --- invoices and exports --------------------------------------------------------------------

    @snapshot
    def invoice_bill(self, partner_id: str, invoice_no: str) -> dict[str, Any] | None:
        return self.one(
            sql("web/invoice_bill"), {"partner_id": partner_id, "invoice_no": invoice_no}
        )

    @snapshot
    def export_history(
        self, partner_id: str, offset: int, size: int, month: str | None = None
    ) -> Page:
        params = {"partner_id": partner_id, "month": month}
        total = self.con.execute(sql("web/export_history_count"), params).fetchone()[0]
        rows = self.rows(
            sql("web/export_history"), {**params, "row_limit": size, "row_offset": offset}
        )
        return Page(rows, total, offset, size)

    @snapshot
    def export(self, partner_id: str, export_id: str) -> dict[str, Any] | None:
        return self.one(sql("web/export"), {"partner_id": partner_id, "export_id": export_id})

    @snapshot
    def summary_export(self, partner_id: str, month: str, version: int) -> list[dict[str, Any]]:
        """The invoice PDFs exported for this bill version, newest first."""
        return self.rows(
            sql("web/summary_export"),
            {"partner_id": partner_id, "month": month, "version": version},
        )


def export_file(root: Path, row: dict[str, Any]) -> Path | None:
    """The file of an export_history row, if it is still there and inside exports/."""
    base = (Path(root) / "exports").resolve()
    try:
        path = (Path(root) / str(row["path"])).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base):
        return None
    from pipelines import objectstore

    path = objectstore.local_copy(path)  # object storage: fetched into the mirror once
    if not path.is_file():
        return None
    if row.get("bytes") is not None and path.stat().st_size != int(row["bytes"]):
        return None  # replaced since it was recorded
    return path


def money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def beijing(ts: dt.datetime | None) -> dt.datetime | None:
    if ts is None:
        return None
    from pipelines.calendar import BEIJING

    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return ts.astimezone(BEIJING)
