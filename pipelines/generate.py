"""``koobill generate``: a seeded, realistic KooGallery landing zone.

Writes ``landing/<feed>/<YYYY-MM-DD>/<file>`` for every landing date of a span. The same
arguments always give byte-identical files; every random choice comes from a generator seeded
with (seed, date, feed).

What lands, per feed (spec section 2):

- ``partners``: the full snapshot on the first date, re-landed on the 1st of each later month;
  for spans of 3+ days one extra snapshot lands mid-span (the middle date) in which one
  partner's ``discount_rate`` changed, so usage can be rated across a discount change.
- ``prices``: the whole effective-dated price list on the first date, one row per sku_code /
  unit / currency used by the partners; open-ended rows from the 1st of the month before the
  first date, and a change of two SKUs' prices on the 15th (00:00 Beijing) of each month of
  the span after the first date (else another mid-month date of the span, see
  ``_price_change_days``): the old row closed by ``effective_to``, a new open-ended row
  from that date, both landed on the first date, before the change takes effect.
- ``orders``: ~9-14 per partner a day; the subscription lifecycle NEW, RENEW, AUTO_RENEW,
  CHANGE (up +, down -), UNSUBSCRIBE (-), ~12% written as Huawei numeric bill_type codes.
  ``amount = official_amount - discount_amount`` exactly. ``event_time`` on the landing date
  (85%) or the day before, mostly ``+08:00``, some ``Z``, some with milliseconds.
- ``usage``: exactly ``usage_rows_per_day`` regular hourly metering rows a day, record ids
  ``u-YYYYMMDD-<9-digit seq>`` with seq 0..N-1, covering the last 8 hours of the previous
  Beijing day and the 24 hours of the landing date; vectorized with numpy and written with
  pyarrow in chunks of 500,000 rows, in part files of at most 1,000,000 rows.
- ``adjustments`` on the 3rd (bill_month: previous month, on time) and the 18th; ``coupons``
  on the 10th; ``payments`` on the 8th and the 22nd. A feed without rows on a date gets no
  folder for it (partners and prices too: an empty snapshot must never land).

File formats: mostly CSV (UTF-8, header; orders and small feeds with CRLF, adjustments with a
BOM), some dates as ``.jsonl`` (amounts as JSON strings with 6 decimals) or ``.parquet``
(strings; amounts as decimal128(38, 6)); orders and usage are split into several files on
some dates. Usage is always CSV above 200,000 rows a day.

With ``bad_rows=True`` (the default) a small share is injected on top of the regular rows,
always appended to the last file of a feed-date (usage seq >= N, orders seq >= regular count):

- late: on landing dates 5-7 of a month whose previous month is in the span, usage
  (max(1, N/1000)) and one order dated the last day of the previous month, and on the 5th
  one adjustment with bill_month = previous month. Valid rows, billed late.
- exact duplicates: a row repeated within the same file, rows of the previous landing date
  re-sent, a coupon of the 10th re-sent on the 11th. Dropped by the ingest, not quarantined.
- conflicting duplicates: a record id of the previous landing date with a different
  quantity / amount (quarantined).
- bad rows (quarantined): usage N/500 a day (negative quantity, timestamp without offset,
  unknown partner); orders one every other day when a day has 34+ orders (amount !=
  official - discount, timestamp without offset, unknown partner, currency not the
  partner's, conflicting duplicate). Quarantined share stays well under 1% of usage and
  under 3% of orders per feed-date; small feeds (adjustments, coupons, payments, partners,
  prices) never get quarantinable rows. Usage days of fewer than 100 rows get no extras.

With ``bad_rows=False`` none of the above: every row follows the row rules.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.calendar import (
    BEIJING,
    add_months,
    date_range,
    first_day,
    last_day,
    month_of,
    parse_date,
)
from pipelines.config import FEEDS, Paths, init_data_dir
from pipelines.errors import KoobillError
from pipelines.files import atomic_path, write_bytes

MICRO = 10**6
CHUNK_ROWS = 500_000  # usage rows generated and written at a time
PART_ROWS = 1_000_000  # usage rows per part file at most
SMALL_USAGE = 200_000  # above this, usage is always CSV
CUSTOMERS_PER_PARTNER = 12
RESOURCES_PER_SKU = 3
UNKNOWN_PARTNER = "ptn-ghost"
UTC = dt.UTC

# partner_id, partner_name, currency, tax_rate, discount_rate
PARTNER_POOL = (
    ("ptn-yunqi", "北京云启科技有限公司", "CNY", "0.06", "0.10"),
    ("ptn-brightsoft", "BrightSoft Pte. Ltd.", "USD", "0", "0.15"),
    ("ptn-haina", "上海海纳数据服务有限公司", "CNY", "0.13", "0.05"),
    ("ptn-nimbus", "Nimbus Analytics, Inc.", "USD", "0", "0.20"),
    ("ptn-xinghe", "深圳星河云计算有限公司", "CNY", "0.06", "0"),
    ("ptn-andes", "Andes Digital S.A.", "USD", "0", "0.25"),
    ("ptn-tianyi", "杭州天翼智能科技有限公司", "CNY", "0.13", "0.08"),
    ("ptn-atlas", 'Atlas "Cloud" GmbH', "USD", "0", "0.12"),
)
# optional recipient columns of the partners feed (legal_name, address, tax_id, billing_email),
# printed on the invoice; ptn-atlas lands none of them (its invoice shows the partner name only)
PARTNER_RECIPIENTS = {
    "ptn-yunqi": (
        "北京云启科技有限公司",
        "北京市海淀区中关村大街 27 号 8 层 801 室, 100080",
        "91110108MA01DEMO1X",
        "finance@yunqi.example.cn",
    ),
    "ptn-brightsoft": (
        "BrightSoft Pte. Ltd.",
        "1 Marina Boulevard #20-01\nSingapore 018989",
        "SG-201912345D",
        "ap@brightsoft.example.com",
    ),
    "ptn-haina": (
        "上海海纳数据服务有限公司",
        "上海市浦东新区张江路 500 号 2 幢 301 室, 201203",
        "91310115MA1HDEMO2Y",
        "caiwu@haina.example.cn",
    ),
    "ptn-nimbus": (
        "Nimbus Analytics, Inc.",
        "500 Howard Street, Suite 400\nSan Francisco, CA 94105, USA",
        "EIN 94-0000000",
        "billing@nimbus.example.com",
    ),
    "ptn-xinghe": (
        "深圳星河云计算有限公司",
        "广东省深圳市南山区科技园南区 6 栋, 518057",
        None,
        None,
    ),
    "ptn-andes": ("Andes Digital S.A.", None, "RUT 76.000.000-0", "facturas@andes.example.cl"),
    "ptn-tianyi": (
        "杭州天翼智能科技有限公司",
        "浙江省杭州市西湖区文三路 90 号, 310012",
        "91330106MA2BDEMO3Z",
        "finance@tianyi.example.cn",
    ),
}
CN_CUSTOMERS = (
    "北京智源数科有限公司",
    "上海浦江物流股份有限公司",
    "广州南沙智造科技有限公司",
    "成都天府软件服务有限公司",
    "杭州西溪电子商务有限公司",
    "武汉光谷生物医药有限公司",
    "南京紫金金融信息服务有限公司",
    "深圳前海跨境电商有限公司",
    "苏州工业园区数据中心",
    "西安古城文旅集团有限公司",
    "重庆两江汽车零部件有限公司",
    "天津港智慧物流有限公司",
)
LATIN_CUSTOMERS = (
    "Orchid Retail Sdn. Bhd.",
    "Kestrel Logistics Pte. Ltd.",
    "Sol y Mar Turismo S.A.",
    "Baobab Fintech (Pty) Ltd",
    "Lumen Health, Inc.",
    "Mercado Verde SpA",
    "Nordlicht Engineering GmbH",
    "Pacifica Games Ltd.",
    "Saffron Foods LLC",
    "Tiger Bay Media Ltd",
    "Andromeda Labs, Inc.",
    "O'Neill & Sons Trading",
)
CN_REGIONS = ("cn-north-4", "cn-east-3", "cn-south-1", "cn-southwest-2")
INTL_REGIONS = ("ap-southeast-1", "ap-southeast-3", "la-south-2", "af-south-1")

# Pay-per-use products: product_id, product_name
USAGE_PRODUCTS = (
    ("KG-OCR-PRO", "智能文字识别 OCR Pro"),
    ("KG-WAF-IMG", "云盾 WAF 防火墙镜像"),
    ("KG-DBBACKUP", "DBBackup Pro 数据库备份"),
    ("KG-LLM-API", "行业大模型 API 服务"),
    ("KG-CDN-EDGE", "GlobalEdge CDN Accelerator"),
    ("KG-KUBEOPS", "KubeOps 容器集群管理"),
)
# sku_code, product index, unit, CNY unit price (micro), quantity low/high (micro), whole share
USAGE_SKUS = (
    ("ocr.general.1kcalls", 0, "1k-calls", 3_500_000, 1_000, 120 * MICRO, 0.0),
    ("ocr.invoice.1kcalls", 0, "1k-calls", 8_000_000, 1_000, 40 * MICRO, 0.0),
    ("waf.c6.large.hour", 1, "hour", 850_000, 1, MICRO, 0.9),
    ("waf.c6.xlarge.hour", 1, "hour", 1_700_000, 1, MICRO, 0.9),
    ("dbbackup.storage.gbh", 2, "GB-hour", 280, 10 * MICRO, 5_000 * MICRO, 0.0),
    ("llm.input.1ktokens", 3, "1k-tokens", 4_000, 1_000, 8_000 * MICRO, 0.0),
    ("llm.output.1ktokens", 3, "1k-tokens", 12_000, 1_000, 3_000 * MICRO, 0.0),
    ("cdn.traffic.gb", 4, "GB", 210_000, 1, 80 * MICRO, 0.0),
    ("kubeops.node.hour", 5, "node-hour", 600_000, MICRO, 40 * MICRO, 1.0),
)
SKUS_PER_PARTNER = 5
# Subscription products (orders): product_id, product_name, [(sku_code, CNY monthly cents)]
SUB_PRODUCTS = (
    (
        "KG-ERP-CLOUD",
        "云ERP企业版 CloudERP",
        (("erp.std.month", 128_000), ("erp.pro.month", 368_000)),
    ),
    ("KG-CRM-SAAS", "SalesPilot CRM", (("crm.team.month", 59_900),)),
    ("KG-HOSTGUARD", "主机安全防护 HostGuard", (("hostguard.ent.month", 45_000),)),
    ("KG-OFFICELINK", "协同办公 OfficeLink", (("officelink.50u.month", 98_000),)),
)
PERIODS = ((1, 1), (3, 3), (12, 10))  # (months, price multiplier of the monthly price)
ORDER_WEIGHTS = (
    ("NEW", 25),
    ("RENEW", 15),
    ("AUTO_RENEW", 30),
    ("CHANGE", 18),
    ("UNSUBSCRIBE", 12),
)
CREDIT_REASONS = (
    "SLA compensation: cn-north-4 service interruption 2h",
    "服务中断补偿（SLA 赔付）",
    "Billing correction: duplicate metering 2 hours",
    "Goodwill credit approved by account manager",
)
CHARGE_REASONS = (
    "On-site deployment service",
    "人工实施服务费",
    "Data migration professional service",
)
PAY_METHODS = ("bank_transfer", "alipay", "wechat_pay", "swift")

# File format of a feed on a date, by date ordinal (mostly CSV).
_FORMATS = {
    "orders": ("csv", "csv", "jsonl", "csv", "parquet"),
    "adjustments": ("csv", "jsonl", "parquet"),
    "coupons": ("csv", "jsonl", "csv", "parquet"),
    "payments": ("csv", "parquet", "jsonl"),
}


# ---------------------------------------------------------------------------- helpers


def fmt_money(micro: int, *, full: bool = True) -> str:
    """Exact decimal text of an amount in micro-units: 6 places, or trimmed to >= 2."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(int(micro)), MICRO)
    text = f"{frac:06d}"
    if not full:
        text = text.rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{text}"


