"""The Partner Bills page's accounts: who may sign in, and which partner each one sees.

Stored in ``<data-dir>/accounts/users.json`` (mode 0600, replaced atomically on every change),
passwords only as argon2id hashes. A ``partner`` user sees exactly one partner; a ``finance``
user sees every partner. API tokens are stored as SHA-256 digests, never in clear.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.errors import KoobillError
from pipelines.files import write_text
from pipelines.patterns import PARTNER_ID_RE

USERNAME_RE = re.compile(r"\A[A-Za-z0-9_.@-]{1,64}\Z")
ROLES = ("partner", "finance")
MIN_PASSWORD = 8
_hasher = None


def _ph():
    global _hasher
    if _hasher is None:
        from argon2 import PasswordHasher

        _hasher = PasswordHasher()  # argon2id, salted, the library's tuned defaults
    return _hasher


@dataclass
class User:
    username: str
    role: str
    partner_id: str | None
    password_hash: str
    disabled: bool = False
    created_at: str = ""
    password_changed_at: str = ""
    # bumped by reset-password and disable: sessions signed before are no longer valid
    generation: int = 1
    token_hashes: list[str] = field(default_factory=list)

    @property
    def is_finance(self) -> bool:
        return self.role == "finance"

    def public(self) -> dict:
        d = asdict(self)
        d.pop("password_hash")
        d.pop("token_hashes")
        d["tokens"] = len(self.token_hashes)
        return d


def accounts_dir(root: Path) -> Path:
    return Path(root) / "accounts"


def users_path(root: Path) -> Path:
    return accounts_dir(root) / "users.json"


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise KoobillError(
            f"invalid user name {username!r}: 1-64 characters of A-Z a-z 0-9 _ . @ -"
        )
    return username


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise KoobillError(f"password too short: at least {MIN_PASSWORD} characters")
    return password


# --- the file -----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: dict[Path, tuple[tuple[int, int, int], dict[str, User]]] = {}


def load_users(root: Path) -> dict[str, User]:
    """Every user by name (cached per file identity: a change by the CLI shows at once; on
    object storage, fetched again when the bucket's copy changed)."""
    from pipelines import objectstore

    path = objectstore.refresh(users_path(root))
    if objectstore.remote_of(path) is not None and path.exists():
        path.chmod(0o600)  # the mirror's copy is as private as the bucket's
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    ident = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _cache_lock:
        hit = _cache.get(path)
        if hit and hit[0] == ident:
            return hit[1]
    raw = json.loads(path.read_text(encoding="utf-8"))
    users = {u["username"]: User(**u) for u in raw.get("users", [])}
    with _cache_lock:
        _cache[path] = (ident, users)
    return users


@contextlib.contextmanager
def _editing(root: Path) -> Iterator[dict[str, User]]:
    """Load, let the caller edit, write back atomically; one editor at a time (its own lock,
    never the data dir's writer lock)."""
    root = Path(root)
    if not root.is_dir():
        raise KoobillError(f"data dir {root} does not exist")
    folder = accounts_dir(root)
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        users = dict(load_users(root))
        yield users
        path = users_path(root)
        data = {"users": [asdict(u) for u in sorted(users.values(), key=lambda u: u.username)]}
        write_text(path, json.dumps(data, indent=1), mode=0o600)
    finally:
        os.close(fd)


# --- commands -----------------------------------------------------------------------------------


def add_user(
    root: Path, username: str, role: str, password: str, partner_id: str | None = None
) -> User:
    """Create a user; a partner user is bound to ``partner_id``, a finance user to none."""
    _check_username(username)
    _check_password(password)
    if role not in ROLES:
        raise KoobillError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
    if role == "partner":
        if not partner_id or not PARTNER_ID_RE.match(partner_id):
            raise KoobillError("a partner user needs --partner with a valid partner id")
    elif partner_id:
        raise KoobillError("a finance user sees every partner: do not give --partner")
    with _editing(root) as users:
        if username in users:
            raise KoobillError(f"user {username} already exists")
        now = _now()
        user = User(
            username=username,
            role=role,
            partner_id=partner_id if role == "partner" else None,
            password_hash=_ph().hash(password),
            created_at=now,
            password_changed_at=now,
        )
        users[username] = user
    return user


def _existing(users: dict[str, User], username: str) -> User:
    _check_username(username)
    if username not in users:
        raise KoobillError(f"no user {username}")
    return users[username]


def disable_user(root: Path, username: str, disabled: bool = True) -> User:
    """Disable (or enable again) a user; a disabled user's sessions and tokens stop working."""
    with _editing(root) as users:
        user = _existing(users, username)
        user.disabled = disabled
        user.generation += 1
    return user


def reset_password(root: Path, username: str, password: str) -> User:
    """Set a new password; every session signed before is refused."""
    _check_password(password)
    with _editing(root) as users:
        user = _existing(users, username)
        user.password_hash = _ph().hash(password)
        user.password_changed_at = _now()
        user.generation += 1
    return user


def new_token(root: Path, username: str) -> str:
    """A new API token for ``username`` (shown once; only its SHA-256 is kept)."""
    token = "kb_" + secrets.token_urlsafe(32)
    with _editing(root) as users:
        user = _existing(users, username)
        user.token_hashes.append(_token_digest(token))
    return token


def list_users(root: Path) -> list[User]:
    return sorted(load_users(root).values(), key=lambda u: u.username)


# --- checks the page makes ----------------------------------------------------------------------


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY_HASH: str | None = None


def verify_password(root: Path, username: str, password: str) -> User | None:
    """The enabled user with this name and password, else None (same work either way)."""
    global _DUMMY_HASH
    from argon2.exceptions import InvalidHashError, VerificationError

    user = load_users(root).get(username) if USERNAME_RE.match(username or "") else None
    if user is None:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = _ph().hash(secrets.token_hex(8))
        with contextlib.suppress(VerificationError, InvalidHashError):
            _ph().verify(_DUMMY_HASH, password or "")
        return None
    try:
        _ph().verify(user.password_hash, password or "")
    except (VerificationError, InvalidHashError):
        return None
    return None if user.disabled else user


def user_for_token(root: Path, token: str) -> User | None:
    digest = _token_digest(token)
    for user in load_users(root).values():
        if not user.disabled and any(secrets.compare_digest(digest, t) for t in user.token_hashes):
            return user
    return None


def current_user(root: Path, username: str, generation: int) -> User | None:
    """The user a session names, if still enabled and the session not outdated."""
    user = load_users(root).get(username)
    if user is None or user.disabled or user.generation != generation:
        return None
    return user


def create_demo_users(root: Path, partner_ids: list[str]) -> list[tuple[str, str, str | None, str]]:
    """A finance user and one partner user per partner, with fresh random passwords (the demo
    prints them once): [(username, role, partner_id, password)]."""
    out = []
    for username, role, pid in [("finance", "finance", None)] + [
        (p, "partner", p) for p in partner_ids
    ]:
        password = secrets.token_urlsafe(9)
        if username in load_users(root):
            reset_password(root, username, password)
        else:
            add_user(root, username, role, password, pid)
        out.append((username, role, pid, password))
    return out
