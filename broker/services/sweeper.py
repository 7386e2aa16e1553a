"""The sweeper: the database, not the queue, decides what is due, so a lost message loses nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, exists, select, update

from broker.db import Database
from broker.models import Connector, Delivery, DeliveryStatus, EventStatus, InboundEvent, Order
from broker.services import leases
from broker.services.delivery import db_now, due
from broker.services.intake import due_event
from connectors.errors import IdentityReview, MissingMapping

RECHECK_PARKED_SECONDS = 900  # a product or customer may be created or fixed in the back office
RECHECKED = (MissingMapping.reason, IdentityReview.reason)


@dataclass
class SweepResult:
    connectors: list[tuple[str, str]]  # (connector id, queue) with due work
    events: list[str]                  # inbound events still waiting for normalisation
    released: int = 0                  # parked events whose order has arrived meanwhile
    rechecked: int = 0                 # deliveries parked on a mapping or an identity, tried again


def sweep(db: Database, *, grace_seconds: float, fence: int | None) -> SweepResult:
    """Find due deliveries (incl. expired leases) and events stuck before normalisation.

    Also returns parked events whose order arrived while they were being parked (the create's
    own release could not see them yet). Done only under the sweeper lease's current token
    (`fence`, from the beat that published the sweep); raises leases.Fenced otherwise.
    """
    with db.begin() as session:
        leases.fence(session, leases.SWEEPER, fence)
        now = db_now(session)
        rechecked = session.execute(  # the product may have been created in the back office
            update(Delivery)
            .where(Delivery.status == DeliveryStatus.PARKED,
                   Delivery.parked_reason.in_(RECHECKED),
                   Delivery.updated_at < now - timedelta(seconds=RECHECK_PARKED_SECONDS))
            .values(status=DeliveryStatus.PENDING, next_attempt_at=now, updated_at=now)
            .execution_options(synchronize_session=False)).rowcount
        released = session.execute(
            update(InboundEvent)
            .where(InboundEvent.status == EventStatus.PARKED,
                   exists().where(and_(Order.source_id == InboundEvent.source_id,
                                       Order.external_id == InboundEvent.waiting_for)))
            .values(status=EventStatus.RECEIVED, error=None)
            .execution_options(synchronize_session=False)).rowcount
        connectors = session.execute(
            select(Connector).where(
                Connector.enabled.is_(True),
                Connector.id.in_(select(Delivery.connector_id).where(due(now)).distinct()))
        ).scalars().all()
        events = session.execute(
            select(InboundEvent.id).where(
                InboundEvent.status == EventStatus.RECEIVED, due_event(now),
                InboundEvent.received_at < now - timedelta(seconds=grace_seconds))
            .order_by(InboundEvent.received_at).limit(1)
        ).scalars().all()
    return SweepResult([(c.id, c.queue) for c in connectors], list(events), released, rechecked)