def _ts(day: dt.date, seconds: int, style: str = "bj", millis: int | None = None) -> str:
    """ISO 8601 text of ``day`` 00:00 Beijing + ``seconds``: ``bj`` (+08:00), ``z`` or ``naive``."""
    t = dt.datetime.combine(day, dt.time(), tzinfo=BEIJING) + dt.timedelta(seconds=seconds)
    if style == "z":
        t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if millis is not None:
        text += f".{millis:03d}"
    return text + {"bj": "+08:00", "z": "Z", "naive": ""}[style]


def _round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _usd_from_cny(micro: int) -> int:
    return _round_half_up(Decimal(micro) / Decimal("7.2"))


def _money_cols(feed: str) -> set[str]:
    return {c.name for c in FEEDS[feed] if c.kind == "money"}


def _write_rows(path: Path, feed: str, rows: list[dict], *, bom: bool = False) -> None:
    """Write small-feed rows (money as int micro-units) as .csv, .jsonl or .parquet."""
    cols = [c.name for c in FEEDS[feed]]
    money = _money_cols(feed)
    kind = path.suffix
    if kind == ".csv":
        buf = io.StringIO()
        w = csv.writer(buf)  # RFC 4180, CRLF
        w.writerow(cols)
        for r in rows:
            w.writerow(
                [
                    "" if r.get(c) is None else fmt_money(r[c], full=False) if c in money else r[c]
                    for c in cols
                ]
            )
        data = buf.getvalue().encode("utf-8-sig" if bom else "utf-8")
    elif kind == ".jsonl":
        lines = []
        for r in rows:
            obj = {}
            for c in cols:
                v = r.get(c)
                obj[c] = fmt_money(v) if (c in money and v is not None) else v
            lines.append(json.dumps(obj, ensure_ascii=False))
        data = ("\n".join(lines) + "\n").encode("utf-8")
    else:
        arrays = {}
        for c in cols:
            vals = [r.get(c) for r in rows]
            if c in money:
                arrays[c] = pa.array(
                    [None if v is None else Decimal(fmt_money(v)) for v in vals],
                    type=pa.decimal128(38, 6),
                )
            else:
                arrays[c] = pa.array(vals, type=pa.string())
        sink = pa.BufferOutputStream()
        pq.write_table(pa.table(arrays), sink, compression="snappy")
        data = sink.getvalue().to_pybytes()
    write_bytes(path, data)


