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

    from pipelines.db import quote_path

    path = Path(root) / "warehouse.duckdb"
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
            con.execute(f"attach {quote_path(path)} as published (read_only)")
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


def _blank(col: str) -> str:
    """SQL that is true when ``col`` is absent: NULL or '' (both conventions are published)."""
    return f"nullif({col}, '') is null"


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

    def rows(self, query: str, params: list | None = None) -> list[dict[str, Any]]:
        cur = self.con.execute(query, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def one(self, query: str, params: list | None = None) -> dict[str, Any] | None:
        found = self.rows(query, params)
        return found[0] if found else None

    # --- partners and months --------------------------------------------------------------

    @snapshot
    def partners(self) -> list[dict[str, Any]]:
        """Every partner with a bill or an estimate (finance's picker)."""
        return self.rows(
            "select partner_id, max(partner_name) as partner_name from ("
            " select partner_id, partner_name from bills"
            " union all select partner_id, partner_name from estimates"
            ") group by partner_id order by partner_id"
        )

    @snapshot
    def partner(self, partner_id: str) -> dict[str, Any] | None:
        return self.one(
            "select partner_id, max(partner_name) as partner_name, max(currency) as currency "
            "from (select partner_id, partner_name, currency from bills where partner_id = $p"
            " union all select partner_id, partner_name, currency from estimates"
            " where partner_id = $p) group by partner_id",
            {"p": partner_id},
        )

    @snapshot
    def months(self, partner_id: str) -> list[dict[str, Any]]:
        """Closed months (current version) and open months (latest estimate), newest first."""
        return self.rows(
            "with closed as ("
            " select bill_month, 'closed' as kind, max(version) as version, null::date as as_of"
            " from bills where partner_id = $p and status = 'closed' group by bill_month),"
            " open as ("
            " select bill_month, 'open' as kind, null::integer as version, max(as_of_date) as as_of"
            " from estimates where partner_id = $p"
            " and bill_month not in (select bill_month from closed) group by bill_month)"
            " select * from closed union all select * from open order by bill_month desc",
            {"p": partner_id},
        )

    # --- the month ---------------------------------------------------------------------------

    @snapshot
    def bill_versions(self, partner_id: str, month: str) -> list[dict[str, Any]]:
        return self.rows(
            "select * from bills where partner_id = ? and bill_month = ? order by version desc",
            [partner_id, month],
        )

    @snapshot
    def variance(self, partner_id: str, month: str, version: int) -> list[dict[str, Any]]:
        """recon hook: the estimate against the bill version, term by term (none before the
        estimate_variance table was published)."""
        import duckdb

        try:
            return self.rows(
                "select * from estimate_variance where partner_id = ? and bill_month = ? "
                "and version = ? order by term_no",
                [partner_id, month, version],
            )
        except duckdb.CatalogException:
            return []

    @snapshot
    def estimate(self, partner_id: str, month: str) -> dict[str, Any] | None:
        return self.one(
            "select * from estimates where partner_id = ? and bill_month = ? "
            "order by as_of_date desc limit 1",
            [partner_id, month],
        )

    @snapshot
    def estimate_history(self, partner_id: str, month: str) -> list[dict[str, Any]]:
        return self.rows(
            "select as_of_date, estimate_amount, currency from estimates "
            "where partner_id = ? and bill_month = ? order by as_of_date",
            [partner_id, month],
        )

    @snapshot
    def last_months(self, partner_id: str, n: int = 12) -> list[dict[str, Any]]:
        """Expenditure of the last ``n`` months: closed bills, else the latest estimate."""
        return self.rows(
            "with closed as (select bill_month, consume_amount, bill_amount, 'closed' as kind"
            " from bills where partner_id = $p and status = 'closed'),"
            " est as (select bill_month, consume_amount, estimate_amount as bill_amount,"
            " 'open' as kind from estimates where partner_id = $p"
            " and bill_month not in (select bill_month from closed)"
            " qualify row_number() over (partition by bill_month order by as_of_date desc) = 1)"
            " select * from (select * from closed union all select * from est"
            " order by bill_month desc limit $n) order by bill_month",
            {"p": partner_id, "n": n},
        )

    # --- By Product ----------------------------------------------------------------------------

    @snapshot
    def regions(self, partner_id: str, month: str) -> list[str]:
        return [
            r["region"]
            for r in self.rows(
                "select distinct region from expenditure_by_product where partner_id = ? "
                f"and bill_month = ? and product_id <> 'OTHERS' and not {_blank('region')} "
                "order by region",
                [partner_id, month],
            )
        ]

    @snapshot
    def by_product(
        self, partner_id: str, month: str, region: str | None
    ) -> tuple[list[dict], dict | None]:
        """(products of the region or of every region, the Others row)."""
        products = self.rows(
            "select product_id, any_value(product_name) as product_name,"
            " string_agg(distinct region, ', ' order by region) as regions,"
            " any_value(currency) as currency, sum(consume_amount) as consume_amount"
            " from expenditure_by_product"
            " where partner_id = ? and bill_month = ? and product_id <> 'OTHERS'"
            " and (? is null or region = ?)"
            " group by product_id order by consume_amount desc, product_id",
            [partner_id, month, region, region],
        )
        others = self.one(
            "select refunds, adjustments, currency from expenditure_by_product "
            "where partner_id = ? and bill_month = ? and product_id = 'OTHERS'",
            [partner_id, month],
        )
        return products, others

    # --- By Customer ---------------------------------------------------------------------------

    @snapshot
    def by_customer(
        self, partner_id: str, month: str, show_zero: bool, offset: int, size: int
    ) -> tuple[Page, dict[str, Any]]:
        # one pass over the customers: the Total Amount area, the count shown and one page
        rows = self.rows(
            "with c as (select *, row_number() over (order by total_amount desc,"
            f" customer_id nulls last) as pos, {_blank('customer_id')} as partner_level"
            " from expenditure_by_customer where partner_id = $p and bill_month = $m),"
            " s as (select count(*) as customers,"
            " count(*) filter (where total_amount = 0) as zero,"
            " coalesce(sum(total_amount), 0) as sum_total,"
            " coalesce(sum(consume_amount), 0) as sum_consume,"
            " any_value(currency) as sum_currency,"
            " count(*) filter (where $z or total_amount <> 0) as shown from c),"
            # the Total Amount area shows the bill's own figures: the customers' rows are each
            # rounded to the cent and may sum to a few cents more or less
            " b as (select consume_amount as bill_consume,"
            " consume_amount - refunds + adjustments as bill_total from bills"
            " where partner_id = $p and bill_month = $m and status = 'closed'),"
            " page as (select * from c where $z or total_amount <> 0"
            " order by pos limit $limit offset $offset)"
            " select s.*, b.*, page.* from s left join b on true left join page on true"
            " order by page.pos",
            {"p": partner_id, "m": month, "z": show_zero, "limit": size, "offset": offset},
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
            "select * from expenditure_by_customer "
            "where partner_id = ? and bill_month = ? and customer_id = ?",
            [partner_id, month, customer_id],
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
        order = f"{LINE_SORTS[sort]} {'desc' if descending else 'asc'} nulls last, line_no"
        base = (
            "from bill_lines as l where l.partner_id = $p and l.bill_month = $m"
            " and l.customer_id = $c and l.version = (select max(version) from bills"
            " where partner_id = $p and bill_month = $m and status = 'closed')"
        )
        params = {"p": partner_id, "m": month, "c": customer_id}
        total = self.con.execute(f"select count(*) {base}", params).fetchone()[0]
        rows = self.rows(
            f"select * {base} order by {order} limit $limit offset $offset",
            {**params, "limit": size, "offset": offset},
        )
        return Page(rows, total, offset, size)

    # --- invoices and exports --------------------------------------------------------------------

    @snapshot
    def invoice_bill(self, partner_id: str, invoice_no: str) -> dict[str, Any] | None:
        return self.one(
            "select * from bills where partner_id = ? and invoice_no = ?",
            [partner_id, invoice_no],
        )

    @snapshot
    def export_history(
        self, partner_id: str, offset: int, size: int, month: str | None = None
    ) -> Page:
        where = "partner_id = ? and (? is null or bill_month = ?)"
        params = [partner_id, month, month]
        total = self.con.execute(
            f"select count(*) from export_history where {where}", params
        ).fetchone()[0]
        rows = self.rows(
            f"select * from export_history where {where} "
            "order by created_at desc, format limit ? offset ?",
            [*params, size, offset],
        )
        return Page(rows, total, offset, size)

    @snapshot
    def export(self, partner_id: str, export_id: str) -> dict[str, Any] | None:
        return self.one(
            "select * from export_history where partner_id = ? and export_id = ?",
            [partner_id, export_id],
        )

    @snapshot
    def summary_export(self, partner_id: str, month: str, version: int) -> list[dict[str, Any]]:
        """The invoice PDFs exported for this bill version, newest first."""
        return self.rows(
            "select * from export_history where partner_id = ? and bill_month = ? "
            "and version = ? and format = 'pdf' order by created_at desc",
            [partner_id, month, version],
        )


def export_file(root: Path, row: dict[str, Any]) -> Path | None:
    """The file of an export_history row, if it is still there and inside exports/."""
    base = (Path(root) / "exports").resolve()
    try:
        path = (Path(root) / str(row["path"])).resolve()
    except (OSError, RuntimeError):
        return None
    if not path.is_relative_to(base) or not path.is_file():
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
