"""Local console users (the bootstrap admin of the embedded default) and sign-in throttling.

Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 defaults) and rehashed when those
defaults change. Failed sign-ins are counted in the database, per user name and per client
address, so every gateway process shares one throttle; past the limit an exponential lockout
answers before any password is checked. An unknown user name costs the same hash as a known
one, so timing does not reveal which names exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.db import Database, utcnow
from broker.identity.roles import ROLES
from broker.models import LoginThrottle, User
from broker.services import audit
from broker.services.sources import SetupError

MIN_PASSWORD = 12
WINDOW = timedelta(minutes=15)
LIMITS = {"user": 5, "addr": 20}  # failures within WINDOW before a lockout starts
FIRST_LOCK_SECONDS, MAX_LOCK_SECONDS = 60, 900
_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


class LoginRefused(Exception):
    """Sign-in refused; the message is safe to show (it never says which part was wrong)."""

    def __init__(self, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SignedIn:
    username: str
    role: str


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise SetupError(f"the password must have at least {MIN_PASSWORD} characters")


def create_user(db: Database, username: str, password: str | None, *, role: str = "admin",
                reset: bool = False, actor: str = audit.SYSTEM) -> tuple[User, str | None]:
    """Create a local user (or, with `reset`, set a new password); returns the generated
    password when none was given, to be shown once."""
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise SetupError("the user name must be 1-64 printable characters without spaces")
    if role not in ROLES:
        raise SetupError(f"role must be one of {', '.join(ROLES)}")
    generated = None
    if password is None:
        password = generated = secrets.token_urlsafe(18)
    _check_password(password)
    with db.begin() as session:
        row = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if row is not None and not reset:
            raise SetupError(f"user {username!r} exists; use --reset-password to set a new password")
        action = "user.password_reset" if row is not None else "user.create"
        if row is None:
            row = User(username=username)
            session.add(row)
        row.password_hash, row.role, row.disabled = _hasher.hash(password), role, False
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == f"user:{username.lower()}"))
        audit.record(session, actor=actor, action=action, target_type="user", target=username,
                     after={"role": role, "password": audit.REDACTED})
    return row, generated


def list_users(db: Database) -> list[dict[str, object]]:
    with db.begin() as session:
        return [{"username": u.username, "role": u.role, "disabled": u.disabled,
                 "created_at": u.created_at, "last_login_at": u.last_login_at}
                for u in session.execute(select(User).order_by(User.username)).scalars()]


def _locked_for(session: Session, keys: list[str], now: datetime) -> int | None:
    until = session.execute(select(LoginThrottle.locked_until).where(
        LoginThrottle.key.in_(keys), LoginThrottle.locked_until > now)).scalars().all()
    return max(int((u - now).total_seconds()) + 1 for u in until) if until else None


def _count_failure(session: Session, key: str, limit: int, now: datetime) -> None:
    row = session.get(LoginThrottle, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                session.add(LoginThrottle(key=key, failures=1, window_start=now))
            return
        except IntegrityError:  # another process counted the first failure meanwhile
            row = session.get(LoginThrottle, key, with_for_update=True, populate_existing=True)
    assert row is not None
    if row.window_start < now - WINDOW and (row.locked_until is None or row.locked_until < now):
        row.failures, row.window_start = 0, now
    row.failures += 1
    if row.failures >= limit:
        seconds = min(FIRST_LOCK_SECONDS * 2 ** (row.failures - limit), MAX_LOCK_SECONDS)
        row.locked_until = now + timedelta(seconds=seconds)


def authenticate(db: Database, username: str, password: str, address: str) -> SignedIn:
    """The signed-in user, or LoginRefused (wrong credentials, disabled, or throttled)."""
    keys = {"user": f"user:{username.lower()[:100]}", "addr": f"addr:{address[:100]}"}
    with db.begin() as session:
        wait = _locked_for(session, list(keys.values()), utcnow())
    if wait is not None:
        raise LoginRefused(f"too many failed sign-ins; try again in {wait} seconds", wait)
    with db.begin() as session:
        user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
        ok = user is not None and not user.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    now = utcnow()
    if not ok:
        with db.begin() as session:  # committed before refusing
            for kind, key in keys.items():
                _count_failure(session, key, LIMITS[kind], now)
        raise LoginRefused("wrong user name or password")
    assert user is not None
    with db.begin() as session:
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == keys["user"]))
        values: dict[str, object] = {"last_login_at": now}
        if _hasher.check_needs_rehash(user.password_hash):
            values["password_hash"] = _hasher.hash(password)
        session.execute(update(User).where(User.id == user.id).values(**values))
    return SignedIn(user.username, user.role)