# ---------------------------------------------------------------------------- the world


@dataclass
class _Partner:
    partner_id: str
    name: str
    currency: str
    tax_rate: str
    discount_rate: str
    regions: tuple[str, ...]
    customers: list[tuple[str, str]]  # (customer_id, customer_name)


@dataclass
class _World:
    seed: int
    partners: list[_Partner]
    currencies: list[str]
    partner_skus: np.ndarray  # (n_partners, SKUS_PER_PARTNER) usage sku indices
    partner_regions: np.ndarray  # (n_partners, 4) region indices into `regions`
    regions: list[str]
    resource_ids: pa.Array  # index: (customer * n_skus + sku) * RESOURCES_PER_SKU + k
    changed_partner: int  # index of the partner whose discount changes mid-span
    changed_discount: str
    a_partner_id: pa.Array = field(init=False)
    a_customer_id: pa.Array = field(init=False)
    a_customer_name: pa.Array = field(init=False)
    a_product_id: pa.Array = field(init=False)
    a_product_name: pa.Array = field(init=False)
    a_sku: pa.Array = field(init=False)
    a_unit: pa.Array = field(init=False)
    a_region: pa.Array = field(init=False)
    sku_product: np.ndarray = field(init=False)
    qty_lo: np.ndarray = field(init=False)
    qty_span: np.ndarray = field(init=False)
    whole_share: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.a_partner_id = pa.array([p.partner_id for p in self.partners], pa.string())
        custs = [c for p in self.partners for c in p.customers]
        self.a_customer_id = pa.array([c[0] for c in custs], pa.string())
        self.a_customer_name = pa.array([c[1] for c in custs], pa.string())
        self.a_product_id = pa.array([p[0] for p in USAGE_PRODUCTS], pa.string())
        self.a_product_name = pa.array([p[1] for p in USAGE_PRODUCTS], pa.string())
        self.a_sku = pa.array([s[0] for s in USAGE_SKUS], pa.string())
        self.a_unit = pa.array([s[2] for s in USAGE_SKUS], pa.string())
        self.a_region = pa.array(self.regions, pa.string())
        self.sku_product = np.array([s[1] for s in USAGE_SKUS], dtype=np.int64)
        self.qty_lo = np.array([s[4] for s in USAGE_SKUS], dtype=np.int64)
        self.qty_span = np.array([s[5] - s[4] for s in USAGE_SKUS], dtype=np.float64)
        self.whole_share = np.array([s[6] for s in USAGE_SKUS], dtype=np.float64)


def _build_world(seed: int, n_partners: int) -> _World:
    rnd = random.Random(f"{seed}:world")
    regions = list(CN_REGIONS + INTL_REGIONS)
    partners: list[_Partner] = []
    for i in range(n_partners):
        pid, name, cur, tax, disc = PARTNER_POOL[i % len(PARTNER_POOL)]
        gen = i // len(PARTNER_POOL)
        if gen:
            pid, name = f"{pid}-{gen + 1}", f"{name} ({gen + 1})"
        cn = cur == "CNY"
        custs = []
        for _ in range(CUSTOMERS_PER_PARTNER):
            chinese = rnd.random() < (0.75 if cn else 0.25)
            cname = rnd.choice(CN_CUSTOMERS if chinese else LATIN_CUSTOMERS)
            custs.append((f"cust-{rnd.getrandbits(48):012x}", cname))
        partners.append(
            _Partner(pid, name, cur, tax, disc, CN_REGIONS if cn else INTL_REGIONS, custs)
        )
    partner_skus = np.array(
        [sorted(rnd.sample(range(len(USAGE_SKUS)), SKUS_PER_PARTNER)) for _ in partners],
        dtype=np.int64,
    )
    partner_regions = np.array(
        [[regions.index(r) for r in p.regions] for p in partners], dtype=np.int64
    )
    n_res = n_partners * CUSTOMERS_PER_PARTNER * len(USAGE_SKUS) * RESOURCES_PER_SKU
    resource_ids = pa.array([f"res-{rnd.getrandbits(40):010x}" for _ in range(n_res)])
    currencies = sorted({p.currency for p in partners})
    changed = 1 % n_partners
    old = Decimal(partners[changed].discount_rate)
    new = old + Decimal("0.05") if old <= Decimal("0.20") else old - Decimal("0.05")
    return _World(
        seed=seed,
        partners=partners,
        currencies=currencies,
        partner_skus=partner_skus,
        partner_regions=partner_regions,
        regions=regions,
        resource_ids=resource_ids,
        changed_partner=changed,
        changed_discount=f"{new:.2f}",
    )


