"""The Stripe channel: signatures, mapping fidelity over Stripe-shaped fixtures, and the API
(enrichment, catch-up, rate limits, credentials) against the fake Stripe on loopback.

Vendor references: https://docs.stripe.com/webhooks#verify-manually (signatures),
https://docs.stripe.com/api/checkout/sessions/line_items, https://docs.stripe.com/api/events/list,
https://docs.stripe.com/currencies (minor units), https://docs.stripe.com/api/errors.
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
from fakes.stripe import DEFAULT_KEY, FIXTURES, Driver, FakeStripe, read_fixture
from marshmallow import ValidationError

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, PayloadError, SignatureError
from broker.channels.stripe import (
    PAGE_LIMIT,
    StripeChannel,
    signature_header,
    stripe_amount,
    stripe_unit_price,
)
from broker.schemas.order import dump_order, load_order

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwFoboStripe"
OLD_SECRET = "whsec_0ldR0tatedSecretStillActive00000000"
NOW = 1_763_647_380
TOLERANCE = 300
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.glob("*.json"))


# --- helpers -------------------------------------------------------------------------------------

def hex_hmac(key: bytes, message: bytes) -> str:
    """Stripe's v1 written out independently of the adapter: hex HMAC-SHA256."""
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def body_of(name: str = "checkout_session_completed.json") -> bytes:
    return json.dumps(read_fixture(name)["event"], indent=2, ensure_ascii=False).encode()


def headers_for(body: bytes, *, secrets: tuple[str, ...] = (SECRET,), ts: int = NOW,
                header: str | None = None) -> dict[str, str]:
    value = header if header is not None else ",".join(
        [f"t={ts}", *(f"v1={hex_hmac(s.encode(), f'{ts}.'.encode() + body)}" for s in secrets)])
    return {"content-type": "application/json; charset=utf-8", "stripe-signature": value}


def verify(headers: dict[str, str], body: bytes, secrets: list[str] | None = None,
           now: float = NOW):
    return StripeChannel().verify(headers, body, secrets or [SECRET], now=now, tolerance=TOLERANCE)


def parse(body: bytes) -> Any:
    """As the broker parses a stored event: exact decimals, never floats."""
    return json.loads(body, parse_float=Decimal)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as vendor:
        yield vendor  # type: ignore[misc]


def channel_for(fake: FakeStripe, **settings: str) -> StripeChannel:
    return StripeChannel({"api_url": fake.url, **settings})


def process(channel: StripeChannel, fake: FakeStripe, event: dict[str, Any]) -> list[dict]:
    """What the worker does with a stored event: parse, enrich when needed, map, validate."""
    body, _ = fake.webhook(event)
    payload = parse(body)
    topic = payload["type"]
    if channel.needs_api(topic, payload):
        payload = channel.enrich(topic, payload, channel.api({"api_key": fake.api_key}))
    return [load_order(doc) for doc in channel.to_orders(topic, payload)]


def order_of(fake: FakeStripe, name: str, **settings: str) -> dict[str, Any]:
    orders = process(channel_for(fake, **settings), fake, fake.load(name))
    assert len(orders) == 1
    return dump_order(orders[0])


# --- 1. verification matrix ----------------------------------------------------------------------

def test_valid_signature_yields_the_event_id_and_type():
    body = body_of()
    envelope = verify(headers_for(body), body)
    assert envelope.event_key == "evt_1FoboUsdCompleted01"
    assert envelope.topic == "checkout.session.completed"
    assert envelope.ping is False


def test_the_secret_is_the_key_as_is_not_base64_decoded_like_standard_webhooks():
    body = body_of()
    decoded_key = base64.b64decode(SECRET.removeprefix("whsec_") + "==")
    forged = f"t={NOW},v1={hex_hmac(decoded_key, f'{NOW}.'.encode() + body)}"
    with pytest.raises(SignatureError, match="no matching"):
        verify(headers_for(body, header=forged), body)


def test_signature_header_helper_matches_the_documented_scheme():
    body = b'{"id": "evt_1", "type": "charge.refunded"}'
    assert signature_header([SECRET], NOW, body) == \
        f"t={NOW},v1={hex_hmac(SECRET.encode(), f'{NOW}.'.encode() + body)}"


