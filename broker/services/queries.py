"""Read models for the API and the CLI: an order with its journey, lists with cursors."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from broker.models import (
    Connector,
    Delivery,
    DeliveryAttempt,
    InboundEvent,
    Order,
    OrderVersion,
    Source,
    TimelineEntry,
)
from broker.services import status as order_status
from broker.services.audit import scrub

MAX_PAGE = 200


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def order_summary(order: Order, source_name: str) -> dict[str, Any]:
    return {"id": order.id, "source": source_name, "external_id": order.external_id,
            "number": order.number, "channel": order.channel, "status": order.status,
            "currency": order.currency, "total": order.total, "email": order.email,
            "version": order.current_version, "received_at": _iso(order.received_at),
            "updated_at": _iso(order.updated_at)}


def order_visible(session: Session, order_id: str, source_ids: set[str] | None) -> bool:
    """Whether the order exists for a caller limited to `source_ids` (None: every source)."""
    source_id = session.execute(select(Order.source_id).where(Order.id == order_id)).scalar()
    return source_id is not None and (source_ids is None or source_id in source_ids)


def order_detail(session: Session, order_id: str, source_ids: set[str] | None = None,
                 payloads: bool = False) -> dict[str, Any] | None:
    """The order and its journey; None when absent or outside `source_ids` (no BOLA).

    With `payloads`, also the inbound events it came from, headers and body included, with
    the values of secret-looking keys and known secrets shown as "***".
    """
    row = session.execute(select(Order, Source.name).join(Source, Source.id == Order.source_id)
                          .where(Order.id == order_id)).first()
    if row is None or (source_ids is not None and row[0].source_id not in source_ids):
        return None
    order, source_name = row
    versions = session.execute(select(OrderVersion).where(OrderVersion.order_id == order.id)
                               .order_by(OrderVersion.version)).scalars().all()
    deliveries = session.execute(
        select(Delivery, Connector.name, OrderVersion.version)
        .join(Connector, Connector.id == Delivery.connector_id)
        .join(OrderVersion, OrderVersion.id == Delivery.order_version_id)
        .where(Delivery.order_id == order.id).order_by(Delivery.created_at)).all()
    attempts: dict[str, list[dict[str, Any]]] = {}
    for a in session.execute(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(
            [d.id for d, _, _ in deliveries])).order_by(DeliveryAttempt.number)).scalars():
        attempts.setdefault(a.delivery_id, []).append({
            "number": a.number, "outcome": a.outcome, "error": a.error, "reference": a.reference,
            "started_at": _iso(a.started_at), "duration_ms": a.duration_ms})
    timeline = session.execute(select(TimelineEntry).where(TimelineEntry.order_id == order.id)
                               .order_by(TimelineEntry.at, TimelineEntry.id)).scalars().all()
    detail = {
        **order_summary(order, source_name),
        **order_status.states_of(session, [order.id])[order.id],
        "order": next((v.data for v in reversed(versions) if v.applied), versions[-1].data
                      if versions else None),
        "versions": [{"version": v.version, "applied": v.applied, "digest": v.digest,
                      "channel_updated_at": _iso(v.channel_updated_at),
                      "event_id": v.inbound_event_id, "created_at": _iso(v.created_at)}
                     for v in versions],
        "deliveries": [{"id": d.id, "connector": name, "version": version, "action": d.action,
                        "status": d.status, "attempts": d.attempts, "reference": d.reference,
                        "last_error": d.last_error, "next_attempt_at": _iso(d.next_attempt_at),
                        "booked_at": _iso(d.booked_at), "parked_reason": d.parked_reason,
                        "parked_kind": d.parked_kind, "parked_key": d.parked_key,
                        "attempt_log": attempts.get(d.id, [])}
                       for d, name, version in deliveries],
        "timeline": [{"at": _iso(t.at), "step": t.step, "message": t.message,
                      "delivery_id": t.delivery_id} for t in timeline],
    }
    if payloads:
        event_ids = [v.inbound_event_id for v in versions if v.inbound_event_id]
        events = session.execute(select(InboundEvent).where(or_(
            InboundEvent.order_id == order.id, InboundEvent.id.in_(event_ids)))
            .order_by(InboundEvent.received_at, InboundEvent.id)).scalars().all()
        detail["events"] = [{**_event_summary(e), "headers": scrub(e.headers or {}),
                             "body": _payload(e.body), "fetched": _payload(e.fetched)} for e in events]
    return detail


def _event_summary(event: InboundEvent) -> dict[str, Any]:
    return {"id": event.id, "event_key": event.event_key, "topic": event.topic, "status": event.status,
            "error": event.error, "received_at": _iso(event.received_at),
            "processed_at": _iso(event.processed_at)}


def _payload(raw: bytes | None) -> Any:
    """A stored body for people: its JSON with secrets scrubbed, else its redacted text."""
    if raw is None:
        return None
    try:
        return scrub(json.loads(raw))
    except ValueError:
        return scrub(raw.decode("utf-8", errors="replace"))


def delivery_row(d: Delivery, connector: str, version: int) -> dict[str, Any]:
    return {"id": d.id, "order_id": d.order_id, "version": version, "connector": connector,
            "action": d.action, "status": d.status, "attempts": d.attempts, "reference": d.reference,
            "last_error": d.last_error, "parked_reason": d.parked_reason, "parked_kind": d.parked_kind,
            "parked_key": d.parked_key, "next_attempt_at": _iso(d.next_attempt_at),
            "booked_at": _iso(d.booked_at), "created_at": _iso(d.created_at),
            "updated_at": _iso(d.updated_at)}


def _deliveries() -> Any:
    return (select(Delivery, Connector.name, OrderVersion.version)
            .join(Connector, Connector.id == Delivery.connector_id)
            .join(OrderVersion, OrderVersion.id == Delivery.order_version_id))


def list_deliveries(session: Session, *, source_ids: set[str] | None = None, status: str | None = None,
                    connector: str | None = None, order_id: str | None = None, before: str | None = None,
                    limit: int = 50) -> list[dict[str, Any]]:
    """Newest first; `before` is the cursor (a delivery id)."""
    query = _deliveries()
    if source_ids is not None:
        query = query.join(Order, Order.id == Delivery.order_id).where(Order.source_id.in_(source_ids))
    if status:
        query = query.where(Delivery.status == status)
    if connector:
        query = query.where(Connector.name == connector)
    if order_id:
        query = query.where(Delivery.order_id == order_id)
    if before:
        query = query.where(Delivery.id < before)
    rows = session.execute(query.order_by(Delivery.id.desc()).limit(max(1, min(limit, MAX_PAGE))))
    return [delivery_row(d, name, version) for d, name, version in rows]


def delivery_detail(session: Session, delivery_id: str, source_ids: set[str] | None = None,
                    ) -> dict[str, Any] | None:
    """One delivery with its attempts; None when absent or outside `source_ids`."""
    query = _deliveries().join(Order, Order.id == Delivery.order_id).where(Delivery.id == delivery_id)
    if source_ids is not None:
        query = query.where(Order.source_id.in_(source_ids))
    row = session.execute(query).first()
    if row is None:
        return None
    attempts = session.execute(select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
                               .order_by(DeliveryAttempt.number)).scalars()
    return {**delivery_row(*row), "attempt_log": [
        {"number": a.number, "outcome": a.outcome, "error": a.error, "reference": a.reference,
         "started_at": _iso(a.started_at), "duration_ms": a.duration_ms} for a in attempts]}


def list_orders(session: Session, *, source_ids: set[str] | None = None, limit: int = 50,
                before: str | None = None, status: str | None = None, number: str | None = None,
                external_id: str | None = None, email: str | None = None, reference: str | None = None,
                delivery_status: str | None = None, source: str | None = None,
                received_from: datetime | None = None, received_to: datetime | None = None,
                state: str | None = None) -> list[dict[str, Any]]:
    """Newest first, each with its status (broker.services.status) and back-office references;
    `before` is the cursor (an order id, ids are time-ordered).

    Every filter is an equality or range on an indexed column (migration 0006), so a search
    costs the same on a million orders as on a hundred; `state` (booked, dead, …) reads the
    deliveries of the orders it passes through.
    """
    query = select(Order, Source.name).join(Source, Source.id == Order.source_id)
    if source_ids is not None:
        query = query.where(Order.source_id.in_(source_ids))
    if before:
        query = query.where(Order.id < before)
    if status:
        query = query.where(Order.status == status)
    if number:  # "#1042" and "1042" both find the order numbered #1042
        query = query.where(Order.number.in_(sorted({number, "#" + number.lstrip("#"), number.lstrip("#")})))
    if external_id:
        query = query.where(Order.external_id == external_id)
    if email:
        query = query.where(Order.email.in_(sorted({email, email.lower()})))
    if source:
        query = query.where(Source.name == source)
    if received_from:
        query = query.where(Order.received_at >= received_from)
    if received_to:
        query = query.where(Order.received_at < received_to)
    if reference:
        query = query.where(Order.id.in_(select(Delivery.order_id).where(Delivery.reference == reference)))
    if delivery_status:
        query = query.where(Order.id.in_(select(Delivery.order_id).where(Delivery.status == delivery_status)))
    if state:
        query = query.where(order_status.state_filter(state))
    rows = session.execute(query.order_by(Order.id.desc()).limit(max(1, min(limit, MAX_PAGE)))).all()
    states = order_status.states_of(session, [o.id for o, _ in rows])
    return [{**order_summary(o, name), **states[o.id]} for o, name in rows]


def event_detail(session: Session, event_id: str) -> dict[str, Any] | None:
    event = session.get(InboundEvent, event_id)
    if event is None:
        return None
    return {"id": event.id, "source_id": event.source_id, "event_key": event.event_key,
            "topic": event.topic, "status": event.status, "error": event.error,
            "order_id": event.order_id, "attempts": event.attempts,
            "received_at": _iso(event.received_at), "processed_at": _iso(event.processed_at),
            "next_attempt_at": _iso(event.next_attempt_at), "waiting_for": event.waiting_for,
            "headers": event.headers}


def list_events(session: Session, *, status: str | None = None, source: str | None = None,
                limit: int = 50) -> list[dict[str, Any]]:
    """Newest first, so an operator sees what just went wrong."""
    query = (select(InboundEvent, Source.name).join(Source, Source.id == InboundEvent.source_id)
             .order_by(InboundEvent.received_at.desc()).limit(limit))
    if status:
        query = query.where(InboundEvent.status == status)
    if source:
        query = query.where(Source.name == source)
    return [{"id": e.id, "source": name, "event_key": e.event_key, "topic": e.topic,
             "status": e.status, "error": e.error, "order_id": e.order_id,
             "waiting_for": e.waiting_for, "received_at": _iso(e.received_at)}
            for e, name in session.execute(query)]
