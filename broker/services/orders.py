"""Applying an order version: dedupe, order by channel time, route, create deliveries.

REST intake and webhook normalisation both come through `apply_version`, in the caller's
transaction, so an order, its version and its deliveries are committed together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.db import insert_ignore, new_id, utcnow
from broker.models import Connector, Delivery, DeliveryStatus, Order, OrderVersion, Source
from broker.schemas.order import dump_order, dumped_digest
from broker.services import routing, timeline
from broker.services.delivery import delivery_action, serial_key


@dataclass
class VersionOutcome:
    order_id: str
    version: int
    created: bool           # the order is new
    duplicate: bool         # this exact content was seen before: nothing changed
    stale: bool = False     # older than the applied version: recorded, not applied
    wake: list[tuple[str, str]] = field(default_factory=list)  # (connector id, queue)


def _booked_reference(session: Session, order_id: str, connector_id: str) -> str | None:
    return session.execute(
        select(Delivery.reference).where(Delivery.order_id == order_id,
                                         Delivery.connector_id == connector_id,
                                         Delivery.status == DeliveryStatus.BOOKED).limit(1)
    ).scalar()


def route_version(session: Session, order: Order, version: OrderVersion,
                  data: Mapping[str, Any], *, new_order: bool = False,
                  routes: routing.RouteTable | None = None,
                  skip: Collection[str] = ()) -> list[tuple[str, str]]:
    """Create one delivery per matching connector (except those in `skip`); returns the
    (connector id, queue) to wake. A disabled connector's delivery waits until it is enabled."""
    wake: list[tuple[str, str]] = []
    connectors: list[Connector] = [
        c for c in routing.connectors_for(session, order.source_id, data, routes) if c.id not in skip]
    key = serial_key(data)
    for connector in connectors:
        superseded = 0 if new_order else session.execute(
            update(Delivery)
            .where(Delivery.order_id == order.id, Delivery.connector_id == connector.id,
                   Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.PARKED)))
            .values(status=DeliveryStatus.SUPERSEDED, updated_at=utcnow())
        ).rowcount
        if superseded:
            timeline.record(session, order.id, "superseded",
                            f"{superseded} waiting delivery to {connector.name} replaced by "
                            f"version {version.version}")
        reference = None if new_order else _booked_reference(session, order.id, connector.id)
        delivery = Delivery(id=new_id(), order_id=order.id, order_version_id=version.id,
                            connector_id=connector.id, serial_key=key,
                            action=delivery_action(order.status, reference))
        session.add(delivery)
        waits = "" if connector.enabled else "; the connector is disabled: it waits until enabled"
        timeline.record(session, order.id, "queued",
                        f"version {version.version} queued for {connector.name} "
                        f"({delivery.action}){waits}",
                        delivery_id=delivery.id, connector=connector.name)
        if connector.enabled:
            wake.append((connector.id, connector.queue))
    if not connectors and not skip:
        timeline.record(session, order.id, "unrouted",
                        "no route sends this order to a connector; add a route and replay it")
    return wake


def apply_version(session: Session, source: Source, order: Mapping[str, Any], *,
                  event_id: str | None = None, received_at: datetime | None = None,
                  routes: routing.RouteTable | None = None) -> VersionOutcome:
    """Record a validated canonical order as a new version of (source, external_id)."""
    data = dump_order(dict(order))
    digest = dumped_digest(data)
    updated_at: datetime | None = order.get("updated_at") or order.get("placed_at")
    now = utcnow()
    created, order_id = insert_ignore(session, Order, {
        "source_id": source.id, "external_id": order["external_id"],
        "number": order.get("number"), "channel": order.get("channel") or source.kind,
        "email": (order.get("customer") or {}).get("email"), "status": order.get("status", "open"),
        "currency": order["currency"], "total": data["totals"]["total"], "current_version": 1,
        "channel_updated_at": updated_at, "received_at": received_at or now, "updated_at": now,
    }, unique=("source_id", "external_id"))  # a new order is inserted as its version 1 already
    row = session.execute(select(Order).where(Order.id == order_id).with_for_update()).scalar_one()
    if created:
        timeline.record(session, row.id, "received", f"received from source {source.name}",
                        event_id=event_id)

    known = None if created else session.execute(select(OrderVersion.version).where(
        OrderVersion.order_id == row.id, OrderVersion.digest == digest)).scalar()
    if known is not None:
        return VersionOutcome(row.id, known, created=False, duplicate=True)

    stale = bool(updated_at and row.channel_updated_at and updated_at < row.channel_updated_at)
    version = OrderVersion(id=new_id(), order_id=row.id,
                           version=1 if created else row.current_version + 1,
                           digest=digest, data=data, channel_updated_at=updated_at,
                           applied=not stale, inbound_event_id=event_id)
    session.add(version)
    outcome = VersionOutcome(row.id, version.version, created=created, duplicate=False, stale=stale)
    # The version counter moves even for stale versions so version numbers stay unique.
    row.current_version = version.version
    if stale:
        timeline.record(session, row.id, "stale",
                        f"version {version.version} ({updated_at:%Y-%m-%dT%H:%M:%SZ}) is older than "
                        f"the applied one; recorded, not applied")
        return outcome
    row.number = order.get("number")
    row.email = (order.get("customer") or {}).get("email")
    row.status = order.get("status", "open")
    row.currency = order["currency"]
    row.total = data["totals"]["total"]
    row.channel_updated_at = updated_at
    row.updated_at = now
    timeline.record(session, row.id, "normalised",
                    f"version {version.version} accepted ({row.status}, {row.total} {row.currency})")
    outcome.wake = route_version(session, row, version, data, new_order=created, routes=routes)
    return outcome