def test_tampered_body_is_rejected():
    body = body_of()
    tampered = body.replace(b'"amount_total": 3951', b'"amount_total": 1')
    assert tampered != body
    with pytest.raises(SignatureError, match="no matching"):
        verify(headers_for(body), tampered)


def test_wrong_secret_is_rejected_and_the_reason_leaks_no_secret_or_signature():
    body = body_of()
    headers = headers_for(body, secrets=("whsec_someone_else",))
    with pytest.raises(SignatureError) as caught:
        verify(headers, body)
    message = str(caught.value)
    expected = hex_hmac(SECRET.encode(), f"{NOW}.".encode() + body)
    assert SECRET not in message and expected not in message and "whsec_" not in message


@pytest.mark.parametrize("signed_with", [SECRET, OLD_SECRET])
def test_rotation_either_active_secret_verifies(signed_with):
    body = body_of()
    envelope = verify(headers_for(body, secrets=(signed_with,)), body, [SECRET, OLD_SECRET])
    assert envelope.event_key == "evt_1FoboUsdCompleted01"


def test_rotation_stripe_sends_one_v1_per_active_secret_and_any_match_is_enough():
    body = body_of()
    headers = headers_for(body, secrets=("whsec_expired_yesterday", OLD_SECRET))
    assert headers["stripe-signature"].count("v1=") == 2
    assert verify(headers, body, [OLD_SECRET]).topic == "checkout.session.completed"
    with pytest.raises(SignatureError):
        verify(headers, body, [SECRET])


def test_a_v0_signature_is_ignored():
    body = body_of()
    v0 = hex_hmac(SECRET.encode(), f"{NOW}.".encode() + body)
    with pytest.raises(SignatureError, match="no v1"):
        verify(headers_for(body, header=f"t={NOW},v0={v0}"), body)


@pytest.mark.parametrize(("offset", "reason"), [(-TOLERANCE - 1, "too old"),
                                                (TOLERANCE + 1, "too new")])
def test_stale_and_future_timestamps_are_rejected_even_when_correctly_signed(offset, reason):
    body = body_of()
    with pytest.raises(SignatureError, match=reason):
        verify(headers_for(body, ts=NOW + offset), body)


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_timestamps_at_the_tolerance_edge_are_accepted(offset):
    body = body_of()
    assert verify(headers_for(body, ts=NOW + offset), body).event_key


def test_the_same_json_reserialised_fails():
    body = body_of()
    compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    assert json.loads(compact) == json.loads(body) and compact != body
    with pytest.raises(SignatureError, match="no matching"):
        verify(headers_for(body), compact)


def test_the_signature_covers_the_timestamp():
    body = body_of()
    good = headers_for(body)["stripe-signature"]
    moved = good.replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(SignatureError, match="no matching"):
        verify(headers_for(body, header=moved), body)


@pytest.mark.parametrize(("header", "reason"), [
    (None, "missing"), ("", "missing"),
    ("v1=abc", "exactly one t="), ("t=1,t=2,v1=abc", "exactly one t="),
    (f"t={NOW}.5,v1=abc", "not an integer"), (f"t=-{NOW},v1=abc", "not an integer"),
    (f"t={NOW}", "no v1"), ("garbage", "exactly one t="),
])
def test_malformed_or_missing_signature_header(header, reason):
    body = body_of()
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["stripe-signature"] = header
    with pytest.raises(SignatureError, match=reason):
        verify(headers, body)


def test_oversized_signature_header_is_rejected_before_any_hmac():
    body = body_of()
    header = headers_for(body)["stripe-signature"] + ",v1=" + "0" * 9000
    with pytest.raises(SignatureError, match="too long"):
        verify(headers_for(body, header=header), body)


@pytest.mark.parametrize(("body", "reason"), [(b"not json", "not JSON"),
                                              (b'{"type": "charge.refunded"}', "no id"),
                                              (b'["evt_1"]', "no id")])
def test_a_signed_body_that_is_not_a_stripe_event_is_refused(body, reason):
    with pytest.raises(SignatureError, match=reason):
        verify(headers_for(body), body)


