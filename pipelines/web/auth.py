"""Who is asking, and which partner they may see: the one dependency every route uses.

A browser signs in at /login and carries a signed, expiring session cookie (Starlette's
SessionMiddleware, itsdangerous, with a secret kept in the data dir). An integrator sends HTTP
Basic credentials or ``Authorization: Bearer <token>`` (``koobill users token``). A ``partner``
user sees only their partner; a ``finance`` user picks one with ``?partner=``. Anything of a
partner the user may not see answers 404, as for a thing that does not exist.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request

from pipelines import accounts
from pipelines.accounts import User
from pipelines.files import create_bytes
from pipelines.web.data import ID_RE, Reader

SESSION_MAX_AGE_S = 8 * 3600


class NotSignedIn(Exception):
    """No valid session or credentials: a page redirects to /login, the API answers 401."""


def not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="Not found")


def secret_key(root: Path) -> str:
    """The session-signing secret of this data dir, created on first use with mode 0600."""
    folder = accounts.accounts_dir(root)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / "session-secret"
    if not path.exists():  # whole or absent: a concurrent first request never reads it empty
        create_bytes(path, secrets.token_urlsafe(48).encode("ascii"), mode=0o600)
    return path.read_text(encoding="ascii").strip()


# --- failed sign-ins are slowed ------------------------------------------------------------------


@dataclass
class _Failures:
    count: int = 0
    until: float = 0.0


@dataclass
class LoginThrottle:
    """Per user name and per client address: after ``free`` failures each further one doubles
    the wait before the next attempt is even checked (capped at ``cap_s``)."""

    free: int = 3
    base_s: float = 1.0
    cap_s: float = 300.0
    _seen: dict[str, _Failures] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_s(self, *keys: str) -> float:
        now = time.monotonic()
        with self._lock:
            return max([self._seen[k].until - now for k in keys if k in self._seen] + [0.0])

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                f = self._seen.setdefault(k, _Failures())
                f.count += 1
                if f.count > self.free:
                    f.until = now + min(self.cap_s, self.base_s * 2 ** (f.count - self.free - 1))
            if len(self._seen) > 100_000:  # bounded memory under a flood of names
                self._seen.clear()

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._seen.pop(k, None)


# --- the signed-in user ------------------------------------------------------------------------


def _credentials_user(root: Path, header: str) -> User | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return accounts.user_for_token(root, value.strip())
    if scheme.lower() == "basic" and value:
        try:
            username, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return accounts.verify_password(root, username, password)
    return None


def signed_in_user(request: Request) -> User:
    root: Path = request.app.state.root
    header = request.headers.get("authorization")
    if header:
        user = _credentials_user(root, header)
        if user is None:
            raise NotSignedIn()
        return user
    session = request.session
    name, gen = session.get("u"), session.get("g")
    if not isinstance(name, str) or not isinstance(gen, int):
        raise NotSignedIn()
    user = accounts.current_user(root, name, gen)
    if user is None:
        session.clear()
        raise NotSignedIn()
    return user


def sign_in(request: Request, user: User) -> None:
    request.session.clear()
    request.session.update({"u": user.username, "g": user.generation, "csrf": new_csrf()})


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created for an anonymous session too: the login form)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = new_csrf()
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if (
        not isinstance(expected, str)
        or not submitted
        or not secrets.compare_digest(expected, submitted)
    ):
        raise HTTPException(status_code=403, detail="CSRF token missing or invalid")


@dataclass
class Viewer:
    """The signed-in user and the one partner every query of this request is bound to."""

    user: User
    partner_id: str | None  # None: finance, and nothing is published yet
    partner_name: str | None
    currency: str | None
    partners: list[dict]  # what the picker offers: every partner (finance) or their own

    @property
    def is_finance(self) -> bool:
        return self.user.is_finance

    def query(self) -> dict[str, str]:
        """The query parameters that keep finance on the partner they picked."""
        return {"partner": self.partner_id} if self.is_finance and self.partner_id else {}


def resolve_viewer(request: Request, user: User, db: Reader, asked: str | None) -> Viewer:
    """Bind the request to one partner: a partner user's own (asking for another: 404), or for
    finance the one asked for, else the last picked, else the first."""
    if asked is not None and not ID_RE.match(asked):
        raise not_found()
    if user.is_finance:
        partners = db.partners()
        known = {p["partner_id"] for p in partners}
        if asked is not None and asked not in known:
            raise not_found()
        picked = request.session.get("partner") if "u" in request.session else None
        pid = asked or (picked if picked in known else None)
        pid = pid or (partners[0]["partner_id"] if partners else None)
        if asked and "u" in request.session:
            request.session["partner"] = asked
    else:
        if asked is not None and asked != user.partner_id:
            raise not_found()
        pid = user.partner_id
        partners = []
    info = db.partner(pid) if pid else None
    if not user.is_finance:
        partners = [{"partner_id": pid, "partner_name": info and info["partner_name"]}]
    return Viewer(
        user=user,
        partner_id=pid,
        partner_name=info["partner_name"] if info else None,
        currency=info["currency"] if info else None,
        partners=partners,
    )