@dataclass
class _Sub:
    partner: int
    customer: int  # index into the partner's customers
    product: int
    sku: int
    region: str
    months: int
    mult: int


@dataclass
class _State:
    subs: list[_Sub]
    prev_orders: list[dict] = field(default_factory=list)
    prev_usage: pa.Table | None = None
    last_coupons: list[dict] = field(default_factory=list)
    rows: Counter = field(default_factory=Counter)
    injected: Counter = field(default_factory=Counter)
    files: int = 0
    usage_regular: int = 0
    snapshots: int = 0


def _new_sub(w: _World, rnd: random.Random, partner: int) -> _Sub:
    product = rnd.randrange(len(SUB_PRODUCTS))
    months, mult = rnd.choices(PERIODS, weights=(6, 2, 2))[0]
    return _Sub(
        partner=partner,
        customer=rnd.randrange(CUSTOMERS_PER_PARTNER),
        product=product,
        sku=rnd.randrange(len(SUB_PRODUCTS[product][2])),
        region=rnd.choice(w.partners[partner].regions),
        months=months,
        mult=mult,
    )


# ---------------------------------------------------------------------------- snapshots


def _partners_rows(w: _World, changed: bool) -> list[dict]:
    rows = []
    for i, p in enumerate(w.partners):
        disc = w.changed_discount if (changed and i == w.changed_partner) else p.discount_rate
        rows.append(
            {
                "partner_id": p.partner_id,
                "partner_name": p.name,
                "currency": p.currency,
                "tax_rate": p.tax_rate,
                "discount_rate": disc,
                **dict(
                    zip(
                        ("legal_name", "address", "tax_id", "billing_email"),
                        PARTNER_RECIPIENTS.get(p.partner_id, ()),
                        strict=False,
                    )
                ),
            }
        )
    return rows


