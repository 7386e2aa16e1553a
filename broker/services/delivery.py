"""Delivering order versions to connectors: batched lease claims, push, record the outcome.

Claims take many due deliveries in one statement (SKIP LOCKED where the database has it);
each keeps its own lease token and attempt counter, and an outcome is written only while
the lease is still ours, so a late or duplicate worker can never overwrite a booking.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from broker import metrics
from broker.db import db_clock, utcnow
from broker.logging import order_context
from broker.models import Connector, Delivery, DeliveryAttempt, DeliveryStatus, Order, OrderVersion
from broker.runtime import Runtime
from broker.schemas.order import reload_order
from broker.services import links, timeline
from broker.services.retry import next_delay
from connectors.base import Link, Links, PushContext, PushResult
from connectors.errors import NeedsAttention, PermanentError, TransientError

log = logging.getLogger(__name__)
MAX_ERROR = 2000


@dataclass
class Claim:
    delivery_id: str
    order_id: str
    version_id: str
    action: str
    attempt: int
    token: str
    received_at: datetime


def delivery_action(status: str, reference: str | None) -> str:
    """What the back office must do, decided when the push happens, not when it was queued.

    A cancelled order that this connector never booked is delivered as a create of the
    cancelled order, so the back office still learns of it; never as a cancel of nothing.
    """
    if reference is None:
        return "create"
    return "cancel" if status == "cancelled" else "update"


def db_now(session: Session) -> datetime:
    """The database clock (leases must agree across hosts); SQLite is one host anyway."""
    if session.get_bind().dialect.name == "sqlite":
        return utcnow()
    return session.execute(select(db_clock())).scalar_one()


def due(now: datetime) -> Any:
    """Deliveries a worker may take now: pending and due, or leased with an expired lease."""
    return or_(
        and_(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now),
        and_(Delivery.status == DeliveryStatus.LEASED, Delivery.lease_until < now),
    )


def bury_exhausted(session: Session, connector: Connector, now: datetime, max_attempts: int) -> int:
    """Dead-letter deliveries whose worker died on every attempt (poison), by the DB counter."""
    rows = session.execute(select(Delivery.id, Delivery.order_id).where(
        Delivery.connector_id == connector.id, Delivery.status == DeliveryStatus.LEASED,
        Delivery.lease_until < now, Delivery.attempts >= max_attempts)).all()
    for delivery_id, order_id in rows:
        message = (f"gave up after {max_attempts} attempts: the worker stopped (crash, kill or "
                   "timeout) during every push; check the worker logs, then replay")
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
            status=DeliveryStatus.DEAD, last_error=message, lease_until=None, lease_token=None,
            updated_at=now))
        timeline.record(session, order_id, "dead", message, delivery_id=delivery_id)
        metrics.DELIVERIES.labels(connector=connector.name, outcome="dead").inc()
    return len(rows)


def claim(session: Session, connector: Connector, *, limit: int, lease_seconds: float,
          max_attempts: int) -> list[Claim]:
    """Lease up to `limit` due deliveries of one connector; one order in flight at a time."""
    now = db_now(session)
    bury_exhausted(session, connector, now, max_attempts)
    other = aliased(Delivery)
    in_flight = exists().where(
        other.order_id == Delivery.order_id, other.connector_id == Delivery.connector_id,
        other.id != Delivery.id, other.status == DeliveryStatus.LEASED, other.lease_until >= now)
    ids = session.execute(
        select(Delivery.id).where(Delivery.connector_id == connector.id, due(now), ~in_flight)
        .order_by(Delivery.next_attempt_at).limit(limit)
        .with_for_update(skip_locked=True, of=Delivery)
    ).scalars().all()
    if not ids:
        return []
    token = secrets.token_hex(16)
    session.execute(update(Delivery).where(Delivery.id.in_(ids)).values(
        status=DeliveryStatus.LEASED, lease_token=token, attempts=Delivery.attempts + 1,
        lease_until=now + timedelta(seconds=lease_seconds), updated_at=now))
    rows = session.execute(
        select(Delivery.id, Delivery.order_id, Delivery.order_version_id, Delivery.action,
               Delivery.attempts, Order.received_at)
        .join(Order, Order.id == Delivery.order_id).where(Delivery.id.in_(ids))
        .order_by(Delivery.next_attempt_at)).all()
    return [Claim(r[0], r[1], r[2], r[3], r[4], token, r[5]) for r in rows]


@dataclass
class Outcome:
    claim: Claim
    status: str                    # booked | retry | dead | parked
    started: datetime
    duration_ms: int
    reference: str | None = None
    error: str | None = None
    retry_after: float | None = None
    links: tuple[Link, ...] = ()   # learned by the connector while booking
    parked: tuple[str, str, str] | None = None  # (reason, link kind, link key)


def _push(connector: Any, order: dict[str, Any], ctx: PushContext) -> PushResult:
    if ctx.action == "cancel":
        return connector.cancel(order, ctx)
    return connector.push(order, ctx)


def attempt(rt: Runtime, connector_row: Connector, claim: Claim, data: dict[str, Any],
            reference: str | None, known: Links | None = None) -> Outcome:
    """Call the connector once and classify what happened."""
    started, clock = utcnow(), time.perf_counter()
    ctx = PushContext(delivery_id=claim.delivery_id,
                      idempotency_key=f"{claim.version_id}.{connector_row.id}",
                      action=claim.action, attempt=claim.attempt, reference=reference,
                      document=data, links=known or Links())

    def done(status: str, **kw: Any) -> Outcome:
        return Outcome(claim, status, started, int((time.perf_counter() - clock) * 1000), **kw)

    try:
        connector = rt.connector(connector_row)
        result = _push(connector, reload_order(data), ctx)
        return done("booked", reference=str(result.reference)[:255], links=tuple(result.links))
    except NeedsAttention as exc:
        return done("parked", error=str(exc)[:MAX_ERROR],
                    parked=(exc.reason, exc.kind, str(exc.key)[:255]))
    except TransientError as exc:
        return done("retry", error=str(exc)[:MAX_ERROR], retry_after=exc.retry_after)
    except PermanentError as exc:
        return done("dead", error=str(exc)[:MAX_ERROR])
    except Exception as exc:  # a connector bug: retry, bounded by max_attempts
        log.exception("connector %s raised unexpectedly", connector_row.name)
        return done("retry", error=f"unexpected {type(exc).__name__} in connector "
                                   f"{connector_row.name}: {exc}"[:MAX_ERROR])


@dataclass
class Recorded:
    """An outcome written to the database; logged and counted only after the commit."""

    outcome: Outcome
    step: str
    message: str


def _settle(rt: Runtime, connector: Connector, outcome: Outcome, now: datetime,
            ) -> tuple[dict[str, Any], Recorded]:
    """The row values and the journal entry of one outcome (retry, booked or dead)."""
    claim, settings = outcome.claim, rt.settings
    status = outcome.status
    if status == "retry" and claim.attempt >= settings.max_attempts:
        status = "dead"
        outcome.error = f"gave up after {claim.attempt} attempts; last error: {outcome.error}"
    next_at = now
    if status == "booked":
        message = f"booked in {connector.name} as {outcome.reference} (attempt {claim.attempt})"
    elif status == "parked":
        message = f"parked ({outcome.parked[0]}): {outcome.error}"
    elif status == "dead":
        message = f"dead at attempt {claim.attempt}: {outcome.error}"
    else:
        delay = next_delay(claim.attempt, base=settings.retry_base, cap=settings.retry_cap,
                           retry_after=outcome.retry_after)
        next_at = now + timedelta(seconds=delay)
        message = f"attempt {claim.attempt} failed, next in {delay:.0f}s: {outcome.error}"
    parked = outcome.parked if status == "parked" else (None, None, None)
    row = {"b_id": claim.delivery_id, "b_token": claim.token,
           "b_status": {"booked": DeliveryStatus.BOOKED, "dead": DeliveryStatus.DEAD,
                        "parked": DeliveryStatus.PARKED}.get(status, DeliveryStatus.PENDING),
           "b_parked_reason": parked[0], "b_parked_kind": parked[1], "b_parked_key": parked[2],
           "b_reference": outcome.reference if status == "booked" else None,
           "b_booked_at": now if status == "booked" else None, "b_next": next_at,
           "b_error": outcome.error, "b_action": claim.action, "b_now": now}
    step = status if status in ("booked", "dead", "parked") else "retry"
    return row, Recorded(outcome, step, message)


_SETTLE = update(Delivery.__table__).where(
    Delivery.id == bindparam("b_id"), Delivery.lease_token == bindparam("b_token"),
).values(
    status=bindparam("b_status"), reference=bindparam("b_reference"),
    booked_at=bindparam("b_booked_at"), next_attempt_at=bindparam("b_next"),
    last_error=bindparam("b_error"), action=bindparam("b_action"),
    lease_until=None, lease_token=None, updated_at=bindparam("b_now"),
    parked_reason=bindparam("b_parked_reason"), parked_kind=bindparam("b_parked_kind"),
    parked_key=bindparam("b_parked_key"),
)


def record(session: Session, rt: Runtime, connector: Connector,
           outcomes: list[Outcome]) -> list[Recorded]:
    """Write a batch of outcomes with one executemany, each only while its lease is ours.

    Outcomes whose lease expired (another worker owns the delivery now) are dropped with a
    warning; the rest get their attempt row and timeline entry.
    """
    now = utcnow()
    settled = [_settle(rt, connector, outcome, now) for outcome in outcomes]
    if not settled:
        return []
    result = session.connection().execute(_SETTLE, [row for row, _ in settled])
    won = {row["b_id"] for row, _ in settled}
    if result.rowcount != len(settled):  # find who lost the lease: their token is not cleared
        won = set(session.execute(select(Delivery.id).where(
            Delivery.id.in_(won), Delivery.lease_token.is_(None), Delivery.updated_at == now)
        ).scalars())
    recorded = []
    for _, entry in settled:
        claim = entry.outcome.claim
        if claim.delivery_id not in won:
            log.warning("lease of delivery %s expired before its outcome was recorded; another "
                        "worker owns it now (raise BROKER_LEASE_SECONDS if pushes are slow)",
                        claim.delivery_id, extra={"order_id": claim.order_id})
            continue
        outcome = entry.outcome
        if outcome.links:
            links.learn(session, connector.id, outcome.links)
        session.add(DeliveryAttempt(delivery_id=claim.delivery_id, number=claim.attempt,
                                    outcome=entry.step,
                                    error=outcome.error, reference=outcome.reference,
                                    started_at=outcome.started, duration_ms=outcome.duration_ms))
        timeline.record(session, claim.order_id, entry.step, entry.message,
                        delivery_id=claim.delivery_id, connector=connector.name,
                        attempt=claim.attempt)
        recorded.append(entry)
    return recorded


def announce(connector: Connector, recorded: Recorded) -> None:
    """Metrics and the log line of a committed outcome."""
    claim = recorded.outcome.claim
    metrics.DELIVERIES.labels(connector=connector.name, outcome=recorded.step).inc()
    if recorded.step == "booked":
        metrics.RECEIVED_TO_BOOKED.observe((utcnow() - claim.received_at).total_seconds())
    with order_context(claim.order_id):
        log.info(recorded.message,
                 extra={"delivery_id": claim.delivery_id, "connector": connector.name})


def run(rt: Runtime, connector_id: str, *, budget_seconds: float = 20.0) -> int:
    """Deliver due work of one connector in batches until none is left or the budget is spent.

    Returns the number of deliveries processed; the caller re-enqueues when the budget ran out.
    """
    settings, processed, deadline = rt.settings, 0, time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        with rt.db.begin() as session:
            connector = session.get(Connector, connector_id)
            if connector is None or not connector.enabled:
                return processed
            session.expunge(connector)
            per_call = float((connector.config or {}).get("timeout", 30)) + 1
            limit = max(1, min(settings.claim_batch, int(settings.lease_seconds // per_call)))
            claims = claim(session, connector, limit=limit,
                           lease_seconds=settings.lease_seconds, max_attempts=settings.max_attempts)
        if not claims:
            return processed
        with rt.db.begin() as session:
            versions = dict(session.execute(select(OrderVersion.id, OrderVersion.data).where(
                OrderVersion.id.in_([c.version_id for c in claims]))).all())
            known = links.load_links(session, connector, versions.values())
            references = dict(session.execute(  # the latest booking's reference wins
                select(Delivery.order_id, Delivery.reference).where(
                    Delivery.connector_id == connector_id,
                    Delivery.order_id.in_([c.order_id for c in claims]),
                    Delivery.status == DeliveryStatus.BOOKED).order_by(Delivery.booked_at)).all())
        outcomes = []
        for c in claims:
            c.action = delivery_action(versions[c.version_id].get("status", "open"),
                                       references.get(c.order_id))
            with order_context(c.order_id):
                outcomes.append(attempt(rt, connector, c, versions[c.version_id],
                                        references.get(c.order_id), known))
        with rt.db.begin() as session:
            written = record(session, rt, connector, outcomes)
        for recorded in written:
            announce(connector, recorded)
        processed += len(claims)
        if len(claims) < limit:
            return processed
    return processed