def test_event_key_and_topic_for_each_fixture():
    for name in FIXTURE_NAMES:
        body = body_of(name)
        event = json.loads(body)
        envelope = verify(headers_for(body), body)
        assert (envelope.event_key, envelope.topic) == (event["id"], event["type"]), name


def test_no_secret_is_generated_by_the_broker():
    with pytest.raises(NotImplementedError):
        StripeChannel().new_secret()  # Stripe issues whsec_ secrets itself


# --- 2. money ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("amount", "currency", "expected"), [
    (1999, "usd", "19.99"), (500, "jpy", "500"), (1250, "kwd", "1.250"), (0, "eur", "0.00"),
    (50000, "isk", "500"),   # Stripe keeps ISK two-decimal; ISO 4217 has none
    (500, "mga", "500.00"),  # Stripe treats MGA as zero-decimal; ISO 4217 has two
    (7, "bhd", "0.007"), (123456, "krw", "123456"),
])
def test_stripe_amounts_use_stripes_exponents_and_land_exact(amount, currency, expected):
    assert stripe_amount(amount, currency) == expected


def test_fractional_kronur_cannot_be_represented():
    with pytest.raises(PayloadError, match="ISK"):
        stripe_amount(4010, "isk")


@pytest.mark.parametrize(("unit", "currency", "expected"), [
    ("0.5", "usd", "0.005"), ("1250", "usd", "12.50"), ("3300", "jpy", "3300"),
    ("1250.5", "kwd", "1.2505"), ("0.123456789", "usd", "0.001235"),
])
def test_unit_prices_keep_fractional_minor_units_up_to_four_extra_places(unit, currency, expected):
    assert stripe_unit_price(unit, currency) == expected


# --- 3. mapping fidelity -------------------------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_fixture_maps_to_valid_orders(fake, name):
    event = fake.load(name)
    orders = process(channel_for(fake), fake, event)
    if event["type"] == "customer.created" or event["data"]["object"].get("mode") == "subscription":
        assert orders == []
        return
    assert len(orders) == 1
    order = orders[0]
    assert order["channel"] == "stripe"
    assert order["updated_at"] == datetime.fromtimestamp(event["created"], UTC)
    assert order["currency"] == event["data"]["object"]["currency"].upper()


def test_tax_exclusive_session_with_promotion_code_and_shipping(fake):
    order = order_of(fake, "checkout_session_completed.json")
    assert order["external_id"] == "cs_test_b1FoboUsdExclusive0001"
    assert order["number"] == "ORDER-1042"
    assert order["placed_at"] == "2025-11-20T14:01:00Z"
    assert order["updated_at"] == "2025-11-20T14:03:00Z"
    assert order["status"] == "open" and order["prices_include_tax"] is False
    widget, wrap, sticker = order["lines"]
    assert (widget["sku"], widget["quantity"], widget["unit_price"]) == ("SKU-001", "2", "12.50")
    assert widget["taxes"] == [{"name": "Sales Tax (CALIFORNIA)", "rate": "0.0825",
                                "amount": "1.86"}]
    assert wrap["sku"] == "prod_FoboWrap0001"  # no "sku" in product metadata: the product id
    assert (sticker["sku"], sticker["quantity"], sticker["unit_price"]) == \
        ("STK-HALF", "1000", "0.005")  # unit_amount_decimal "0.5" cents, exact
    assert all(line["discount"] == "0.00" for line in order["lines"])
    assert order["discounts"] == [{"code": "WELCOME10", "amount": "3.50"}]
    assert order["shipping"] == [{"method": "Standard shipping", "amount": "5.00", "taxes": [
        {"name": "Sales Tax (CALIFORNIA)", "rate": "0.0825", "amount": "0.41"}]}]
    assert order["totals"] == {"subtotal": "35.00", "discount": "3.50", "shipping": "5.00",
                               "tax": "3.01", "total": "39.51"}
    assert order["payment"] == {"status": "paid", "method": "card", "gateway": "stripe",
                                "transaction_id": "pi_3FoboUsdExclusive0001", "amount": "39.51"}
    assert order["customer"]["external_id"] == "cus_FoboAnaSilva01"
    assert order["customer"]["email"] == "ana.silva@example.com"
    assert order["billing_address"]["line2"] == "Suite 400"
    # API 2025-03-31.basil: collected_information.shipping_details
    assert order["shipping_address"]["city"] == "Oakland"
    assert order["metadata"]["stripe_metadata"] == {"cart_id": "cart_88412"}


