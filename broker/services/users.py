"""Local console users (the bootstrap admin of the embedded default) and sign-in throttling.

Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 defaults) and rehashed when those
defaults change. Failed sign-ins are counted per user name and per client address
(broker.services.throttle, shared by every gateway process); past the limit an exponential
lockout answers before any password is checked. An unknown user name costs the same hash as a known
one, so timing does not reveal which names exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from broker.db import Database, utcnow
from broker.identity.roles import ROLES
from broker.models import User
from broker.services import audit, throttle
from broker.services.sources import SetupError

MIN_PASSWORD = 12
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
        throttle.clear(session, throttle.SIGN_IN_USER, username.lower())
        audit.record(session, actor=actor, action=action, target_type="user", target=username,
                     after={"role": role, "password": audit.REDACTED})
    return row, generated


def list_users(db: Database) -> list[dict[str, object]]:
    with db.begin() as session:
        return [{"username": u.username, "role": u.role, "disabled": u.disabled,
                 "created_at": u.created_at, "last_login_at": u.last_login_at}
                for u in session.execute(select(User).order_by(User.username)).scalars()]


def authenticate(db: Database, username: str, password: str, address: str) -> SignedIn:
    """The signed-in user, or LoginRefused (wrong credentials, disabled, or throttled)."""
    name = username.lower()
    with db.begin() as session:
        wait = throttle.wait_for(session, [throttle.SIGN_IN_USER.key(name),
                                           throttle.SIGN_IN_ADDRESS.key(address)], utcnow())
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
            throttle.count(session, throttle.SIGN_IN_USER, name, now)
            throttle.count(session, throttle.SIGN_IN_ADDRESS, address, now)
        raise LoginRefused("wrong user name or password")
    assert user is not None
    with db.begin() as session:
        throttle.clear(session, throttle.SIGN_IN_USER, name)
        values: dict[str, object] = {"last_login_at": now}
        if _hasher.check_needs_rehash(user.password_hash):
            values["password_hash"] = _hasher.hash(password)
        session.execute(update(User).where(User.id == user.id).values(**values))
    return SignedIn(user.username, user.role)
