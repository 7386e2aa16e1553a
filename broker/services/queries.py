"""Read models for the API and the CLI: an order with its journey, lists with cursors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
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
                 ) -> dict[str, Any] | None:
    """The order and its journey; None when absent or outside `source_ids` (no BOLA)."""
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
    return {
        **order_summary(order, source_name),
        "order": next((v.data for v in reversed(versions) if v.applied), versions[-1].data
                      if versions else None),
        "versions": [{"version": v.version, "applied": v.applied, "digest": v.digest,
                      "channel_updated_at": _iso(v.channel_updated_at),
                      "event_id": v.inbound_event_id, "created_at": _iso(v.created_at)}
                     for v in versions],
        "deliveries": [{"id": d.id, "connector": name, "version": version, "action": d.action,
                        "status": d.status, "attempts": d.attempts, "reference": d.reference,
                        "last_error": d.last_error, "next_attempt_at": _iso(d.next_attempt_at),
                        "booked_at": _iso(d.booked_at), "attempt_log": attempts.get(d.id, [])}
                       for d, name, version in deliveries],
        "timeline": [{"at": _iso(t.at), "step": t.step, "message": t.message,
                      "delivery_id": t.delivery_id} for t in timeline],
    }


def list_orders(session: Session, *, source_ids: set[str] | None = None, limit: int = 50,
                before: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Newest first; `before` is the cursor (an order id, ids are time-ordered)."""
    query = select(Order, Source.name).join(Source, Source.id == Order.source_id)
    if source_ids is not None:
        query = query.where(Order.source_id.in_(source_ids))
    if before:
        query = query.where(Order.id < before)
    if status:
        query = query.where(Order.status == status)
    rows = session.execute(query.order_by(Order.id.desc()).limit(max(1, min(limit, MAX_PAGE))))
    return [order_summary(o, name) for o, name in rows]


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
