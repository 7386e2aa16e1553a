"""BigCommerce channel: webhook verification, V2 order mapping, and the API against the fake.

Fixtures (tests/fixtures/bigcommerce) are shaped like the Orders V2 reference examples
(github.com/bigcommerce/docs reference/orders.v2.oas2.yml) and the webhook callback examples
(developer.bigcommerce.com/docs/integrations/webhooks/events).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fakes.bigcommerce import Driver, FakeBigCommerce, signature
from marshmallow import ValidationError

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, Patch, PayloadError, SignatureError, channel_for
from broker.channels.bigcommerce import BigCommerceApi, BigCommerceChannel, client_secret_key
from broker.channels.standard_webhooks import sign as standard_sign
from broker.schemas.order import dump_order, load_order

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bigcommerce"
SECRET = "2p7yk3c0ynd0wlqxuy0yxbzf3ac0jhq"  # shaped like a BigCommerce app client secret
OTHER = "hz8x0jq1kq5m3n9v2c4b6z8x0jq1kq5"
NOW = 1_700_000_000
TOLERANCE = 300


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text(), parse_float=Decimal)


def enriched(name: str) -> tuple[str, dict[str, Any]]:
    """(scope, payload) as `enrich` leaves it: the callback plus the API's answers."""
    doc = fixture(name)
    return doc["webhook"]["scope"], {**doc["webhook"], "order": doc["order"], "products": doc["products"],
                                     "shipping_addresses": doc["shipping_addresses"]}


def mapped(name: str) -> dict[str, Any]:
    scope, payload = enriched(name)
    [order] = BigCommerceChannel().to_orders(scope, payload)
    return dump_order(load_order(order))


def callback(scope: str = "store/order/created", order_id: int = 250) -> bytes:
    payload = {"scope": scope, "store_id": "1025646", "data": {"type": "order", "id": order_id},
               "hash": "dd70c0976e06b67aaf671e73f49dcb79230ebf9d", "created_at": NOW,
               "producer": "stores/a1b2c3d4e5"}
    return json.dumps(payload, separators=(",", ":")).encode()


def signed(body: bytes, secret: str = SECRET, msg_id: str = "msg_2Zq8a", stamp: int = NOW) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(stamp),
            "webhook-signature": signature(secret, msg_id, stamp, body)}


def verify(headers: dict[str, str], body: bytes, secrets: list[str] | None = None, now: float = NOW):
    return BigCommerceChannel().verify(headers, body, [SECRET] if secrets is None else secrets,
                                       now=now, tolerance=TOLERANCE)


# --- verification -----------------------------------------------------------------------------

def test_valid_callback_is_keyed_on_webhook_id_with_the_scope_as_topic():
    body = callback("store/order/statusUpdated")
    envelope = verify(signed(body), body)
    assert (envelope.event_key, envelope.topic, envelope.ping) == ("msg_2Zq8a", "store/order/statusUpdated",
                                                                   False)


