"""The Square channel: signature verification, Order mapping, enrichment and catch-up.

Signature vectors are Square's own (square-python-sdk tests/utilities/test_webhooks_helper.py and
tests/integration/test_webhooks_helper.py); fixtures follow the documented examples at
https://developer.squareup.com/reference/square/webhooks/order.updated and
https://developer.squareup.com/reference/square/orders-api/retrieve-order, with totals that add
up the way Square computes them. The API tests run against tests/fakes/square.py on loopback.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from fakes.square import LOCATION_ID, OTHER_LOCATION_ID, Driver, FakeSquare

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, PayloadError, SignatureError, channel_for
from broker.channels.square import SIGNATURE_HEADER, SquareApi, SquareChannel, polled_payload, sign
from broker.schemas.order import dump_order, load_order

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "square"

# Square SDK vector
SDK_BODY = (b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":'
            b'"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
            b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}')
SDK_SIGNATURE = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
SDK_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
SDK_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
OTHER_KEY = "MCmhFRxGX82xMwg5FsaoQA"
NOW = 1_700_000_000.0


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes(), parse_float=Decimal)


def order_fixture(name: str) -> dict[str, Any]:
    return load(f"order_{name}.json")["order"]


def with_order(event: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
    """An event as enrich() leaves it: the fetched Order at data.object.order."""
    enriched = copy.deepcopy(event)
    enriched["data"]["object"]["order"] = copy.deepcopy(order)
    return enriched


def mapped(order: dict[str, Any], topic: str = "order.updated") -> dict[str, Any]:
    """The validated canonical order, dumped (strings as the back office sees them)."""
    event = {"type": topic, "event_id": "e", "data": {
        "type": "order", "id": order["id"],
        "object": {"order_updated": {"order_id": order["id"]}, "order": order}}}
    docs = SquareChannel().to_orders(topic, event)
    assert len(docs) == 1
    return dump_order(load_order(docs[0]))


def verify(body: bytes = SDK_BODY, signature: str | None = SDK_SIGNATURE,
           secrets: list[str] | None = None, url: str | None = SDK_URL,
           headers: dict[str, str] | None = None, now: float = NOW):
    hdrs = {"content-type": "application/json", **(headers or {})}
    if signature is not None:
        hdrs[SIGNATURE_HEADER] = signature
    settings = {} if url is None else {"notification_url": url}
    return SquareChannel(settings).verify(hdrs, body, [SDK_KEY] if secrets is None else secrets,
                                          now=now, tolerance=300)


# --- 1. verification -----------------------------------------------------------------------
def test_square_sdk_vectors_sign_exactly():
    assert sign(SDK_KEY, SDK_URL, SDK_BODY) == SDK_SIGNATURE
    escaped = b'{"data":{"type":"webhooks","id":">id<"}}'
    assert sign("signature-key", "https://webhook.site/webhooks", escaped) == \
        "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U="


def test_valid_notification_reads_event_id_and_type():
    envelope = verify()
    assert envelope.event_key == "ac3ac95b-f97d-458c-a6e6-18981597e05f"
    assert envelope.topic == "webhooks.test_notification"
    assert envelope.ping is True  # Square's test notification: answer 200, store nothing


def test_order_event_from_the_fake_is_keyed_on_event_id_and_typed():
    fake = FakeSquare()
    order = fake.put_order(fake.make_order("ORD1", updated_at="2026-11-20T14:05:00.000Z"))
    body, headers = fake.webhook(fake.event("order.updated", order, event_id="evt-123"))
    headers[SIGNATURE_HEADER] = fake.sign(body, SDK_URL)
    envelope = SquareChannel({"notification_url": SDK_URL}).verify(
        headers, body, [fake.signature_key], NOW, 300)
    assert (envelope.event_key, envelope.topic, envelope.ping) == ("evt-123", "order.updated", False)


def test_signed_body_without_event_id_is_keyed_on_its_bytes():
    body = b'{"data":{"type":"webhooks","id":">id<"}}'
    url = "https://webhook.site/webhooks"
    envelope = SquareChannel({"notification_url": url}).verify(
        {SIGNATURE_HEADER: "Cxt7+aTi4rKgcA0bC4g9EHdVtLSDWdqccmL5MvihU4U="}, body,
        ["signature-key"], NOW, 300)
    assert envelope.event_key.startswith("sha256:") and len(envelope.event_key) == 71
    assert envelope.topic is None


def test_tampered_body_is_rejected():
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(body=SDK_BODY.replace(b"2022-07-13", b"2022-06-13"))


def test_wrong_signature_key_is_rejected():
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(secrets=[OTHER_KEY])


def test_no_configured_key_is_rejected():
    with pytest.raises(SignatureError, match="no signature key"):
        verify(secrets=[])


@pytest.mark.parametrize("keys", [[SDK_KEY, OTHER_KEY], [OTHER_KEY, SDK_KEY]])
def test_rotation_accepts_either_active_key(keys):
    assert verify(secrets=keys).event_key == "ac3ac95b-f97d-458c-a6e6-18981597e05f"


def test_same_json_reserialised_fails():
    reserialised = json.dumps(json.loads(SDK_BODY), indent=2).encode()
    assert json.loads(reserialised) == json.loads(SDK_BODY)
    with pytest.raises(SignatureError):
        verify(body=reserialised)


@pytest.mark.parametrize("url", [SDK_URL + "/", SDK_URL.replace("https", "http"),
                                 "https://webhook.site/79a4f3a-dcfa-49ee-bac5-9d0edad886b9"])
def test_a_different_notification_url_fails(url):
    with pytest.raises(SignatureError):
        verify(url=url)


def test_notification_url_comes_from_settings_never_from_the_request():
    # the request's own Host / forwarded headers do not matter either way
    forged = {"host": "evil.example", "x-forwarded-host": "evil.example",
              "x-forwarded-proto": "http"}
    assert verify(headers=forged).event_key
    with pytest.raises(SignatureError):
        verify(url="https://evil.example/679a4f3a-dcfa-49ee-bac5-9d0edad886b9",
               headers={"host": "webhook.site"})


def test_missing_notification_url_setting_says_what_to_configure():
    with pytest.raises(SignatureError, match="notification_url") as exc:
        verify(url=None)
    assert "Developer Console" in str(exc.value)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_header_is_rejected(signature):
    with pytest.raises(SignatureError, match="missing x-square-hmacsha256-signature"):
        verify(signature=signature)


def test_oversized_signature_header_is_rejected():
    with pytest.raises(SignatureError, match="too long"):
        verify(signature=SDK_SIGNATURE * 8)


def test_legacy_sha1_header_alone_is_not_enough():
    with pytest.raises(SignatureError, match="missing"):
        verify(signature=None, headers={"x-square-signature": "1z2n3DEJJiUPKcPzQo1ftvbxGdw="})


@pytest.mark.parametrize("now", [0.0, NOW, 4_000_000_000.0])
def test_no_timestamp_is_signed_so_time_does_not_matter(now):
    assert verify(now=now).event_key == "ac3ac95b-f97d-458c-a6e6-18981597e05f"


def test_rejections_never_reveal_the_key_or_the_expected_signature():
    cases = [dict(secrets=[OTHER_KEY]), dict(body=SDK_BODY + b" "), dict(url=SDK_URL + "x"),
             dict(signature="A" * 44)]
    for case in cases:
        with pytest.raises(SignatureError) as exc:
            verify(**case)
        message = str(exc.value)
        assert SDK_KEY not in message and OTHER_KEY not in message
        assert SDK_SIGNATURE not in message


def test_channel_contract_details():
    channel = channel_for("square", {"notification_url": SDK_URL})
    assert isinstance(channel, SquareChannel)
    assert SIGNATURE_HEADER not in channel.kept_headers
    assert "square-retry-number" in channel.kept_headers
    assert {"notification_url", "api_url", "api_version", "location_ids"} <= set(
        channel.settings_fields)
    assert set(channel.credential_fields) == {"access_token"}
    with pytest.raises(NotImplementedError):  # the signature key is issued by Square
        channel.new_secret()


# --- 2. mapping fidelity -------------------------------------------------------------------
def test_additive_tax_line_and_order_discounts_and_shipping():
    doc = mapped(order_fixture("additive_shipping"))
    assert doc["external_id"] == "CAISENgvlJ6jLWAzERDzjyHVybY"
    assert doc["number"] == "WEB-1042" and doc["channel"] == "square"
    assert doc["placed_at"] == "2026-11-20T14:03:00.123000Z"
    assert doc["updated_at"] == "2026-11-20T14:05:31.456000Z"
    assert doc["status"] == "open" and doc["currency"] == "USD"
    assert doc["prices_include_tax"] is False
    widget, wrap = doc["lines"]
    assert widget == {"external_id": "ULkg0tQTRK2bkU9fNv3IJD", "sku": "W62UWFY35CWMYGVWK6TWJDNI",
                      "name": "Blue Widget (Large)", "quantity": "2", "unit_price": "12.50",
                      "discount": "2.50",  # the LINE_ITEM discount only
                      "taxes": [{"name": "NY Sales Tax", "rate": "0.08875", "amount": "1.63"}]}
    assert (wrap["unit_price"], wrap["discount"], wrap["taxes"][0]["amount"]) == \
        ("5.00", "0.00", "0.36")
    assert "sku" not in wrap  # a custom amount has no catalog object
    # the ORDER discount Square apportioned onto both lines (4.09 + 0.91) is one order discount
    assert doc["discounts"] == [{"code": "WELCOME5", "amount": "5.00"}]
    assert doc["shipping"] == [{"method": "Shipping", "amount": "5.99", "taxes": []}]
    assert doc["totals"] == {"subtotal": "27.50", "discount": "5.00", "shipping": "5.99",
                             "tax": "1.99", "total": "30.48"}
    assert doc["payment"] == {"status": "paid", "method": "card", "gateway": "square",
                              "transaction_id": "EnZdNAlWCmfh6Mt5FMNST1o7taB", "amount": "30.48"}
    assert doc["customer"]["external_id"] == "JDKYHBWT1D4F8MFH63DBMEN8Y4"
    assert doc["customer"]["email"] == "ana@example.com"
    assert (doc["customer"]["first_name"], doc["customer"]["last_name"]) == ("Ana", "Silva")
    assert doc["shipping_address"] == {
        "name": "Ana Silva", "line1": "1 Main St", "line2": "Apt 4", "city": "New York",
        "region": "NY", "postal_code": "10001", "country": "US", "phone": "+15550100"}
    assert doc["metadata"]["version"] == 4 and doc["metadata"]["location_id"] == "L88917AVBK2S5"
    assert doc["metadata"]["fulfillments"] == [
        {"uid": "bJz3TT0dP2ixq8wQtmbyiB", "type": "SHIPMENT", "state": "COMPLETED"}]


def test_inclusive_vat_guest_gift_card_and_non_ascii():
    doc = mapped(order_fixture("inclusive_guest_gbp"))
    assert doc["currency"] == "GBP" and doc["prices_include_tax"] is True
    assert doc["number"] == "2207"  # ticket_name when there is no reference_id
    creme, tea = doc["lines"]
    assert creme["name"] == "Crème brûlée (Ramekin)"
    assert (creme["quantity"], creme["unit_price"], creme["taxes"][0]) == (
        "3", "4.50", {"name": "VAT", "rate": "0.2", "amount": "2.25"})
    assert tea["name"] == "Earl Grey — loose leaf"  # variation named like its item
    assert (tea["quantity"], tea["unit_price"]) == ("1.5", "8.00")
    assert doc["shipping"] == [{"method": "Royal Mail Tracked 48", "amount": "4.80",
                                "taxes": [{"name": "VAT", "rate": "0.2", "amount": "0.80"}]}]
    assert doc["totals"] == {"subtotal": "25.50", "discount": "0.00", "shipping": "4.80",
                             "tax": "5.05", "total": "30.30"}
    assert "external_id" not in doc["customer"]  # guest checkout
    assert doc["customer"]["first_name"] == "Zoë"
    assert doc["customer"]["last_name"] == "Ångström-Ørsted"
    assert doc["shipping_address"]["line1"] == "12 Brontë Close"
    assert doc["shipping_address"]["country"] == "GB"
    assert doc["payment"]["status"] == "paid"
    assert doc["payment"]["method"] == "gift_card+card"
    assert doc["payment"]["amount"] == "30.30"
    assert [t["type"] for t in doc["metadata"]["tenders"]] == ["SQUARE_GIFT_CARD", "CARD"]
    assert [t["amount"] for t in doc["metadata"]["tenders"]] == ["20.00", "10.30"]


def test_jpy_has_no_minor_units_and_cancelled_voids_the_payment():
    doc = mapped(order_fixture("jpy_cancelled"))
    assert doc["currency"] == "JPY" and doc["status"] == "cancelled"
    assert doc["number"] == "A-17"
    line = doc["lines"][0]
    assert (line["name"], line["unit_price"], line["quantity"]) == ("抹茶ラテ (Ｍサイズ)", "550", "2")
    assert line["taxes"] == [{"name": "消費税", "rate": "0.1", "amount": "110"}]
    assert doc["totals"] == {"subtotal": "1100", "discount": "0", "shipping": "0", "tax": "110",
                             "total": "1210"}
    assert doc["payment"]["status"] == "voided" and doc["payment"]["amount"] == "1210"
    assert "shipping_address" not in doc  # a pickup has no address
    assert doc["customer"]["phone"] == "+81312345678"


def test_partial_refund_counts_approved_refunds_not_rejected_ones():
    doc = mapped(order_fixture("partially_refunded"))
    assert doc["payment"]["status"] == "partially_refunded"  # 15.00 of 40.00; 25.00 REJECTED
    assert doc["totals"]["total"] == "40.00"
    assert doc["customer"]["first_name"] == "Bo"  # from the address' own name fields
    assert doc["shipping_address"]["line2"] == "Suite 600"


def test_full_refund_and_tip_outside_the_total():
    order = order_fixture("refunded_tip")
    doc = mapped(order)
    assert doc["payment"]["status"] == "refunded"
    assert doc["totals"] == {"subtotal": "9.00", "discount": "0.00", "shipping": "0.00",
                             "tax": "0.81", "total": "9.81"}
    assert doc["payment"]["amount"] == "9.81" and doc["metadata"]["tip"] == "2.00"
    assert "number" not in doc and "customer" not in doc  # walk-in POS sale, no version
    # Square's docs leave open whether Order.total_money counts the tip: either reading works
    order["total_money"]["amount"] = 981
    assert mapped(order)["totals"]["total"] == "9.81"


def test_a_pending_refund_counts_as_issued():
    order = order_fixture("partially_refunded")
    order["refunds"][0]["status"] = "PENDING"
    order["refunds"][0]["amount_money"]["amount"] = 4000
    assert mapped(order)["payment"]["status"] == "refunded"


def test_return_amounts_count_as_refunded():
    order = order_fixture("additive_shipping")
    order["return_amounts"] = {"total_money": {"amount": 1000, "currency": "USD"}}
    assert mapped(order)["payment"]["status"] == "partially_refunded"


def test_authorized_card_and_order_without_tenders():
    order = order_fixture("additive_shipping")
    order["state"] = "OPEN"
    order["tenders"][0]["card_details"]["status"] = "AUTHORIZED"
    doc = mapped(order)
    assert (doc["status"], doc["payment"]["status"]) == ("open", "authorized")
    del order["tenders"]
    assert mapped(order)["payment"] == {"status": "pending", "gateway": "square"}


def test_mixed_inclusive_and_additive_taxes_are_expressed_exclusive():
    order = order_fixture("additive_shipping")
    order["taxes"].append({"uid": "vat-incl", "name": "Gift VAT", "percentage": "10",
                           "type": "INCLUSIVE", "scope": "LINE_ITEM",
                           "applied_money": {"amount": 37, "currency": "USD"}})
    wrap = order["line_items"][1]
    wrap["applied_taxes"].append({"uid": "aT3", "tax_uid": "vat-incl",
                                  "applied_money": {"amount": 37, "currency": "USD"}})
    wrap["total_tax_money"]["amount"] = 73
    order["total_tax_money"]["amount"] = 236
    doc = mapped(order)
    assert doc["prices_include_tax"] is False and doc["metadata"]["mixed_taxes"] is True
    assert doc["lines"][1]["unit_price"] == "4.63"  # 5.00 less the 0.37 included VAT
    assert doc["totals"] == {"subtotal": "27.13", "discount": "5.00", "shipping": "5.99",
                             "tax": "2.36", "total": "30.48"}  # what the customer paid


def test_fractional_unit_price_keeps_extra_places():
    order = order_fixture("partially_refunded")
    line = order["line_items"][0]
    line["quantity"] = "3"
    for key in ("gross_sales_money", "variation_total_price_money", "total_money"):
        line[key]["amount"] = 1000
    order["total_money"]["amount"] = 1800
    doc = mapped(order)
    assert doc["lines"][0]["unit_price"] == "3.333333"
    assert doc["totals"]["subtotal"] == "10.00" and doc["totals"]["total"] == "18.00"


def test_zero_quantity_lines_are_dropped():
    order = order_fixture("additive_shipping")
    extra = copy.deepcopy(order["line_items"][1])
    extra.update(uid="zero", quantity="0")
    order["line_items"].append(extra)
    assert [ln["external_id"] for ln in mapped(order)["lines"]] == [
        "ULkg0tQTRK2bkU9fNv3IJD", "mumY8Nun4BC5aKe2yyx5a"]


def test_draft_orders_are_not_booked():
    order = order_fixture("additive_shipping")
    order["state"] = "DRAFT"
    event = with_order(load("webhook_order_updated.json"), order)
    assert SquareChannel().to_orders("order.updated", event) == []


WEBHOOKS = {
    "webhook_order_created.json": "additive_shipping",
    "webhook_order_updated.json": "additive_shipping",
    "webhook_order_fulfillment_updated.json": "additive_shipping",
    "webhook_payment_updated.json": "partially_refunded",
    "webhook_refund_created.json": "partially_refunded",
    "webhook_refund_updated.json": "partially_refunded",
}


@pytest.mark.parametrize(("webhook", "order"), WEBHOOKS.items())
def test_every_handled_topic_maps_its_fetched_order(webhook, order):
    channel, event, square_order = SquareChannel(), load(webhook), order_fixture(order)
    topic = event["type"]
    assert channel.needs_api(topic, event) is True
    with pytest.raises(PayloadError, match="enrich first"):
        channel.to_orders(topic, event)
    enriched = with_order(event, square_order)
    assert channel.needs_api(topic, enriched) is False
    docs = channel.to_orders(topic, enriched)
    assert [load_order(d) for d in docs] == [load_order(d) for d in channel.to_orders(
        "order.updated", polled_payload(square_order))]
    assert docs[0]["external_id"] == square_order["id"]


@pytest.mark.parametrize("topic", ["customer.created", "inventory.count.updated",
                                   "webhooks.test_notification", "payout.sent", None])
def test_unknown_topics_are_ignored(topic):
    event = load("webhook_customer_created.json")
    channel = SquareChannel()
    assert channel.needs_api(topic, event) is False
    assert channel.to_orders(topic, event) == []


def test_payment_without_an_order_is_ignored():
    event = load("webhook_payment_updated.json")
    del event["data"]["object"]["payment"]["order_id"]
    assert SquareChannel().needs_api("payment.updated", event) is False
    assert SquareChannel().to_orders("payment.updated", event) == []


def test_order_event_without_order_id_is_rejected():
    with pytest.raises(PayloadError, match="no order id"):
        SquareChannel().to_orders("order.updated", {"type": "order.updated", "data": {}})


# --- 3. against the fake Square API --------------------------------------------------------
WEBHOOK_URL = "https://broker.example.com/webhooks/square-main"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeSquare]:
    with FakeSquare() as started:
        yield started


@pytest.fixture
def fake(server: FakeSquare) -> FakeSquare:
    server.reset()
    return server


def channel_on(fake: FakeSquare, **settings: Any) -> SquareChannel:
    return SquareChannel({"api_url": fake.url, "notification_url": WEBHOOK_URL,
                          "location_ids": LOCATION_ID, **settings})


def seed(fake: FakeSquare, order_id: str, updated_at: str, **kwargs: Any) -> dict[str, Any]:
    return fake.put_order(fake.make_order(order_id, updated_at=updated_at, **kwargs))


def receive(fake: FakeSquare, channel: SquareChannel, event: dict[str, Any]) -> Any:
    """What the gateway and a worker do: verify the raw bytes, parse, enrich."""
    body, headers = fake.webhook(event)
    headers[SIGNATURE_HEADER] = fake.sign(body, WEBHOOK_URL)
    envelope = channel.verify(headers, body, [fake.signature_key], time.time(), 300)
    payload = json.loads(body, parse_float=Decimal)
    assert envelope.topic == event["type"]
    if channel.needs_api(envelope.topic, payload):
        payload = channel.enrich(envelope.topic, payload,
                                 channel.api({"access_token": fake.access_token}))
    return payload


def test_enrichment_fetches_the_order_with_bearer_token_and_version(fake):
    order = seed(fake, "ORDER-A", "2026-11-20T14:05:00.000Z")
    channel = channel_on(fake, api_version="2025-10-16")
    payload = receive(fake, channel, fake.event("order.updated", order))
    (call,) = fake.api_requests("/v2/orders/")
    assert (call["method"], call["path"]) == ("GET", "/v2/orders/ORDER-A")
    assert call["headers"]["Authorization"] == f"Bearer {fake.access_token}"
    assert call["headers"]["Square-Version"] == "2025-10-16"
    doc = dump_order(load_order(channel.to_orders("order.updated", payload)[0]))
    assert (doc["external_id"], doc["totals"]["total"], doc["totals"]["tax"]) == \
        ("ORDER-A", "33.21", "2.22")


@pytest.mark.parametrize("topic", ["payment.updated", "refund.created", "refund.updated"])
def test_payment_and_refund_events_fetch_the_order_they_name(fake, topic):
    order = seed(fake, "ORDER-P", "2026-11-20T14:05:00.000Z")
    channel = channel_on(fake)
    payload = receive(fake, channel, fake.event(topic, order))
    assert [r["path"] for r in fake.api_requests("/v2/")] == ["/v2/orders/ORDER-P"]
    assert channel.to_orders(topic, payload)[0]["external_id"] == "ORDER-P"


def test_a_version_older_than_notified_is_retried_later(fake):
    order = seed(fake, "ORDER-S", "2026-11-20T14:05:00.000Z")
    event = fake.event("order.updated", {**order, "version": order["version"] + 1})
    with pytest.raises(ChannelUnavailable, match="older than the notified") as exc:
        receive(fake, channel_on(fake), event)
    assert exc.value.retry_after == 5


def test_unknown_order_is_a_payload_error_with_squares_error_body(fake):
    channel = channel_on(fake)
    api = channel.api({"access_token": fake.access_token})
    event = fake.event("order.updated", {"id": "NOPE", "version": 1})
    with pytest.raises(PayloadError, match="404"):
        channel.enrich("order.updated", event, api)
    answer = requests.get(f"{fake.url}/v2/orders/NOPE", timeout=5,
                          headers={"Authorization": f"Bearer {fake.access_token}"})
    assert answer.json()["errors"][0]["code"] == "NOT_FOUND"


def test_wrong_access_token_is_unavailable_and_never_echoed(fake):
    order = seed(fake, "ORDER-W", "2026-11-20T14:05:00.000Z")
    bad = "EAAAl-wrong-token-do-not-log-me"
    channel = channel_on(fake)
    with pytest.raises(ChannelUnavailable) as exc:
        channel.enrich("order.updated", fake.event("order.updated", order),
                       channel.api({"access_token": bad}))
    assert "401" in str(exc.value) and bad not in str(exc.value)
    assert fake.access_token not in str(exc.value)
    answer = requests.get(f"{fake.url}/v2/orders/ORDER-W", timeout=5,
                          headers={"Authorization": f"Bearer {bad}"})
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["category"] == "AUTHENTICATION_ERROR"


def test_missing_access_token_is_a_configuration_error():
    with pytest.raises(PayloadError, match="access_token"):
        SquareChannel().api({})


def test_429_with_retry_after_is_waited_out(fake):
    order = seed(fake, "ORDER-T", "2026-11-20T14:05:00.000Z")
    fake.throttle(1, retry_after="0.3")
    channel = channel_on(fake)
    started = time.monotonic()
    payload = channel.enrich("order.updated", fake.event("order.updated", order),
                             channel.api({"access_token": fake.access_token}))
    assert time.monotonic() - started >= 0.3
    assert len(fake.api_requests("/v2/orders/ORDER-T")) == 2
    assert payload["data"]["object"]["order"]["id"] == "ORDER-T"


def test_429_without_retry_after_backs_off_by_default(fake, monkeypatch):
    monkeypatch.setattr(SquareApi, "default_retry_after", 0.2)
    order = seed(fake, "ORDER-U", "2026-11-20T14:05:00.000Z")
    fake.throttle(1, retry_after="")
    channel = channel_on(fake)
    started = time.monotonic()
    channel.enrich("order.updated", fake.event("order.updated", order),
                   channel.api({"access_token": fake.access_token}))
    assert time.monotonic() - started >= 0.2


def test_long_retry_after_and_5xx_leave_the_event_waiting(fake):
    order = seed(fake, "ORDER-V", "2026-11-20T14:05:00.000Z")
    channel = channel_on(fake)
    api = channel.api({"access_token": fake.access_token})
    fake.throttle(1, retry_after="120")
    with pytest.raises(ChannelUnavailable, match="429") as exc:
        channel.enrich("order.updated", fake.event("order.updated", order), api)
    assert exc.value.retry_after == 120
    fake.fail(1, 503)
    with pytest.raises(ChannelUnavailable, match="503"):
        channel.enrich("order.updated", fake.event("order.updated", order), api)


def poll(channel: SquareChannel, fake: FakeSquare, since: str) -> list[Any]:
    window = CatchUpWindow(since=datetime.fromisoformat(since.replace("Z", "+00:00")))
    return list(channel.catch_up(channel.api({"access_token": fake.access_token}), window))


def test_catch_up_pages_through_search_oldest_first(fake):
    stamps = ["2026-11-20T10:00:04.000Z", "2026-11-20T10:00:01.000Z", "2026-11-20T10:00:05.000Z",
              "2026-11-20T10:00:02.000Z", "2026-11-20T10:00:03.000Z", "2026-11-19T23:59:59.000Z"]
    for i, stamp in enumerate(stamps):
        seed(fake, f"ORD-{i}", stamp)
    fake.max_page_size = 2  # Square may answer fewer orders than `limit`
    events = poll(channel_on(fake), fake, "2026-11-20T00:00:00Z")
    assert [e.payload["data"]["id"] for e in events] == ["ORD-1", "ORD-3", "ORD-4", "ORD-0",
                                                         "ORD-2"]
    assert [e.event_key for e in events][:2] == ["poll:ORD-1:1", "poll:ORD-3:1"]
    assert {e.topic for e in events} == {"order.updated"}
    bodies = fake.search_bodies
    assert len(bodies) == 3 and "cursor" not in bodies[0] and bodies[1]["cursor"]
    assert bodies[0]["location_ids"] == [LOCATION_ID] and bodies[0]["limit"] == 100
    assert bodies[0]["query"] == {
        "filter": {"date_time_filter": {"updated_at": {"start_at": "2026-11-20T00:00:00Z"}}},
        "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}}
    assert all(r["headers"]["Authorization"] == f"Bearer {fake.access_token}"
               for r in fake.api_requests("/v2/orders/search"))


def test_catch_up_keys_each_version(fake):
    seed(fake, "ORD-X", "2026-11-20T10:00:00.000Z")
    first = poll(channel_on(fake), fake, "2026-11-20T00:00:00Z")
    seed(fake, "ORD-X", "2026-11-20T11:00:00.000Z")  # an update: version 2
    second = poll(channel_on(fake), fake, "2026-11-20T00:00:00Z")
    assert [e.event_key for e in first + second] == ["poll:ORD-X:1", "poll:ORD-X:2"]


def test_catch_up_lists_locations_when_none_are_configured(fake):
    fake.locations.append({"id": OTHER_LOCATION_ID, "name": "Pier", "status": "ACTIVE"})
    seed(fake, "HERE", "2026-11-20T10:00:02.000Z")
    seed(fake, "THERE", "2026-11-20T10:00:01.000Z", location_id=OTHER_LOCATION_ID)
    seed(fake, "ELSEWHERE", "2026-11-20T10:00:00.000Z", location_id="LUNLISTED")
    events = poll(channel_on(fake, location_ids=""), fake, "2026-11-20T00:00:00Z")
    assert [e.payload["data"]["id"] for e in events] == ["THERE", "HERE"]
    assert fake.api_requests("/v2/locations")[0]["method"] == "GET"
    assert fake.search_bodies[0]["location_ids"] == [LOCATION_ID, OTHER_LOCATION_ID]


def test_catch_up_over_ten_locations_merges_searches_oldest_first(fake):
    locations = [f"LOC{i:02d}" for i in range(12)]
    seed(fake, "LATE", "2026-11-20T10:00:03.000Z", location_id="LOC00")
    seed(fake, "EARLY", "2026-11-20T10:00:01.000Z", location_id="LOC11")
    seed(fake, "MIDDLE", "2026-11-20T10:00:02.000Z", location_id="LOC05")
    events = poll(channel_on(fake, location_ids=",".join(locations)), fake,
                  "2026-11-20T00:00:00Z")
    assert [e.payload["data"]["id"] for e in events] == ["EARLY", "MIDDLE", "LATE"]
    assert [len(b["location_ids"]) for b in fake.search_bodies] == [10, 2]


def test_catch_up_skips_drafts(fake):
    seed(fake, "DRAFTY", "2026-11-20T10:00:00.000Z", state="DRAFT", tender_status=None)
    seed(fake, "REAL", "2026-11-20T10:00:01.000Z")
    assert [e.payload["data"]["id"] for e in poll(channel_on(fake), fake,
                                                   "2026-11-20T00:00:00Z")] == ["REAL"]


def test_poll_and_webhook_of_the_same_version_are_the_same_order(fake):
    order = seed(fake, "ORDER-EQ", "2026-11-20T14:05:00.000Z", reference_id="#1042")
    channel = channel_on(fake)
    from_webhook = channel.to_orders("order.updated",
                                     receive(fake, channel, fake.event("order.updated", order)))
    (polled,) = poll(channel, fake, "2026-11-20T00:00:00Z")
    assert channel.needs_api(polled.topic, polled.payload) is False
    from_poll = channel.to_orders(polled.topic, polled.payload)
    assert load_order(from_webhook[0]) == load_order(from_poll[0])
    assert dump_order(load_order(from_poll[0]))["number"] == "#1042"


@pytest.mark.parametrize("cancelled", [False, True])
def test_driver_round_trip_matches_its_expectations(fake, cancelled):
    driver = Driver(fake)
    settings = driver.settings(WEBHOOK_URL)
    channel = SquareChannel(settings)
    driver.order_event("ORDER-D", updated_at="2026-11-20T14:00:00Z")
    path, body, headers = driver.order_event("ORDER-D", updated_at="2026-11-20T14:05:00Z",
                                             cancelled=cancelled)
    signed = driver.sign("whatever-key", body, headers)
    envelope = channel.verify(signed, body, ["old-key", "whatever-key"], time.time(), 300)
    with pytest.raises(SignatureError):
        channel.verify(driver.sign("other-key", body, headers), body, ["whatever-key"],
                       time.time(), 300)
    payload = channel.enrich(envelope.topic, json.loads(body, parse_float=Decimal),
                             channel.api(driver.credentials()))
    doc = dump_order(load_order(channel.to_orders(envelope.topic, payload)[0]))
    for dotted, value in driver.expected("ORDER-D").items():
        node: Any = doc
        for part in dotted.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert node == value, dotted
    assert path == "" and doc["updated_at"] == "2026-11-20T14:05:00Z"
    assert doc["metadata"]["version"] == 2


def test_fake_search_enforces_squares_rules(fake):
    auth = {"Authorization": f"Bearer {fake.access_token}"}

    def search(body: dict[str, Any]) -> requests.Response:
        return requests.post(f"{fake.url}/v2/orders/search", json=body, headers=auth, timeout=5)

    mismatched = {"location_ids": [LOCATION_ID], "query": {
        "filter": {"date_time_filter": {"updated_at": {"start_at": "2026-01-01T00:00:00Z"}}},
        "sort": {"sort_field": "CREATED_AT"}}}
    assert search(mismatched).status_code == 400
    assert search({"query": {}}).json()["errors"][0]["code"] == "MISSING_REQUIRED_PARAMETER"
    assert search({"location_ids": [f"L{i}" for i in range(11)]}).status_code == 400
    for i in range(3):
        seed(fake, f"S{i}", f"2026-11-20T10:00:0{i}.000Z")
    fake.max_page_size = 1
    first = search({"location_ids": [LOCATION_ID]}).json()
    assert [o["id"] for o in first["orders"]] == ["S2"]  # default sort: CREATED_AT DESC
    other = search({"location_ids": [LOCATION_ID], "query": {"sort": {"sort_order": "ASC"}},
                    "cursor": first["cursor"]})
    assert other.json()["errors"][0]["code"] == "INVALID_CURSOR"


def test_fake_stamps_are_square_style():
    stamp = FakeSquare().event("order.updated", {"id": "X"})["created_at"]
    assert stamp.endswith("Z") and len(stamp) == 24
    assert datetime.fromisoformat(stamp.replace("Z", "+00:00")).tzinfo == UTC
