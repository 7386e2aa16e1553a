"""End to end: signed webhooks and REST orders booked once in a back office, on every stack."""

from __future__ import annotations

import time

from harness import order, wait_until
from sqlalchemy import func, select

from broker.models import Connector, Delivery, DeliveryStatus, Order


def test_signed_webhook_is_booked_once_with_its_journey(every_stack, sink):
    stack = every_stack
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.start_worker()
    status, body = stack.webhook("shop", secret, order("1001"))
    assert status == 202 and body["status"] == "accepted"
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 1,
               message="booking")
    assert sink.creates["1001"] == 1
    orders = stack.cli("orders", "list", "--json")
    detail = stack.cli("orders", "show", orders[0]["id"], "--json")
    steps = [t["step"] for t in detail["timeline"]]
    assert steps[:3] == ["received", "normalised", "queued"] and steps[-1] == "booked"
    assert detail["deliveries"][0]["reference"] == sink.records["1001"]["id"]
    assert stack.count(Order) == 1


def test_connectors_created_while_a_worker_runs_are_consumed(any_stack, sink):
    """The worker subscribes to each new connector's queue from its timer while it keeps
    consuming; on the embedded queue that timer is another thread sharing the channel (without
    the channel's lock this broke the worker's session, typically within a few dozen new connectors)."""
    stack = any_stack
    count = 16 if stack.settings.embedded else 4  # the thread race needs many chances
    secret = stack.source("shop")
    stack.http_connector("erp-0", sink.url + "/orders")
    stack.route("shop", "erp-0")
    stack.start_worker()
    for n in range(1, count + 1):
        stack.webhook("shop", secret, order(f"20-{n}-a"))  # traffic while the queues change
        stack.http_connector(f"erp-{n}", sink.url + "/orders")
        stack.route("shop", f"erp-{n}")
        stack.webhook("shop", secret, order(f"20-{n}-b"))
        time.sleep(0.3)  # let the worker's timer subscribe while orders flow

    # Routing happens at normalisation, so an order sent just before a route was added may
    # take it too: every connector books at least the orders sent after its route, and nothing
    # is left undelivered.
    def settled() -> bool:
        with stack.runtime.db.begin() as session:
            booked = dict(session.execute(
                select(Connector.name, func.count()).join(Delivery, Delivery.connector_id == Connector.id)
                .where(Delivery.status == DeliveryStatus.BOOKED).group_by(Connector.name)).all())
        return (stack.count(Delivery, Delivery.status != DeliveryStatus.BOOKED) == 0
                and stack.count(Order) == 2 * count
                and all(booked.get(f"erp-{n}", 0) >= 1 + 2 * (count - n) for n in range(1, count + 1)))

    wait_until(settled, timeout=90, message="every order booked in every connector routed to")
    assert "IllegalStateChange" not in stack.worker_logs()
    assert "Traceback" not in stack.worker_logs()