def test_hmac_key_is_the_raw_client_secret_bytes_as_in_the_vendor_sample():
    """BigCommerce's sample passes base64(client_secret) to the Standard Webhooks library, which
    decodes it again: the key is the secret's UTF-8 bytes, not a base64 decoding of it."""
    body = callback()
    mac = hmac.new(SECRET.encode(), b"msg_2Zq8a." + str(NOW).encode() + b"." + body, hashlib.sha256)
    assert signed(body)["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
    assert base64.b64decode(client_secret_key(SECRET)) == SECRET.encode()
    assert verify(signed(body), body).event_key == "msg_2Zq8a"


def test_a_secret_that_looks_like_base64_is_not_decoded_into_the_key():
    secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # valid base64: a decoding verifier would accept
    body = callback()
    decoded_key = standard_sign(secret, "msg_2Zq8a", NOW, body)  # keyed with b64decode(secret)
    with pytest.raises(SignatureError, match="no matching"):
        verify({**signed(body, secret=secret), "webhook-signature": decoded_key}, body, secrets=[secret])
    assert verify(signed(body, secret=secret), body, secrets=[secret]).event_key == "msg_2Zq8a"


def test_tampered_body_is_rejected():
    body = callback(order_id=250)
    with pytest.raises(SignatureError):
        verify(signed(body), callback(order_id=251))


def test_wrong_secret_is_rejected():
    body = callback()
    with pytest.raises(SignatureError):
        verify(signed(body, secret=OTHER), body)


@pytest.mark.parametrize("signing", [SECRET, OTHER])
def test_rotation_accepts_either_configured_client_secret(signing):
    body = callback()
    assert verify(signed(body, secret=signing), body, secrets=[OTHER, SECRET]).event_key == "msg_2Zq8a"


def test_no_configured_secret_is_refused():
    body = callback()
    with pytest.raises(SignatureError, match="no client secret"):
        verify(signed(body), body, secrets=["", ""])


@pytest.mark.parametrize(("offset", "reason"), [(-TOLERANCE - 1, "too old"), (TOLERANCE + 1, "too new")])
def test_stale_and_future_timestamps_are_rejected_though_signed(offset, reason):
    body = callback()
    with pytest.raises(SignatureError, match=reason):
        verify(signed(body, stamp=NOW + offset), body)


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_timestamps_at_the_tolerance_edge_are_accepted(offset):
    body = callback()
    assert verify(signed(body, stamp=NOW + offset), body).event_key == "msg_2Zq8a"


def test_same_json_reserialised_fails():
    body = callback()
    reserialised = json.dumps(json.loads(body), indent=1).encode()
    assert reserialised != body and json.loads(reserialised) == json.loads(body)
    with pytest.raises(SignatureError):
        verify(signed(body), reserialised)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(missing):
    body = callback()
    headers = signed(body)
    del headers[missing]
    with pytest.raises(SignatureError, match="missing"):
        verify(headers, body)


def test_oversized_headers_are_rejected():
    body = callback()
    headers = signed(body)
    with pytest.raises(SignatureError, match="too long"):
        verify({**headers, "webhook-signature": " ".join([headers["webhook-signature"]] * 200)}, body)
    long_id = "m" * 256
    with pytest.raises(SignatureError, match="too long"):
        verify(signed(body, msg_id=long_id), body)


def test_signature_error_never_carries_the_secret_or_the_expected_signature():
    body = callback()
    expected = signed(body)["webhook-signature"].split(",", 1)[1]
    with pytest.raises(SignatureError) as caught:
        verify(signed(body, secret=OTHER), body)
    assert SECRET not in str(caught.value) and expected not in str(caught.value)


def test_authentic_non_json_body_has_no_topic_and_signatures_are_not_kept():
    body = b"not json"
    assert verify(signed(body), body).topic is None
    assert "webhook-signature" not in BigCommerceChannel.kept_headers
    assert "webhook-id" in BigCommerceChannel.kept_headers


def test_registered_entry_point_is_this_adapter():
    assert isinstance(channel_for("bigcommerce"), BigCommerceChannel)


# --- mapping ----------------------------------------------------------------------------------

EXPECTED_TOTALS = {
    "order_tax_exclusive": ("USD", False, {"subtotal": "311.98", "discount": "10.00", "shipping": "12.00",
                                           "tax": "25.12", "total": "339.10"}, "paid", "339.10"),
    "order_tax_inclusive_guest": ("GBP", True, {"subtotal": "43.99", "discount": "2.00", "shipping": "4.50",
                                                "tax": "7.75", "total": "46.49"}, "paid", "46.49"),
    "order_gift_certificate_fee": ("EUR", False, {"subtotal": "105.00", "discount": "0.00",
                                                  "shipping": "4.95", "tax": "17.09", "total": "127.04"},
                                   "paid", "92.04"),
    "order_cancelled_digital": ("USD", False, {"subtotal": "19.99", "discount": "0.00", "shipping": "0.00",
                                               "tax": "0.00", "total": "19.99"}, "voided", "19.99"),
    "order_refunded_wrapping": ("USD", False, {"subtotal": "32.50", "discount": "0.00", "shipping": "6.50",
                                               "tax": "0.00", "total": "39.00"}, "refunded", "39.00"),
    "order_partially_refunded_jpy": ("JPY", False, {"subtotal": "4500", "discount": "0", "shipping": "800",
                                                    "tax": "530", "total": "5830"},
                                     "partially_refunded", "5830"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_TOTALS))
def test_every_fixture_maps_to_a_valid_order_with_exact_money(name):
    currency, inclusive, totals, payment_status, paid = EXPECTED_TOTALS[name]
    order = mapped(name)
    source = fixture(name)["order"]
    assert order["external_id"] == order["number"] == str(source["id"])
    assert order["channel"] == "bigcommerce"
    assert order["currency"] == currency
    assert order["prices_include_tax"] is inclusive
    assert order["totals"] == totals
    assert order["payment"]["status"] == payment_status
    assert order["payment"]["amount"] == paid


def test_tax_exclusive_order_lines_discounts_shipping_and_customer():
    order = mapped("order_tax_exclusive")
    towel, brewer = order["lines"]
    assert [towel[k] for k in ("external_id", "sku", "quantity", "unit_price", "discount")] == [
        "65", "S-ORAN", "2", "55.99", "0.00"]
    assert towel["taxes"] == [{"amount": "8.69"}]
    # the automatic promotion targets the product; the coupon's per-line shares are order-level
    assert (brewer["unit_price"], brewer["discount"], brewer["taxes"][0]["amount"]) == ("225.00", "25.00",
                                                                                        "15.47")
    assert order["discounts"] == [{"code": "SAVE10", "amount": "10.00"}]
    assert order["shipping"] == [{"method": "Flat Rate", "amount": "12.00",
                                  "taxes": [{"amount": "0.96"}]}]
    assert order["customer"]["external_id"] == "11"
    assert order["customer"]["email"] == "janedoe@example.com"
    assert order["billing_address"]["name"] == "Jane Doe"
    assert order["shipping_address"]["line1"] == "666 Sussex St"
    assert order["shipping_address"]["company"] == "Acme Pty Ltd"
    assert order["shipping_address"]["country"] == "US"
    assert order["placed_at"] == "2019-03-05T21:40:11Z"
    assert order["updated_at"] == "2019-03-11T15:17:25Z"
    assert order["status"] == "open"
    assert order["note"] == "Leave at the back door"
    assert order["payment"]["transaction_id"] == "ch_3OqK2eLkdIwHu7ix0"
    assert order["payment"]["method"] == "Credit Card"
    assert order["metadata"]["staff_notes"] == "BIN-45"
    assert order["metadata"]["status_id"] == 11


def test_tax_inclusive_guest_order_keeps_gross_prices_and_non_ascii_text():
    order = mapped("order_tax_inclusive_guest")
    assert order["prices_include_tax"] is True
    assert [line["unit_price"] for line in order["lines"]] == ["12.00", "7.99"]
    assert order["lines"][0]["name"] == "Café au lait mug ☕"
    assert order["lines"][0]["sku"] == "MUG-CAFÉ"
    assert order["lines"][1]["name"] == "Thé vert — Sencha 100 g"
    assert order["discounts"] == [{"code": "Manual Discount", "amount": "2.00"}]
    assert order["shipping"][0]["amount"] == "4.50"  # the gross figure, as the store's prices
    assert "external_id" not in (order.get("customer") or {})  # guest: customer_id 0
    assert order["customer"]["first_name"] == "Zoë"
    assert order["billing_address"]["name"] == "Zoë Brontë-Łukasz"
    assert order["billing_address"]["line1"] == "14 Crème Brûlée Lane"
    assert "region" not in order["billing_address"]  # an empty state is no region
    assert order["billing_address"]["country"] == "GB"


def test_gift_certificate_and_store_credit_reduce_the_payment_not_the_total():
    order = mapped("order_gift_certificate_fee")
    assert order["totals"]["total"] == "127.04"
    assert order["payment"]["amount"] == "92.04"
    assert order["metadata"]["gift_certificate_amount"] == "25.00"
    assert order["metadata"]["store_credit_amount"] == "10.00"
    fee = order["lines"][-1]
    assert (fee["external_id"], fee["name"], fee["unit_price"], fee["taxes"][0]["amount"]) == (
        "fee:1", "Sperrgutzuschlag", "5.00", "0.95")
    assert order["lines"][1]["name"] == "Geschenkgutschein 20 €"
    assert "sku" not in order["lines"][1]  # BigCommerce sends "" for no SKU
    assert order["billing_address"]["name"] == "Lena Groß"


def test_cancelled_digital_order():
    order = mapped("order_cancelled_digital")
    assert order["status"] == "cancelled"
    assert order["payment"]["status"] == "voided"
    assert order["shipping"] == []
    assert order.get("shipping_address") is None


def test_refunded_order_with_wrapping_and_handling():
    order = mapped("order_refunded_wrapping")
    assert order["status"] == "open"
    assert order["payment"]["status"] == "refunded"
    assert order["lines"][1] == {"name": "Gift wrapping", "quantity": "1", "unit_price": "2.50",
                                 "discount": "0.00", "taxes": []}
    assert [(s["method"], s["amount"]) for s in order["shipping"]] == [("Flat Rate", "5.00"),
                                                                        ("Handling", "1.50")]


def test_partially_refunded_jpy_order_has_no_minor_units_and_utc_times():
    order = mapped("order_partially_refunded_jpy")
    assert order["lines"][0]["unit_price"] == "4500"
    assert order["lines"][0]["name"] == "抹茶セット (Matcha set)"
    assert order["shipping"][0]["taxes"][0]["amount"] == "80"
    assert order["placed_at"] == "2024-04-01T09:00:00Z"  # 18:00 +0900
    assert order["billing_address"]["name"] == "花子 山田"


@pytest.mark.parametrize(("status_id", "payment_status", "status", "payment"), [
    (14, "captured", "open", "partially_refunded"),  # the order's refund state wins
    (4, "captured", "open", "refunded"),
    (11, "authorized", "open", "authorized"),
    (11, "", "open", "paid"),          # manual orders carry no payment_status
    (7, "", "open", "pending"),        # Awaiting Payment
    (12, "held for review", "open", "pending"),
    (5, "", "cancelled", "voided"),
    (6, "declined", "cancelled", "voided"),  # Declined
    (5, "captured", "cancelled", "paid"),    # cancelled, not yet refunded
])
def test_status_and_payment_status(status_id, payment_status, status, payment):
    scope, payload = enriched("order_tax_exclusive")
    payload["order"].update(status_id=status_id, payment_status=payment_status)
    order = dump_order(load_order(BigCommerceChannel().to_orders(scope, payload)[0]))
    assert (order["status"], order["payment"]["status"]) == (status, payment)


def test_incomplete_order_is_ignored():
    scope, payload = enriched("order_incomplete")
    assert BigCommerceChannel().to_orders(scope, payload) == []


@pytest.mark.parametrize("scope", ["store/order/message/created", "store/product/updated",
                                   "store/order/transaction/created", "store/cart/created", None])
def test_unknown_topics_are_ignored(scope):
    payload = json.loads(callback(scope or "store/customer/created"), parse_float=Decimal)
    channel = BigCommerceChannel()
    assert not channel.needs_api(scope, payload)
    assert channel.to_orders(scope, payload) == []


def test_archived_order_becomes_a_cancellation_patch():
    payload = json.loads(callback("store/order/archived", 218), parse_float=Decimal)
    channel = BigCommerceChannel()
    assert not channel.needs_api("store/order/archived", payload)
    [patch] = channel.to_orders("store/order/archived", payload)
    assert isinstance(patch, Patch)
    assert (patch.external_id, patch.changes) == ("218", {"status": "cancelled"})


@pytest.mark.parametrize("scope", ["store/order/created", "store/order/updated",
                                   "store/order/statusUpdated", "store/order/refund/created"])
def test_order_topics_are_thin_until_enriched(scope):
    channel = BigCommerceChannel()
    payload = json.loads(callback(scope), parse_float=Decimal)
    assert channel.needs_api(scope, payload)
    with pytest.raises(PayloadError, match="not enriched"):
        channel.to_orders(scope, payload)
    assert not channel.needs_api(scope, {**payload, "order": {}, "products": []})


def test_transactional_currency_wins_over_the_display_currency():
    scope, payload = enriched("order_tax_exclusive")
    payload["order"]["currency_code"] = "EUR"  # shown on the storefront; the shopper paid USD
    [order] = BigCommerceChannel().to_orders(scope, payload)
    assert order["currency"] == "USD"
    assert order["metadata"]["display_currency"] == "EUR"


def test_totals_that_do_not_add_up_are_refused_by_the_schema():
    scope, payload = enriched("order_tax_exclusive")
    payload["order"]["total_inc_tax"] = "349.1000"
    [order] = BigCommerceChannel().to_orders(scope, payload)
    with pytest.raises(ValidationError, match="does not match"):
        load_order(order)


def test_unusable_order_id_is_a_payload_error():
    payload = json.loads(callback(), parse_float=Decimal)
    payload["data"]["id"] = "../../customers"
    with pytest.raises(PayloadError, match=r"data\.id"):
        BigCommerceChannel().enrich("store/order/created", payload, None)  # type: ignore[arg-type]


# --- API settings -----------------------------------------------------------------------------

@pytest.mark.parametrize(("settings", "url"), [
    ({"store_hash": "abc123"}, "https://api.bigcommerce.com/stores/abc123"),
    ({"store_hash": "abc123", "api_url": "http://127.0.0.1:9/stores/abc123/"}, "http://127.0.0.1:9/stores/abc123"),
    ({"store_hash": "abc123", "api_url": "http://127.0.0.1:9"}, "http://127.0.0.1:9/stores/abc123"),
])
def test_api_base_url_from_settings(settings, url):
    api = BigCommerceChannel(settings).api({"access_token": "tok-123456"})
    assert isinstance(api, BigCommerceApi)
    assert api.base_url == url
    assert api.session.headers["X-Auth-Token"] == "tok-123456"
    assert api.session.headers["Accept"] == "application/json"


def test_api_needs_a_store_hash_and_a_token():
    with pytest.raises(PayloadError, match="store_hash"):
        BigCommerceChannel({}).api({"access_token": "tok-123456"})
    with pytest.raises(PayloadError, match="access_token"):
        BigCommerceChannel({"store_hash": "abc123"}).api({})


def test_merchant_does_not_choose_the_signing_secret():
    with pytest.raises(NotImplementedError):
        BigCommerceChannel().new_secret()


# --- against the fake -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def running() -> Iterator[FakeBigCommerce]:
    with FakeBigCommerce() as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def fake(running: FakeBigCommerce) -> FakeBigCommerce:
    running.reset()
    return running


@pytest.fixture
def driver(fake: FakeBigCommerce) -> Driver:
    return Driver(fake)


@pytest.fixture
def channel(driver: Driver) -> BigCommerceChannel:
    return BigCommerceChannel(driver.settings(""))


def api_of(channel: BigCommerceChannel, driver: Driver) -> BigCommerceApi:
    api = channel.api(driver.credentials())
    assert isinstance(api, BigCommerceApi)
    return api


def webhook_payload(fake: FakeBigCommerce, scope: str, order_id: int | str) -> dict[str, Any]:
    body, _ = fake.webhook(scope, order_id)
    return json.loads(body, parse_float=Decimal)


def test_enrich_reads_the_order_products_and_addresses_with_the_token(fake, driver, channel):
    doc = fixture("order_tax_exclusive")
    fake.seed_fixture(doc)
    payload = webhook_payload(fake, "store/order/created", 218)
    out = channel.enrich("store/order/created", payload, api_of(channel, driver))
    prefix = f"/stores/{fake.store_hash}/v2/orders/218"
    assert [r["path"] for r in fake.requests] == [prefix, f"{prefix}/products",
                                                  f"{prefix}/shipping_addresses"]
    assert fake.requests[0]["query"] == {"include": ["fees"]}
    assert fake.requests[1]["query"] == {"page": ["1"], "limit": ["250"]}
    for logged in fake.requests:
        assert logged["headers"]["X-Auth-Token"] == fake.access_token
        assert logged["headers"]["Accept"] == "application/json"
    assert out["order"]["id"] == 218 and out["order"]["fees"] == []
    assert [p["id"] for p in out["products"]] == [65, 66]
    assert not channel.needs_api("store/order/created", out)
    [order] = channel.to_orders("store/order/created", out)
    assert load_order(order) == load_order(channel.to_orders(*enriched("order_tax_exclusive"))[0])


def test_enrich_handles_204_for_an_order_without_shipping_addresses(fake, driver, channel):
    fake.seed_fixture(fixture("order_cancelled_digital"))
    payload = webhook_payload(fake, "store/order/statusUpdated", 230)
    out = channel.enrich("store/order/statusUpdated", payload, api_of(channel, driver))
    assert out["shipping_addresses"] == []
    [order] = channel.to_orders("store/order/statusUpdated", out)
    assert dump_order(load_order(order))["status"] == "cancelled"


def test_enrich_pages_through_products(fake, driver, channel):
    doc = fixture("order_tax_exclusive")
    extra = {**doc["products"][0], "id": 67, "applied_discounts": []}
    fake.seed(doc["order"], [*doc["products"], extra], doc["shipping_addresses"])
    channel.page_size = 2
    out = channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 218),
                         api_of(channel, driver))
    assert [p["id"] for p in out["products"]] == [65, 66, 67]
    pages = [r["query"]["page"] for r in fake.api_requests("/products")]
    assert pages == [["1"], ["2"]]


