"""One order status for the CLI, the API and the console, derived from each connector's newest
delivery: booked, partly booked, parked, dead, waiting or not routed, with the back-office
references; the SQL filter agrees with it on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
from typing import Any

from harness import Stack, order
from sqlalchemy import select, update

from broker.db import utcnow
from broker.models import Connector, Delivery, DeliveryStatus, Source
from broker.schemas.api import ORDER_STATES
from broker.schemas.order import load_order
from broker.services import status
from broker.services.orders import apply_version
from broker.services.queries import list_orders


def _order(stack: Stack, external_id: str, **changes: Any) -> str:
    with stack.runtime.db.begin() as session:
        source = session.execute(select(Source).where(Source.name == "shop")).scalar_one()
        return apply_version(session, source, load_order(order(external_id, **changes))).order_id


def _set(stack: Stack, order_id: str, connector: str, **values: Any) -> None:
    with stack.runtime.db.begin() as session:
        connector_id = session.execute(select(Connector.id).where(Connector.name == connector)).scalar_one()
        newest = session.execute(select(Delivery.id).where(
            Delivery.order_id == order_id, Delivery.connector_id == connector_id)
            .order_by(Delivery.id.desc()).limit(1)).scalar_one()
        session.execute(update(Delivery).where(Delivery.id == newest).values(**values))


def _setup(stack: Stack) -> None:
    stack.source("shop")
    for name in ("erp", "wh"):
        stack.cli("connectors", "add", name, "--kind", "http", "--config",
                  json.dumps({"url": f"https://{name}.example.com/orders"}))
        stack.route("shop", name)


def test_each_state_is_found_by_its_filter_on_every_database(db_stack: Stack) -> None:
    stack = db_stack
    _setup(stack)
    now = utcnow()
    booked = _order(stack, "S-1")
    for connector, ref in (("erp", "SO-1"), ("wh", "W-1")):
        _set(stack, booked, connector, status=DeliveryStatus.BOOKED, reference=ref, booked_at=now)
    partly = _order(stack, "S-2")
    _set(stack, partly, "erp", status=DeliveryStatus.BOOKED, reference="SO-2", booked_at=now)
    dead = _order(stack, "S-3")
    _set(stack, dead, "erp", status=DeliveryStatus.BOOKED, reference="SO-3", booked_at=now)
    _set(stack, dead, "wh", status=DeliveryStatus.DEAD, last_error="back office answered 422: no SKU")
    parked = _order(stack, "S-4")
    _set(stack, parked, "wh", status=DeliveryStatus.PARKED, parked_reason="missing setting",
         parked_kind="setting", parked_key="shipping_product")
    waiting = _order(stack, "S-5")
    _set(stack, waiting, "erp", attempts=3, last_error="back office answered 503")
    # a new version of a booked order: the update waits, so the order is no longer booked
    updated = _order(stack, "S-6")
    for connector in ("erp", "wh"):
        _set(stack, updated, connector, status=DeliveryStatus.BOOKED, reference="X-6", booked_at=now)
    _order(stack, "S-6", note="leave at the door", updated_at="2026-11-20T15:00:00Z")
    stack.cli("routes", "remove", "--source", "shop", "--connector", "wh")
    stack.cli("routes", "remove", "--source", "shop", "--connector", "erp")
    unrouted = _order(stack, "S-7")

    expected = {booked: "booked", partly: "partly booked", dead: "dead", parked: "parked",
                waiting: "waiting", updated: "waiting", unrouted: "not routed"}
    with stack.runtime.db.begin() as session:
        listed = {o["id"]: o for o in list_orders(session, limit=50)}
        assert {i: listed[i]["state"] for i in expected} == expected
        for state in status.STATES:
            found = {o["id"] for o in list_orders(session, limit=50, state=state)}
            assert found == {i for i, s in expected.items() if s == state}, state
    assert [r["reference"] for r in listed[booked]["references"]] == ["SO-1", "W-1"]
    assert listed[dead]["detail"] == "wh: back office answered 422: no SKU (1 of 2 booked)"
    assert listed[parked]["detail"] == "wh: missing setting shipping_product"
    assert "erp: retrying after 3 failed attempts (back office answered 503)" in listed[waiting]["detail"]
    assert (listed[dead]["tone"], listed[parked]["tone"], listed[booked]["tone"]) == ("bad", "warn", "ok")
    assert ORDER_STATES == status.STATES  # the API schema documents the same states


def test_the_api_lists_and_filters_orders_by_their_status(stack: Stack) -> None:
    _setup(stack)
    dead = _order(stack, "A-1")
    _set(stack, dead, "erp", status=DeliveryStatus.DEAD, last_error="refused")
    token = stack.token("reader", "orders:read admin")
    headers = {"Authorization": f"Bearer {token}"}
    page = stack.client.get("/api/v1/orders?state=dead", headers=headers).json
    assert [(o["id"], o["state"], o["tone"]) for o in page["items"]] == [(dead, "dead", "bad")]
    assert stack.client.get("/api/v1/orders?state=booked", headers=headers).json["items"] == []
    assert stack.client.get("/api/v1/orders?state=lost", headers=headers).status_code == 422
    detail = stack.client.get(f"/api/v1/orders/{dead}", headers=headers).json
    assert detail["state"] == "dead" and detail["detail"].startswith("erp: refused")


def test_a_disabled_connector_makes_the_order_wait_and_says_so(stack: Stack) -> None:
    _setup(stack)
    stack.cli("connectors", "disable", "wh")
    waiting = _order(stack, "D-1")
    _set(stack, waiting, "erp", status=DeliveryStatus.BOOKED, reference="SO-9", booked_at=utcnow())
    with stack.runtime.db.begin() as session:
        state = status.states_of(session, [waiting])[waiting]
    assert state["state"] == "partly booked" and state["detail"] == "wh: waiting: connector disabled"
