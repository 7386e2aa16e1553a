"""Operator actions: replay an order's failed deliveries, reprocess a rejected event."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db import Database, utcnow
from broker.models import Connector, Delivery, DeliveryStatus, Order, OrderVersion
from broker.services import audit, timeline
from broker.services.orders import route_version

REPLAYABLE = (DeliveryStatus.DEAD, DeliveryStatus.PARKED)
REPLAY_BATCH = 500


class NotReplayable(ValueError):
    """The delivery is not in a state the action applies to; the message says what to do."""


def _resume(session: Session, d: Delivery, actor: str, now: datetime) -> tuple[str, str]:
    """Make one dead or parked delivery due now, with its timeline entry; returns what to wake."""
    timeline.record(session, d.order_id, "replayed", f"delivery replayed by {actor} (was {d.status})",
                    delivery_id=d.id)
    d.status, d.attempts, d.next_attempt_at, d.last_error = DeliveryStatus.PENDING, 0, now, None
    d.lease_until, d.lease_token, d.updated_at = None, None, now
    d.parked_reason = d.parked_kind = d.parked_key = None
    return d.connector_id, session.get(Connector, d.connector_id).queue


def replay_order(db: Database, order_id: str, actor: str = audit.SYSTEM) -> list[tuple[str, str]]:
    """Make the dead or parked deliveries of the order's current version due again, and route
    it to every connector its routes name that has no delivery of it (a route added since, or
    one that was missing). Pushes are idempotent, so a replay never books twice.
    Returns connectors to wake.
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
        now, wake = utcnow(), []
        replayed: dict[str, str] = {}
        for d in deliveries:
            if d.status in REPLAYABLE:
                replayed[d.id] = d.status
                wake.append(_resume(session, d, actor, now))
        routed = route_version(session, order, version, version.data,
                               skip={d.connector_id for d in deliveries})
        if routed:
            timeline.record(session, order.id, "replayed",
                            f"routed again by {actor} to {len(routed)} more connector(s)")
        audit.record(session, actor=actor, action="order.replay", target_type="order", target=order.id,
                     before={"version": version.version, "deliveries": replayed},
                     after={"version": version.version,
                            "deliveries": {d: DeliveryStatus.PENDING for d in replayed},
                            "routed_again": len(routed)})
        return wake + routed


def _locked_delivery(session: Session, delivery_id: str) -> Delivery:
    delivery = session.execute(select(Delivery).where(Delivery.id == delivery_id)
                               .with_for_update()).scalar_one_or_none()
    if delivery is None:
        raise LookupError(f"no delivery {delivery_id}")
    return delivery


def replay_delivery(db: Database, delivery_id: str, actor: str = audit.SYSTEM) -> list[tuple[str, str]]:
    """Make one dead or parked delivery due again (idempotent pushes: never books twice)."""
    with db.begin() as session:
        d = _locked_delivery(session, delivery_id)
        if d.status not in REPLAYABLE:
            raise NotReplayable(f"delivery {d.id} is {d.status}; only dead or parked deliveries "
                                "are replayed (retry a pending one)")
        before = d.status
        wake = [_resume(session, d, actor, utcnow())]
        audit.record(session, actor=actor, action="delivery.replay", target_type="delivery",
                     target=d.id, before={"status": before, "order_id": d.order_id},
                     after={"status": DeliveryStatus.PENDING})
        return wake


def retry_delivery(db: Database, delivery_id: str, actor: str = audit.SYSTEM) -> list[tuple[str, str]]:
    """Attempt a pending delivery (one waiting for its next try after a failure) now."""
    with db.begin() as session:
        d = _locked_delivery(session, delivery_id)
        if d.status != DeliveryStatus.PENDING:
            hint = "replay it instead" if d.status in REPLAYABLE else "nothing to retry"
            raise NotReplayable(f"delivery {d.id} is {d.status}, not pending; {hint}")
        now, before = utcnow(), d.next_attempt_at
        d.next_attempt_at, d.updated_at = now, now
        timeline.record(session, d.order_id, "retry", f"next attempt moved to now by {actor}",
                        delivery_id=d.id)
        audit.record(session, actor=actor, action="delivery.retry", target_type="delivery",
                     target=d.id, before={"next_attempt_at": before.isoformat() if before else None,
                                          "attempts": d.attempts},
                     after={"next_attempt_at": now.isoformat()})
        return [(d.connector_id, session.get(Connector, d.connector_id).queue)]


def replay_dead_letters(db: Database, delivery_ids: list[str], *, selection: dict[str, str | None],
                        actor: str = audit.SYSTEM) -> tuple[int, list[tuple[str, str]]]:
    """Replay the given dead letters in short transactions (one audit entry for the batch
    request, a timeline entry per delivery); one that is no longer dead is left alone.

    Returns (replayed, connectors to wake).
    """
    replayed, wake = 0, set()
    for start in range(0, len(delivery_ids), REPLAY_BATCH):
        with db.begin() as session:
            rows = session.execute(select(Delivery).where(
                Delivery.id.in_(delivery_ids[start:start + REPLAY_BATCH]),
                Delivery.status == DeliveryStatus.DEAD).with_for_update()).scalars().all()
            now = utcnow()
            for d in rows:
                wake.add(_resume(session, d, actor, now))
            replayed += len(rows)
            if start + REPLAY_BATCH >= len(delivery_ids):
                audit.record(session, actor=actor, action="deliveries.replay", target_type="delivery",
                             target=None, before={"selection": selection, "confirmed": len(delivery_ids)},
                             after={"replayed": replayed})
    return replayed, sorted(wake)
