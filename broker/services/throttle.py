"""Abuse limits (RELIABILITY T37) shared by every gateway process: counters in the broker's
database.

A rule allows `limit` events per key (a user name, a client address, an actor) within
`window`; the event that reaches the limit locks the key for `first_lock` seconds, doubling with
each further event up to `max_lock`. A locked key is refused, with how long to wait, before any
work is done (hashing a password, minting a token, replaying dead letters).

The database, not Redis or the `limits` library: it is the one store every installation has
(the embedded SQLite default included) and all gateways share, and `limits` has no SQL storage.
The counters live in the `login_throttle` table (named after its first use, console sign-ins).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.db import Database, utcnow
from broker.models import LoginThrottle as Counter


@dataclass(frozen=True)
class Rule:
    name: str  # the keys' prefix
    limit: int  # events within `window` that start a lockout
    window: timedelta
    first_lock: int = 60  # seconds; doubles per event past the limit
    max_lock: int = 900

    def key(self, value: str) -> str:
        return f"{self.name}:{value[:100]}"


# Console sign-ins: failures per user name and per client address.
SIGN_IN_USER = Rule("user", 5, timedelta(minutes=15))
SIGN_IN_ADDRESS = Rule("addr", 20, timedelta(minutes=15))
# POST /oauth/token: failed client authentications, and all requests, per client address.
TOKEN_FAILURES = Rule("token-fail", 20, timedelta(minutes=15))
TOKEN_REQUESTS = Rule("token-rate", 300, timedelta(minutes=1), first_lock=60, max_lock=60)
# Bulk operations (a whole group of dead letters replayed), per actor.
BULK_OPERATIONS = Rule("bulk", 10, timedelta(minutes=15))


class Throttled(Exception):
    """Too many attempts: refused for `retry_after` seconds."""

    def __init__(self, retry_after: int, what: str = "attempts") -> None:
        super().__init__(f"too many {what}; try again in {retry_after} seconds")
        self.retry_after = retry_after


def wait_for(session: Session, keys: Iterable[str], now: datetime) -> int | None:
    """Seconds until the longest lock on these keys ends (None: none is locked)."""
    until = session.execute(select(Counter.locked_until).where(
        Counter.key.in_(list(keys)), Counter.locked_until > now)).scalars().all()
    return max(int((u - now).total_seconds()) + 1 for u in until) if until else None


def check(db: Database, keys: Iterable[str], what: str = "attempts") -> None:
    """Raise Throttled while any of the keys is locked."""
    with db.begin() as session:
        wait = wait_for(session, keys, utcnow())
    if wait is not None:
        raise Throttled(wait, what)


def count(session: Session, rule: Rule, value: str, now: datetime) -> None:
    """Count one event of `rule` for `value` (in the caller's transaction); past the limit the
    key is locked."""
    key = rule.key(value)
    row = session.get(Counter, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                session.add(Counter(key=key, failures=1, window_start=now))
            return  # every rule's limit is above 1
        except IntegrityError:  # another process counted the first event meanwhile
            row = session.get(Counter, key, with_for_update=True, populate_existing=True)
    assert row is not None
    if row.window_start < now - rule.window and (row.locked_until is None or row.locked_until < now):
        row.failures, row.window_start = 0, now
    row.failures += 1
    if row.failures >= rule.limit:
        seconds = min(rule.first_lock * 2 ** (row.failures - rule.limit), rule.max_lock)
        row.locked_until = now + timedelta(seconds=seconds)


def record(db: Database, rule: Rule, value: str) -> None:
    """Count one event in a transaction of its own (committed before the caller answers)."""
    with db.begin() as session:
        count(session, rule, value, utcnow())


def admit(db: Database, rule: Rule, value: str, what: str = "requests",
          locked_by: Iterable[str] = ()) -> None:
    """Count one request of `rule`, refusing it (Throttled) while its key, or one of the keys
    `locked_by` (e.g. failures counted by another rule), is locked."""
    with db.begin() as session:
        now = utcnow()
        wait = wait_for(session, [rule.key(value), *locked_by], now)
        if wait is None:
            count(session, rule, value, now)
    if wait is not None:
        raise Throttled(wait, what)


def clear(session: Session, rule: Rule, value: str) -> None:
    """Forget a key's events (a successful sign-in, a new password)."""
    session.execute(delete(Counter).where(Counter.key == rule.key(value)))
