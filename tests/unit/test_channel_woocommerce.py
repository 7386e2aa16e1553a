"""WooCommerce channel: signatures over raw bytes, mapping to the canonical order, and the
REST API v3 (enrichment, catch-up, rate limits, credentials) against a fake store on loopback.

Payloads are the REST API docs' own examples (orders 727 and 723) plus fixtures modelled on them
(tests/fixtures/woocommerce); webhook bodies are encoded and signed as ``WC_Webhook::deliver``
does (tests/fakes/woocommerce.py).
"""

from __future__ import annotations

import ast
import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.woocommerce import Driver, FakeWooCommerce, wp_json_encode

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, Patch, PayloadError, SignatureError, channel_for
from broker.channels.woocommerce import WooCommerceChannel, map_order, sign
from broker.schemas.order import dump_order, load_order

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "woocommerce"
SECRET = "wc-secret-Zq8!&x"  # WooCommerce secrets may hold any printable character
OTHER_SECRET = "the-next-secret-after-rotation"
NOW = 1_763_650_000.0
ORDER_FIXTURES = sorted(p.name for p in FIXTURES.glob("order_*.json") if "deleted" not in p.name)


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def parsed(body: bytes) -> Any:
    """The worker's parse (broker.services.intake.parse_json): exact decimals."""
    return json.loads(body, parse_float=Decimal)


@pytest.fixture
def channel() -> WooCommerceChannel:
    return WooCommerceChannel({"store_url": "https://shop.example.com"})


@pytest.fixture
def store() -> FakeWooCommerce:
    """A fake store, not started: for building deliveries only."""
    return FakeWooCommerce()


@pytest.fixture
def fake() -> Iterator[FakeWooCommerce]:
    with FakeWooCommerce() as started:
        yield started  # type: ignore[misc]


