"""Intake: store a verified webhook raw (gateway), normalise it (worker), accept REST orders."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import or_, select, tuple_, update
from sqlalchemy.orm import Session

from broker.channels.api import ChannelUnavailable
from broker.channels.base import Channel, Patch, PayloadError, channel_for
from broker.db import Database, insert_ignore, utcnow
from broker.models import EventStatus, IdempotencyKey, InboundEvent, Order, OrderVersion, Source
from broker.schemas.order import flatten_errors, load_order
from broker.services import audit
from broker.services.crypto import SecretBox
from broker.services.orders import VersionOutcome, apply_version
from broker.services.routing import RouteTable

log = logging.getLogger(__name__)


def parse_json(body: bytes) -> Any:
    """JSON with exact decimals: money never passes through a float."""
    return json.loads(body, parse_float=Decimal)


def store_event(db: Database, source_id: str, event_key: str, topic: str | None,
                headers: Mapping[str, str], body: bytes,
                status: str = EventStatus.RECEIVED) -> tuple[bool, str]:
    """Commit the raw event (deduplicated on the vendor's id) and return (new, event id).

    Core, not the ORM: this is the gateway's hot path.
    """
    with db.engine.begin() as conn:
        return insert_ignore(conn, InboundEvent, {
            "source_id": source_id, "event_key": event_key, "topic": topic,
            "headers": dict(headers), "body": body, "status": status,
            "attempts": 0, "received_at": utcnow(),
        }, unique=("source_id", "event_key"))


# Sources whose webhook body is itself a canonical order: the gateway validates it before
# storing, so a broken order is the sender's 422 now, not a rejected event found later.
CANONICAL_KINDS = frozenset({"standard-webhooks"})


def canonical_errors(kind: str, body: bytes) -> dict[str, list[str]] | None:
    """Field paths and messages of an invalid canonical order body (None when valid, or when
    the source's channel maps vendor payloads, which only a worker can judge)."""
    if kind not in CANONICAL_KINDS:
        return None
    try:
        payload = parse_json(body)
    except (ValueError, RecursionError) as exc:
        return {"_schema": [f"the body is not valid JSON: {exc}"]}
    if not isinstance(payload, dict):
        return {"_schema": ["the body must be a JSON object holding one canonical order"]}
    try:
        load_order(payload)
    except ValidationError as exc:
        return flatten_errors(exc.messages)
    return None


@dataclass
class NormaliseResult:
    status: str
    error: str | None = None
    source: str = ""
    outcomes: list[VersionOutcome] = field(default_factory=list)
    created: list[tuple[str, str]] = field(default_factory=list)  # (source id, external id)
    released: int = 0  # parked events this result's new orders returned to the queue

    @property
    def wake(self) -> list[tuple[str, str]]:
        return sorted({w for outcome in self.outcomes for w in outcome.wake})


def _describe(exc: ValidationError) -> str:
    fields = flatten_errors(exc.messages)
    return "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in sorted(fields.items()))


MAX_NORMALISE_ATTEMPTS = 5
MAX_ENRICH_DELAY = 900.0  # a channel API outage is retried at least every 15 minutes


def dump_json(payload: Any) -> bytes:
    """JSON of a payload parsed with exact decimals (they are written as strings)."""
    return json.dumps(payload, default=str, ensure_ascii=False, separators=(",", ":")).encode()


def _channel(source: Source, cache: dict[str, Channel] | None = None) -> Channel:
    if cache is not None and source.id in cache:
        return cache[source.id]
    channel = channel_for(source.kind, source.settings)
    if cache is not None:
        cache[source.id] = channel
    return channel


def _patched(session: Session, source: Source, patch: Patch, received_at: datetime) -> dict | None:
    """The latest applied version of the patched order with the changes, or None if unknown."""
    data = session.execute(
        select(OrderVersion.data).join(Order, Order.id == OrderVersion.order_id)
        .where(Order.source_id == source.id, Order.external_id == patch.external_id,
               OrderVersion.applied.is_(True))
        .order_by(OrderVersion.version.desc()).limit(1)).scalar()
    if data is None:
        return None
    return {**data, **patch.changes,
            "updated_at": patch.updated_at or received_at.isoformat()}


def _normalise(session: Session, event: InboundEvent, source: Source, channel: Channel,
               payload: Any = None, routes: RouteTable | None = None) -> NormaliseResult:
    """Map one locked event to order versions; a mapping problem rejects it with the reason.

    A patch for an order the broker does not hold yet parks the event until the create arrives.
    """
    event.attempts += 1
    event.processed_at = utcnow()
    event.next_attempt_at = event.waiting_for = None
    try:
        if payload is None:
            payload = parse_json(event.body)
        documents: list[dict[str, Any]] = []
        for item in channel.to_orders(event.topic, payload):
            if isinstance(item, Patch):
                patched = _patched(session, source, item, event.received_at)
                if patched is None:
                    event.status, event.waiting_for = EventStatus.PARKED, item.external_id
                    event.error = f"waiting for order {item.external_id} to arrive from {source.name}"
                    return NormaliseResult(event.status, None, source.name)
                item = patched
            documents.append(item)
        orders = [load_order(doc) for doc in documents]
    except ValidationError as exc:
        event.status, event.error = EventStatus.REJECTED, _describe(exc)
        return NormaliseResult(event.status, event.error, source.name)
    except (PayloadError, ValueError) as exc:
        event.status, event.error = EventStatus.REJECTED, str(exc)
        return NormaliseResult(event.status, event.error, source.name)
    if not orders:
        event.status, event.error = EventStatus.IGNORED, None
        return NormaliseResult(event.status, source=source.name)
    result = NormaliseResult(EventStatus.NORMALISED, source=source.name)
    for order in orders:
        outcome = apply_version(session, source, order, event_id=event.id,
                                received_at=event.received_at, routes=routes)
        result.outcomes.append(outcome)
        if outcome.created:
            result.created.append((source.id, order["external_id"]))
    event.status, event.error = EventStatus.NORMALISED, None
    event.order_id = result.outcomes[0].order_id
    return result


def release_parked(session: Session, created: Iterable[tuple[str, str]]) -> int:
    """Return events parked for these new orders ((source id, external id)) to the queue."""
    pairs = sorted(set(created))
    if not pairs:
        return 0
    return session.execute(
        update(InboundEvent)
        .where(InboundEvent.status == EventStatus.PARKED,
               tuple_(InboundEvent.source_id, InboundEvent.waiting_for).in_(pairs))
        .values(status=EventStatus.RECEIVED, error=None)
        .execution_options(synchronize_session=False)).rowcount


@dataclass
class Enriched:
    payload: Any = None
    fetched: bytes | None = None
    error: str | None = None  # the channel API answered that this event cannot be mapped


def _enrich(db: Database, box: SecretBox | None, event_id: str, force: bool
            ) -> Enriched | NormaliseResult | None:
    """Outside any transaction: fetch what a thin payload lacks from the channel's API.

    None when nothing is needed (the event is gone, or another worker already handled it and
    this is no reprocess: vendor APIs are rate-limited); a NormaliseResult when the channel API
    is unavailable and the event was deferred.
    """
    with db.begin() as session:
        event = session.get(InboundEvent, event_id)
        if event is None or (event.status != EventStatus.RECEIVED and not force):
            return None
        source = session.get(Source, event.source_id)
        session.expunge_all()
    channel = _channel(source)
    payload = _safe_parse(event.body)
    if payload is None or not channel.needs_api(event.topic, payload):
        return None
    try:
        credentials = box.decrypt(source.credentials_encrypted, {}) if box else {}
        payload = channel.enrich(event.topic, payload, channel.api(credentials))
    except PayloadError as exc:
        return Enriched(error=str(exc))
    except ChannelUnavailable as exc:
        return _defer(db, event_id, source.name, str(exc), exc.retry_after)
    return Enriched(payload, dump_json(payload))


def _defer(db: Database, event_id: str, source_name: str, reason: str,
           retry_after: float | None) -> NormaliseResult:
    """Keep the event waiting; wait half its age so far (5 s to 15 min), or what the API asked."""
    with db.begin() as session:
        event = session.get(InboundEvent, event_id)
        now = utcnow()
        waited = (now - event.received_at).total_seconds()
        delay = min(MAX_ENRICH_DELAY, max(5.0, waited / 2, retry_after or 0.0))
        event.next_attempt_at = now + timedelta(seconds=delay)
        event.error = f"channel API unavailable, next try in {delay:.0f} s: {reason}"
        return NormaliseResult(EventStatus.RECEIVED, event.error, source_name)


def normalise_event(db: Database, event_id: str, *, force: bool = False,
                    box: SecretBox | None = None, actor: str = audit.SYSTEM) -> NormaliseResult:
    """Normalise one event in its own transaction; `force` reprocesses a rejected one.

    A thin payload is enriched from the channel API first, outside the transaction. A forced
    reprocess is an operator action, so it is audited (as `actor`) with the outcome.
    """
    enriched = _enrich(db, box, event_id, force)
    if isinstance(enriched, NormaliseResult):
        if force:
            with db.begin() as session:
                event = session.get(InboundEvent, event_id)
                _audit_reprocess(session, actor, event_id, event.status if event else None, None, enriched)
        return enriched
    with db.begin() as session:
        event = session.execute(select(InboundEvent).where(InboundEvent.id == event_id)
                                .with_for_update()).scalar_one_or_none()
        if event is None:
            raise LookupError(f"no inbound event {event_id}")
        source = session.get(Source, event.source_id)
        if event.status != EventStatus.RECEIVED and not force:
            return NormaliseResult(event.status, event.error, source.name)
        before_status, before_error = event.status, event.error
        payload = None
        if enriched is not None and enriched.error:
            event.attempts += 1
            event.status, event.error = EventStatus.REJECTED, enriched.error
            result = NormaliseResult(event.status, event.error, source.name)
        else:
            if enriched is not None:
                payload, event.fetched = enriched.payload, enriched.fetched
            result = _normalise(session, event, source, _channel(source), payload)
            result.released = release_parked(session, result.created)
        if force:
            _audit_reprocess(session, actor, event_id, before_status, before_error, result)
        return result


def _audit_reprocess(session: Session, actor: str, event_id: str, status: str | None,
                     error: str | None, result: NormaliseResult) -> None:
    audit.record(session, actor=actor, action="event.reprocess", target_type="event", target=event_id,
                 before={"status": status, "error": error},
                 after={"status": result.status, "error": result.error,
                        "orders": [o.order_id for o in result.outcomes]})


def _safe_parse(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError:
        return None


def normalise_pending(db: Database, *, limit: int, box: SecretBox | None = None,
                      stopping: threading.Event | None = None) -> list[NormaliseResult]:
    """Normalise up to `limit` due events in one transaction.

    One commit and one wake-up per batch instead of per event; events another worker holds
    are skipped (SKIP LOCKED). Thin events that need the channel's API are taken out of the
    batch and enriched one by one outside it, so no transaction waits on a vendor. Should
    normalisation itself fail (not a payload: those are rejected), the batch is rolled back
    and each event retried in a transaction of its own, so one bad event never holds up the
    others; an event that failed so is retried alone from then on (it never costs another
    batch its work), and after MAX_NORMALISE_ATTEMPTS it is rejected. When `stopping` is set
    (the worker is asked to stop), events not yet taken one by one are left waiting for another
    worker.
    """
    ids: list[str] = []
    alone: list[str] = []  # thin events, and events that failed before
    try:
        with db.begin() as session:
            now = utcnow()
            events = session.execute(
                select(InboundEvent).where(InboundEvent.status == EventStatus.RECEIVED,
                                           due_event(now))
                .order_by(InboundEvent.received_at).limit(limit)
                .with_for_update(skip_locked=True)).scalars().all()
            ids = [event.id for event in events]
            sources: dict[str, Source] = {}
            channels: dict[str, Channel] = {}
            routes: RouteTable = {}
            results = []
            for event in events:
                if event.error:  # a waiting event with an error failed before (or is deferred)
                    alone.append(event.id)
                    continue
                source = sources.get(event.source_id) or session.get(Source, event.source_id)
                sources[event.source_id] = source
                channel = _channel(source, channels)
                payload = _safe_parse(event.body)
                if payload is not None and channel.needs_api(event.topic, payload):
                    alone.append(event.id)
                    continue
                with session.no_autoflush:  # one flush per event instead of one per query
                    results.append(_normalise(session, event, source, channel, payload, routes))
                session.flush()
            if results:
                results[-1].released = release_parked(
                    session, [pair for r in results for pair in r.created])
    except Exception:
        log.exception("a batch of %d events failed to normalise; retrying one by one", len(ids))
        alone, results = ids, []
    for event_id in alone:
        if stopping is not None and stopping.is_set():
            break  # nothing is held: the event stays received, another worker takes it
        try:
            results.append(normalise_event(db, event_id, box=box))
        except Exception:
            log.exception("normalising event %s failed; it stays waiting", event_id)
            _count_failure(db, event_id)
    return results


def due_event(now: datetime) -> Any:
    """Events whose enrichment is not deferred past `now`."""
    return or_(InboundEvent.next_attempt_at.is_(None), InboundEvent.next_attempt_at <= now)


def _count_failure(db: Database, event_id: str) -> None:
    with db.begin() as session:
        event = session.get(InboundEvent, event_id)
        event.attempts += 1
        if event.attempts >= MAX_NORMALISE_ATTEMPTS:
            event.status = EventStatus.REJECTED
            event.error = (f"normalisation failed {event.attempts} times with an internal "
                           "error; see the worker log, fix, then reprocess the event")
        else:  # also what takes it out of shared batches (normalise_pending)
            event.error = (f"normalisation failed with an internal error (attempt "
                           f"{event.attempts} of {MAX_NORMALISE_ATTEMPTS}); see the worker log")


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"%s %s\n" % (method.encode(), path.encode()) + body).hexdigest()


@dataclass
class StoredResponse:
    status: int
    body: dict[str, Any]
    replayed: bool = False


class IdempotencyMismatch(Exception):
    """The key was used with another request body."""


def submit_order(db: Database, *, client_id: str, source: Source, order: Mapping[str, Any],
                 idempotency_key: str | None, fingerprint: str,
                 render: Any) -> tuple[StoredResponse, VersionOutcome | None]:
    """Commit a REST order version with its deliveries (and the idempotent response) at once.

    `render(outcome) -> (status, body)` builds the response stored for replays.
    """
    with db.begin() as session:
        if idempotency_key:
            inserted, key_id = insert_ignore(session, IdempotencyKey, {
                "client_id": client_id, "key": idempotency_key, "fingerprint": fingerprint,
                "status_code": 0, "created_at": utcnow(),
            }, unique=("client_id", "key"))
            if not inserted:
                stored = session.get(IdempotencyKey, key_id)
                if stored.fingerprint != fingerprint:
                    raise IdempotencyMismatch(
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with; use a new Idempotency-Key for a new request")
                return StoredResponse(stored.status_code, stored.response or {}, True), None
        outcome = apply_version(session, source, order)
        status, body = render(outcome)
        if idempotency_key:
            stored = session.get(IdempotencyKey, key_id)
            stored.status_code, stored.response = status, body
        return StoredResponse(status, body), outcome
