"""The sweeper: the database, not the queue, decides what is due, so a lost message loses nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select

from broker.db import Database
from broker.models import Connector, Delivery, EventStatus, InboundEvent
from broker.services.delivery import db_now, due


@dataclass
class SweepResult:
    connectors: list[tuple[str, str]]  # (connector id, queue) with due work
    events: list[str]                  # inbound events still waiting for normalisation


def sweep(db: Database, *, grace_seconds: float) -> SweepResult:
    """Find due deliveries (incl. expired leases) and events stuck before normalisation."""
    with db.begin() as session:
        now = db_now(session)
        connectors = session.execute(
            select(Connector).where(
                Connector.enabled.is_(True),
                Connector.id.in_(select(Delivery.connector_id).where(due(now)).distinct()))
        ).scalars().all()
        events = session.execute(
            select(InboundEvent.id).where(
                InboundEvent.status == EventStatus.RECEIVED,
                InboundEvent.received_at < now - timedelta(seconds=grace_seconds))
            .order_by(InboundEvent.received_at).limit(1)
        ).scalars().all()
    return SweepResult([(c.id, c.queue) for c in connectors], list(events))