def test_tax_inclusive_zero_decimal_guest_checkout_with_non_ascii_names(fake):
    order = order_of(fake, "checkout_session_completed_jpy_guest.json")
    assert order["currency"] == "JPY" and order["prices_include_tax"] is True
    assert "external_id" not in order["customer"]  # guest: no Stripe customer
    assert order["customer"]["email"] == "taro.yamada@example.jp"
    assert "number" not in order  # no client_reference_id
    assert order["billing_address"]["name"] == "山田 太郎"
    # API 2024-06-20: top-level shipping_details
    assert order["shipping_address"] == {"name": "山田 花子", "line1": "清水1丁目294",
                                         "city": "京都市東山区", "region": "京都府",
                                         "postal_code": "605-0862", "country": "JP"}
    assert [(ln["name"], ln["unit_price"]) for ln in order["lines"]] == \
        [("抹茶セット", "3300"), ("和菓子詰め合わせ", "1100")]
    assert order["lines"][0]["taxes"][0]["rate"] == "0.08"
    assert order["shipping"][0]["method"] == "宅急便"
    assert order["totals"] == {"subtotal": "7700", "discount": "0", "shipping": "800",
                               "tax": "643", "total": "8500"}  # 7700 + 800, tax included


def test_three_decimal_currency_and_a_delayed_payment_pending(fake):
    order = order_of(fake, "checkout_session_completed_kwd_unpaid.json")
    assert [ln["unit_price"] for ln in order["lines"]] == ["1.250", "3.750"]
    assert order["totals"]["total"] == "6.250"
    assert order["payment"]["status"] == "pending" and "amount" not in order["payment"]
    assert order["billing_address"]["name"] == "فاطمة الكندري"


def test_delayed_payment_succeeding_is_a_later_paid_version_of_the_same_order(fake):
    first = order_of(fake, "checkout_session_completed_kwd_unpaid.json")
    paid = order_of(fake, "checkout_session_async_payment_succeeded.json")
    assert paid["external_id"] == first["external_id"]
    assert paid["updated_at"] > first["updated_at"]
    assert paid["payment"]["status"] == "paid" and paid["payment"]["amount"] == "6.250"
    assert paid["lines"] == first["lines"]


def test_delayed_payment_failing_cancels_the_order(fake):
    order = order_of(fake, "checkout_session_async_payment_failed.json")
    assert order["status"] == "cancelled"
    assert order["payment"]["status"] == "voided"


def test_invoice_line_and_invoice_discounts_customer_credit_and_all_lines(fake):
    order = order_of(fake, "invoice_paid.json")
    assert fake.api_requests("/lines")[0]["path"] == "/v1/invoices/in_1FoboInvoiceEur0006/lines"
    assert (order["external_id"], order["number"]) == ("in_1FoboInvoiceEur0006", "FOBO-0042")
    assert [(ln["unit_price"], ln["quantity"], ln["discount"]) for ln in order["lines"]] == \
        [("90.00", "3", "13.50"), ("150.00", "1", "0.00"), ("45.50", "1", "0.00")]
    assert order["discounts"] == [{"code": "di_1FoboInvoice10", "amount": "45.20"}]
    assert order["totals"] == {"subtotal": "452.00", "discount": "45.20", "shipping": "0.00",
                               "tax": "77.29", "total": "484.09"}
    # 50.00 of customer credit paid part of it (Stripe has no gift cards; this is the analogue)
    assert order["payment"] == {"status": "paid", "gateway": "stripe", "amount": "434.09"}
    assert order["metadata"]["customer_balance_applied"] == "50.00"
    assert order["customer"] == {"external_id": "cus_FoboJuergen001", "email_verified": False,
                                 "email": "juergen.gross@example.de", "phone": "+49301234567",
                                 "tax_id": "DE123456789"}
    assert order["billing_address"]["line1"] == "Straße des 17. Juni 135"