def test_enrich_of_an_incomplete_order_skips_the_line_items(fake, driver, channel):
    fake.seed_fixture(fixture("order_incomplete"))
    out = channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 233),
                         api_of(channel, driver))
    assert len(fake.requests) == 1
    assert channel.to_orders("store/order/created", out) == []


def test_unknown_order_is_a_payload_error(fake, driver, channel):
    with pytest.raises(PayloadError, match="404"):
        channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 999),
                       api_of(channel, driver))


def test_wrong_credentials_are_unavailable_without_leaking_the_token(fake, driver, channel):
    fake.simple_order(100, date_modified="2026-11-20T14:05:00Z")
    bad = "bc-token-wrong-0123456789"
    api = channel.api({"access_token": bad})
    with pytest.raises(ChannelUnavailable) as caught:
        channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 100), api)
    assert "401" in str(caught.value)
    assert bad not in str(caught.value) and fake.access_token not in str(caught.value)


def test_rate_limit_reset_header_is_honoured(fake, driver, channel):
    fake.simple_order(100, date_modified="2026-11-20T14:05:00Z")
    fake.throttle(1, retry_after="0.3")
    started = time.monotonic()
    out = channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 100),
                         api_of(channel, driver))
    assert time.monotonic() - started >= 0.3
    assert out["order"]["id"] == 100
    assert [r["path"] for r in fake.requests][:2] == [f"/stores/{fake.store_hash}/v2/orders/100"] * 2


