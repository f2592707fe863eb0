"""Feeds, columns and paths: the fixed vocabulary of the landing zone and the lake."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import DataDirError
from pipelines.patterns import PARTNER_ID_RE  # re-exported: accounts.py imports it from here

# Money and quantities: exact decimals with 6 places, stored as decimal128.
MONEY = "DECIMAL(38,6)"
MONEY_LIMIT = 10**15  # |amount| bound that keeps every sum and product inside DECIMAL(38, .)
QTY_LIMIT = 10**12

ORDER_TYPES = ("NEW", "RENEW", "AUTO_RENEW", "CHANGE", "UNSUBSCRIBE")
# Huawei BSS numeric bill_type codes accepted as aliases of order_type.
ORDER_TYPE_ALIASES = {
    "1": "NEW",
    "2": "RENEW",
    "3": "CHANGE",
    "4": "UNSUBSCRIBE",
    "8": "AUTO_RENEW",
    "20": "CHANGE",
    "24": "UNSUBSCRIBE",
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # id | text | partner | money | qty | rate | ts | month | currency | order_type
    required: bool


def _cols(spec: str) -> tuple[Column, ...]:
    out = []
    for item in spec.split(","):
        name, kind = item.strip().split(":")
        required = name.endswith("*")
        out.append(Column(name.rstrip("*"), kind, required))
    return tuple(out)


FEEDS: dict[str, tuple[Column, ...]] = {
    "partners": _cols(
        "partner_id*:partner, partner_name*:text, currency*:currency, tax_rate*:rate,"
        " discount_rate*:rate, legal_name:text, address:text, tax_id:text, billing_email:text"
    ),
    "prices": _cols(
        "sku_code*:id, unit*:id, unit_price*:money, currency*:currency, effective_from*:ts,"
        " effective_to:ts"
    ),
    "orders": _cols(
        "record_id*:id, order_id*:id, partner_id*:partner, customer_id*:id, customer_name:text,"
        " product_id*:id, product_name:text, sku_code:text, region*:id, order_type*:order_type,"
        " official_amount*:money, discount_amount*:money, amount*:money, currency*:currency,"
        " event_time*:ts"
    ),
    "usage": _cols(
        "record_id*:id, partner_id*:partner, customer_id*:id, customer_name:text, product_id*:id,"
        " product_name:text, sku_code*:id, region*:id, resource_id*:id, usage_start*:ts,"
        " usage_end*:ts, quantity*:qty, unit*:id"
    ),
    "adjustments": _cols(
        "record_id*:id, partner_id*:partner, customer_id:text, product_id:text, amount*:money,"
        " currency*:currency, bill_month*:month, reason*:text"
    ),
    "coupons": _cols(
        "record_id*:id, coupon_id*:id, partner_id*:partner, amount*:money, currency*:currency,"
        " bill_month*:month"
    ),
    "payments": _cols(
        "record_id*:id, partner_id*:partner, amount*:money, currency*:currency, paid_at*:ts,"
        " method:text, reference:text"
    ),
}

# Ingest order: reference data first, so that a day's prices and partners apply to its rows.
FEED_ORDER = ("partners", "prices", "orders", "usage", "adjustments", "coupons", "payments")
RECORD_FEEDS = ("orders", "usage", "adjustments", "coupons", "payments")
FILE_SUFFIXES = (".csv", ".jsonl", ".parquet")


def required_columns(feed: str) -> list[str]:
    return [c.name for c in FEEDS[feed] if c.required]


def data_dir_source(data_dir: str | os.PathLike | None = None) -> str:
    """Where :func:`resolve_data_dir` takes the data dir from, in words."""
    if data_dir:
        return "argument"
    if _env_data_dir() is not None:
        return "$KOOBILL_DATA_DIR"
    return "default ./data"


def _env_data_dir() -> str | None:
    from pipelines.env import settings

    return settings().data_dir


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``$KOOBILL_DATA_DIR``, else ``./data``; not checked (see
    :func:`require_data_dir`).

    A data dir on object storage (``s3://bucket/prefix``) resolves to its local mirror
    (:func:`pipelines.objectstore.mount`): every command works on the mirror's paths, and the
    lake's tables, the landing files and the outputs are read from and written to the bucket
    through it."""
    raw = data_dir or _env_data_dir() or "data"
    from pipelines import objectstore

    if objectstore.is_remote(raw):
        return objectstore.mount(str(raw))
    return Path(raw).expanduser().resolve()


LANDING_MARKER = "a koobill data dir: landing files go under landing/<feed>/<YYYY-MM-DD>/\n"


