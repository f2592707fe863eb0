"""The invoice settings: the issuer (the marketplace operator), its bank accounts and the
payment terms, read from ``<data-dir>/settings.toml``, else from the bundled demo values
``pipelines/assets/settings.default.toml`` (which documents every key).

The data dir's file is used as a whole: a key it lacks is not taken from the demo file, so demo
bank details never reach a real invoice.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import KoobillError

DEFAULT_PATH = Path(__file__).resolve().parent / "assets" / "settings.default.toml"
FILE_NAME = "settings.toml"


class SettingsError(KoobillError, ValueError):
    """A settings file that cannot be read or lacks a required key."""


@dataclass(frozen=True)
class BankAccount:
    currency: str | None
    fields: tuple[tuple[str, str], ...]  # (label, value) in file order, currency excluded


@dataclass(frozen=True)
class Issuer:
    name: str
    local_name: str | None = None
    address: tuple[str, ...] = ()
    tax_id: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Settings:
    source: Path
    issuer: Issuer
    terms_days: int
    payment_note: str | None = None
    accounts: tuple[BankAccount, ...] = field(default_factory=tuple)

    def account_for(self, currency: str | None) -> BankAccount | None:
        """The bank account in the bill's currency, else the first one (None if none)."""
        for a in self.accounts:
            if a.currency and currency and a.currency.upper() == currency.upper():
                return a
        return self.accounts[0] if self.accounts else None


def settings_path(data_dir: str | Path | None) -> Path:
    """``<data-dir>/settings.toml`` if it exists, else the bundled defaults."""
    if data_dir is not None:
        from pipelines import objectstore

        # object storage: the bucket's settings.toml (the mirror's copy follows it)
        own = objectstore.refresh(Path(data_dir) / FILE_NAME)
        if own.is_file():
            return own
    return DEFAULT_PATH


def load_settings(data_dir: str | Path | None = None) -> Settings:
    """The settings of ``data_dir`` (see the module docstring). Raises SettingsError naming the
    file and the key when the file is not valid TOML or a value is missing or of a wrong type."""
    path = settings_path(data_dir)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the settings: {exc}") from None
    return parse_settings(raw, path)


def parse_settings(raw: dict[str, Any], path: Path) -> Settings:
    def fail(msg: str) -> SettingsError:
        return SettingsError(f"{path}: {msg}")

    def text(table: dict, key: str, where: str, required: bool = False) -> str | None:
        v = table.get(key)
        if v is None or (isinstance(v, str) and not v.strip()):
            if required:
                raise fail(f"{where}.{key} is required")
            return None
        if not isinstance(v, str | int):
            raise fail(f"{where}.{key} must be text")
        return str(v).strip()

    issuer_raw = raw.get("issuer")
    if not isinstance(issuer_raw, dict):
        raise fail("the [issuer] table is required (name, address, tax_id)")
    address = issuer_raw.get("address", ())
    if isinstance(address, str):
        address = [ln for ln in address.splitlines() if ln.strip()]
    if not isinstance(address, list | tuple) or not all(isinstance(a, str) for a in address):
        raise fail("issuer.address must be text or a list of lines")
    issuer = Issuer(
        name=text(issuer_raw, "name", "issuer", required=True),
        local_name=text(issuer_raw, "local_name", "issuer"),
        address=tuple(a.strip() for a in address if a.strip()),
        tax_id=text(issuer_raw, "tax_id", "issuer"),
        email=text(issuer_raw, "email", "issuer"),
        phone=text(issuer_raw, "phone", "issuer"),
    )
    payment = raw.get("payment", {})
    if not isinstance(payment, dict):
        raise fail("[payment] must be a table")
    terms = payment.get("terms_days", 30)
    if isinstance(terms, bool) or not isinstance(terms, int) or not 0 <= terms <= 365:
        raise fail(f"payment.terms_days must be a whole number of days, 0 to 365 (got {terms!r})")
    accounts = []
    for i, acc in enumerate(payment.get("accounts", []) or []):
        if not isinstance(acc, dict):
            raise fail(f"payment.accounts[{i}] must be a table")
        fields = []
        for k, v in acc.items():
            if k == "currency":
                continue
            if not isinstance(v, str | int):
                raise fail(f"payment.accounts[{i}].{k} must be text")
            fields.append((_label(k), str(v)))
        accounts.append(BankAccount(text(acc, "currency", f"payment.accounts[{i}]"), tuple(fields)))
    return Settings(
        source=path,
        issuer=issuer,
        terms_days=terms,
        payment_note=text(payment, "note", "payment"),
        accounts=tuple(accounts),
    )


_LABELS = {
    "account_name": "Account name",
    "bank": "Bank",
    "account_number": "Account number",
    "swift": "SWIFT/BIC",
    "iban": "IBAN",
    "bank_address": "Bank address",
    "routing_number": "Routing number",
}


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " ").capitalize())
