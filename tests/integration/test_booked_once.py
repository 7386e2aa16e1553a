"""Booked once across versions, leases that outlast slow pushes, and connectors that wait.

A back office that wrote version 1 but whose answer was lost must end up with one record
holding the newest version, whether it honours idempotency keys or can only be looked up; a
back office at 7 s per call keeps every lease and never sees one order pushed twice at once;
orders that arrive while their connector is disabled book once it is enabled again.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import Stack, order, wait_until

from broker.models import Delivery, DeliveryStatus, Order
from broker.services.operations import replay_order
from broker.services.setup import set_enabled

LOSSES = {"dropped connection": None, "read timeout": 3.0}


def booked_version(stack: Stack, external_id: str) -> int | None:
    """The version of the order's latest booked delivery (None before any booking)."""
    from broker.models import OrderVersion

    with stack.runtime.db.begin() as session:
        return session.query(OrderVersion.version).join(
            Delivery, Delivery.order_version_id == OrderVersion.id).join(
            Order, Order.id == Delivery.order_id).filter(
            Order.external_id == external_id, Delivery.status == DeliveryStatus.BOOKED).order_by(
            OrderVersion.version.desc()).limit(1).scalar()


def newer(external_id: str, minutes: int, **changes: Any) -> dict[str, Any]:
    return order(external_id, updated_at=f"2026-11-20T14:{5 + minutes:02d}:00Z", **changes)


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("back_office", ["honours idempotency keys", "only a lookup"])
def test_a_newer_version_after_a_lost_answer_updates_the_one_record(stack: Stack, sink, loss: str,
                                                                   back_office: str) -> None:
    secret = stack.source("shop")
    config: dict[str, Any] = {"timeout": 1}
    if back_office == "only a lookup":
        sink.ignore_idempotency_keys()
        config["lookup_url"] = sink.url + "/orders/by-external/{external_id}"
    stack.http_connector("erp", sink.url + "/orders", **config)
    stack.route("shop", "erp")
    stack.start_worker()
    sink.lose_answers(1, seconds=LOSSES[loss])
    assert stack.webhook("shop", secret, newer("L-1", 0))[0] == 202
    wait_until(lambda: sink.creates["L-1"] == 1, message="version 1 written")
    second = newer("L-1", 1, note="leave it with the neighbour")  # within 2 s of the write
    assert stack.webhook("shop", secret, second)[0] == 202
    wait_until(lambda: booked_version(stack, "L-1") == 2, timeout=60, message="version 2 booked")
    assert sink.creates == {"L-1": 1}
    assert sink.records["L-1"]["order"]["note"] == second["note"]
    assert sink.overlaps["L-1"] == 0


@pytest.mark.slow
def test_a_slow_back_office_keeps_its_leases_and_never_sees_one_order_twice_at_once(
        stack: Stack, sink) -> None:
    """7 s per call, two calls per create (lookup, then write): longer than the 8 s lease."""
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders", timeout=10,
                         lookup_url=sink.url + "/orders/by-external/{external_id}")
    stack.route("shop", "erp")
    sink.delay(7)
    stack.start_worker(concurrency=2)
    stack.start_worker(beat=False, concurrency=2)
    for number in ("S-1", "S-2", "S-3"):
        assert stack.webhook("shop", secret, order(number, customer={
            "email": f"{number}@example.com", "email_verified": True}))[0] == 202
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 3,
               timeout=120, message="three slow bookings")
    assert sink.creates == {"S-1": 1, "S-2": 1, "S-3": 1}
    assert sum(sink.overlaps.values()) == 0
    assert "expired before its outcome was recorded" not in stack.worker_logs()
    with stack.runtime.db.begin() as session:
        assert {d.attempts for d in session.query(Delivery)} == {1}


def test_orders_for_a_disabled_connector_wait_and_book_once_it_is_enabled(stack: Stack, sink) -> None:
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    set_enabled(stack.runtime.db, _connector_model(), "erp", False)
    stack.start_worker()
    for number in ("D-1", "D-2"):
        assert stack.webhook("shop", secret, order(number))[0] == 202
    wait_until(lambda: stack.count(Delivery) == 2, message="deliveries queued")
    detail = stack.cli("orders", "show", stack.cli("orders", "list", "--json")[0]["id"], "--json")
    assert any("disabled" in t["message"] for t in detail["timeline"]), detail["timeline"]
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.PENDING) == 2
    assert sink.creates == {}
    set_enabled(stack.runtime.db, _connector_model(), "erp", True)
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 2,
               message="booked after enabling")
    assert sink.creates == {"D-1": 1, "D-2": 1}


def test_replay_routes_the_current_version_to_a_connector_it_never_reached(stack: Stack, sink) -> None:
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.start_worker()
    assert stack.webhook("shop", secret, order("R-1"))[0] == 202
    wait_until(lambda: sink.creates["R-1"] == 1, message="booked in erp")
    with Sink2() as wms:
        stack.http_connector("wms", wms.url + "/orders")
        stack.route("shop", "wms")
        with stack.runtime.db.begin() as session:
            order_id = session.query(Order.id).scalar()
        stack.runtime.publisher.wake(replay_order(stack.runtime.db, order_id))
        wait_until(lambda: wms.creates["R-1"] == 1, message="routed again to wms")
    assert sink.creates["R-1"] == 1


def _connector_model() -> Any:
    from broker.models import Connector

    return Connector


def Sink2() -> Any:
    from fakes.sink import Sink

    return Sink()


def test_journey_says_not_applied_for_what_the_back_office_did_not_take(db_stack) -> None:
    """A connector that reports `not_applied` shows "not applied: why" in the journey."""
    from broker.db import utcnow
    from broker.models import Connector, Source
    from broker.schemas.order import load_order
    from broker.services.delivery import Outcome, claim, record
    from broker.services.orders import apply_version

    stack = db_stack
    stack.source("shop")
    stack.http_connector("erp", "http://127.0.0.1:9/orders")
    stack.route("shop", "erp")
    with stack.runtime.db.begin() as session:
        apply_version(session, session.query(Source).one(), load_order(order("N-1")))
        connector = session.query(Connector).one()
        session.expunge(connector)
    why = ("the note: the back office keeps no note on a confirmed order",)
    for action in ("create", "update"):  # a create books all but the note; a note-only update books nothing
        with stack.runtime.db.begin() as session:
            (c,) = claim(session, connector, limit=1, lease_seconds=60, max_attempts=5)
        c.action = action
        with stack.runtime.db.begin() as session:
            record(session, stack.runtime, connector,
                   [Outcome(c, "booked", utcnow(), 5, reference="SO-1", not_applied=why)])
        steps = [(t["step"], t["message"]) for t in stack.cli("orders", "show", c.order_id, "--json")
                 ["timeline"] if t["step"] in ("booked", "not applied")]
        if action == "create":
            assert [s for s, _ in steps] == ["booked", "not applied"], steps
            with stack.runtime.db.begin() as session:
                apply_version(session, session.query(Source).one(),
                              load_order(order("N-1", note="ring twice", updated_at="2099-01-01T00:00:00Z")))
    assert [s for s, _ in steps] == ["booked", "not applied", "not applied"], steps
    assert steps[-1][1] == ("not applied in erp: the note: the back office keeps no note on a "
                            "confirmed order (the back office keeps SO-1; attempt 1)")
