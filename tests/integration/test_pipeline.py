"""End to end: signed webhooks and REST orders booked once in a back office, on every stack."""

from __future__ import annotations

from harness import order, wait_until

from broker.models import Delivery, DeliveryStatus, Order


def test_signed_webhook_is_booked_once_with_its_journey(any_stack, sink):
    stack = any_stack
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
