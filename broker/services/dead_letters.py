"""Dead letters grouped by why they died, so an operator fixes one cause and replays its
deliveries together instead of reading them one by one.

A reason is the error class (how the delivery died) and the error message with its
order-specific parts elided (quoted values, long numbers, ids, emails), so "SKU 'A-1' has no
product" and "SKU 'B-7' has no product" are one reason. Its id is a short hash of both, the
same on every connector, so a bulk replay can name it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.models import Connector, Delivery, DeliveryStatus, Order

ERROR_CLASSES = ("permanent", "retries_exhausted", "worker_crash")
_ELIDE = [
    (re.compile(r"'[^']*'"), "'…'"),
    (re.compile(r'"[^"]*"'), '"…"'),
    (re.compile(r"\S+@\S+\.\w+"), "…"),
    (re.compile(r"\b(?=[0-9a-fA-F-]*\d)[0-9a-fA-F][0-9a-fA-F-]{7,}\b"), "…"),  # ids, uuids, dates
    (re.compile(r"\d+[.,]\d+|\d{4,}"), "…"),  # amounts, order numbers
]


def error_class(error: str | None) -> str:
    """How the delivery died, from the message the worker recorded (broker.services.delivery)."""
    text = error or ""
    if text.startswith("gave up after") and "the worker stopped" in text:
        return "worker_crash"
    if text.startswith("gave up after"):
        return "retries_exhausted"
    return "permanent"


def elide(error: str | None) -> str:
    text = (error or "").strip() or "(no error recorded)"
    for pattern, replacement in _ELIDE:
        text = pattern.sub(replacement, text)
    return text[:500]


def reason_of(error: str | None) -> tuple[str, str, str]:
    """(reason id, error class, elided message) of one dead letter's error."""
    cls, message = error_class(error), elide(error)
    return hashlib.sha256(f"{cls}\n{message}".encode()).hexdigest()[:16], cls, message


def _dead(source_ids: Iterable[str] | None) -> Any:
    query = (select(Connector.name, Delivery.last_error, func.count(), func.min(Delivery.updated_at),
                    func.max(Delivery.updated_at))
             .join(Connector, Connector.id == Delivery.connector_id)
             .where(Delivery.status == DeliveryStatus.DEAD)
             .group_by(Connector.name, Delivery.last_error))
    if source_ids is not None:
        query = query.join(Order, Order.id == Delivery.order_id).where(Order.source_id.in_(list(source_ids)))
    return query


def dead_letter_groups(session: Session, *, connector: str | None = None,
                       source_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Dead letters by connector and reason, biggest first, with their oldest and newest."""
    query = _dead(source_ids)
    if connector:
        query = query.where(Connector.name == connector)
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for name, error, count, oldest, newest in session.execute(query):
        reason, cls, message = reason_of(error)
        group = groups.setdefault((name, reason), {
            "connector": name, "reason": reason, "error_class": cls, "message": message,
            "example": error or "", "count": 0, "oldest": oldest, "newest": newest})
        group["count"] += count
        group["oldest"], group["newest"] = min(group["oldest"], oldest), max(group["newest"], newest)
    return sorted(groups.values(), key=lambda g: (-g["count"], g["connector"], g["reason"]))


def dead_letter_ids(session: Session, *, connector: str | None = None,
                    reason: str | None = None) -> list[str]:
    """Ids of the dead letters a bulk replay selects (oldest first)."""
    query = (select(Delivery.id, Delivery.last_error)
             .join(Connector, Connector.id == Delivery.connector_id)
             .where(Delivery.status == DeliveryStatus.DEAD).order_by(Delivery.id))
    if connector:
        query = query.where(Connector.name == connector)
    return [delivery_id for delivery_id, error in session.execute(query)
            if reason is None or reason_of(error)[0] == reason]