def delivery(store: FakeWooCommerce, name: str, topic: str = "order.updated",
             secret: str = SECRET, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    order = store.put_order(fixture(name))
    body, headers = store.webhook(topic, order["id"], secret, now=NOW, **kwargs)
    return body, {k.lower(): v for k, v in headers.items()}


def verify(channel: WooCommerceChannel, headers: dict[str, str], body: bytes,
           secrets: list[str] | None = None, now: float = NOW):
    return channel.verify(headers, body, [SECRET] if secrets is None else secrets, now, 300)


def mapped(channel: WooCommerceChannel, name: str, topic: str = "order.updated") -> dict[str, Any]:
    body = wp_json_encode(fixture(name))
    (doc,) = channel.to_orders(topic, parsed(body))
    return dump_order(load_order(doc))


# --- 1. verification -----------------------------------------------------------------------------

def test_signature_is_base64_hmac_sha256_of_the_raw_body():
    # base64(hash_hmac("sha256", body, "secret", true)), computed with `openssl dgst -hmac`
    assert sign("secret", b'{"id":1}') == "A971iWIMgT8Zj9A9eWfikrFj7wQ16/Qwcc4OlRl2PLc="
    assert FakeWooCommerce.sign("secret", b'{"id":1}') == sign("secret", b'{"id":1}')


def test_valid_delivery_keys_on_webhook_order_and_gmt_modification_time(channel, store):
    body, headers = delivery(store, "order_727_processing.json", "order.created")
    envelope = verify(channel, headers, body)
    assert envelope.event_key == "7:727:2017-03-22T19:28:08"  # date_modified_gmt, not site time
    assert envelope.topic == "order.created"
    assert envelope.ping is False


def test_body_is_encoded_like_wp_json_encode(store):
    body, _ = delivery(store, "order_723_completed_refunds.json")
    assert b"Jo\\u00e3o" in body and b"https:\\/\\/example.com" in body
    assert b" " not in body.split(b'"customer_user_agent"')[0]  # compact separators


def test_tampered_body_is_rejected(channel, store):
    body, headers = delivery(store, "order_727_processing.json")
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(channel, headers, body.replace(b'"total":"29.35"', b'"total":"0.01"'))


def test_wrong_secret_is_rejected(channel, store):
    body, headers = delivery(store, "order_727_processing.json", secret="not-the-secret")
    with pytest.raises(SignatureError):
        verify(channel, headers, body)


@pytest.mark.parametrize("signing_secret", [SECRET, OTHER_SECRET])
def test_either_active_secret_verifies_during_rotation(channel, store, signing_secret):
    body, headers = delivery(store, "order_727_processing.json", secret=signing_secret)
    assert verify(channel, headers, body, [SECRET, OTHER_SECRET]).event_key.startswith("7:727:")
    other = OTHER_SECRET if signing_secret == SECRET else SECRET
    with pytest.raises(SignatureError):
        verify(channel, headers, body, [other])


def test_same_json_reserialised_fails(channel, store):
    body, headers = delivery(store, "order_723_completed_refunds.json")
    for again in (json.dumps(json.loads(body)).encode(),  # spaces, unescaped slashes
                  json.dumps(json.loads(body), ensure_ascii=False,
                             separators=(",", ":")).encode()):  # raw UTF-8 for "João"
        assert again != body and json.loads(again) == json.loads(body)
        with pytest.raises(SignatureError):
            verify(channel, headers, again)


@pytest.mark.parametrize("offset", [-301, 301, -86_400 * 365, 86_400 * 365])
def test_no_timestamp_is_signed_so_verification_ignores_the_clock(channel, store, offset):
    # WooCommerce signs the body only; a replay is caught by the per-version event key instead.
    body, headers = delivery(store, "order_727_processing.json")
    assert verify(channel, headers, body, now=NOW + offset) == verify(channel, headers, body)


@pytest.mark.parametrize("header", ["x-wc-webhook-signature", "x-wc-webhook-topic",
                                    "x-wc-webhook-id"])
def test_missing_header_is_rejected(channel, store, header):
    body, headers = delivery(store, "order_727_processing.json")
    del headers[header]
    with pytest.raises(SignatureError, match="missing"):
        verify(channel, headers, body)


@pytest.mark.parametrize(("header", "value"), [
    ("x-wc-webhook-signature", "A" * 129), ("x-wc-webhook-topic", "order." + "x" * 300),
    ("x-wc-webhook-id", "7" * 300), ("x-wc-webhook-delivery-id", "f" * 300)])
def test_oversized_header_is_rejected(channel, store, header, value):
    body, headers = delivery(store, "order_727_processing.json")
    headers[header] = value
    with pytest.raises(SignatureError, match="too long"):
        verify(channel, headers, body)


def test_no_configured_secret_rejects(channel, store):
    body, headers = delivery(store, "order_727_processing.json")
    with pytest.raises(SignatureError, match="no signing secret"):
        verify(channel, headers, body, secrets=[])


def test_rejection_messages_carry_no_secret_or_expected_signature(channel, store):
    body, headers = delivery(store, "order_727_processing.json", secret="wrong-one")
    with pytest.raises(SignatureError) as caught:
        verify(channel, headers, body)
    assert SECRET not in str(caught.value) and sign(SECRET, body) not in str(caught.value)


def test_creation_ping_is_acknowledged_without_a_signature(channel, store):
    body, headers = store.ping(webhook_id=42)
    envelope = verify(channel, {k.lower(): v for k, v in headers.items()}, body, secrets=[])
    assert envelope.ping is True and envelope.topic is None and envelope.event_key == "ping:42"


@pytest.mark.parametrize("body", [b"webhook_id=42&total=1", b"webhook_id=", b'{"id":727}',
                                  b"webhook_id=42\n"])
def test_anything_else_unsigned_is_rejected(channel, body):
    with pytest.raises(SignatureError, match="missing X-WC-Webhook-Signature"):
        verify(channel, {"content-type": "application/x-www-form-urlencoded"}, body)


def test_two_orders_in_the_same_second_share_a_delivery_id_but_not_a_key(channel, store):
    first, h1 = delivery(store, "order_727_processing.json")
    second, h2 = delivery(store, "order_723_completed_refunds.json")
    assert h1["x-wc-webhook-delivery-id"] == h2["x-wc-webhook-delivery-id"]
    assert verify(channel, h1, first).event_key != verify(channel, h2, second).event_key


def test_a_new_version_gets_a_new_key_and_a_resend_the_same_key(channel, store):
    store.put_order(fixture("order_727_processing.json"))
    body, headers = store.webhook("order.updated", 727, SECRET, now=NOW)
    resent, again = store.webhook("order.updated", 727, SECRET, now=NOW + 5)
    store.touch(727, "2017-03-22T19:40:00Z", status="completed")
    newer, newer_headers = store.webhook("order.updated", 727, SECRET, now=NOW + 9)
    low = lambda h: {k.lower(): v for k, v in h.items()}  # noqa: E731
    key = verify(channel, low(headers), body).event_key
    assert verify(channel, low(again), resent).event_key == key
    assert verify(channel, low(newer_headers), newer).event_key == "7:727:2017-03-22T19:40:00"


def test_deletion_is_keyed_as_a_deletion(channel, store):
    body, headers = delivery(store, "order_727_processing.json", "order.deleted")
    assert body == b'{"id":727}'
    envelope = verify(channel, headers, body)
    assert envelope.topic == "order.deleted"
    assert envelope.event_key == f"7:727:deleted:{headers['x-wc-webhook-delivery-id']}"


@pytest.mark.parametrize(("signed_topic", "claimed"), [("order.updated", "order.deleted"),
                                                       ("order.deleted", "order.updated")])
def test_topic_header_must_agree_with_the_signed_body(channel, store, signed_topic, claimed):
    # the topic header is not signed: a captured update must not be replayed as a deletion
    body, headers = delivery(store, "order_727_processing.json", signed_topic)
    headers.update({"x-wc-webhook-topic": claimed, "x-wc-webhook-event": claimed.split(".")[1]})
    with pytest.raises(SignatureError, match="does not match"):
        verify(channel, headers, body)


def test_resource_and_event_headers_must_agree_with_the_topic(channel, store):
    body, headers = delivery(store, "order_727_processing.json")
    headers["x-wc-webhook-event"] = "deleted"
    with pytest.raises(SignatureError, match="Event"):
        verify(channel, headers, body)


def test_other_resources_verify_and_are_ignored(channel, store):
    body = wp_json_encode({"id": 93, "name": "Woo Single #1", "date_modified_gmt": "2026-01-01T00:00:00"})
    headers = {"x-wc-webhook-signature": sign(SECRET, body), "x-wc-webhook-topic": "product.updated",
               "x-wc-webhook-id": "9", "x-wc-webhook-delivery-id": "abc"}
    envelope = verify(channel, headers, body)
    assert envelope.event_key == "9:product.updated:abc"
    assert channel.to_orders(envelope.topic, parsed(body)) == []


def test_kept_headers_never_include_the_signature(channel):
    assert "x-wc-webhook-signature" not in channel.kept_headers
    assert {"x-wc-webhook-topic", "x-wc-webhook-id", "x-wc-webhook-delivery-id"} <= set(
        channel.kept_headers)


def test_new_secret_is_random_and_url_safe(channel):
    secrets = {channel.new_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert len(secret) >= 40 and base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))


