"""Intake: store a verified webhook raw (gateway), normalise it (worker), accept REST orders."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.channels.base import PayloadError, channel_for
from broker.db import Database, insert_ignore, utcnow
from broker.models import EventStatus, IdempotencyKey, InboundEvent, Source
from broker.schemas.order import flatten_errors, load_order
from broker.services.orders import VersionOutcome, apply_version
from broker.services.routing import RouteTable

log = logging.getLogger(__name__)


def parse_json(body: bytes) -> Any:
    """JSON with exact decimals: money never passes through a float."""
    return json.loads(body, parse_float=Decimal)


def store_event(db: Database, source_id: str, event_key: str, topic: str | None,
                headers: Mapping[str, str], body: bytes) -> tuple[bool, str]:
    """Commit the raw event (deduplicated on the vendor's id) and return (new, event id).

    Core, not the ORM: this is the gateway's hot path.
    """
    with db.engine.begin() as conn:
        return insert_ignore(conn, InboundEvent, {
            "source_id": source_id, "event_key": event_key, "topic": topic,
            "headers": dict(headers), "body": body, "status": EventStatus.RECEIVED,
            "attempts": 0, "received_at": utcnow(),
        }, unique=("source_id", "event_key"))


@dataclass
class NormaliseResult:
    status: str
    error: str | None = None
    source: str = ""
    outcomes: list[VersionOutcome] = field(default_factory=list)

    @property
    def wake(self) -> list[tuple[str, str]]:
        return sorted({w for outcome in self.outcomes for w in outcome.wake})


def _describe(exc: ValidationError) -> str:
    fields = flatten_errors(exc.messages)
    return "; ".join(f"{path}: {' '.join(msgs)}" for path, msgs in sorted(fields.items()))


MAX_NORMALISE_ATTEMPTS = 5


def _normalise(session: Session, event: InboundEvent, source: Source,
               routes: RouteTable | None = None) -> NormaliseResult:
    """Map one locked event to order versions; a mapping problem rejects it with the reason."""
    event.attempts += 1
    event.processed_at = utcnow()
    try:
        documents = channel_for(source.kind).to_orders(event.topic, parse_json(event.body))
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
        result.outcomes.append(apply_version(session, source, order, event_id=event.id,
                                             received_at=event.received_at, routes=routes))
    event.status, event.error = EventStatus.NORMALISED, None
    event.order_id = result.outcomes[0].order_id
    return result


def normalise_event(db: Database, event_id: str, *, force: bool = False) -> NormaliseResult:
    """Normalise one event in its own transaction; `force` reprocesses a rejected one."""
    with db.begin() as session:
        event = session.execute(select(InboundEvent).where(InboundEvent.id == event_id)
                                .with_for_update()).scalar_one_or_none()
        if event is None:
            raise LookupError(f"no inbound event {event_id}")
        source = session.get(Source, event.source_id)
        if event.status != EventStatus.RECEIVED and not force:
            return NormaliseResult(event.status, event.error, source.name)
        return _normalise(session, event, source)


def normalise_pending(db: Database, *, limit: int) -> list[NormaliseResult]:
    """Normalise up to `limit` waiting events in one transaction.

    One commit and one wake-up per batch instead of per event; events another worker holds
    are skipped (SKIP LOCKED). Should normalisation itself fail (not a payload: those are
    rejected), the batch is rolled back and each event retried in a transaction of its own,
    so one bad event never holds up the others; after MAX_NORMALISE_ATTEMPTS it is rejected.
    """
    ids: list[str] = []
    try:
        with db.begin() as session:
            events = session.execute(
                select(InboundEvent).where(InboundEvent.status == EventStatus.RECEIVED)
                .order_by(InboundEvent.received_at).limit(limit)
                .with_for_update(skip_locked=True)).scalars().all()
            ids = [event.id for event in events]
            sources: dict[str, Source] = {}
            routes: RouteTable = {}
            results = []
            for event in events:
                source = sources.get(event.source_id) or session.get(Source, event.source_id)
                sources[event.source_id] = source
                with session.no_autoflush:  # one flush per event instead of one per query
                    results.append(_normalise(session, event, source, routes))
                session.flush()
        return results
    except Exception:
        log.exception("a batch of %d events failed to normalise; retrying one by one", len(ids))
    results = []
    for event_id in ids:
        try:
            results.append(normalise_event(db, event_id))
        except Exception:
            log.exception("normalising event %s failed; it stays waiting", event_id)
            _count_failure(db, event_id)
    return results


def _count_failure(db: Database, event_id: str) -> None:
    with db.begin() as session:
        event = session.get(InboundEvent, event_id)
        event.attempts += 1
        if event.attempts >= MAX_NORMALISE_ATTEMPTS:
            event.status = EventStatus.REJECTED
            event.error = (f"normalisation failed {event.attempts} times with an internal "
                           "error; see the worker log, fix, then reprocess the event")


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
