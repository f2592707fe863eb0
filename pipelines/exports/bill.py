"""One bill version as its documents show it (``Bill``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from pipelines.errors import KoobillError
from pipelines.exports.common import ZERO, round2


@dataclass
class Bill:
    """One bill version as its documents show it: the bills row, its lines, the rows of the
    analysts' views (``expenditure_by_product``, ``expenditure_by_customer``) for it, the
    Amount Due pane as of the invoice date and the invoice settings."""

    header: dict[str, Any]
    lines: list[dict[str, Any]]
    estimates: list[tuple[date, Decimal]]
    products: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    account: Any = None  # pipelines.amount_due.AmountDue as of invoice_date (current versions)
    settings: Any = None  # pipelines.settings.Settings

    @property
    def partner_id(self) -> str:
        return self.header["partner_id"]

    @property
    def month(self) -> str:
        return self.header["bill_month"]

    @property
    def version(self) -> int:
        return int(self.header["version"])

    @property
    def currency(self) -> str:
        return self.header.get("currency") or ""

    @property
    def invoice_no(self) -> str | None:
        return self.header.get("invoice_no") or None

    @property
    def supersedes_invoice_no(self) -> str | None:
        """The invoice this version replaces (bills.supersedes_invoice_no, when present)."""
        return self.header.get("supersedes_invoice_no") or None

    @property
    def is_current(self) -> bool:
        return str(self.header.get("status")) == "closed"

    @property
    def invoice_date(self) -> date | None:
        """The publication date: the Beijing date of ``closed_at``."""
        closed_at = self.header.get("closed_at")
        if isinstance(closed_at, datetime):
            from pipelines.calendar import beijing_date

            return beijing_date(closed_at)
        return None

    @property
    def due_date(self) -> date | None:
        """Invoice date + the payment terms; None when nothing is due."""
        if self.invoice_date is None or self.settings is None or not self.amount_due > 0:
            return None
        return self.invoice_date + timedelta(days=self.settings.terms_days)

    @property
    def amount_due(self) -> Decimal:
        return Decimal(self.header.get("amount_due") or 0)

    @property
    def pane_row(self) -> dict[str, Any] | None:
        """This bill's row of the Amount Due pane as of the invoice date, if it counts then."""
        if self.account is None:
            return None
        for b in self.account.bills:
            if b["bill_month"] == self.month and int(b["version"]) == self.version:
                return b
        return None

    @property
    def paid_amount(self) -> Decimal:
        """Payments applied to this bill as of the invoice date (oldest bill first)."""
        row = self.pane_row
        return round2(Decimal(row["paid_amount"])) if row is not None else ZERO

    @property
    def balance_due(self) -> Decimal:
        return self.amount_due - self.paid_amount

    def reconcile(self) -> None:
        """Refuse to publish a bill whose lines do not reproduce its components to the cent."""
        sums = {"consume": ZERO, "refund": ZERO, "adjustment": ZERO}
        for ln in self.lines:
            if ln["component"] in sums:
                sums[ln["component"]] += ln["amount"]
        checks = [
            ("consume_amount", round2(sums["consume"])),
            ("refunds", round2(-sums["refund"])),
            ("adjustments", round2(sums["adjustment"])),
        ]
        bad = [
            f"{name} {self.header[name]} != lines {got}"
            for name, got in checks
            if Decimal(self.header[name] or 0) != got
        ]
        if bad:
            raise KoobillError(
                f"bill {self.partner_id} {self.month} v{self.version}: bill lines do not "
                f"reproduce the bill ({'; '.join(bad)}); not exported"
            )