def _price_change_days(d0: dt.date, d1: dt.date) -> list[dt.date]:
    """When list prices change: the 15th of each month with d0 < 15th <= d1; else one
    mid-month day (10th-20th) after d0 in the span; else the span's middle date; else (a
    one-day span) the next 15th. Always after d0, so the change lands before it applies."""
    days = []
    m = month_of(d0)
    while m <= month_of(d1):
        fifteenth = first_day(m).replace(day=15)
        if d0 < fifteenth <= d1:
            days.append(fifteenth)
        m = add_months(m, 1)
    if days:
        return days
    later = date_range(d0 + dt.timedelta(days=1), d1) if d1 > d0 else []
    mid = [d for d in later if 10 <= d.day <= 20]
    if mid:
        return mid[:1]
    if later:
        return [d0 + dt.timedelta(days=(len(later) + 1) // 2)]
    nxt = d0.replace(day=15)
    return [nxt if nxt > d0 else first_day(add_months(month_of(d0), 1)).replace(day=15)]


def _prices_rows(w: _World, d0: dt.date, d1: dt.date) -> list[dict]:
    """Effective-dated list prices for the whole span, in micro-units."""
    start = first_day(add_months(month_of(d0), -1))
    changes: dict[int, list[tuple[dt.date, Decimal]]] = {}
    for when in _price_change_days(d0, d1):
        rnd = random.Random(f"{w.seed}:prices:{when}")
        for sku in rnd.sample(range(len(USAGE_SKUS)), 2):
            factor = rnd.choice(
                (
                    Decimal("0.90"),
                    Decimal("0.95"),
                    Decimal("1.05"),
                    Decimal("1.10"),
                    Decimal("1.20"),
                )
            )
            changes.setdefault(sku, []).append((when, factor))
    rows = []
    for sku, (code, _p, unit, cny, *_rest) in enumerate(USAGE_SKUS):
        for cur in w.currencies:
            price = cny if cur == "CNY" else _usd_from_cny(cny)
            frm = start
            for when, factor in changes.get(sku, []):
                rows.append(_price_row(code, unit, price, cur, frm, when))
                price, frm = _round_half_up(price * factor), when
            rows.append(_price_row(code, unit, price, cur, frm, None))
    return rows


def _price_row(code, unit, price, cur, frm: dt.date, to: dt.date | None) -> dict:
    return {
        "sku_code": code,
        "unit": unit,
        "unit_price": price,
        "currency": cur,
        "effective_from": _ts(frm, 0),
        "effective_to": None if to is None else _ts(to, 0),
    }


# ---------------------------------------------------------------------------- orders


def _order_row(w, rnd, day, seq, sub: _Sub, otype: str, official_cents: int, ev_day, seconds):
    p = w.partners[sub.partner]
    prod_id, prod_name, skus = SUB_PRODUCTS[sub.product]
    rate = Decimal(p.discount_rate)
    discount_cents = _round_half_up(Decimal(official_cents) * rate)
    cust_id, cust_name = p.customers[sub.customer]
    code = otype
    if rnd.random() < 0.12:
        code = {
            "NEW": "1",
            "RENEW": "2",
            "AUTO_RENEW": "8",
            "CHANGE": "3" if official_cents >= 0 else "20",
            "UNSUBSCRIBE": rnd.choice(("4", "24")),
        }[otype]
    r = rnd.random()
    if r < 0.05:
        event_time = _ts(ev_day, seconds, "bj", millis=rnd.randrange(1000))
    elif r < 0.30:
        event_time = _ts(ev_day, seconds, "z")
    else:
        event_time = _ts(ev_day, seconds, "bj")
    ymd = day.strftime("%Y%m%d")
    return {
        "_t": ev_day.toordinal() * 86400 + seconds,  # sort key, not written
        "record_id": f"ord-{ymd}-{seq:05d}",
        "order_id": f"CS{ymd[2:]}{seq:05d}{rnd.choice('ABCDEFGHJKLMNPQRSTUVWXYZ')}{rnd.randrange(1000):03d}",
        "partner_id": p.partner_id,
        "customer_id": cust_id,
        "customer_name": cust_name if rnd.random() > 0.03 else None,
        "product_id": prod_id,
        "product_name": prod_name,
        "sku_code": skus[sub.sku][0] if rnd.random() > 0.05 else None,
        "region": sub.region,
        "order_type": code,
        "official_amount": official_cents * 10_000,
        "discount_amount": discount_cents * 10_000,
        "amount": (official_cents - discount_cents) * 10_000,
        "currency": p.currency,
        "event_time": event_time,
    }


def _monthly_cents(w: _World, sub: _Sub) -> int:
    cents = SUB_PRODUCTS[sub.product][2][sub.sku][1]
    if w.partners[sub.partner].currency == "USD":
        cents = _round_half_up(Decimal(cents) / Decimal("7.2"))
    return cents


def _orders_day(w: _World, st: _State, day: dt.date, bad_rows: bool, late_month: str | None):
    """The day's orders: the regular ones (in event order, numbered), the injected ones (late,
    broken, re-sent from the previous date) and the index of the regular row sent twice (None
    without bad rows)."""
    rnd = random.Random(f"{w.seed}:orders:{day.isoformat()}")
    regular = _regular_orders(w, st, rnd, day)
    extras: list[dict] = []
    dup_of = None
    if bad_rows:
        extras, dup_of = _injected_orders(w, st, rnd, day, regular, late_month)
    st.prev_orders = [dict(r) for r in regular[:1]] + [dict(r) for r in regular[-1:]]
    return regular, extras, dup_of


def _regular_orders(w: _World, st: _State, rnd: random.Random, day: dt.date) -> list[dict]:
    """9 to 14 orders per partner over its subscriptions (opened, renewed, changed, closed)."""
    types, weights = zip(*ORDER_WEIGHTS, strict=True)
    rows: list[dict] = []
    for pi in range(len(w.partners)):
        mine = [s for s in st.subs if s.partner == pi]
        for _ in range(rnd.randint(9, 14)):
            otype = rnd.choices(types, weights=weights)[0]
            if otype != "NEW" and len(mine) < 3:
                otype = "NEW"
            if otype == "NEW":
                sub = _new_sub(w, rnd, pi)
                st.subs.append(sub)
                mine.append(sub)
            else:
                sub = rnd.choice(mine)
            monthly = _monthly_cents(w, sub)
            if otype in ("NEW", "RENEW", "AUTO_RENEW"):
                official = monthly * sub.mult
            elif otype == "CHANGE":
                official = monthly * rnd.randint(10, 90) // 100
                if rnd.random() < 0.4:
                    official = -official
            else:  # UNSUBSCRIBE: refund of the unused part
                official = -(monthly * sub.mult * rnd.randint(5, 95) // 100)
                st.subs.remove(sub)
                mine.remove(sub)
            ev_day = day if rnd.random() < 0.85 else day - dt.timedelta(days=1)
            seconds = rnd.randrange(86400)
            rows.append(_order_row(w, rnd, day, len(rows), sub, otype, official, ev_day, seconds))
    rows.sort(key=lambda r: r["_t"])  # files are in event order; record ids follow it
    for i, r in enumerate(rows):
        r["record_id"] = f"ord-{day:%Y%m%d}-{i:05d}"
    return rows


def _injected_orders(
    w: _World,
    st: _State,
    rnd: random.Random,
    day: dt.date,
    regular: list[dict],
    late_month: str | None,
) -> tuple[list[dict], int]:
    """The bad rows of the day's orders: a late one, every other day a broken one, and
    duplicates (which regular row is sent twice, and the previous date's last row again)."""
    seq = len(regular)
    extras: list[dict] = []
    if late_month:
        sub = rnd.choice(st.subs)
        extras.append(
            _order_row(
                w,
                rnd,
                day,
                seq,
                sub,
                "RENEW",
                _monthly_cents(w, sub) * sub.mult,
                last_day(late_month),
                rnd.randrange(86400),
            )
        )
        seq += 1
        st.injected["late"] += 1
    if day.toordinal() % 2 == 0 and len(regular) >= 34:
        kind = (day.toordinal() // 2) % 5
        if kind == 4 and not st.prev_orders:
            kind = 0
        if kind == 4:
            bad = dict(st.prev_orders[0])  # same record_id, different amount
            delta = 1_000_000 if bad["amount"] >= 0 else -1_000_000
            bad["official_amount"] += delta
            bad["amount"] += delta
            st.injected["conflicting_duplicate"] += 1
        else:
            sub = rnd.choice(st.subs)
            bad = _order_row(
                w, rnd, day, seq, sub, "NEW", _monthly_cents(w, sub), day, rnd.randrange(86400)
            )
            seq += 1
            if kind == 0:
                bad["amount"] += 10_000  # one cent off official - discount
            elif kind == 1:
                bad["event_time"] = _ts(day, rnd.randrange(86400), "naive")
            elif kind == 2:
                bad["partner_id"] = UNKNOWN_PARTNER
            else:
                bad["currency"] = "USD" if bad["currency"] == "CNY" else "CNY"
            st.injected["bad"] += 1
        extras.append(bad)
    st.injected["exact_duplicate"] += 1
    dup_of = rnd.randrange(len(regular))
    if st.prev_orders:
        extras.append(dict(st.prev_orders[-1]))  # re-sent from the previous date
        st.injected["exact_duplicate"] += 1
    return extras, dup_of


def _write_orders(folder: Path, day: dt.date, regular, extras, dup_of) -> int:
    fmt = _FORMATS["orders"][day.toordinal() % 5]
    n_files = 2 if day.toordinal() % 3 == 0 and len(regular) >= 2 else 1
    cut = len(regular) // 2 if n_files == 2 else 0
    parts = [regular[:cut], regular[cut:]] if n_files == 2 else [regular]
    last = list(parts[-1])
    if dup_of is not None:
        # repeat a row of the last file inside that same file
        last.append(dict(last[dup_of % len(last)]))
    parts[-1] = last + extras
    ymd = day.strftime("%Y%m%d")
    folder.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(parts, 1):
        ext = fmt if k == len(parts) else "csv"
        _write_rows(folder / f"orders_{ymd}_{k:04d}.{ext}", "orders", rows)
    return len(parts)


# ---------------------------------------------------------------------------- usage


_USAGE_SCHEMA = pa.schema([(c.name, pa.string()) for c in FEEDS["usage"]])


def _hour_strings(day: dt.date) -> tuple[pa.Array, pa.Array]:
    """Start and end texts for hours -24..23 of ``day`` (Beijing): [+08:00 x48, Z x48]."""
    starts, ends = [], []
    for style in ("bj", "z"):
        for h in range(-24, 24):
            starts.append(_ts(day, h * 3600, style))
            ends.append(_ts(day, (h + 1) * 3600, style))
    return pa.array(starts, pa.string()), pa.array(ends, pa.string())


def _micro_text(q: np.ndarray) -> pa.Array:
    """Exact 6-place decimal text of non-negative micro-unit integers, vectorized."""
    whole = pc.cast(pa.array(q // MICRO), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(q % MICRO), pa.string()), 6, padding="0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _usage_table(
    w: _World, rng: np.random.Generator, hours, prefix: str, seqs: np.ndarray, h48: np.ndarray
) -> pa.Table:
    """Usage rows: one per seq, hour index h48 (0..47 = hours -24..23 of the base day)."""
    n = len(seqs)
    n_cust = CUSTOMERS_PER_PARTNER
    partner = rng.integers(0, len(w.partners), n)
    cust = partner * n_cust + rng.integers(0, n_cust, n)
    sku = w.partner_skus[partner, rng.integers(0, w.partner_skus.shape[1], n)]
    region = w.partner_regions[partner, rng.integers(0, w.partner_regions.shape[1], n)]
    res = (cust * len(USAGE_SKUS) + sku) * RESOURCES_PER_SKU + rng.integers(0, RESOURCES_PER_SKU, n)
    q = w.qty_lo[sku] + (rng.random(n) * w.qty_span[sku]).astype(np.int64)
    whole = rng.random(n) < w.whole_share[sku]
    q = np.where(whole, np.maximum(1, q // MICRO) * MICRO, q)
    ts_idx = (rng.random(n) < 0.1).astype(np.int64) * 48 + h48
    product = w.sku_product[sku]
    starts, ends = hours
    cols = {
        "record_id": pc.binary_join_element_wise(
            pa.scalar(prefix),
            pc.utf8_lpad(pc.cast(pa.array(seqs), pa.string()), 9, padding="0"),
            "",
        ),
        "partner_id": w.a_partner_id.take(partner),
        "customer_id": w.a_customer_id.take(cust),
        "customer_name": w.a_customer_name.take(cust),
        "product_id": w.a_product_id.take(product),
        "product_name": w.a_product_name.take(product),
        "sku_code": w.a_sku.take(sku),
        "region": w.a_region.take(region),
        "resource_id": w.resource_ids.take(res),
        "usage_start": starts.take(ts_idx),
        "usage_end": ends.take(ts_idx),
        "quantity": _micro_text(q),
        "unit": w.a_unit.take(sku),
    }
    return pa.table(cols, schema=_USAGE_SCHEMA)


def _set_col(t: pa.Table, name: str, arr) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, name, arr)


def _usage_extras(
    w: _World, st: _State, day: dt.date, n: int, last_chunk: pa.Table, late_month: str | None
) -> pa.Table | None:
    """Late, bad and duplicate usage rows appended to the day's last file (bad_rows=True)."""
    if n < 100:
        return None
    rng = np.random.default_rng([w.seed, day.toordinal(), 3])
    prefix = f"u-{day:%Y%m%d}-"
    parts: list[pa.Table] = []
    seq = n
    if late_month:  # hours of the last day of the previous month
        k = max(1, n // 1000)
        hours = _hour_strings(first_day(add_months(late_month, 1)))
        parts.append(
            _usage_table(w, rng, hours, prefix, np.arange(seq, seq + k), rng.integers(0, 24, k))
        )
        seq += k
        st.injected["late"] += k
    n_bad = n // 500
    if n_bad:
        bad = _usage_table(
            w,
            rng,
            _hour_strings(day),
            prefix,
            np.arange(seq, seq + n_bad),
            rng.integers(24, 48, n_bad),
        )
        seq += n_bad
        a, b = n_bad // 3, 2 * n_bad // 3
        neg = bad.slice(0, a)
        neg = _set_col(neg, "quantity", pc.binary_join_element_wise("-", neg["quantity"], ""))
        naive = bad.slice(a, b - a)
        naive = _set_col(
            naive,
            "usage_start",
            pc.replace_substring_regex(naive["usage_start"], r"(\+08:00|Z)$", ""),
        )
        ghost = bad.slice(b)
        ghost = _set_col(ghost, "partner_id", pa.array([UNKNOWN_PARTNER] * len(ghost)))
        parts += [neg, naive, ghost]
        st.injected["bad"] += n_bad
    k = max(1, n // 1000)  # exact duplicates inside the file
    idx = rng.integers(0, len(last_chunk), k)
    parts.append(last_chunk.take(pa.array(idx)))
    st.injected["exact_duplicate"] += k
    if st.prev_usage is not None:
        prev = st.prev_usage
        parts.append(prev.slice(0, 2))  # re-sent from the previous landing date
        st.injected["exact_duplicate"] += 2
        conflict = prev.slice(2, 1)
        conflict = _set_col(
            conflict, "quantity", pc.binary_join_element_wise("1", conflict["quantity"], "")
        )
        parts.append(conflict)
        st.injected["conflicting_duplicate"] += 1
    return pa.concat_tables(parts)


def _usage_day(
    w: _World,
    st: _State,
    folder: Path,
    day: dt.date,
    n: int,
    bad_rows: bool,
    late_month: str | None,
    progress,
) -> int:
    """Write the day's usage; return the number of files."""
    if n <= 0:
        return 0
    o = day.toordinal()
    n_parts = -(-n // PART_ROWS)
    second = None
    if n <= SMALL_USAGE and n >= 2 and (o % 3 == 0 or o % 7 in (3, 5)):
        n_parts = 2
        second = {3: "parquet", 5: "jsonl"}.get(o % 7, "csv")
    bounds = [n * i // n_parts for i in range(n_parts + 1)]
    rng = np.random.default_rng([w.seed, o, 2])
    hours = _hour_strings(day)
    prefix = f"u-{day:%Y%m%d}-"
    folder.mkdir(parents=True, exist_ok=True)
    big = n >= 1_000_000
    done = 0
    first_sample: pa.Table | None = None
    for k in range(n_parts):
        lo, hi = bounds[k], bounds[k + 1]
        ext = (second or "csv") if k == 1 else "csv"
        path = folder / f"part-{k + 1:04d}.{ext}"
        with atomic_path(path) as tmp:
            tables: list[pa.Table] = []
            writer = pacsv.CSVWriter(str(tmp), _USAGE_SCHEMA) if ext == "csv" else None
            for a in range(lo, hi, CHUNK_ROWS):
                b = min(hi, a + CHUNK_ROWS)
                pos = np.arange(a, b, dtype=np.int64)
                t = _usage_table(w, rng, hours, prefix, pos, pos * 32 // n + 16)
                if first_sample is None:
                    first_sample = t.take(pa.array([0, 1, 2][: len(t)]))
                done += len(t)
                if k == n_parts - 1 and b == hi and bad_rows:
                    extra = _usage_extras(w, st, day, n, t, late_month)
                    if extra is not None:
                        st.rows["usage"] += len(extra)
                        t = pa.concat_tables([t, extra])
                if writer is not None:
                    writer.write_table(t)
                else:
                    tables.append(t)
                if big and progress:
                    progress(f"  {day} usage {done:,}/{n:,} rows")
            if writer is not None:
                writer.close()
            elif ext == "parquet":
                pq.write_table(pa.concat_tables(tables), str(tmp), compression="snappy")
            else:
                tmp.write_bytes(_jsonl_bytes(pa.concat_tables(tables)))
    st.rows["usage"] += n
    st.usage_regular += n
    st.prev_usage = first_sample if first_sample is not None and len(first_sample) == 3 else None
    return n_parts


def _jsonl_bytes(t: pa.Table) -> bytes:
    """JSON lines of an all-string, null-free table, built with Arrow kernels."""
    pieces = []
    for i, name in enumerate(t.column_names):
        col = t.column(i).combine_chunks()
        col = pc.replace_substring(col, "\\", "\\\\")
        col = pc.replace_substring(col, '"', '\\"')
        key = ("{" if i == 0 else ", ") + json.dumps(name) + ': "'
        pieces += [pa.scalar(key), col, pa.scalar('"')]
    lines = pc.binary_join_element_wise(*pieces, pa.scalar("}\n"), "")
    return b"".join(s.encode("utf-8") for s in lines.to_pylist())


# ---------------------------------------------------------------------------- small feeds


def _adjustments_day(w: _World, st: _State, day: dt.date, d0: dt.date, late_month) -> list[dict]:
    rnd = random.Random(f"{w.seed}:adjustments:{day.isoformat()}")
    rows: list[dict] = []
    prev = add_months(month_of(day), -1)

    def add(pi: int, bill_month: str) -> None:
        p = w.partners[pi]
        credit = rnd.random() < 0.65
        cents = rnd.randint(2_000, 80_000) if credit else rnd.randint(5_000, 200_000)
        cust = rnd.choice(p.customers)[0] if rnd.random() < 0.6 else None
        prod = rnd.choice(SUB_PRODUCTS)[0] if rnd.random() < 0.5 else None
        rows.append(
            {
                "record_id": f"adj-{day:%Y%m%d}-{len(rows):04d}",
                "partner_id": p.partner_id,
                "customer_id": cust,
                "product_id": prod,
                "amount": (-cents if credit else cents) * 10_000,
                "currency": p.currency,
                "bill_month": bill_month,
                "reason": rnd.choice(CREDIT_REASONS if credit else CHARGE_REASONS),
            }
        )

    if day.day in (3, 18):
        bm = prev if (day.day == 3 and d0 <= last_day(prev)) else month_of(day)
        chosen = [i for i in range(len(w.partners)) if rnd.random() < 0.6] or [0]
        for i in chosen:
            add(i, bm)
    if late_month and day.day == 5:
        add(rnd.randrange(len(w.partners)), late_month)
        st.injected["late"] += 1
    return rows


def _coupons_day(w: _World, st: _State, day: dt.date, bad_rows: bool) -> tuple[list[dict], bool]:
    rnd = random.Random(f"{w.seed}:coupons:{day.isoformat()}")
    if day.day == 10:
        rows = []
        for i, p in enumerate(w.partners):
            if rnd.random() < 0.5 or i == 0:
                rows.append(
                    {
                        "record_id": f"cpn-{day:%Y%m%d}-{len(rows):04d}",
                        "coupon_id": f"CP{day:%Y%m}{rnd.randrange(10**8):08d}",
                        "partner_id": p.partner_id,
                        "amount": rnd.choice((50, 100, 200, 300, 500)) * MICRO
                        + rnd.choice((0, 500_000)),
                        "currency": p.currency,
                        "bill_month": month_of(day),
                    }
                )
        st.last_coupons = rows
        return rows, False
    if day.day == 11 and bad_rows and st.last_coupons:
        st.injected["exact_duplicate"] += 1
        resend = [dict(st.last_coupons[0])]
        st.last_coupons = []
        return resend, True
    return [], False


def _payments_day(w: _World, day: dt.date) -> list[dict]:
    if day.day not in (8, 22):
        return []
    rnd = random.Random(f"{w.seed}:payments:{day.isoformat()}")
    rows = []
    share = 0.8 if day.day == 8 else 0.4
    for p in w.partners:
        if rnd.random() >= share:
            continue
        cents = rnd.randint(50_000, 2_000_000)
        rows.append(
            {
                "record_id": f"pay-{day:%Y%m%d}-{len(rows):04d}",
                "partner_id": p.partner_id,
                "amount": cents * 10_000,
                "currency": p.currency,
                "paid_at": _ts(day, rnd.randint(9 * 3600, 18 * 3600), rnd.choice(("bj", "z"))),
                "method": rnd.choice(PAY_METHODS),
                "reference": f"HWPAY{day:%Y%m%d}{rnd.randrange(10**6):06d}",
            }
        )
    return rows


# ---------------------------------------------------------------------------- driver


def _late_month(day: dt.date, d0: dt.date, bad_rows: bool) -> str | None:
    """The previous month, when ``day`` (5th-7th) lands after its cutoff and it is in the span."""
    prev = add_months(month_of(day), -1)
    if bad_rows and 5 <= day.day <= 7 and d0 <= last_day(prev):
        return prev
    return None


def _parse_args(start, end, usage_rows_per_day, n_partners):
    try:
        d0, d1 = parse_date(start), parse_date(end)
    except ValueError as exc:
        raise KoobillError(str(exc)) from None
    if d1 < d0:
        raise KoobillError(f"--end {d1} is before --start {d0}")
    if (d1 - d0).days > 3660:
        raise KoobillError("span too long: at most 10 years of landing dates")
    if not 1 <= int(n_partners) <= 999:
        raise KoobillError(f"--partners must be 1..999, got {n_partners}")
    if int(usage_rows_per_day) < 0:
        raise KoobillError(f"--usage-rows-per-day must be >= 0, got {usage_rows_per_day}")
    return d0, d1


def generate(
    data_dir,
    start: str,
    end: str,
    *,
    seed: int = 7,
    usage_rows_per_day: int = 2000,
    n_partners: int = 4,
    bad_rows: bool = True,
    progress=None,
) -> str:
    """Write landing/<feed>/<YYYY-MM-DD>/<file> for every landing date start..end; return a
    short human summary.

    Creates the data dir if need be (``config.init_data_dir``). Each landing folder of the
    span (every feed) is replaced: files left there by an earlier run are removed first, so the
    same arguments always leave the same files.
    """
    d0, d1 = _parse_args(start, end, usage_rows_per_day, n_partners)
    n_usage = int(usage_rows_per_day)
    root = init_data_dir(data_dir)  # generate makes its data dir (spec section 2)
    paths = Paths(root)
    t0 = time.monotonic()
    w = _build_world(int(seed), int(n_partners))
    init_rnd = random.Random(f"{seed}:subs")
    st = _State(subs=[_new_sub(w, init_rnd, pi) for pi in range(len(w.partners)) for _ in range(8)])
    days = date_range(d0, d1)
    change_day = d0 + dt.timedelta(days=len(days) // 2) if len(days) >= 3 else None
    from pipelines import objectstore

    for day in days:
        _generate_day(w, st, paths, day, (d0, d1, change_day), n_usage, bad_rows, progress)
        for feed in FEEDS:  # object storage: the day's folders go to the bucket as they are
            objectstore.push_dir(paths.landing_dir(feed, day.isoformat()))
    return _summary(st, w, paths, days, seed, bad_rows, time.monotonic() - t0)


def _land_rows(
    paths: Paths, st: _State, feed: str, ds: str, name: str, rows: list[dict], *, bom=False
) -> int:
    """Write one file of a small feed into its landing folder of ``ds``; return 1 (a file)."""
    _write_rows(paths.landing_dir(feed, ds) / name, feed, rows, bom=bom)
    st.rows[feed] += len(rows)
    return 1


def _generate_day(
    w: _World,
    st: _State,
    paths: Paths,
    day: dt.date,
    span: tuple[dt.date, dt.date, dt.date | None],
    n_usage: int,
    bad_rows: bool,
    progress,
) -> None:
    """Replace the landing folders of ``day`` (every feed) with the day's generated files."""
    d0, d1, change_day = span
    ds = day.isoformat()
    for feed in FEEDS:
        folder = paths.landing_dir(feed, ds)
        if folder.exists():
            shutil.rmtree(folder)
    files = 0
    late = _late_month(day, d0, bad_rows)
    ymd = f"{day:%Y%m%d}"
    if day == d0 or day.day == 1 or day == change_day:
        changed = change_day is not None and day >= change_day
        ext = "csv" if day == d0 else "jsonl" if day == change_day else "parquet"
        rows = _partners_rows(w, changed)
        files += _land_rows(paths, st, "partners", ds, f"partners_snapshot_{ymd}.{ext}", rows)
        st.snapshots += 1
    if day == d0:
        rows = _prices_rows(w, d0, d1)
        files += _land_rows(paths, st, "prices", ds, f"price_list_{ymd}.csv", rows)

    regular, extras, dup_of = _orders_day(w, st, day, bad_rows, late)
    files += _write_orders(paths.landing_dir("orders", ds), day, regular, extras, dup_of)
    n_orders = len(regular) + len(extras) + (dup_of is not None)
    st.rows["orders"] += n_orders

    files += _usage_day(
        w, st, paths.landing_dir("usage", ds), day, n_usage, bad_rows, late, progress
    )

    adj = _adjustments_day(w, st, day, d0, late)
    if adj:
        ext = _FORMATS["adjustments"][day.toordinal() % 3]
        name = f"adjustments_{ymd}.{ext}"
        files += _land_rows(paths, st, "adjustments", ds, name, adj, bom=True)
    cpn, resend = _coupons_day(w, st, day, bad_rows)
    if cpn:
        ext = "csv" if resend else _FORMATS["coupons"][day.toordinal() % 4]
        name = f"coupons_{ymd}_resend.csv" if resend else f"coupons_{ymd}.{ext}"
        files += _land_rows(paths, st, "coupons", ds, name, cpn)
    pay = _payments_day(w, day)
    if pay:
        ext = _FORMATS["payments"][day.toordinal() % 3]
        files += _land_rows(paths, st, "payments", ds, f"payments_{ymd}.{ext}", pay)
    st.files += files
    if progress:
        counts = (("adjustments", len(adj)), ("coupons", len(cpn)), ("payments", len(pay)))
        bits = [f"orders {n_orders}", f"usage {n_usage:,}"] + [f"{f} {n}" for f, n in counts if n]
        progress(f"{ds}: {', '.join(bits)} ({files} files)")


def _display(path) -> str:
    from pipelines import objectstore

    return objectstore.display(path)


def _summary(
    st: _State, w: _World, paths: Paths, days: list[dt.date], seed: int, bad_rows: bool, took: float
) -> str:
    d0, d1 = days[0], days[-1]
    r, inj = st.rows, st.injected
    usage_extra = r["usage"] - st.usage_regular
    return (
        f"generated {len(days)} landing date(s) {d0}..{d1} in {_display(paths.landing)} "
        f"(seed {seed}, {len(w.partners)} partners, bad rows {'on' if bad_rows else 'off'}, "
        f"{took:.1f}s)\n"
        f"  files {st.files}: partners {r['partners']} rows in {st.snapshots} snapshot(s), "
        f"prices {r['prices']}, orders {r['orders']:,}, usage {r['usage']:,} "
        f"({st.usage_regular:,} regular + {usage_extra:,} injected), "
        f"adjustments {r['adjustments']}, coupons {r['coupons']}, payments {r['payments']}\n"
        f"  injected: late {inj['late']:,}, exact duplicates {inj['exact_duplicate']:,}, "
        f"conflicting duplicates {inj['conflicting_duplicate']:,}, bad rows {inj['bad']:,}"
    )
