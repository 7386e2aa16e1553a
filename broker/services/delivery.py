"""Delivering order versions to connectors: batched lease claims, push, record the outcome.

Claims take many due deliveries in one statement (SKIP LOCKED where the database has it);
each keeps its own lease token and attempt counter, and an outcome is written only while
the lease is still ours, so a late or duplicate worker can never overwrite a booking.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.orm import Session

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
from connectors.registry import connector_class

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
    version: int = 0


def serial_key(data: Mapping[str, Any]) -> str | None:
    """One key per customer (email, else the channel's customer id), hashed to fit a column.

    Deliveries sharing it never go to one connector at once, so two first orders of a new
    customer cannot both create the customer in the back office.
    """
    customer = data.get("customer") or {}
    email = (customer.get("email") or "").strip().lower()
    anchor = (f"email:{email}" if email else
              f"customer:{data.get('channel') or ''}:{customer['external_id']}"
              if customer.get("external_id") else None)
    return hashlib.sha256(anchor.encode()).hexdigest() if anchor else None


def idempotency_key(version_id: str, connector_id: str, action: str) -> str:
    """Stable for one intended write: the create of a version, or its update or cancel."""
    key = f"{version_id}.{connector_id}"
    return key if action == "create" else f"{key}.{action}"


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


def _lock_connector(session: Session, connector_id: str) -> None:
    """Claims of one connector take turns (SQLite's BEGIN IMMEDIATE already serialises all
    writers): the push limit and the one-per-order and one-per-customer rules are checked
    and taken in one step."""
    if session.get_bind().dialect.name != "sqlite":
        session.execute(select(Connector.id).where(Connector.id == connector_id).with_for_update())


def claim(session: Session, connector: Connector, *, limit: int, lease_seconds: float,
          max_attempts: int, max_in_flight: int | None = None) -> list[Claim]:
    """Lease up to `limit` due deliveries of one connector as one batch (one lease token).

    Rules: at most `max_in_flight` batches of the connector hold leases at once; never two
    deliveries of one order, nor of one customer (serial key) in two batches; a delivery of
    an older version is superseded, never pushed, once a newer version has a delivery. Each
    candidate list is read in index order (pending by due time, expired leases by expiry),
    so a claim costs the same with a backlog of ten or of fifty thousand.
    """
    now = db_now(session)
    _lock_connector(session, connector.id)
    bury_exhausted(session, connector, now, max_attempts)
    held = session.execute(select(Delivery.order_id, Delivery.serial_key, Delivery.lease_token).where(
        Delivery.connector_id == connector.id, Delivery.status == DeliveryStatus.LEASED,
        Delivery.lease_until >= now)).all()
    if max_in_flight and len({token for _, _, token in held}) >= max_in_flight:
        return []
    busy_orders = {order_id for order_id, _, _ in held}
    busy_keys = {key for _, key, _ in held if key}
    candidates = select(Delivery.id, Delivery.order_id, Delivery.serial_key, OrderVersion.version).join(
        OrderVersion, OrderVersion.id == Delivery.order_version_id).where(
        Delivery.connector_id == connector.id)
    rows = [*session.execute(candidates.where(
        Delivery.status == DeliveryStatus.LEASED, Delivery.lease_until < now)
        .order_by(Delivery.lease_until).limit(limit * 2)).all(),
        *session.execute(candidates.where(
            Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
            .order_by(Delivery.next_attempt_at).limit(limit * 2)).all()]
    if not rows:
        return []
    newest = dict(session.execute(
        select(Delivery.order_id, func.max(OrderVersion.version))
        .join(OrderVersion, OrderVersion.id == Delivery.order_version_id)
        .where(Delivery.connector_id == connector.id,
               Delivery.order_id.in_({r.order_id for r in rows}),
               Delivery.status != DeliveryStatus.SUPERSEDED)
        .group_by(Delivery.order_id)).all())
    chosen: list[str] = []
    older: list[tuple[str, str]] = []
    taken: set[str] = set()
    for row in rows:
        if row.version < newest.get(row.order_id, row.version):
            older.append((row.id, row.order_id))
        elif (len(chosen) < limit and row.order_id not in busy_orders | taken
              and row.serial_key not in busy_keys):
            chosen.append(row.id)
            taken.add(row.order_id)
    if older:
        _supersede(session, older, now)
    if not chosen:
        return []
    token = secrets.token_hex(16)
    session.execute(update(Delivery).where(Delivery.id.in_(chosen), due(now)).values(
        status=DeliveryStatus.LEASED, lease_token=token, attempts=Delivery.attempts + 1,
        lease_until=now + timedelta(seconds=lease_seconds), updated_at=now)
        .execution_options(synchronize_session=False))
    rows = session.execute(
        select(Delivery.id, Delivery.order_id, Delivery.order_version_id, Delivery.action,
               Delivery.attempts, Order.received_at, OrderVersion.version)
        .join(Order, Order.id == Delivery.order_id)
        .join(OrderVersion, OrderVersion.id == Delivery.order_version_id)
        .where(Delivery.id.in_(chosen), Delivery.lease_token == token)
        .order_by(Delivery.next_attempt_at)).all()
    return [Claim(r[0], r[1], r[2], r[3], r[4], token, r[5], r[6]) for r in rows]


def _supersede(session: Session, deliveries: list[tuple[str, str]], now: datetime) -> None:
    """Older versions' deliveries whose lease ran out (their worker died): the newer version
    carries the order now."""
    for delivery_id, order_id in deliveries:
        if session.execute(update(Delivery).where(Delivery.id == delivery_id, due(now)).values(
                status=DeliveryStatus.SUPERSEDED, lease_until=None, lease_token=None, updated_at=now)
                .execution_options(synchronize_session=False)).rowcount:
            timeline.record(session, order_id, "superseded",
                            "a newer version replaced this delivery before it was booked",
                            delivery_id=delivery_id)


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
    not_applied: tuple[str, ...] = ()  # what the back office did not take, and why


@dataclass
class Predecessor:
    """An earlier version's delivery that may have reached the back office unanswered."""

    delivery_id: str
    version_id: str
    data: dict[str, Any]


def _push(connector: Any, order: dict[str, Any], ctx: PushContext) -> PushResult:
    if ctx.action == "cancel":
        return connector.cancel(order, ctx)
    return connector.push(order, ctx)


def attempt(rt: Runtime, connector_row: Connector, claim: Claim, data: dict[str, Any],
            reference: str | None, known: Links | None = None,
            predecessor: Predecessor | None = None) -> Outcome:
    """Call the connector once and classify what happened.

    A create whose predecessor's outcome is unknown (an earlier version was sent, its answer
    lost) goes to a connector that cannot look records up only after that earlier request was
    sent again under its own idempotency key: the back office answers with the record it holds
    (or makes it), and this version follows as an update. Connectors that look up by external
    key do this themselves.
    """
    started, clock = utcnow(), time.perf_counter()
    ctx = PushContext(delivery_id=claim.delivery_id,
                      idempotency_key=idempotency_key(claim.version_id, connector_row.id, claim.action),
                      action=claim.action, attempt=claim.attempt, reference=reference,
                      document=data, links=known or Links())

    def done(status: str, **kw: Any) -> Outcome:
        return Outcome(claim, status, started, int((time.perf_counter() - clock) * 1000), **kw)

    learned: tuple[Link, ...] = ()
    try:
        connector = rt.connector(connector_row)
        if claim.action == "create" and predecessor is not None and not connector.can_look_up():
            earlier = connector.push(reload_order(predecessor.data), PushContext(
                delivery_id=predecessor.delivery_id,
                idempotency_key=idempotency_key(predecessor.version_id, connector_row.id, "create"),
                action="create", attempt=claim.attempt, document=predecessor.data, links=ctx.links))
            learned = tuple(earlier.links)
            claim.action = delivery_action(data.get("status", "open"), earlier.reference)
            ctx = replace(ctx, action=claim.action, reference=earlier.reference,
                          idempotency_key=idempotency_key(claim.version_id, connector_row.id,
                                                          claim.action))
        result = _push(connector, reload_order(data), ctx)
        return done("booked", reference=str(result.reference)[:255],
                    links=learned + tuple(result.links), not_applied=tuple(result.not_applied))
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
    step = status if status in ("booked", "dead", "parked") else "retry"
    if status == "booked" and outcome.not_applied and (claim.action != "create"
                                                       or not outcome.reference):
        step = "not applied"  # a change the back office did not take is not a booking
        message = (f"not applied in {connector.name}: {'; '.join(outcome.not_applied)} (the back "
                   f"office keeps {outcome.reference}; attempt {claim.attempt})")
    elif status == "booked":
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
            links.resume_identity_reviews(session, connector, outcome.links, now)
        session.add(DeliveryAttempt(delivery_id=claim.delivery_id, number=claim.attempt,
                                    outcome=entry.step,
                                    error=outcome.error, reference=outcome.reference,
                                    started_at=outcome.started, duration_ms=outcome.duration_ms))
        timeline.record(session, claim.order_id, entry.step, entry.message,
                        delivery_id=claim.delivery_id, connector=connector.name,
                        attempt=claim.attempt)
        if entry.step == "booked" and outcome.not_applied:  # booked, all but these parts
            timeline.record(session, claim.order_id, "not applied",
                            f"not applied in {connector.name}: {'; '.join(outcome.not_applied)}",
                            delivery_id=claim.delivery_id, connector=connector.name)
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


@dataclass
class LeasePlan:
    """How long a batch's lease lasts, how many deliveries it holds, how many batches at once,
    and how much lease must be left for a push to start."""

    lease_seconds: float
    batch: int
    max_in_flight: int
    push_room: float


UNMEASURED_BATCH = 1  # until this process has timed a push to the connector: do not hoard


def lease_plan(connector: Connector, lease_seconds: float, claim_batch: int,
               push_seconds: float | None = None) -> LeasePlan:
    """Size the batch from the real work: what this process's recent pushes to the connector
    (`push_seconds`, a moving average) say fits twice into one lease, so a fast back office
    gets whole batches and a slow one small batches that other workers can share. The lease is
    renewed every quarter of its length while the batch runs, and no push starts with less
    lease left than its slowest possible push (`calls_per_push` x (connect + read timeout), at
    most half the lease), so a crashed worker's batch is taken over after one lease, however
    slow the back office."""
    config = connector.config or {}
    try:
        kind = connector_class(connector.kind)
        limit, calls = kind.max_in_flight, max(1, kind.calls_per_push)
    except LookupError:  # the kind's package is gone: the push will say so
        limit, calls = 1, 1
    per_call = float(config.get("connect_timeout") or 5) + float(config.get("timeout") or 30)
    lease = lease_seconds
    if push_seconds is None:
        batch = min(claim_batch, UNMEASURED_BATCH)
    else:
        batch = max(1, min(claim_batch, int(lease / (2 * max(push_seconds, 0.001)))))
    return LeasePlan(lease, batch, connector.max_in_flight or limit, min(calls * per_call, lease / 2))


class LeaseKeeper:
    """Renews a batch's leases while its pushes run, so a slow back office never makes a
    second worker take deliveries that are still being pushed; knows which ones were lost
    anyway (another worker took them) and how long the lease surely lasts, so no push starts
    that could outlive it. Deliveries it holds but never started are handed back at once when
    the process is asked to stop, and at the end of the batch: nobody waits out their lease."""

    POLL = 0.2  # seconds between looks at the process's stop flag

    def __init__(self, rt: Runtime, claims: list[Claim], lease_seconds: float,
                 on_release: Callable[[], object] | None = None) -> None:
        self.rt, self.lease = rt, lease_seconds
        self.token = claims[0].token if claims else ""
        self.ids = [c.delivery_id for c in claims]
        self.lost: set[str] = set()
        self.started: set[str] = set()
        self.handed_back: list[str] = []
        self.expires = time.monotonic() + lease_seconds  # the claim just set it
        self.on_release = on_release
        self._closed = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def _loop(self) -> None:
        next_renewal = time.monotonic() + max(0.5, self.lease / 4)
        while not self._stop.wait(self.POLL):
            if self.rt.stopping.is_set():
                self._hand_back_safely()
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + max(0.5, self.lease / 4)
            try:
                self.renew()
            except Exception:  # the next renewal tries again; the lease still has time
                log.exception("renewing the leases of %d deliveries failed", len(self.ids))

    def renew(self) -> None:
        started = time.monotonic()
        with self.rt.db.begin() as session:
            now = db_now(session)
            kept = session.execute(update(Delivery).where(
                Delivery.id.in_(self.ids), Delivery.lease_token == self.token,
                Delivery.status == DeliveryStatus.LEASED).values(
                lease_until=now + timedelta(seconds=self.lease))
                .execution_options(synchronize_session=False)).rowcount
            if kept != len(self.ids):
                ours = set(session.execute(select(Delivery.id).where(
                    Delivery.id.in_(self.ids), Delivery.lease_token == self.token)).scalars())
                self.lost.update(set(self.ids) - ours)
        self.expires = started + self.lease

    def may_push(self, delivery_id: str, longest: float) -> bool:
        """Still ours, with time for a push of `longest` seconds before the lease could end,
        and not handed back; if so, the push counts as started."""
        with self._lock:
            if (self._closed or delivery_id in self.lost
                    or time.monotonic() + longest >= self.expires):
                return False
            self.started.add(delivery_id)
            return True

    def hand_back(self) -> list[str]:
        """Return the deliveries not started to the due list now (their attempt undone)."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            ids = [i for i in self.ids if i not in self.started and i not in self.lost]
        if not ids:
            return []
        with self.rt.db.begin() as session:
            now = db_now(session)
            session.execute(update(Delivery).where(
                Delivery.id.in_(ids), Delivery.lease_token == self.token,
                Delivery.status == DeliveryStatus.LEASED).values(
                status=DeliveryStatus.PENDING, lease_token=None, lease_until=None,
                attempts=Delivery.attempts - 1, next_attempt_at=now, updated_at=now)
                .execution_options(synchronize_session=False))
        self.handed_back = ids
        log.info("handed back %d leased deliveries not started%s", len(ids),
                 " (stopping)" if self.rt.stopping.is_set() else "")
        if self.on_release is not None:
            self.on_release()
        return ids

    def _hand_back_safely(self) -> None:
        try:
            self.hand_back()
        except Exception:  # their lease still ends: another worker takes them then
            log.exception("handing back %d leased deliveries failed", len(self.ids))

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._hand_back_safely()


def _measured(rt: Runtime, connector_id: str, outcomes: list[Outcome]) -> None:
    """Fold a batch's push durations into the connector's moving average (this process)."""
    for outcome in outcomes:
        seconds = outcome.duration_ms / 1000
        last = rt.push_seconds.get(connector_id)
        rt.push_seconds[connector_id] = seconds if last is None else 0.8 * last + 0.2 * seconds


@dataclass
class BatchContext:
    """What the pushes of a batch need, read in one transaction."""

    versions: dict[str, dict[str, Any]]
    references: dict[str, str]
    predecessors: dict[str, Predecessor] = field(default_factory=dict)
    known: Links = field(default_factory=Links)


def batch_context(session: Session, connector: Connector, claims: list[Claim]) -> BatchContext:
    """Versions, links, the latest booked reference per order, and for orders with none yet,
    the newest earlier delivery that was attempted without a known outcome."""
    claimed = {c.delivery_id for c in claims}
    rows = session.execute(
        select(Delivery.id, Delivery.order_id, Delivery.order_version_id, Delivery.status,
               Delivery.reference, Delivery.attempts, Delivery.booked_at, OrderVersion.version)
        .join(OrderVersion, OrderVersion.id == Delivery.order_version_id)
        .where(Delivery.connector_id == connector.id,
               Delivery.order_id.in_({c.order_id for c in claims}))).all()
    references: dict[str, str] = {}
    for row in sorted((r for r in rows if r.status == DeliveryStatus.BOOKED and r.reference),
                      key=lambda r: (r.booked_at, r.version)):
        references[row.order_id] = row.reference  # the latest booking's reference wins
    earlier: dict[str, Any] = {}
    for row in rows:
        if (row.id not in claimed and row.order_id not in references and row.attempts > 0
                and row.status != DeliveryStatus.BOOKED
                and (row.order_id not in earlier or row.version > earlier[row.order_id].version)):
            earlier[row.order_id] = row
    wanted = {c.version_id for c in claims} | {r.order_version_id for r in earlier.values()}
    versions = dict(session.execute(select(OrderVersion.id, OrderVersion.data).where(
        OrderVersion.id.in_(wanted))).all())
    predecessors = {order_id: Predecessor(r.id, r.order_version_id, versions[r.order_version_id])
                    for order_id, r in earlier.items()}
    known = links.load_links(session, connector, [versions[c.version_id] for c in claims])
    return BatchContext(versions, references, predecessors, known)


def _with_learned(known: Links, learned: Iterable[Link]) -> Links:
    """Links learned by an earlier push of the batch, visible to the next ones (a new
    customer's second order in the same batch must find the customer the first one made)."""
    learned = [link for link in learned if hasattr(known, link.kind)]
    if not learned:
        return known
    merged = {kind: dict(getattr(known, kind)) for kind in ("customer", "product", "tax",
                                                             "shipping", "payment")}
    for link in learned:
        merged[link.kind].setdefault(link.key, link.value)
    return Links(**merged)


def run(rt: Runtime, connector_id: str, *, budget_seconds: float = 20.0) -> int:
    """Deliver due work of one connector in batches until none is left, the budget is spent,
    or the process is asked to stop (`rt.stopping`: then no new claim, no new push; the push in
    progress finishes and the rest of the batch is handed back for another worker).

    Returns the number of deliveries processed; the caller re-enqueues when the budget ran out.
    """
    settings, processed, deadline = rt.settings, 0, time.monotonic() + budget_seconds
    while time.monotonic() < deadline and not rt.stopping.is_set():
        with rt.db.begin() as session:
            connector = session.get(Connector, connector_id)
            if connector is None or not connector.enabled:
                return processed
            session.expunge(connector)
            plan = lease_plan(connector, settings.lease_seconds, settings.claim_batch,
                              rt.push_seconds.get(connector_id))
            claims = claim(session, connector, limit=plan.batch, lease_seconds=plan.lease_seconds,
                           max_attempts=settings.max_attempts, max_in_flight=plan.max_in_flight)
        if not claims:
            return processed
        with rt.db.begin() as session:
            batch = batch_context(session, connector, claims)
        outcomes, known = [], batch.known
        with LeaseKeeper(rt, claims, plan.lease_seconds, on_release=partial(
                rt.publisher.wake, [(connector.id, connector.queue)])) as keeper:
            for c in claims:
                if rt.stopping.is_set() or not keeper.may_push(c.delivery_id, plan.push_room):
                    continue  # stopping, taken over, or its lease might end mid-push
                data = batch.versions[c.version_id]
                reference = batch.references.get(c.order_id)
                c.action = delivery_action(data.get("status", "open"), reference)
                with order_context(c.order_id):
                    outcome = attempt(rt, connector, c, data, reference, known,
                                      batch.predecessors.get(c.order_id))
                known = _with_learned(known, outcome.links)
                outcomes.append(outcome)
        _measured(rt, connector_id, outcomes)
        with rt.db.begin() as session:
            written = record(session, rt, connector, outcomes)
        for recorded in written:
            announce(connector, recorded)
        if keeper.handed_back:  # woken at the hand-back too, but this batch's customers were busy
            rt.publisher.wake([(connector.id, connector.queue)])
        processed += len(outcomes)
        if len(claims) < plan.batch:
            return processed
    return processed
