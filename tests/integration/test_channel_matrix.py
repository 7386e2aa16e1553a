"""Every channel through the real gateway: verification matrix, then exactly one booked order.

Each channel's fake (tests/fakes/<kind>.py) provides a Driver (tests/fakes/driver.py) that
seeds the fake vendor API and builds and signs webhooks exactly as the vendor does.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest
from fakes import bigcommerce, shopify, square, stripe, woocommerce
from harness import Stack, wait_until

from broker.models import Delivery, DeliveryStatus, EventStatus, InboundEvent, OrderVersion

CHANNELS = {
    "shopify": (shopify.FakeShopify, shopify.Driver),
    "woocommerce": (woocommerce.FakeWooCommerce, woocommerce.Driver),
    "stripe": (stripe.FakeStripe, stripe.Driver),
    "square": (square.FakeSquare, square.Driver),
    "bigcommerce": (bigcommerce.FakeBigCommerce, bigcommerce.Driver),
}


@pytest.fixture(params=sorted(CHANNELS))
def channel(request: pytest.FixtureRequest, stack: Stack) -> Any:
    fake_cls, driver_cls = CHANNELS[request.param]
    fake = fake_cls().start()
    stack.serve()
    driver = driver_cls(fake)
    secret = stack.channel_source(driver, "shop")
    yield stack, driver, secret
    fake.stop()


def send(stack: Stack, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    return stack.post("/webhooks/shop" + path, body, headers)


def tampered(body: bytes) -> bytes:
    """One digit changed: still valid JSON, no longer what was signed."""
    match = re.search(rb"[0-8]", body)
    assert match, "no digit to tamper with"
    i = match.start()
    return body[:i] + bytes([body[i] + 1]) + body[i + 1:]


def reserialised(body: bytes) -> bytes:
    again = json.dumps(json.loads(body), indent=1, ensure_ascii=True).encode()
    assert again != body
    return again


def test_verification_matrix(channel: Any) -> None:
    stack, driver, secret = channel
    path, body, headers = driver.order_event("9001", updated_at="2026-11-20T10:00:00+00:00")
    signed = driver.sign(secret, body, headers)

    assert send(stack, path, tampered(body), signed)[0] == 401
    assert send(stack, path, body, driver.sign("not-" + secret, body, headers))[0] == 401
    assert send(stack, path, body, headers)[0] == 401  # unsigned
    if driver.reserialised_fails:
        assert send(stack, path, reserialised(body), signed)[0] == 401
    if driver.signs_timestamp:
        for skew in (-400, 400):  # tolerance is 300 s both ways
            stamp = int(time.time()) + skew
            assert send(stack, path, body, driver.sign(secret, body, headers,
                                                       timestamp=stamp))[0] == 401
    assert stack.count(InboundEvent) == 0, "a refused webhook stored something"

    status, answer = send(stack, path, body, signed)
    assert (status, answer["status"]) == (202, "accepted")
    status, answer = send(stack, path, body, signed)
    assert (status, answer["status"]) == (200, "duplicate")
    assert stack.count(InboundEvent) == 1

    # Rotation: the channel's new secret works at once and the old one until it is removed.
    new_secret = "rotated-" + secret
    stack.cli("sources", "rotate-secret", "shop", "--secret", new_secret, "--json")
    stack.runtime.sources.forget("shop")
    for minute, key in enumerate((new_secret, secret), start=1):
        path, body, headers = driver.order_event("9001",
                                                 updated_at=f"2026-11-20T10:0{minute}:00+00:00")
        assert send(stack, path, body, driver.sign(key, body, headers))[0] == 202, key[:8]
    assert stack.count(InboundEvent) == 3


def dotted(doc: Any, path: str) -> Any:
    for part in path.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def settled(stack: Stack) -> bool:
    return stack.count(InboundEvent, InboundEvent.status == EventStatus.RECEIVED) == 0 and \
        stack.count(Delivery, Delivery.status.in_([DeliveryStatus.PENDING,
                                                   DeliveryStatus.LEASED])) == 0


def test_webhook_and_catch_up_book_one_order_with_exact_money(channel: Any, sink: Any) -> None:
    stack, driver, secret = channel
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.start_worker()

    path, body, headers = driver.order_event("7001", updated_at="2026-11-20T10:00:00+00:00")
    assert send(stack, path, body, driver.sign(secret, body, headers))[0] == 202
    wait_until(lambda: sink.creates["7001"] == 1 and settled(stack), message="booking")
    delivered = sink.records["7001"]["order"]
    for field_path, value in driver.expected("7001").items():
        assert str(dotted(delivered, field_path)) == value, field_path

    # The vendor delivers again and the catch-up poll sees the same version: nothing new.
    assert send(stack, path, body, driver.sign(secret, body, headers))[0] == 200
    polled = stack.cli("sources", "catch-up", "shop", "--since", "2000-01-01", "--json")
    assert polled["polled"] >= 1 and polled["error"] is None
    wait_until(lambda: settled(stack), message="catch-up normalised")
    time.sleep(0.5)
    assert stack.count(OrderVersion) == 1
    assert sink.creates["7001"] == 1

    # A newer cancellation flows as a cancel; an older version arriving late changes nothing.
    older = driver.order_event("7001", updated_at="2026-11-20T10:30:00+00:00")
    path, body, headers = driver.order_event("7001", updated_at="2026-11-20T11:00:00+00:00",
                                             cancelled=True)
    assert send(stack, path, body, driver.sign(secret, body, headers))[0] == 202
    wait_until(lambda: sink.records["7001"]["status"] == "cancelled" and settled(stack),
               message="cancellation")
    versions = stack.count(OrderVersion)
    path, body, headers = older
    assert send(stack, path, body, driver.sign(secret, body, headers))[0] == 202
    wait_until(lambda: settled(stack), message="late version")
    time.sleep(0.5)
    assert stack.count(OrderVersion, OrderVersion.applied.is_(True)) == versions
    assert sink.records["7001"]["status"] == "cancelled"
    assert sink.creates["7001"] == 1
    assert stack.count(InboundEvent, InboundEvent.status == EventStatus.REJECTED) == 0
