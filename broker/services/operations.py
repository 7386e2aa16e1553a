"""Operator actions: replay an order's failed deliveries, reprocess a rejected event."""

from __future__ import annotations

from sqlalchemy import select

from broker.db import Database, utcnow
from broker.models import Connector, Delivery, DeliveryStatus, Order, OrderVersion
from broker.services import audit, timeline
from broker.services.orders import route_version

REPLAYABLE = (DeliveryStatus.DEAD, DeliveryStatus.PARKED)


def replay_order(db: Database, order_id: str, actor: str = audit.SYSTEM) -> list[tuple[str, str]]:
    """Make the dead or parked deliveries of the order's current version due again.

    When the current version has no delivery at all (no route existed), route it now.
    Pushes are idempotent, so a replay never books twice. Returns connectors to wake.
    """
    with db.begin() as session:
        order = session.execute(select(Order).where(Order.id == order_id)
                                .with_for_update()).scalar_one_or_none()
        if order is None:
            raise LookupError(f"no order {order_id}")
        version = session.execute(select(OrderVersion).where(
            OrderVersion.order_id == order.id, OrderVersion.applied.is_(True))
            .order_by(OrderVersion.version.desc()).limit(1)).scalar_one()
        deliveries = session.execute(select(Delivery).where(
            Delivery.order_version_id == version.id)).scalars().all()
        if not deliveries:
            timeline.record(session, order.id, "replayed", f"routed again by {actor}")
            wake = route_version(session, order, version, version.data)
            audit.record(session, actor=actor, action="order.replay", target_type="order", target=order.id,
                         before={"version": version.version, "deliveries": {}},
                         after={"version": version.version, "routed_again": True,
                                "connectors_to_wake": len(wake)})
            return wake
        now, wake = utcnow(), []
        replayed: dict[str, str] = {}
        for d in deliveries:
            if d.status not in REPLAYABLE:
                continue
            replayed[d.id] = d.status
            timeline.record(session, order.id, "replayed",
                            f"delivery replayed by {actor} (was {d.status})", delivery_id=d.id)
            d.status, d.attempts, d.next_attempt_at, d.last_error = DeliveryStatus.PENDING, 0, now, None
            d.lease_until, d.lease_token, d.updated_at = None, None, now
            d.parked_reason = d.parked_kind = d.parked_key = None
            wake.append((d.connector_id, session.get(Connector, d.connector_id).queue))
        audit.record(session, actor=actor, action="order.replay", target_type="order", target=order.id,
                     before={"version": version.version, "deliveries": replayed},
                     after={"version": version.version,
                            "deliveries": {d: DeliveryStatus.PENDING for d in replayed}})
        return wake
