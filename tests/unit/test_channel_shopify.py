"""Shopify channel: HMAC verification, REST Order mapping, enrichment and catch-up against the fake.

Vendor facts under test: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries (base64
HMAC-SHA256 of the raw body with the client secret), .../webhooks/delivery-structure (headers),
https://shopify.dev/docs/api/admin-rest/usage/pagination (Link + page_info) and
.../usage/rate-limits (429 + Retry-After).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
from fakes.shopify import Driver, FakeShopify, fixture

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, Patch, PayloadError, SignatureError, channel_for
from broker.channels.shopify import ShopifyChannel, map_order, next_page_info, sign
from broker.schemas.order import dump_order, load_order

SECRET = "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"
OLD_SECRET = "shpss_00000000000000000000000000000000"
NOW = time.time()
ORDER_FIXTURES = ["order_create.json", "order_tax_included_presentment.json",
                  "order_gift_card.json", "order_cancelled_refunded.json",
                  "order_edited_partially_refunded.json"]


def parse(body: bytes) -> Any:
    """How the broker parses a stored body (broker.services.intake.parse_json)."""
    return json.loads(body, parse_float=Decimal)


def load(name: str) -> Any:
    return parse(json.dumps(fixture(name)).encode())


def lower(headers: dict[str, str]) -> dict[str, str]:
    """The gateway hands verify() lower-case header names."""
    return {k.lower(): v for k, v in headers.items()}


def delivery(topic: str = "orders/create", payload: Any = None, secret: str = SECRET,
             **headers: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload or fixture("order_create.json"), separators=(",", ":")).encode()
    hdrs = {"x-shopify-topic": topic, "x-shopify-hmac-sha256": sign(secret, body),
            "x-shopify-shop-domain": "acme.myshopify.com", "x-shopify-api-version": "2025-10",
            "x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            "x-shopify-event-id": "7b8c9d0a-1234-5678-90ab-cdef12345678",
            "x-shopify-triggered-at": datetime.fromtimestamp(NOW, UTC).isoformat()}
    for name, value in headers.items():
        key = "x-shopify-" + name.replace("_", "-")
        if value is None:
            hdrs.pop(key, None)
        else:
            hdrs[key] = value
    return body, hdrs


def verify(body: bytes, headers: dict[str, str], secrets: list[str] | None = None,
           settings: dict[str, Any] | None = None):
    return ShopifyChannel(settings).verify(headers, body, secrets or [SECRET], now=NOW,
                                           tolerance=300)


# --- 1. verification -----------------------------------------------------------------------------


def test_valid_delivery_is_keyed_on_the_event_id_and_topic():
    envelope = verify(*delivery("orders/paid"))
    assert envelope.event_key == "7b8c9d0a-1234-5678-90ab-cdef12345678"
    assert envelope.topic == "orders/paid"
    assert envelope.ping is False


def test_without_an_event_id_the_webhook_id_is_the_key():
    envelope = verify(*delivery(event_id=None))
    assert envelope.event_key == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"


def test_unprefixed_events_header_names_are_accepted():
    body, hdrs = delivery()
    unprefixed = {k.removeprefix("x-"): v for k, v in hdrs.items()}
    envelope = verify(body, unprefixed)
    assert (envelope.event_key, envelope.topic) == ("7b8c9d0a-1234-5678-90ab-cdef12345678",
                                                    "orders/create")


def test_tampered_body_is_refused():
    body, hdrs = delivery()
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(body.replace(b"306.32", b"006.32"), hdrs)


def test_wrong_secret_is_refused_and_the_message_names_no_secret():
    body, hdrs = delivery(secret="shpss_not_the_right_one")
    with pytest.raises(SignatureError) as exc:
        verify(body, hdrs)
    assert SECRET not in str(exc.value) and hdrs["x-shopify-hmac-sha256"] not in str(exc.value)
    assert sign(SECRET, body) not in str(exc.value)


@pytest.mark.parametrize("signing_secret", [SECRET, OLD_SECRET])
def test_during_rotation_either_secret_verifies(signing_secret):
    envelope = verify(*delivery(secret=signing_secret), secrets=[SECRET, OLD_SECRET])
    assert envelope.topic == "orders/create"


def test_no_configured_secret_refuses():
    with pytest.raises(SignatureError, match="no client secret"):
        ShopifyChannel().verify(delivery()[1], delivery()[0], [], now=NOW, tolerance=300)


def test_reserialised_json_fails_although_it_is_the_same_document():
    body, hdrs = delivery()
    reserialised = json.dumps(json.loads(body), indent=1).encode()
    assert json.loads(reserialised) == json.loads(body)
    with pytest.raises(SignatureError):
        verify(reserialised, hdrs)


@pytest.mark.parametrize("missing", ["hmac_sha256", "topic"])
def test_missing_signature_or_topic_is_refused(missing):
    with pytest.raises(SignatureError, match="missing"):
        verify(*delivery(**{missing: None}))


def test_missing_both_ids_is_refused():
    with pytest.raises(SignatureError, match="Event-Id"):
        verify(*delivery(event_id=None, webhook_id=None))


@pytest.mark.parametrize("name,value", [("hmac_sha256", "A" * 200), ("event_id", "e" * 300),
                                        ("topic", "orders/" + "x" * 300)])
def test_oversized_headers_are_refused(name, value):
    with pytest.raises(SignatureError, match="too long"):
        verify(*delivery(**{name: value}))


def test_signature_that_is_not_base64_is_refused():
    with pytest.raises(SignatureError, match="base64"):
        verify(*delivery(hmac_sha256="not*base64!"))


def test_hex_digest_instead_of_base64_is_refused():
    body, hdrs = delivery()
    hdrs["x-shopify-hmac-sha256"] = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with pytest.raises(SignatureError):
        verify(body, hdrs)


def test_stale_and_future_triggered_at_are_refused_but_retries_within_hours_pass():
    four_hours_ago = datetime.fromtimestamp(NOW - 4 * 3600, UTC).isoformat()
    assert verify(*delivery(triggered_at=four_hours_ago)).topic == "orders/create"
    stale = datetime.fromtimestamp(NOW - 13 * 3600, UTC).isoformat()
    with pytest.raises(SignatureError, match="too long ago"):
        verify(*delivery(triggered_at=stale))
    future = datetime.fromtimestamp(NOW + 301, UTC).isoformat()
    with pytest.raises(SignatureError, match="future"):
        verify(*delivery(triggered_at=future))
    nanoseconds = datetime.fromtimestamp(NOW, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "743Z"
    assert verify(*delivery(triggered_at=nanoseconds)).topic == "orders/create"


def test_delivery_from_another_shop_is_refused_when_the_shop_is_configured():
    body, hdrs = delivery(shop_domain="evil.myshopify.com")
    assert verify(body, hdrs).topic == "orders/create"  # no shop configured: the HMAC decides
    with pytest.raises(SignatureError, match="another shop"):
        verify(body, hdrs, settings={"shop": "acme.myshopify.com"})
    body, hdrs = delivery(shop_domain="ACME.myshopify.com")
    assert verify(body, hdrs, settings={"shop": "acme.myshopify.com"}).topic == "orders/create"


def test_admin_test_notification_is_a_ping_but_only_when_signed():
    body, hdrs = delivery(test="true")
    assert verify(body, hdrs).ping is True
    body, hdrs = delivery(test="true", secret="shpss_forged")
    with pytest.raises(SignatureError):
        verify(body, hdrs)


def test_kept_headers_include_the_topic_and_ids_but_never_the_signature():
    kept = ShopifyChannel.kept_headers
    for name in ("x-shopify-topic", "x-shopify-shop-domain", "x-shopify-api-version",
                 "x-shopify-webhook-id", "x-shopify-event-id", "x-shopify-triggered-at",
                 "shopify-topic", "shopify-event-id"):
        assert name in kept
    assert not [name for name in kept if "hmac" in name]


def test_the_entry_point_resolves_to_this_channel():
    assert isinstance(channel_for("shopify"), ShopifyChannel)


def test_new_secret_is_not_offered_because_shopify_issues_the_client_secret():
    with pytest.raises(NotImplementedError):
        ShopifyChannel().new_secret()


# --- 2. mapping ----------------------------------------------------------------------------------


def mapped(name: str, topic: str = "orders/updated", **settings: Any) -> dict[str, Any]:
    docs = ShopifyChannel(settings).to_orders(topic, load(name))
    assert len(docs) == 1
    return load_order(docs[0])


@pytest.mark.parametrize("name", ORDER_FIXTURES)
def test_every_fixture_maps_to_a_valid_canonical_order(name):
    order = mapped(name)
    assert order["channel"] == "shopify"
    assert order["external_id"] == str(fixture(name)["id"])
    assert order["updated_at"] is not None


def test_tax_exclusive_order_with_line_and_order_discounts():
    order = mapped("order_create.json", "orders/create")
    assert order["number"] == "#1001"
    assert order["currency"] == "USD"
    assert order["prices_include_tax"] is False
    assert order["placed_at"] == datetime(2026, 11, 20, 14, 3, tzinfo=UTC)
    assert order["updated_at"] == datetime(2026, 11, 20, 14, 5, tzinfo=UTC)
    first, second = order["lines"]
    assert (first["sku"], first["quantity"], first["unit_price"], first["discount"]) == (
        "IPOD2008GREEN", Decimal("1"), Decimal("199.00"), Decimal("0.00"))
    # The automatic "Snowboard sale" targets this line; TENOFF spreads over all lines.
    assert (second["quantity"], second["unit_price"], second["discount"]) == (
        Decimal("2"), Decimal("49.99"), Decimal("10.00"))
    assert first["taxes"] == [{"name": "State Tax", "rate": Decimal("0.06"),
                               "amount": Decimal("11.54")}]
    assert order["discounts"] == [{"code": "TENOFF", "amount": Decimal("10.00")}]
    assert order["shipping"] == [{"method": "Standard Shipping", "amount": Decimal("10.00"),
                                  "taxes": [{"name": "State Tax", "rate": Decimal("0.06"),
                                             "amount": Decimal("0.60")}]}]
    assert order["totals"] == {"subtotal": Decimal("288.98"), "discount": Decimal("10.00"),
                               "shipping": Decimal("10.00"), "tax": Decimal("17.34"),
                               "total": Decimal("306.32")}
    assert order["payment"] == {"status": "paid", "gateway": "shopify_payments",
                                "amount": Decimal("306.32")}
    assert order["customer"]["external_id"] == "207119551"
    assert order["customer"]["email_verified"] is True
    assert order["billing_address"]["region"] == "KY"
    assert "line2" not in order["billing_address"]  # Shopify's "" is no address line
    assert order["shipping_address"]["line2"] == "Apartment 2"
    assert order["tags"] == ["vip", "wholesale"]
    assert order["note"] == "Leave at the door"
    assert order["status"] == "open"


def test_tax_inclusive_guest_order_in_shop_currency_keeps_presentment_in_metadata():
    order = mapped("order_tax_included_presentment.json", "orders/create")
    assert order["currency"] == "EUR"
    assert order["prices_include_tax"] is True
    assert [ln["unit_price"] for ln in order["lines"]] == [Decimal("119.00"), Decimal("11.90")]
    assert order["totals"]["subtotal"] == Decimal("154.70")
    assert order["totals"]["tax"] == Decimal("25.65")
    assert order["totals"]["total"] == Decimal("160.65")  # tax included, not added
    assert order["payment"]["status"] == "authorized"
    assert order["metadata"]["presentment"] == {"currency": "CHF", "total": "151.20",
                                                "tax": "24.13"}
    # Guest checkout: contact details but no customer id.
    assert "external_id" not in order["customer"]
    assert order["customer"]["email"] == "zoe.baecker@example.de"
    # Non-ASCII names survive untouched.
    assert order["customer"]["first_name"] == "Zoë"
    assert order["lines"][0]["name"] == "Kaffeemühle „Élan“ \u2013 Edelstahl"
    assert order["lines"][1]["sku"] == "TASSE-Ω"
    assert order["billing_address"]["line1"] == "Schloßstraße 5"
    assert order["billing_address"]["company"] == "Café Ølstue GmbH"


def test_presentment_currency_setting_maps_the_customers_amounts():
    order = mapped("order_tax_included_presentment.json", currency="presentment")
    assert order["currency"] == "CHF"
    assert [ln["unit_price"] for ln in order["lines"]] == [Decimal("112.00"), Decimal("11.20")]
    assert order["lines"][0]["taxes"][0]["amount"] == Decimal("17.88")
    assert order["shipping"][0]["amount"] == Decimal("5.60")
    assert order["totals"]["total"] == Decimal("151.20")
    assert order["payment"]["amount"] == Decimal("151.20")
    assert order["metadata"]["shop"] == {"currency": "EUR", "total": "160.65", "tax": "25.65"}


def test_unknown_currency_setting_is_a_payload_error():
    with pytest.raises(PayloadError, match="presentment"):
        ShopifyChannel({"currency": "both"}).to_orders("orders/create", load("order_create.json"))


def test_gift_card_line_gift_card_payment_free_shipping_and_tip():
    order = mapped("order_gift_card.json", "orders/paid")
    gift, shirt, tip = order["lines"]
    assert (gift["name"], gift["unit_price"], gift["taxes"]) == ("Gift Card - $50",
                                                                 Decimal("50.00"), [])
    assert "sku" not in gift  # Shopify sends "" for it
    assert shirt["name"] == "Camiseta «Año Nuevo» - M"
    assert shirt["taxes"][0]["rate"] == Decimal("0.08875")
    assert (tip["name"], tip["unit_price"]) == ("Tip", Decimal("3.00"))
    # FREESHIP discounts the shipping line itself: shipping is the discounted price.
    assert order["shipping"][0]["amount"] == Decimal("0.00")
    assert order["discounts"] == []
    assert order["totals"] == {"subtotal": Decimal("78.00"), "discount": Decimal("0.00"),
                               "shipping": Decimal("0.00"), "tax": Decimal("2.22"),
                               "total": Decimal("80.22")}
    assert order["payment"]["gateway"] == "shopify_payments"
    assert order["metadata"]["gift_card_payment"] is True
    assert order["metadata"]["gift_card_lines"] == ["15001234567001"]
    assert order["metadata"]["payment_gateway_names"] == ["gift_card", "shopify_payments"]
    assert order["tags"] == ["vip", "gift", "wholesale"]
    assert order["customer"]["last_name"] == "Ñúñez"
    assert order["customer"]["email_verified"] is False


def test_order_paid_entirely_by_gift_card_has_gift_card_method():
    payload = load("order_gift_card.json")
    payload["payment_gateway_names"] = ["gift_card"]
    order = load_order(map_order(payload))
    assert order["payment"]["method"] == "gift_card"
    assert order["payment"]["gateway"] == "gift_card"


def test_cancelled_and_refunded_order_keeps_what_was_sold():
    order = mapped("order_cancelled_refunded.json", "orders/cancelled")
    assert order["status"] == "cancelled"
    assert order["payment"]["status"] == "refunded"
    # current_quantity is 0 after the refund; the sold quantity comes back from the refund.
    assert order["lines"][0]["quantity"] == Decimal("2")
    assert order["totals"]["total"] == Decimal("47.00")
    assert order["metadata"]["current_total"] == "0.00"
    assert order["metadata"]["cancel_reason"] == "customer"
    assert "shipping_address" not in order


def test_edited_and_partially_refunded_order_counts_edits_but_not_refunds():
    order = mapped("order_edited_partially_refunded.json")
    assert [(ln["sku"], ln["quantity"]) for ln in order["lines"]] == [
        ("SKU-001", Decimal("2")), ("SKU-002", Decimal("1"))]
    assert [s["method"] for s in order["shipping"]] == ["Standard"]  # Express was removed
    assert order["totals"]["total"] == Decimal("37.00")
    assert order["payment"]["status"] == "partially_refunded"
    assert order["metadata"]["current_total"] == "24.50"
    assert order["shipping_address"]["name"] == "李 伟"


def test_line_removed_entirely_by_an_edit_is_dropped():
    payload = load("order_edited_partially_refunded.json")
    payload["refunds"] = []
    payload["line_items"][0]["current_quantity"] = 0
    payload["total_price_set"] = {"shop_money": {"amount": "12.00", "currency_code": "USD"},
                                  "presentment_money": {"amount": "12.00", "currency_code": "USD"}}
    order = load_order(map_order(payload))
    assert [ln["sku"] for ln in order["lines"]] == ["SKU-002"]
    assert order["totals"]["total"] == Decimal("12.00")


@pytest.mark.parametrize("financial,expected", [
    ("pending", "pending"), ("authorized", "authorized"), ("partially_paid", "pending"),
    ("paid", "paid"), ("partially_refunded", "partially_refunded"), ("refunded", "refunded"),
    ("voided", "voided"), ("expired", "voided")])
def test_financial_status_maps_to_payment_status(financial, expected):
    payload = load("order_create.json")
    payload["financial_status"] = financial
    assert load_order(map_order(payload))["payment"]["status"] == expected


def test_zero_decimal_currency_is_rounded_to_its_minor_units():
    text = json.dumps(fixture("order_create.json")).replace('"USD"', '"JPY"')
    for amount in ("199.00", "49.99", "6.66", "3.34", "10.00", "11.54", "5.20", "0.60", "306.32",
                   "17.34"):
        text = text.replace(f'"{amount}"', f'"{Decimal(amount) * 100:.2f}"')
    payload = parse(text.encode())
    order = load_order(map_order(payload))
    assert order["currency"] == "JPY"
    assert order["lines"][0]["unit_price"] == Decimal("19900")
    assert order["totals"]["total"] == Decimal("30632")


def test_amounts_come_from_the_money_bags_not_the_float_looking_plain_fields():
    payload = load("order_create.json")
    payload["total_price"] = "999.99"  # the plain field is ignored when the bag is there
    assert load_order(map_order(payload))["totals"]["total"] == Decimal("306.32")


def test_a_bag_in_another_currency_is_refused():
    payload = load("order_create.json")
    payload["total_price_set"]["shop_money"]["currency_code"] = "CAD"
    with pytest.raises(PayloadError, match="CAD"):
        map_order(payload)


def test_orders_delete_is_a_cancelling_patch():
    assert ShopifyChannel().to_orders("orders/delete", load("order_delete.json")) == [
        Patch("450789469", {"status": "cancelled"})]


@pytest.mark.parametrize("topic", ["products/update", "customers/create", "app/uninstalled",
                                   None, "checkouts/create"])
def test_unknown_topics_are_ignored(topic):
    assert ShopifyChannel().to_orders(topic, load("order_create.json")) == []


@pytest.mark.parametrize("topic,name", [("refunds/create", "refund_create.json"),
                                        ("orders/edited", "order_edited.json")])
def test_thin_payloads_need_the_api_and_are_not_mapped_raw(topic, name):
    channel = ShopifyChannel()
    assert channel.needs_api(topic, load(name)) is True
    with pytest.raises(PayloadError, match="enrich"):
        channel.to_orders(topic, load(name))


def test_full_order_payloads_need_no_api_but_include_fields_subsets_do():
    channel = ShopifyChannel()
    assert channel.needs_api("orders/updated", load("order_create.json")) is False
    assert channel.needs_api("orders/delete", load("order_delete.json")) is False
    assert channel.needs_api("orders/updated", {"id": 450789469, "updated_at": "x"}) is True


def test_link_header_parsing_takes_the_next_cursor():
    link = ('<https://acme.myshopify.com/admin/api/2025-10/orders.json?page_info=prevcur&limit=3>;'
            ' rel="previous", <https://acme.myshopify.com/admin/api/2025-10/orders.json?limit=3&'
            'page_info=nextcur>; rel="next"')
    assert next_page_info(link) == "nextcur"
    assert next_page_info(link.split(", ")[0]) is None
    assert next_page_info(None) is None


def test_api_base_is_built_from_the_shop_and_version_and_checked():
    assert ShopifyChannel({"shop": "acme.myshopify.com"}).api_base() == \
        "https://acme.myshopify.com/admin/api/2025-10"
    assert ShopifyChannel({"shop": "acme.myshopify.com", "api_version": "2025-07"}).api_base() \
        == "https://acme.myshopify.com/admin/api/2025-07"
    for bad in ("evil.example.com", "acme.myshopify.com@evil.example.com", ""):
        with pytest.raises(PayloadError, match=r"myshopify\.com"):
            ShopifyChannel({"shop": bad}).api_base()
    with pytest.raises(PayloadError, match="access_token"):
        ShopifyChannel({"shop": "acme.myshopify.com"}).api({})


# --- 3. against the fake -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shop_server() -> Iterator[FakeShopify]:
    with FakeShopify(page_size=2) as shop:
        yield shop


@pytest.fixture
def fake(shop_server: FakeShopify) -> FakeShopify:
    shop_server.reset()
    return shop_server


@pytest.fixture
def driver(fake: FakeShopify) -> Driver:
    return Driver(fake)


@pytest.fixture
def channel(driver: Driver) -> ShopifyChannel:
    return ShopifyChannel(driver.settings("http://broker.invalid/webhooks/shopify"))


def test_refund_enrichment_fetches_the_order_with_the_access_token(fake, channel, driver):
    fake.add_order(fixture("order_edited_partially_refunded.json"))
    api = channel.api(driver.credentials())
    order = channel.enrich("refunds/create", load("refund_create.json"), api)
    [doc] = channel.to_orders("refunds/create", order)
    assert load_order(doc)["payment"]["status"] == "partially_refunded"
    [call] = fake.api_requests("/orders/")
    assert call["path"] == "/admin/api/2025-10/orders/6107420000002.json"
    assert call["headers"]["X-Shopify-Access-Token"] == fake.access_token
    assert isinstance(order["total_price_set"]["shop_money"]["amount"], str)


def test_order_edit_enrichment_fetches_the_edited_order(fake, channel, driver):
    fake.add_order(fixture("order_edited_partially_refunded.json"))
    order = channel.enrich("orders/edited", load("order_edited.json"),
                           channel.api(driver.credentials()))
    assert order["id"] == 6107420000002
    assert fake.api_requests()[-1]["path"].endswith("/orders/6107420000002.json")


def test_enrichment_of_a_full_payload_makes_no_call(fake, channel, driver):
    payload = load("order_create.json")
    assert channel.enrich("orders/create", payload, channel.api(driver.credentials())) is payload
    assert fake.api_requests() == []


def test_enrichment_of_an_order_shopify_no_longer_has_is_a_payload_error(channel, driver):
    with pytest.raises(PayloadError, match="404"):
        channel.enrich("refunds/create", load("refund_create.json"),
                       channel.api(driver.credentials()))


def test_catch_up_pages_through_the_link_cursor_oldest_first(fake, channel, driver):
    base = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    for i, minutes in enumerate([50, 10, 40, 20, 30]):  # seeded out of order
        driver.order_event(str(1000 + i), updated_at=(base + timedelta(minutes=minutes))
                           .isoformat().replace("+00:00", "-00:00"))
    stale = fixture("order_create.json")
    stale.update(id=999, updated_at="2026-11-30T12:00:00-05:00")
    fake.add_order(stale)
    driver.order_event("1005", updated_at=(base + timedelta(minutes=60)).isoformat(),
                       cancelled=True)  # status=any includes cancelled orders
    events = list(channel.catch_up(channel.api(driver.credentials()),
                                   CatchUpWindow(since=base)))
    ids = [e.payload["id"] for e in events]
    assert ids == [1001, 1003, 1004, 1002, 1000, 1005]
    assert all(e.topic == "orders/updated" for e in events)
    assert events[0].event_key == f"poll:1001:{events[0].payload['updated_at']}"
    calls = fake.api_requests("/orders.json")
    assert len(calls) == 3  # page_size 2: three pages
    first = calls[0]["query"]
    assert first["status"] == ["any"] and first["order"] == ["updated_at asc"]
    assert first["limit"] == ["250"]
    assert datetime.fromisoformat(first["updated_at_min"][0]) == base
    for later in calls[1:]:  # a page_info request may carry only limit (and fields)
        assert set(later["query"]) == {"limit", "page_info"}


def test_catch_up_with_nothing_new_makes_one_call(fake, channel, driver):
    events = list(channel.catch_up(channel.api(driver.credentials()),
                                   CatchUpWindow(since=datetime.now(UTC))))
    assert events == []
    assert len(fake.api_requests("/orders.json")) == 1


def test_fake_refuses_page_info_combined_with_filters(fake):
    fake.add_order(fixture("order_create.json"))
    fake.add_order({**fixture("order_gift_card.json")})
    fake.add_order({**fixture("order_tax_included_presentment.json")})
    headers = {"X-Shopify-Access-Token": fake.access_token}
    first = requests.get(f"{fake.api_url}/orders.json", params={"status": "any", "limit": 1},
                         headers=headers, timeout=5)
    page_info = next_page_info(first.headers["Link"])
    bad = requests.get(f"{fake.api_url}/orders.json",
                       params={"page_info": page_info, "status": "any"}, headers=headers, timeout=5)
    assert bad.status_code == 400 and "errors" in bad.json()
    good = requests.get(f"{fake.api_url}/orders.json", params={"page_info": page_info, "limit": 1},
                        headers=headers, timeout=5)
    assert good.status_code == 200 and 'rel="previous"' in good.headers["Link"]


def test_short_retry_after_is_honoured_inline(fake, channel, driver):
    fake.add_order(fixture("order_edited_partially_refunded.json"))
    fake.throttle(1, retry_after="0.2")
    started = time.monotonic()
    order = channel.enrich("refunds/create", load("refund_create.json"),
                           channel.api(driver.credentials()))
    assert order["id"] == 6107420000002
    assert time.monotonic() - started >= 0.2
    assert len(fake.api_requests("/orders/")) == 2


def test_long_retry_after_becomes_channel_unavailable_with_the_wait(fake, channel, driver):
    fake.throttle(1, retry_after="30")
    with pytest.raises(ChannelUnavailable) as exc:
        list(channel.catch_up(channel.api(driver.credentials()),
                              CatchUpWindow(since=datetime.now(UTC))))
    assert exc.value.retry_after == 30
    assert len(fake.api_requests()) == 1


def test_shopify_error_body_on_throttle(fake):
    fake.throttle(1, retry_after="2.0")
    answer = requests.get(f"{fake.api_url}/orders.json", timeout=5)
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "2.0"
    assert answer.json() == {"errors": "Exceeded 2 calls per second for api client. Reduce "
                                       "request rates to resume uninterrupted service."}


def test_wrong_access_token_is_channel_unavailable_without_the_token(fake, channel):
    wrong = "shpat_ffffffffffffffffffffffffffffffff"
    with pytest.raises(ChannelUnavailable) as exc:
        channel.enrich("refunds/create", load("refund_create.json"),
                       channel.api({"access_token": wrong}))
    assert "401" in str(exc.value)
    assert wrong not in str(exc.value) and fake.access_token not in str(exc.value)


def test_server_errors_are_channel_unavailable(fake, channel, driver):
    fake.fail(1, 503)
    with pytest.raises(ChannelUnavailable):
        channel.enrich("refunds/create", load("refund_create.json"),
                       channel.api(driver.credentials()))


def test_poll_and_webhook_of_one_version_give_equal_canonical_orders(fake, channel, driver):
    updated = "2026-12-02T08:30:00-05:00"
    path, body, headers = driver.order_event("5001234567890", updated_at=updated)
    assert path == ""
    signed = lower(driver.sign(fake.client_secret, body, headers))
    envelope = channel.verify(signed, body, [fake.client_secret], time.time(), 300)
    from_webhook = channel.to_orders(envelope.topic, parse(body))
    [polled] = channel.catch_up(channel.api(driver.credentials()),
                                CatchUpWindow(since=datetime(2026, 12, 1, tzinfo=UTC)))
    assert polled.event_key == f"poll:5001234567890:{updated}"
    from_poll = channel.to_orders(polled.topic, polled.payload)
    assert load_order(from_webhook[0]) == load_order(from_poll[0])


def test_driver_events_are_fresh_signed_and_match_the_expectations(fake, channel, driver):
    _, body, headers = driver.order_event("42", updated_at="2026-12-02T08:30:00Z", cancelled=True)
    _, _, again = driver.order_event("42", updated_at="2026-12-02T08:31:00Z", cancelled=True)
    assert headers["X-Shopify-Event-Id"] != again["X-Shopify-Event-Id"]
    signed = lower(driver.sign(fake.client_secret, body, headers))
    envelope = channel.verify(signed, body, [fake.client_secret], time.time(), 300)
    assert envelope.topic == "orders/cancelled"
    with pytest.raises(SignatureError):
        channel.verify(lower(driver.sign("shpss_wrong", body, headers)), body,
                       [fake.client_secret], time.time(), 300)
    order = load_order(channel.to_orders(envelope.topic, parse(body))[0])
    dumped = dump_order(order)
    for path, value in driver.expected("42").items():
        node: Any = dumped
        for part in path.split("."):
            node = node[int(part)] if isinstance(node, list) else node[part]
        assert node == value, path


def test_fake_webhook_helper_signs_like_shopify(fake):
    body, headers = fake.webhook("orders/create", fixture("order_create.json"))
    envelope = ShopifyChannel({"shop": fake.shop}).verify(
        lower(headers), body, [fake.client_secret], time.time(), 300)
    assert envelope.event_key == headers["X-Shopify-Event-Id"]
    ping_body, ping_headers = fake.webhook("orders/create", fixture("order_create.json"), test=True)
    assert ShopifyChannel().verify(lower(ping_headers), ping_body, [fake.client_secret],
                                   time.time(), 300).ping is True


def test_mapping_does_not_mutate_the_payload():
    payload = load("order_create.json")
    before = copy.deepcopy(payload)
    map_order(payload)
    assert payload == before
