"""Order-to-cash figures (broker/services/kpis.py) from journeys written to each database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from broker.models import Connector, Delivery, DeliveryStatus, Order, OrderVersion, Source, TimelineEntry
from broker.services.kpis import order_kpis, percentile

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def journey(session: Any, source_id: str, connectors: list[str], number: str, channel: str,
            received: datetime, statuses: list[str], booked_after: float | None = None,
            touched: str | None = None) -> None:
    order = Order(source_id=source_id, external_id=number, number=number, channel=channel,
                  currency="EUR", total="10.00", received_at=received, updated_at=received)
    session.add(order)
    session.flush()
    version = OrderVersion(order_id=order.id, version=1, digest=number.ljust(64, "0"), data={})
    session.add(version)
    session.flush()
    for connector_id, status in zip(connectors, statuses, strict=False):
        booked_at = received + timedelta(seconds=booked_after) if (
            status == DeliveryStatus.BOOKED and booked_after is not None) else None
        session.add(Delivery(order_id=order.id, order_version_id=version.id,
                             connector_id=connector_id, status=status, booked_at=booked_at))
    if touched:
        session.add(TimelineEntry(order_id=order.id, step=touched, message="by an operator"))


def test_received_booked_touchless_and_latency(db_stack: Any) -> None:
    db_stack.source("shop")
    db_stack.http_connector("erp", "https://erp.example.com/orders")
    db_stack.http_connector("wms", "https://wms.example.com/orders")
    with db_stack.runtime.db.begin() as session:
        source_id = session.execute(select(Source.id)).scalar_one()
        connectors = list(session.execute(select(Connector.id).order_by(Connector.name)).scalars())
        booked, dead, parked = DeliveryStatus.BOOKED, DeliveryStatus.DEAD, DeliveryStatus.PARKED
        today, yesterday = NOW - timedelta(hours=2), NOW - timedelta(days=1, hours=3)
        journey(session, source_id, connectors, "1", "shopify", today, [booked], 10)
        journey(session, source_id, connectors, "2", "shopify", today, [booked], 30, "replayed")
        journey(session, source_id, connectors, "3", "stripe", today, [booked, dead], 5)
        journey(session, source_id, connectors, "4", "stripe", yesterday, [booked, "superseded"], 50)
        journey(session, source_id, connectors, "5", "shopify", yesterday, [parked])
        journey(session, source_id, connectors, "6", "shopify", yesterday, [])
        journey(session, source_id, connectors, "old", "shopify", NOW - timedelta(days=9),
                [booked], 1)
    with db_stack.runtime.db.begin() as session:
        kpis = order_kpis(session, NOW)
    assert kpis.today_by_channel == {"shopify": 2, "stripe": 1}
    assert kpis.week_by_channel == {"shopify": 4, "stripe": 2}
    assert (kpis.received, kpis.booked, kpis.touchless) == (6, 3, 2)
    assert kpis.booked_pct == 50.0 and kpis.touchless_pct == 66.7
    assert (kpis.p50_seconds, kpis.p95_seconds) == (30.0, 50.0)
    by_day = {d.day: d for d in kpis.days}
    assert len(kpis.days) == 7 and by_day["2026-11-20"].booked == 2
    assert (by_day["2026-11-19"].p50, by_day["2026-11-19"].p95) == (50.0, 50.0)
    assert by_day["2026-11-18"].p50 is None


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0