def test_long_rate_limit_wait_defers_with_the_vendors_delay(fake, driver, channel):
    fake.simple_order(100, date_modified="2026-11-20T14:05:00Z")
    fake.throttle(1, retry_after="15")
    with pytest.raises(ChannelUnavailable, match="429") as caught:
        channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 100),
                       api_of(channel, driver))
    assert caught.value.retry_after == pytest.approx(15.0)


def seed_versions(fake: FakeBigCommerce) -> None:
    for order_id, modified in ((101, "2026-11-20T10:00:00Z"), (102, "2026-11-20T09:00:00Z"),
                               (103, "2026-11-20T11:30:00Z"), (104, "2026-11-20T11:00:00Z"),
                               (105, "2026-11-20T12:00:00Z"), (90, "2026-11-19T08:00:00Z")):
        fake.simple_order(order_id, date_modified=modified)
    fake.simple_order(106, date_modified="2026-11-20T12:30:00Z", status_id=0, status="Incomplete",
                      payment_status="")


def test_catch_up_pages_oldest_first_and_skips_incomplete_orders(fake, driver, channel):
    seed_versions(fake)
    channel.page_size = 2
    since = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
    events = list(channel.catch_up(api_of(channel, driver), CatchUpWindow(since=since)))
    assert [e.event_key for e in events] == [
        "poll:102:2026-11-20T09:00:00Z", "poll:101:2026-11-20T10:00:00Z", "poll:104:2026-11-20T11:00:00Z",
        "poll:103:2026-11-20T11:30:00Z", "poll:105:2026-11-20T12:00:00Z"]
    assert {e.topic for e in events} == {"store/order/updated"}
    assert events[0].payload["data"] == {"type": "order", "id": 102}
    listed = fake.api_requests("/v2/orders")
    assert [r["query"]["page"] for r in listed] == [["1"], ["2"], ["3"], ["4"]]
    assert listed[0]["query"]["min_date_modified"] == ["Fri, 20 Nov 2026 08:00:00 +0000"]
    assert listed[0]["query"]["sort"] == ["date_modified:asc"]


