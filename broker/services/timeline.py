"""The per-order timeline: every step an operator may need to see (DESIGN invariant 3)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from broker.models import TimelineEntry


def record(session: Session, order_id: str, step: str, message: str = "", *,
           delivery_id: str | None = None, **data: Any) -> None:
    session.add(TimelineEntry(order_id=order_id, step=step, message=message,
                              delivery_id=delivery_id, data=data))
