"""Which connectors an order goes to: routes from its source, optionally filtered."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.models import Connector, Route

FILTER_KEYS = ("channel", "tags", "currency", "country")


def _country(order: Mapping[str, Any]) -> str | None:
    address = order.get("shipping_address") or order.get("billing_address") or {}
    return address.get("country")


def route_matches(filters: Mapping[str, Any], order: Mapping[str, Any]) -> bool:
    """True when every filter present lets the order through; an empty filter passes all."""
    checks = {
        "channel": lambda allowed: order.get("channel") in allowed,
        "tags": lambda allowed: bool(set(order.get("tags") or ()) & set(allowed)),
        "currency": lambda allowed: order.get("currency") in allowed,
        "country": lambda allowed: _country(order) in allowed,
    }
    return all(checks[key](values) for key, values in filters.items() if values)


RouteTable = dict[str, list[tuple[Route, Connector]]]


def routes_of(session: Session, source_id: str, cache: RouteTable | None = None,
              ) -> list[tuple[Route, Connector]]:
    """Enabled routes of a source, to enabled and disabled connectors alike (a disabled
    connector's deliveries wait until it is enabled); `cache` lets a batch read them once."""
    if cache is not None and source_id in cache:
        return cache[source_id]
    rows = [tuple(row) for row in session.execute(
        select(Route, Connector)
        .join(Connector, Connector.id == Route.connector_id)
        .where(Route.source_id == source_id, Route.enabled.is_(True))
        .order_by(Connector.name)
    ).all()]
    if cache is not None:
        cache[source_id] = rows
    return rows


def connectors_for(session: Session, source_id: str, order: Mapping[str, Any],
                   cache: RouteTable | None = None) -> list[Connector]:
    return [connector for route, connector in routes_of(session, source_id, cache)
            if route_matches(route.filters or {}, order)]
