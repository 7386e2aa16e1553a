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
from collections import Counter, defaultdict
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


def order_kpis(session: Session, now: datetime, days: int = 7) -> Kpis:
    """The dashboard's figures for the `days` up to `now` (UTC days)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = today - timedelta(days=days - 1)
    # Each query starts from the window's orders (ix_orders_received_at) and reaches their
    # deliveries and timeline through the order_id indexes, never scanning the whole history.
    window = select(Order.id).where(Order.received_at >= since).scalar_subquery()
    window_orders = session.execute(
        select(Order.id, Order.received_at, Order.channel).where(Order.received_at >= since)).all()
    received = {order_id: at for order_id, at, _ in window_orders}
    week, day = Counter(), Counter()
    for _, at, channel in window_orders:
        week[channel or "unknown"] += 1
        day[channel or "unknown"] += at >= today
    journeys = session.execute(
        select(Delivery.order_id,
               func.sum(case((Delivery.status.in_(OPEN), 1), else_=0)),
               func.sum(case((Delivery.status == DeliveryStatus.BOOKED, 1), else_=0)),
               func.max(Delivery.booked_at))
        .where(Delivery.order_id.in_(window)).group_by(Delivery.order_id)).all()
    touched = set(session.execute(
        select(TimelineEntry.order_id).where(TimelineEntry.order_id.in_(window),
                                             TimelineEntry.step.in_(HUMAN_STEPS)).distinct()
    ).scalars())
    latencies: list[float] = []
    per_day: dict[str, list[float]] = defaultdict(list)
    booked = touchless = 0
    for order_id, open_count, booked_count, booked_at in journeys:
        received_at = received.get(order_id)
        if received_at is None or not booked_count or open_count or booked_at is None:
            continue
        booked += 1
        touchless += order_id not in touched
        seconds = max(0.0, (booked_at - received_at).total_seconds())
        latencies.append(seconds)
        per_day[received_at.date().isoformat()].append(seconds)
    day_list = [(since + timedelta(days=i)).date().isoformat() for i in range(days)]
    return Kpis(
        today_by_channel={c: n for c, n in day.most_common() if n},
        week_by_channel=dict(week.most_common()),
        received=len(received), booked=booked, touchless=touchless,
        p50_seconds=percentile(latencies, 50), p95_seconds=percentile(latencies, 95),
        days=[DayLatency(d, len(per_day[d]), percentile(per_day[d], 50),
                         percentile(per_day[d], 95)) for d in day_list])
