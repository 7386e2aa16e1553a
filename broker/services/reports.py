"""Read-only figures about the backlog, for metrics and health."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from broker.db import Database
from broker.models import Connector, ConnectorGrant, Delivery, DeliveryStatus, Source
from broker.services.delivery import db_now


@dataclass
class Backlog:
    oldest_due_age: float
    by_status: dict[str, int]
    # Per enabled connector: deliveries due and waiting for a worker (what an autoscaler of
    # that connector's workers reads), 0 included so the series never disappears.
    due_by_connector: dict[str, int] = field(default_factory=dict)
    # Per connector holding an admin's consent: 1 when its refresh was refused (re-consent).
    consent_failed: dict[str, int] = field(default_factory=dict)
    # Per enabled source: 1 when its last catch-up poll failed.
    catchup_failing: dict[str, int] = field(default_factory=dict)


def backlog(db: Database) -> Backlog:
    with db.begin() as session:
        now = db_now(session)
        oldest = session.execute(select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.LEASED]),
            Delivery.next_attempt_at <= now)).scalar()
        counts = dict(session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        due = {name: 0 for name in session.execute(
            select(Connector.name).where(Connector.enabled.is_(True))).scalars()}
        due.update(session.execute(
            select(Connector.name, func.count()).select_from(Delivery)
            .join(Connector, Connector.id == Delivery.connector_id)
            .where(Connector.enabled.is_(True), Delivery.status == DeliveryStatus.PENDING,
                   Delivery.next_attempt_at <= now)
            .group_by(Connector.name)).all())
        consents = session.execute(
            select(Connector.name, ConnectorGrant.status)
            .join(ConnectorGrant, ConnectorGrant.connector_id == Connector.id)).all()
        catchups = session.execute(
            select(Source.name, Source.catchup_error).where(Source.enabled.is_(True))).all()
    age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    # Every status, 0 included: an alert on the first dead letter needs the series before it.
    by_status = {str(status): 0 for status in DeliveryStatus}
    by_status.update({str(k): int(v) for k, v in counts.items()})
    return Backlog(age, by_status,
                   due_by_connector={k: int(v) for k, v in due.items()},
                   consent_failed={name: int(status == "refresh_failed") for name, status in consents},
                   catchup_failing={name: int(error is not None) for name, error in catchups})
