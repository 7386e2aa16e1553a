"""Leases in the broker's own database: of many like processes, exactly one acts.

Any number of beats may run (two machines, `broker worker --beat` beside `broker beat`); the
one holding the sweeper lease publishes the sweeps, the others stand by and take over when it
stops renewing. The lease lives in the database every process already shares, so it works the
same on SQLite, PostgreSQL and MariaDB (no advisory locks, no extra server), and expiries are
read on the database clock so hosts agree.

Every takeover increments a fencing token. Work carries the token it was published under and
is done only while that token is current (`fence`, which locks the lease row until the work's
transaction ends): a beat that paused past its lease, or a sweep message delivered late, can
never act beside the new holder.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.db import Database
from broker.models import Lease
from broker.services.delivery import db_now

SWEEPER = "sweeper"


class Fenced(Exception):
    """The work's token is not the lease's current token: another holder acts now."""


def lease_seconds(sweep_interval: float) -> float:
    """How long a beat's hold lasts without renewal: half a sweep interval (at least 1 s), so
    with a check every third of it, a standby takes over well within one sweep interval."""
    return max(1.0, sweep_interval / 2)


def hold(db: Database, name: str, holder: str, seconds: float) -> int | None:
    """Take or keep the lease for `seconds`; its token if `holder` has it now, else None.

    The holder keeps its token for as long as nobody else took the lease, even after a late
    renewal; an expired lease is taken over with the next token.
    """
    try:
        with db.begin() as session:
            now = db_now(session)
            until = now + timedelta(seconds=seconds)
            kept = session.execute(
                update(Lease).where(Lease.name == name, Lease.holder == holder)
                .values(expires_at=until, renewed_at=now)
                .execution_options(synchronize_session=False)).rowcount
            if not kept:
                kept = session.execute(
                    update(Lease).where(Lease.name == name, Lease.expires_at < now)
                    .values(holder=holder, token=Lease.token + 1, acquired_at=now,
                            renewed_at=now, expires_at=until)
                    .execution_options(synchronize_session=False)).rowcount
            if not kept:
                if session.execute(select(Lease.name).where(Lease.name == name)).first():
                    return None  # held by another, not expired
                session.add(Lease(name=name, holder=holder, token=1, acquired_at=now,
                                  renewed_at=now, expires_at=until, acts=0))
                session.flush()
            return session.execute(select(Lease.token).where(
                Lease.name == name, Lease.holder == holder)).scalar()
    except IntegrityError:  # another process made the row at the same moment: it holds it
        return None


def release(db: Database, name: str, holder: str) -> None:
    """Give the lease up at a clean stop, so a standby takes over at its next check."""
    with db.begin() as session:
        now = db_now(session)
        session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                        .values(expires_at=now - timedelta(microseconds=1))
                        .execution_options(synchronize_session=False))


def fence(session: Session, name: str, token: int | None) -> None:
    """Record one act under `token`, or raise Fenced if a newer holder exists.

    The update locks the lease row until the caller's transaction ends, so no takeover can
    happen while the act is being written.
    """
    if token is None:
        raise Fenced(f"no {name} lease token: published by a beat of an older version? "
                     "(upgrade every beat; a beat of this version publishes with a token)")
    acted = session.execute(
        update(Lease).where(Lease.name == name, Lease.token == token)
        .values(last_act_at=db_now(session), acts=Lease.acts + 1)
        .execution_options(synchronize_session=False)).rowcount
    if not acted:
        current = session.execute(select(Lease.token, Lease.holder).where(Lease.name == name)).first()
        now = f"token {current.token} held by {current.holder}" if current else "no holder"
        raise Fenced(f"{name} lease token {token} is stale ({now})")


def current(db: Database, name: str, fence: int | None) -> bool:
    """Whether `fence` is still the lease's token (checked before each later step of a sweep)."""
    if fence is None:
        return False
    with db.begin() as session:
        held = session.execute(select(Lease.token).where(Lease.name == name)).scalar()
    return held == fence


@dataclass
class LeaseState:
    holder: str
    token: int
    expires_in: float              # seconds; negative once expired
    last_act_at: datetime | None
    acts: int


def state(db: Database, name: str) -> LeaseState | None:
    """Who holds the lease and when it last acted (metrics and health); None if never held."""
    with db.begin() as session:
        row = session.get(Lease, name)
        if row is None:
            return None
        now = db_now(session)
        return LeaseState(row.holder, row.token, (row.expires_at - now).total_seconds(),
                          row.last_act_at, row.acts)
