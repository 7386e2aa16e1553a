"""Read-only figures about the backlog, for metrics and health."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from broker.db import Database
from broker.models import Delivery, DeliveryStatus
from broker.services.delivery import db_now


@dataclass
class Backlog:
    oldest_due_age: float
    by_status: dict[str, int]


def backlog(db: Database) -> Backlog:
    with db.begin() as session:
        now = db_now(session)
        oldest = session.execute(select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.LEASED]),
            Delivery.next_attempt_at <= now)).scalar()
        counts = dict(session.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)).all())
    age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return Backlog(age, {str(k): int(v) for k, v in counts.items()})
