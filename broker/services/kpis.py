"""Order-to-cash figures for the dashboard: how many orders came in, how many reached the
books, how many needed a person, and how long the journey took.

An order counts as *booked* when every live delivery of it is booked (superseded ones
don't count), and as *touchless* when it was booked without any human action on it (no
replay, retry or resume in its timeline). Received-to-booked latency runs from the moment
the broker received the order to its last booking. Everything is computed over a window of
days from indexed columns (orders.received_at, deliveries by order), in two queries.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from broker.models import Delivery, DeliveryStatus, Order, TimelineEntry

HUMAN_STEPS = ("replayed", "retry", "resumed")  # timeline steps only a person causes
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.LEASED, DeliveryStatus.PARKED, DeliveryStatus.DEAD)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class DayLatency:
    day: str
    booked: int
    p50: float | None
    p95: float | None


@dataclass
class Kpis:
    today_by_channel: dict[str, int]
    week_by_channel: dict[str, int]
    received: int
    booked: int
    touchless: int
    p50_seconds: float | None
    p95_seconds: float | None
    days: list[DayLatency] = field(default_factory=list)

    @property
    def booked_pct(self) -> float | None:
        return round(100 * self.booked / self.received, 1) if self.received else None

    @property
    def touchless_pct(self) -> float | None:
        return round(100 * self.touchless / self.booked, 1) if self.booked else None


def _by_channel(session: Session, since: datetime) -> dict[str, int]:
    rows = session.execute(select(Order.channel, func.count()).where(Order.received_at >= since)
                           .group_by(Order.channel)).all()
    return {str(channel or "unknown"): int(n) for channel, n in sorted(rows, key=lambda r: -r[1])}


def order_kpis(session: Session, now: datetime, days: int = 7) -> Kpis:
    """The dashboard's figures for the `days` up to `now` (UTC days)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    journeys = session.execute(
        select(Order.id, Order.received_at,
               func.sum(case((Delivery.status.in_(OPEN), 1), else_=0)),
               func.sum(case((Delivery.status == DeliveryStatus.BOOKED, 1), else_=0)),
               func.max(Delivery.booked_at))
        .join(Delivery, Delivery.order_id == Order.id, isouter=True)
        .where(Order.received_at >= since).group_by(Order.id, Order.received_at)).all()
    touched = set(session.execute(
        select(TimelineEntry.order_id).join(Order, Order.id == TimelineEntry.order_id)
        .where(Order.received_at >= since, TimelineEntry.step.in_(HUMAN_STEPS)).distinct()
    ).scalars())
    latencies: list[float] = []
    per_day: dict[str, list[float]] = defaultdict(list)
    booked = touchless = 0
    for order_id, received_at, open_count, booked_count, booked_at in journeys:
        if not booked_count or open_count or booked_at is None:
            continue
        booked += 1
        touchless += order_id not in touched
        seconds = max(0.0, (booked_at - received_at).total_seconds())
        latencies.append(seconds)
        per_day[received_at.date().isoformat()].append(seconds)
    day_list = [(since + timedelta(days=i)).date().isoformat() for i in range(days)]
    return Kpis(
        today_by_channel=_by_channel(session, today), week_by_channel=_by_channel(session, since),
        received=len(journeys), booked=booked, touchless=touchless,
        p50_seconds=percentile(latencies, 50), p95_seconds=percentile(latencies, 95),
        days=[DayLatency(d, len(per_day[d]), percentile(per_day[d], 50),
                         percentile(per_day[d], 95)) for d in day_list])