def test_signatures_are_compared_in_constant_time():
    source = Path(WooCommerceChannel.__module__.replace(".", "/") + ".py")
    tree = ast.parse((Path(__file__).resolve().parents[2] / source).read_text())
    names = {"signature", "offered", "expected", "secret", "secrets"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
            used = {n.id for side in (node.left, *node.comparators) for n in ast.walk(side)
                    if isinstance(n, ast.Name)}
            assert not used & names, ast.unparse(node)
    assert "compare_digest" in ast.unparse(tree)


def test_registered_under_its_kind():
    assert isinstance(channel_for("woocommerce", {}), WooCommerceChannel)


# --- 2. mapping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ORDER_FIXTURES)
def test_every_fixture_maps_to_a_valid_canonical_order(channel, name):
    raw = fixture(name)
    order = mapped(channel, name)
    assert order["channel"] == "woocommerce"
    assert order["external_id"] == str(raw["id"]) and order["number"] == raw["number"]
    assert order["updated_at"] == raw["date_modified_gmt"] + "Z"
    assert order["placed_at"] == raw["date_created_gmt"] + "Z"
    assert order["currency"] == raw["currency"]


def test_docs_example_727_tax_exclusive_guest(channel):
    order = mapped(channel, "order_727_processing.json")
    assert order["prices_include_tax"] is False
    assert order["totals"] == {"subtotal": "18.00", "discount": "0.00", "shipping": "10.00",
                               "tax": "1.35", "total": "29.35"}
    first, second = order["lines"]
    assert (first["quantity"], first["unit_price"], first["discount"]) == ("2", "3.00", "0.00")
    assert "sku" not in first  # the docs' "" SKU
    assert first["taxes"] == [{"name": "State Tax", "amount": "0.45"}]
    assert second["name"] == "Ship Your Idea \u2013 Color: Black, Size: M Test"  # &ndash; decoded
    assert second["taxes"] == [{"name": "State Tax", "amount": "0.90"}]
    assert order["shipping"] == [{"method": "Flat Rate", "amount": "10.00", "taxes": []}]
    assert "external_id" not in order["customer"]  # customer_id 0 is a guest checkout
    assert order["customer"]["email"] == "john.doe@example.com"
    assert order["payment"] == {"status": "paid", "method": "Direct Bank Transfer",
                                "gateway": "bacs", "amount": "29.35"}


def test_docs_example_723_partial_refunds_non_ascii_registered_customer(channel):
    order = mapped(channel, "order_723_completed_refunds.json")
    assert order["customer"]["external_id"] == "26"
    assert order["billing_address"]["name"] == "João Silva"
    assert order["billing_address"]["country"] == "BR"
    assert order["payment"]["status"] == "partially_refunded"
    assert order["metadata"]["refunded"] == "19.00"
    assert order["totals"]["total"] == "39.00"


def test_tax_inclusive_prices_with_a_coupon_spread_over_lines(channel):
    order = mapped(channel, "order_inclusive_coupon_eur.json")
    assert order["prices_include_tax"] is True
    shoes, socks = order["lines"]
    assert (shoes["unit_price"], shoes["discount"]) == ("24.00", "4.80")
    assert (socks["unit_price"], socks["discount"]) == ("9.99", "3.00")
    assert shoes["taxes"] == [{"name": "USt. 20 %", "rate": "0.2", "amount": "7.20"}]
    assert socks["taxes"][0]["amount"] == "4.49"  # WooCommerce's rounded total_tax, not 4.495
    assert order["shipping"][0]["amount"] == "5.00"  # 4.17 + 0.83 VAT
    assert order["discounts"] == []  # the coupon is already in the lines
    assert order["metadata"]["coupons"] == [{"code": "sommer10", "amount": "7.80"}]
    assert order["totals"] == {"subtotal": "70.17", "discount": "0.00", "shipping": "5.00",
                               "tax": "12.52", "total": "75.17"}
    assert order["customer"]["last_name"] == "Größl"
    assert order["note"] == "Bitte beim Nachbarn abgeben, falls niemand öffnet."


def test_fees_negative_fee_and_gift_card(channel):
    order = mapped(channel, "order_fees_gift_card_gbp.json")
    assert order["lines"][1] == {"external_id": "fee:602", "name": "Gift wrap", "quantity": "1",
                                 "unit_price": "2.50", "discount": "0.00",
                                 "taxes": [{"name": "VAT", "rate": "0.2", "amount": "0.50"}]}
    assert order["discounts"] == [{"code": "Loyalty discount", "amount": "5.00"}]
    # a gift card pays for the order: the order is worth 55.74, the gateway took 45.74
    assert order["totals"] == {"subtotal": "47.50", "discount": "5.00", "shipping": "3.95",
                               "tax": "9.29", "total": "55.74"}
    assert order["payment"]["amount"] == "45.74" and order["payment"]["status"] == "paid"
    assert order["metadata"]["gift_cards"] == [{"code": "…WXYZ", "amount": "10.00"}]
    assert "GC7Q-2KLM-9XZA" not in json.dumps(order)
    assert "external_id" not in order["customer"]  # guest
    assert order["customer"]["first_name"] == "Siobhán"


def test_cancelled_unpaid_order_in_a_currency_without_minor_units(channel):
    order = mapped(channel, "order_cancelled_jpy.json")
    assert order["status"] == "cancelled"
    assert order["payment"]["status"] == "voided"
    assert order["lines"][0]["unit_price"] == "3000"
    assert order["lines"][0]["taxes"] == [{"name": "消費税", "rate": "0.1", "amount": "300"}]
    assert order["totals"]["total"] == "3300"
    assert order["customer"]["last_name"] == "山田"


def test_fully_refunded_order_with_three_minor_units(channel):
    order = mapped(channel, "order_refunded_kwd.json")
    assert order["status"] == "open"
    assert order["payment"]["status"] == "refunded"
    assert order["lines"][0]["unit_price"] == "6.250"
    assert order["totals"]["total"] == "13.500"
    assert order["billing_address"]["city"] == "الكويت"


@pytest.mark.parametrize(("status", "changes", "order_status", "payment"), [
    ("pending", {"date_paid_gmt": None, "transaction_id": ""}, "open", "pending"),
    ("on-hold", {"date_paid_gmt": None, "transaction_id": "ch_auth_only"}, "open", "authorized"),
    ("on-hold", {"date_paid_gmt": None, "transaction_id": ""}, "open", "pending"),
    ("failed", {"date_paid_gmt": None, "transaction_id": ""}, "open", "pending"),
    ("completed", {}, "open", "paid"),
    ("trash", {"date_paid_gmt": None, "transaction_id": ""}, "cancelled", "voided"),
    ("cancelled", {}, "cancelled", "paid"),
])
def test_status_and_payment_state(status, changes, order_status, payment):
    doc = {**fixture("order_727_processing.json"), "status": status, **changes}
    order = dump_order(load_order(map_order(parsed(wp_json_encode(doc)))))
    assert (order["status"], order["payment"]["status"]) == (order_status, payment)


def test_checkout_drafts_are_ignored(channel):
    doc = {**fixture("order_727_processing.json"), "status": "checkout-draft"}
    assert channel.to_orders("order.updated", doc) == []


def test_a_unit_price_that_does_not_divide_evenly_keeps_six_places(channel):
    doc = fixture("order_727_processing.json")
    doc["line_items"] = [{**doc["line_items"][1], "quantity": 3, "subtotal": "10.00",
                          "total": "10.00", "subtotal_tax": "0.00", "total_tax": "0.00",
                          "taxes": []}]
    doc.update(total="20.00", total_tax="0.00")
    order = dump_order(load_order(map_order(parsed(wp_json_encode(doc)))))
    assert order["lines"][0]["unit_price"] == "3.333333"
    assert order["totals"]["subtotal"] == "10.00" and order["totals"]["total"] == "20.00"


def test_restored_order_is_open_again_as_a_later_version(channel, store):
    store.put_order(fixture("order_727_processing.json"))
    store.trash(727, "2017-03-23T10:00:00Z")
    trashed = channel.to_orders("order.updated", parsed(store.delivery("order.updated", 727)[0]))
    store.touch(727, "2017-03-23T11:00:00Z", status="processing")
    body, headers = store.webhook("order.restored", 727, SECRET, now=NOW)
    envelope = verify(channel, {k.lower(): v for k, v in headers.items()}, body)
    (restored,) = channel.to_orders(envelope.topic, parsed(body))
    assert trashed[0]["status"] == "cancelled" and restored["status"] == "open"
    assert restored["updated_at"] == "2017-03-23T11:00:00Z" > trashed[0]["updated_at"]


def test_deletion_is_a_cancellation_patch(channel):
    assert channel.to_orders("order.deleted", fixture("order_deleted.json")) == [
        Patch("727", {"status": "cancelled"})]


@pytest.mark.parametrize("topic", [None, "product.updated", "coupon.created", "customer.deleted",
                                   "action.woocommerce_add_to_cart", "order.unknown"])
def test_unknown_topics_are_ignored(channel, topic):
    assert channel.to_orders(topic, fixture("order_727_processing.json")) == []


def test_a_permission_error_body_is_rejected_with_the_fix(channel):
    with pytest.raises(PayloadError, match="permission to read orders"):
        channel.to_orders("order.updated", fixture("webhook_permission_error.json"))


def test_an_order_without_lines_is_rejected(channel):
    doc = {**fixture("order_727_processing.json"), "line_items": []}
    with pytest.raises(PayloadError, match="no line items"):
        channel.to_orders("order.updated", doc)


# --- 3. the REST API against the fake store ----------------------------------------------------

def api_channel(fake: FakeWooCommerce) -> WooCommerceChannel:
    return WooCommerceChannel(Driver(fake).settings("https://broker.example/webhooks/woo"))


def test_api_url_defaults_to_the_store_address():
    assert WooCommerceChannel({"store_url": "https://shop.example.com/"}).api_url() == \
        "https://shop.example.com/wp-json/wc/v3"
    with pytest.raises(PayloadError):
        WooCommerceChannel({}).api({"consumer_key": "ck_x", "consumer_secret": "cs_y"})
    with pytest.raises(PayloadError, match="consumer_key"):
        WooCommerceChannel({"store_url": "https://shop.example.com"}).api({})


def test_v3_webhooks_need_no_api_call(channel):
    assert channel.needs_api("order.updated", fixture("order_727_processing.json")) is False
    assert channel.needs_api("order.deleted", fixture("order_deleted.json")) is False
    assert channel.needs_api("order.updated", fixture("webhook_permission_error.json")) is False


def test_legacy_payload_is_enriched_from_the_v3_order_with_basic_auth(fake):
    channel = api_channel(fake)
    fake.put_order(fixture("order_727_processing.json"))
    legacy = fixture("legacy_order_updated.json")
    assert channel.needs_api("order.updated", legacy) is True
    api = channel.api(Driver(fake).credentials())
    enriched = channel.enrich("order.updated", legacy, api)
    (call,) = fake.api_requests("/orders")
    assert call["method"] == "GET" and call["path"] == "/wp-json/wc/v3/orders/727"
    expected_auth = base64.b64encode(f"{fake.consumer_key}:{fake.consumer_secret}".encode()).decode()
    assert call["headers"]["Authorization"] == f"Basic {expected_auth}"
    assert load_order(channel.to_orders("order.updated", enriched)[0]) == load_order(
        channel.to_orders("order.updated", parsed(wp_json_encode(fixture(
            "order_727_processing.json"))))[0])


def test_enriching_an_order_that_is_gone_is_a_payload_error(fake):
    channel = api_channel(fake)
    with pytest.raises(PayloadError, match="404"):
        channel.enrich("order.updated", {"order": {"id": 999, "updated_at": "2017-01-01T00:00:00Z"}},
                       channel.api(Driver(fake).credentials()))


def seed(fake: FakeWooCommerce, count: int, start: datetime) -> None:
    for n in range(count):
        order_id = 5000 + (n * 37) % count  # ids not in modification order
        fake.put_order(fake.build_order(order_id, modified=start + timedelta(seconds=n)))


def test_catch_up_pages_oldest_first_and_merges_trashed_orders(fake):
    channel = api_channel(fake)
    start = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    seed(fake, 230, start)
    fake.put_order(fake.build_order(4000, modified=start - timedelta(hours=1)))  # before window
    fake.put_order(fake.build_order(4001, modified=start))
    fake.trash(4001, start + timedelta(seconds=100, milliseconds=500))
    events = list(channel.catch_up(channel.api(Driver(fake).credentials()),
                                   CatchUpWindow(since=start)))
    modified = [e.payload["date_modified_gmt"] for e in events]
    assert modified == sorted(modified) and len(events) == 231
    assert all(e.topic == "order.updated" for e in events)
    assert events[0].event_key == f"poll:{events[0].payload['id']}:2026-11-20T12:00:00"
    trashed = next(e for e in events if e.payload["id"] == 4001)
    assert trashed.event_key == "poll:4001:2026-11-20T12:01:40"
    assert channel.to_orders(trashed.topic, trashed.payload)[0]["status"] == "cancelled"
    assert 4000 not in {e.payload["id"] for e in events}
    calls = fake.api_requests("/orders")
    main = [c for c in calls if c["query"]["status"] == ["any"]]
    assert [c["query"]["page"] for c in main] == [["1"], ["2"], ["3"]]
    for call in calls:
        assert call["query"]["modified_after"] == ["2026-11-20T11:59:59"]  # exclusive bound
        assert call["query"]["dates_are_gmt"] == ["true"]
        assert call["query"]["orderby"] == ["modified"] and call["query"]["order"] == ["asc"]
        assert call["query"]["per_page"] == ["100"]


def test_catch_up_depends_on_gmt_dates(fake):
    # without dates_are_gmt the store compares site time (3 h behind): the fake is faithful
    fake.put_order(fake.build_order(1, modified="2026-11-20T12:00:30Z"))
    api = api_channel(fake).api(Driver(fake).credentials())
    local = api.get("/orders", modified_after="2026-11-20T12:00:00")
    gmt = api.get("/orders", modified_after="2026-11-20T12:00:00", dates_are_gmt="true")
    assert local == [] and [o["id"] for o in gmt] == [1]


def test_catch_up_honours_retry_after(fake):
    channel = api_channel(fake)
    seed(fake, 3, datetime(2026, 11, 20, 12, 0, tzinfo=UTC))
    fake.throttle(1, retry_after="0.2")
    began = time.monotonic()
    events = list(channel.catch_up(channel.api(Driver(fake).credentials()),
                                   CatchUpWindow(since=datetime(2026, 11, 20, tzinfo=UTC))))
    assert len(events) == 3
    assert time.monotonic() - began >= 0.2
    first, retried = fake.api_requests("/orders")[:2]
    assert first["query"] == retried["query"]


def test_a_long_retry_after_defers_the_poll(fake):
    channel = api_channel(fake)
    fake.throttle(1, retry_after="120")
    with pytest.raises(ChannelUnavailable) as caught:
        list(channel.catch_up(channel.api(Driver(fake).credentials()),
                              CatchUpWindow(since=datetime(2026, 11, 20, tzinfo=UTC))))
    assert caught.value.retry_after == 120


@pytest.mark.parametrize("credentials", [
    {"consumer_key": "ck_wrong_key_0000000000", "consumer_secret": "cs_wrong_secret_000000"},
    {"consumer_key": FakeWooCommerce().consumer_key, "consumer_secret": "cs_wrong_secret_000000"},
])
def test_wrong_credentials_are_unavailable_without_leaking_them(fake, credentials):
    channel = api_channel(fake)
    with pytest.raises(ChannelUnavailable) as caught:
        channel.enrich("order.updated", fixture("legacy_order_updated.json"),
                       channel.api(credentials))
    message = str(caught.value)
    assert "401" in message and "credentials" in message
    assert credentials["consumer_key"] not in message
    assert credentials["consumer_secret"] not in message


def test_the_fake_answers_like_woocommerce_to_bad_keys(fake):
    import requests

    wrong = requests.get(f"{fake.api_url}/orders", auth=(fake.consumer_key, "cs_nope"), timeout=5)
    anonymous = requests.get(f"{fake.api_url}/orders", timeout=5)
    too_many = requests.get(f"{fake.api_url}/orders", params={"per_page": 101},
                            auth=(fake.consumer_key, fake.consumer_secret), timeout=5)
    assert (wrong.status_code, wrong.json()["code"]) == (401, "woocommerce_rest_authentication_error")
    assert wrong.json()["message"] == "Consumer secret is invalid."
    assert anonymous.json() == {"code": "woocommerce_rest_cannot_view",
                                "message": "Sorry, you cannot list resources.",
                                "data": {"status": 401}}
    assert (too_many.status_code, too_many.json()["code"]) == (400, "rest_invalid_param")


@pytest.mark.parametrize("name", ORDER_FIXTURES)
def test_poll_and_webhook_of_one_version_are_the_same_order(fake, name):
    channel = api_channel(fake)
    order = fake.put_order(fixture(name))
    body, headers = fake.webhook("order.updated", order["id"], SECRET)
    envelope = channel.verify({k.lower(): v for k, v in headers.items()}, body, [SECRET],
                              time.time(), 300)
    (from_webhook,) = channel.to_orders(envelope.topic, parsed(body))
    since = datetime.fromisoformat(order["date_modified_gmt"]).replace(tzinfo=UTC)
    (event,) = list(channel.catch_up(channel.api(Driver(fake).credentials()),
                                     CatchUpWindow(since=since)))
    assert event.event_key == f"poll:{order['id']}:{order['date_modified_gmt']}"
    (from_poll,) = channel.to_orders(event.topic, event.payload)
    assert load_order(from_poll) == load_order(from_webhook)


def test_driver_events_verify_and_carry_the_expected_values(fake):
    driver = Driver(fake)
    channel = WooCommerceChannel(driver.settings("https://broker.example/webhooks/woo"))
    for cancelled, topic in ((False, "order.created"), (True, "order.updated")):
        suffix, body, headers = driver.order_event("1001", updated_at="2026-11-20T14:05:00Z",
                                                   cancelled=cancelled)
        assert suffix == "" and "X-WC-Webhook-Signature" not in headers
        signed = {k.lower(): v for k, v in driver.sign(SECRET, body, headers).items()}
        envelope = channel.verify(signed, body, [SECRET], time.time(), 300)
        assert envelope.topic == topic
        order = dump_order(load_order(channel.to_orders(envelope.topic, parsed(body))[0]))
        for path, value in driver.expected("1001").items():
            node: Any = order
            for part in path.split("."):
                node = node[int(part)] if part.isdigit() else node[part]
            assert node == value, path
    with pytest.raises(ValueError, match="integers"):
        driver.order_event("ord-1", updated_at="2026-11-20T14:05:00Z")