def test_invoices_can_be_left_to_checkout(fake):
    event = fake.load("invoice_paid.json")
    assert process(channel_for(fake, book_invoices="false"), fake, event) == []


@pytest.mark.parametrize(("name", "status", "refunded"), [
    ("charge_refunded_partial.json", "partially_refunded", "10.00"),
    ("charge_refunded_full.json", "refunded", "39.51"),
])
def test_refunds_are_later_versions_of_the_session_order(fake, name, status, refunded):
    completed = order_of(fake, "checkout_session_completed.json")
    after = order_of(fake, name)
    (lookup,) = [r for r in fake.requests if r["path"] == "/v1/checkout/sessions"]
    assert lookup["query"] == {"payment_intent": ["pi_3FoboUsdExclusive0001"], "limit": ["1"]}
    assert after["external_id"] == completed["external_id"]
    assert after["updated_at"] > completed["updated_at"]
    assert after["payment"]["status"] == status
    assert after["metadata"]["amount_refunded"] == refunded
    assert after["status"] == "open"
    same = {k: v for k, v in after.items() if k not in ("payment", "updated_at", "metadata")}
    assert same == {k: v for k, v in completed.items()
                    if k not in ("payment", "updated_at", "metadata")}


def test_a_refund_of_a_charge_no_session_paid_is_ignored(fake):
    event = fake.add_event("charge.refunded", {"id": "ch_x", "object": "charge",
                                               "amount": 100, "amount_refunded": 100,
                                               "currency": "usd", "payment_intent": "pi_unknown"})
    assert process(channel_for(fake), fake, event) == []


def test_unknown_topics_and_subscription_sessions_are_ignored_without_the_api(fake):
    channel = channel_for(fake)
    for name in ("customer_created.json", "checkout_session_completed_subscription.json"):
        payload = parse(fake.webhook(read_fixture(name)["event"])[0])
        assert channel.needs_api(payload["type"], payload) is False
        assert channel.to_orders(payload["type"], payload) == []
    assert fake.requests == []


def test_a_thin_checkout_event_is_not_mapped_without_its_line_items():
    payload = parse(body_of())
    channel = StripeChannel()
    assert channel.needs_api(payload["type"], payload) is True
    with pytest.raises(PayloadError, match="line items"):
        channel.to_orders(payload["type"], payload)


def test_mixed_inclusive_and_exclusive_tax_is_refused_not_guessed(fake):
    doc = read_fixture("checkout_session_completed.json")
    doc["line_items"][1]["price"]["tax_behavior"] = "inclusive"
    doc["line_items"][1]["taxes"][0]["rate"] = dict(doc["line_items"][1]["taxes"][0]["rate"],
                                                    inclusive=True)
    event = fake.load(doc)
    with pytest.raises(PayloadError, match="mixes tax-inclusive"):
        process(channel_for(fake), fake, event)


def test_stripe_totals_that_do_not_add_up_are_caught_by_the_schema(fake):
    doc = read_fixture("checkout_session_completed.json")
    doc["event"]["data"]["object"]["amount_total"] = 4000
    event = fake.load(doc)
    with pytest.raises(ValidationError) as caught:
        process(channel_for(fake), fake, event)
    assert "total" in caught.value.messages["totals"]


# --- 4. against the fake: enrichment, catch-up, rate limits, credentials -------------------------

def test_enrichment_reads_the_documented_paths_with_bearer_auth(fake):
    channel = channel_for(fake, api_version="2025-06-30.basil")
    event = fake.load("checkout_session_completed.json")
    payload = parse(fake.webhook(event)[0])
    enriched = channel.enrich(payload["type"], payload, channel.api({"api_key": fake.api_key}))
    items_call, rate_call = fake.requests
    assert items_call["path"] == "/v1/checkout/sessions/cs_test_b1FoboUsdExclusive0001/line_items"
    assert items_call["query"]["expand[]"] == ["data.price.product", "data.taxes",
                                               "data.discounts"]
    assert items_call["query"]["limit"] == [str(PAGE_LIMIT)]
    assert rate_call["path"] == "/v1/shipping_rates/shr_1FoboStandard01"
    for call in fake.requests:
        assert call["headers"]["Authorization"] == f"Bearer {fake.api_key}"
        assert call["headers"]["Stripe-Version"] == "2025-06-30.basil"
    session = enriched["data"]["object"]
    assert session["line_items"]["has_more"] is False and len(session["line_items"]["data"]) == 3
    assert session["shipping_cost"]["shipping_rate"]["display_name"] == "Standard shipping"
    assert payload["data"]["object"].get("line_items") is None  # the input is left untouched
    assert channel.needs_api(enriched["type"], enriched) is False