def test_catch_up_with_nothing_new_ends_on_204(fake, driver, channel):
    seed_versions(fake)
    window = CatchUpWindow(since=datetime(2027, 1, 1, tzinfo=UTC))
    assert list(channel.catch_up(api_of(channel, driver), window)) == []
    assert len(fake.requests) == 1


def test_poll_and_webhook_of_the_same_version_map_to_the_same_order(fake, driver, channel):
    fake.seed_fixture(fixture("order_tax_exclusive"))
    api = api_of(channel, driver)
    by_webhook = channel.enrich("store/order/created", webhook_payload(fake, "store/order/created", 218), api)
    [polled] = channel.catch_up(api, CatchUpWindow(since=datetime(2019, 3, 1, tzinfo=UTC)))
    assert polled.event_key == "poll:218:2019-03-11T15:17:25Z"
    assert channel.needs_api(polled.topic, polled.payload)
    by_poll = channel.enrich(polled.topic, json.loads(json.dumps(polled.payload)), api)
    a = channel.to_orders("store/order/created", by_webhook)[0]
    b = channel.to_orders(polled.topic, by_poll)[0]
    assert load_order(a) == load_order(b)


def test_driver_round_trip_yields_its_expected_values(fake, driver, channel):
    suffix, body, headers = driver.order_event("7001", updated_at="2026-11-20T14:05:00Z")
    assert suffix == ""
    stamp = int(time.time())
    envelope = channel.verify(driver.sign(SECRET, body, dict(headers)), body, [SECRET], stamp, TOLERANCE)
    assert envelope.event_key == headers["webhook-id"]
    assert envelope.topic == "store/order/updated"
    payload = json.loads(body, parse_float=Decimal)
    order = dump_order(load_order(channel.to_orders(envelope.topic, channel.enrich(
        envelope.topic, payload, channel.api(driver.credentials())))[0]))
    for path, value in driver.expected("7001").items():
        node: Any = order
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        assert node == value, path
    assert order["updated_at"] == "2026-11-20T14:05:00Z"


def test_driver_events_have_fresh_ids_and_the_store_keeps_the_newest_version(fake, driver):
    _, _, first = driver.order_event("7002", updated_at="2026-11-20T14:05:00Z", cancelled=True)
    _, _, second = driver.order_event("7002", updated_at="2026-11-20T14:00:00Z")
    assert first["webhook-id"] != second["webhook-id"]
    assert fake.orders["7002"]["status_id"] == 5  # the older version did not overwrite it
    assert driver.expected("7002")["status"] == "cancelled"
    stale = driver.sign(SECRET, b"{}", {"webhook-id": "msg_x"}, timestamp=NOW)
    assert stale["webhook-timestamp"] == str(NOW)