def _require_remote(root: Path, source: str) -> Path:
    """A mounted data dir on object storage is one when its ``landing/`` prefix holds
    anything (``init`` writes ``landing/.koobill``)."""
    from pipelines import objectstore

    uri = objectstore.remote_of(root)
    if not objectstore.list_dirs(root / "landing") and not objectstore.list_keys(root / "landing"):
        raise DataDirError(
            f"{uri} is not a koobill data dir: it has no landing/ folder (from {source}); create "
            f"one with `koobill init {uri}`, or point --data-dir / $KOOBILL_DATA_DIR at an "
            "existing one"
        )
    for feed in FEEDS:
        (root / "landing" / feed).mkdir(parents=True, exist_ok=True)
    return root


def require_data_dir(
    data_dir: str | os.PathLike | None = None, *, source: str | None = None
) -> Path:
    """The resolved data dir, refused unless it exists and looks like one (has ``landing/``).

    Every command but ``init`` and ``generate`` (which create one) goes through this before
    it writes or locks anything, so a mistyped path never grows a lake, a warehouse or a lock
    file (spec section 2)."""
    root = resolve_data_dir(data_dir)
    source = source or data_dir_source(data_dir)
    from pipelines import objectstore

    if objectstore.remote_of(root) is not None:
        return _require_remote(root, source)
    how = (
        f"create one with `koobill init {root}` (or `koobill generate` for sample data), "
        "or point --data-dir / $KOOBILL_DATA_DIR at an existing one"
    )
    if root.is_dir() and any(root.iterdir()):  # init refuses a folder that holds other files
        how = (
            "create one in a new or empty folder with `koobill init DIR` (or `koobill generate` "
            "for sample data), or point --data-dir / $KOOBILL_DATA_DIR at an existing one"
        )
    if not root.exists():
        raise DataDirError(f"data dir {root} does not exist (from {source}): {how}")
    if not root.is_dir():
        raise DataDirError(f"data dir {root} is not a folder (from {source})")
    if not (root / "landing").is_dir():
        raise DataDirError(
            f"{root} is not a koobill data dir: it has no landing/ folder (from {source}); {how}"
        )
    return root


def init_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Create a data dir: ``landing/<feed>/`` for every feed. Idempotent.

    Refuses a folder that exists, holds something, and is not a data dir already: turning a
    folder of other files into a data dir is never what a typo wanted."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataDirError(f"cannot create a data dir at {root}: it exists and is not a folder")
    landing = root / "landing"
    from pipelines import objectstore

    if objectstore.remote_of(root) is not None:
        uri = objectstore.remote_of(root)
        if not objectstore.list_keys(landing) and objectstore.list_keys(root):
            raise DataDirError(
                f"{uri} holds objects and is not a koobill data dir (nothing under landing/); "
                "refusing to turn it into one: pick a new or empty prefix"
            )
        # object storage has no folders: the data dir exists once landing/ holds an object
        objectstore.put_if_absent(landing / ".koobill", LANDING_MARKER.encode())
        for feed in FEEDS:
            (landing / feed).mkdir(parents=True, exist_ok=True)
        return root
    if root.is_dir() and not landing.is_dir() and any(root.iterdir()):
        raise DataDirError(
            f"{root} is not empty and is not a koobill data dir (no landing/ folder); "
            "refusing to turn it into one: pick a new or empty folder"
        )
    try:
        for feed in FEEDS:
            (landing / feed).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data dir {root}: {exc.strerror or exc}") from None
    return root


def check_partner_id(partner_id: str) -> str:
    """Refuse a partner id that could not safely name a folder."""
    if not isinstance(partner_id, str) or not PARTNER_ID_RE.fullmatch(partner_id):
        raise ValueError(
            f"invalid partner id {partner_id!r}: expected 1-64 characters of A-Z a-z 0-9 _ -"
        )
    return partner_id


@dataclass(frozen=True)
class Paths:
    """Where everything lives under one data dir."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def landing_dir(self, feed: str, day: str) -> Path:
        return self.landing / feed / day

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def ingest(self) -> Path:
        """One committed folder per landing date: ``lake/ingest/landing_date=YYYY-MM-DD``."""
        return self.lake / "ingest"

    def ingest_dir(self, day: str) -> Path:
        return self.ingest / f"landing_date={day}"

    @property
    def bills(self) -> Path:
        """One committed folder per bill month: ``lake/bills/bill_month=YYYY-MM``."""
        return self.lake / "bills"

    def bills_dir(self, month: str) -> Path:
        return self.bills / f"bill_month={month}"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def quality(self) -> Path:
        return self.root / "quality"

    @property
    def lock(self) -> Path:
        return self.root / ".koobill.lock"