def test_line_items_are_paged_through(fake):
    items = [(f"Part {i}", f"P-{i:03d}", 100 + i, 1, 0) for i in range(PAGE_LIMIT + 37)]
    session = fake.seed_checkout("cs_test_ManyItems000001", items=items, shipping=None)
    event = fake.add_event("checkout.session.completed", session)
    (order,) = process(channel_for(fake), fake, event)
    calls = fake.api_requests("/line_items")
    assert len(calls) == 2 and "starting_after" not in calls[0]["query"]
    last_of_first_page = fake.line_items["cs_test_ManyItems000001"][PAGE_LIMIT - 1]["id"]
    assert calls[1]["query"]["starting_after"] == [last_of_first_page]
    assert [line["sku"] for line in order["lines"]] == [f"P-{i:03d}" for i in range(len(items))]
    assert dump_order(order)["totals"]["total"] == stripe_amount(
        sum(100 + i for i in range(len(items))), "usd")


def test_catch_up_pages_through_undelivered_events_oldest_first(fake):
    channel = channel_for(fake)
    start = NOW - 3600
    expected = []
    for i in range(2 * PAGE_LIMIT + 5):
        obj = {"id": f"cs_test_poll{i:04d}", "object": "checkout.session", "mode": "payment"}
        event = fake.add_event("checkout.session.completed", obj, created=start + i // 3)
        expected.append(event["id"])
    fake.add_event("checkout.session.completed", {"id": "cs_old"}, created=start - 10)
    fake.add_event("customer.created", {"id": "cus_1"}, created=start + 5)
    delivered = fake.add_event("invoice.paid", {"id": "in_1"}, created=start + 6, delivered=True)
    polled = list(channel.catch_up(channel.api({"api_key": fake.api_key}),
                                   CatchUpWindow(since=datetime.fromtimestamp(start, UTC))))
    assert [p.event_key for p in polled] == expected  # oldest first, ties in creation order
    assert delivered["id"] not in {p.event_key for p in polled}
    assert all(p.topic == "checkout.session.completed" for p in polled)
    assert polled[0].payload["id"] == polled[0].event_key
    calls = fake.api_requests("/v1/events")
    assert len(calls) == 3
    query = calls[0]["query"]
    assert query["delivery_success"] == ["false"] and query["created[gte]"] == [str(start)]
    assert query["limit"] == [str(PAGE_LIMIT)]
    assert set(query["types[]"]) == {"checkout.session.completed", "invoice.paid",
                                     "checkout.session.async_payment_succeeded",
                                     "checkout.session.async_payment_failed", "charge.refunded"}
    newest_first = expected[::-1]
    assert calls[1]["query"]["starting_after"] == [newest_first[PAGE_LIMIT - 1]]
    assert calls[2]["query"]["starting_after"] == [newest_first[2 * PAGE_LIMIT - 1]]


def test_catch_up_of_naive_since_is_taken_as_utc(fake):
    channel = channel_for(fake)
    list(channel.catch_up(channel.api({"api_key": fake.api_key}),
                          CatchUpWindow(since=datetime(2025, 11, 20, 14, 0, 0))))
    assert fake.requests[0]["query"]["created[gte]"] == [
        str(int(datetime(2025, 11, 20, 14, 0, tzinfo=UTC).timestamp()))]


def test_a_short_retry_after_is_waited_out(fake):
    channel = channel_for(fake)
    event = fake.load("checkout_session_completed.json")
    fake.throttle(1, retry_after="1")
    started = time.monotonic()
    (order,) = process(channel, fake, event)
    assert time.monotonic() - started >= 0.9
    assert len(fake.api_requests("/line_items")) == 2  # the 429, then the retry
    assert dump_order(order)["totals"]["total"] == "39.51"


def test_a_long_retry_after_defers_the_event(fake):
    channel = channel_for(fake)
    payload = parse(fake.webhook(fake.load("checkout_session_completed.json"))[0])
    fake.throttle(1, retry_after="120")
    with pytest.raises(ChannelUnavailable) as caught:
        channel.enrich(payload["type"], payload, channel.api({"api_key": fake.api_key}))
    assert caught.value.retry_after == 120


def test_the_fake_answers_429_with_stripes_error_body(fake):
    fake.throttle(1)
    response = channel_for(fake).api({"api_key": fake.api_key}).session.get(
        fake.url + "/v1/events", headers={"Authorization": f"Bearer {fake.api_key}"})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit"


def test_wrong_credentials_are_unavailable_and_the_message_carries_no_secret(fake):
    channel = channel_for(fake)
    wrong = "sk_test_51WrongKeyWrongKeyWrongKeyWrongKey0000"
    payload = parse(fake.webhook(fake.load("checkout_session_completed.json"))[0])
    with pytest.raises(ChannelUnavailable) as caught:
        channel.enrich(payload["type"], payload, channel.api({"api_key": wrong}))
    assert "401" in str(caught.value)
    assert wrong not in str(caught.value) and DEFAULT_KEY not in str(caught.value)
    assert fake.requests[-1]["headers"]["Authorization"] == f"Bearer {wrong}"


def test_the_fake_refuses_bad_keys_like_stripe():
    with FakeStripe() as vendor:
        api = StripeChannel({"api_url": vendor.url}).api({"api_key": "sk_test_nope12345678"})
        response = api.session.get(vendor.url + "/v1/events")
        error = response.json()["error"]
        assert response.status_code == 401 and error["type"] == "invalid_request_error"
        assert "sk_test_nope12345678" not in error["message"] and "5678" in error["message"]
        missing = api.session.get(vendor.url + "/v1/checkout/sessions/cs_nope/line_items",
                                  headers={"Authorization": f"Bearer {vendor.api_key}"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "resource_missing"


def test_no_api_key_is_a_configuration_error():
    with pytest.raises(PayloadError, match="api_key"):
        StripeChannel().api({})


def test_poll_and_webhook_of_the_same_version_give_equal_orders(fake):
    driver = Driver(fake)
    channel = StripeChannel(driver.settings("https://broker.example/webhooks/stripe"))
    api = channel.api(driver.credentials())
    suffix, body, headers = driver.order_event("cs_test_SameVersion0001",
                                               updated_at="2025-11-20T14:05:00Z")
    signed = driver.sign(SECRET, body, headers)
    lower = {k.lower(): v for k, v in signed.items()}
    envelope = channel.verify(lower, body, [SECRET], time.time(), TOLERANCE)
    webhook_payload = channel.enrich(envelope.topic, parse(body), api)
    (webhook_order,) = channel.to_orders(envelope.topic, webhook_payload)

    since = datetime(2025, 11, 20, 14, 0, tzinfo=UTC)
    (polled,) = list(channel.catch_up(api, CatchUpWindow(since=since)))
    assert (polled.event_key, polled.topic) == (envelope.event_key, envelope.topic)
    poll_payload = parse(json.dumps(polled.payload).encode())
    (poll_order,) = channel.to_orders(polled.topic, channel.enrich(polled.topic, poll_payload, api))
    assert load_order(webhook_order) == load_order(poll_order)
    assert suffix == ""


def test_driver_orders_carry_the_expected_values(fake):
    driver = Driver(fake)
    channel = StripeChannel(driver.settings(""))
    api = channel.api(driver.credentials())
    for cancelled in (False, True):
        _, body, headers = driver.order_event("cs_test_Driver000001", cancelled=cancelled,
                                              updated_at=f"2025-11-20T14:0{5 + cancelled}:00Z")
        signed = {k.lower(): v for k, v in driver.sign(SECRET, body, headers,
                                                       timestamp=NOW).items()}
        envelope = channel.verify(signed, body, [SECRET], NOW, TOLERANCE)
        (doc,) = channel.to_orders(envelope.topic, channel.enrich(envelope.topic, parse(body), api))
        dumped = dump_order(load_order(doc))
        for path, value in driver.expected("cs_test_Driver000001").items():
            node: Any = dumped
            for part in path.split("."):
                node = node[int(part)] if isinstance(node, list) else node[part]
            assert node == value, path
        assert dumped["status"] == ("cancelled" if cancelled else "open")
    assert Driver.signs_timestamp and Driver.reserialised_fails and Driver.kind == "stripe"


def test_fixture_files_are_plain_stripe_json():
    for path in FIXTURES.glob("*.json"):
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        assert doc["event"]["object"] == "event" and doc["event"]["id"].startswith("evt_")


def test_an_empty_configured_secret_never_verifies():
    body = body_of()
    with pytest.raises(SignatureError):
        verify(headers_for(body, secrets=("",)), body, [""])


def _pre_basil(invoice_line: dict[str, Any]) -> dict[str, Any]:
    """An invoice line as API versions before 2025-03-31.basil shape it."""
    line = dict(invoice_line)
    pricing = line.pop("pricing")
    line["price"] = {"id": pricing["price_details"]["price"], "object": "price",
                     "product": pricing["price_details"]["product"],
                     "unit_amount_decimal": pricing["unit_amount_decimal"],
                     "tax_behavior": "unspecified"}
    line["tax_amounts"] = [{"amount": t["amount"], "inclusive": False, "tax_rate": "txr_1",
                            "taxability_reason": None, "taxable_amount": t["taxable_amount"]}
                           for t in line.pop("taxes")]
    return line


def test_pre_basil_invoices_map_the_same_and_refunds_find_them_by_charge(fake):
    basil = order_of(fake, "invoice_paid.json")
    doc = read_fixture("invoice_paid.json")
    invoice = doc["event"]["data"]["object"]
    doc["invoice_lines"] = [_pre_basil(line) for line in doc["invoice_lines"]]
    invoice["lines"]["data"] = doc["invoice_lines"][:2]
    invoice["total_tax_amounts"] = [{"amount": 7729, "inclusive": False, "tax_rate": "txr_1"}]
    del invoice["total_taxes"]
    invoice.update(charge="ch_1FoboInvoiceCharge", payment_intent="pi_1FoboInvoicePI")
    old = dump_order(process(channel_for(fake), fake, fake.load(doc))[0])
    assert old["lines"] == basil["lines"] and old["totals"] == basil["totals"]
    assert old["payment"]["transaction_id"] == "ch_1FoboInvoiceCharge"

    refund = fake.add_event("charge.refunded", {
        "id": "ch_1FoboInvoiceCharge", "object": "charge", "amount": 43409,
        "amount_captured": 43409, "amount_refunded": 43409, "refunded": True, "currency": "eur",
        "invoice": "in_1FoboInvoiceEur0006", "payment_intent": "pi_1FoboInvoicePI"},
        created=doc["event"]["created"] + 60)
    (refunded,) = process(channel_for(fake), fake, refund)
    refunded = dump_order(refunded)
    assert refunded["external_id"] == "in_1FoboInvoiceEur0006"
    assert refunded["payment"]["status"] == "refunded" and refunded["lines"] == basil["lines"]
    # no session paid it, so the invoice (its 3 lines fit the first page) is read instead
    assert [r["path"] for r in fake.requests][-2:] == [
        "/v1/checkout/sessions", "/v1/invoices/in_1FoboInvoiceEur0006"]


def test_oversized_merchant_metadata_is_left_out_rather_than_rejecting_the_order(fake):
    doc = read_fixture("checkout_session_completed.json")
    doc["event"]["data"]["object"]["metadata"] = {f"key{i}": "x" * 500 for i in range(50)}
    order = dump_order(process(channel_for(fake), fake, fake.load(doc))[0])
    assert order["metadata"]["stripe_metadata"] == {"omitted": "larger than 4096 bytes"}
