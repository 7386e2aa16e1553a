"""WooCommerce: signed order webhooks and REST API v3 catch-up, mapped to the canonical order.

Vendor facts this adapter relies on (read in WooCommerce's own source and docs):

- Delivery (``WC_Webhook::deliver`` in
  https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/class-wc-webhook.php):
  the body is ``trim(wp_json_encode($payload))``; ``X-WC-Webhook-Signature`` is
  ``base64(HMAC-SHA256(secret, body))`` (``generate_signature``); the other headers are
  ``X-WC-Webhook-Source``, ``-Topic``, ``-Resource``, ``-Event``, ``-ID`` (the webhook's id) and
  ``-Delivery-ID`` = ``wp_hash(webhook id . time())``, the same for every delivery of one webhook in
  one second, so it cannot be the dedupe key. Nothing in the signature covers a timestamp or the
  headers: the topic is cross-checked against the signed body instead.
- ``WC_Webhook::deliver_ping`` sends ``webhook_id=N`` form-encoded and unsigned when a webhook is
  saved; it must get a 200 or the merchant cannot activate the webhook.
- ``build_payload``: a ``deleted`` event carries only ``{"id": N}``; other order events carry the
  order exactly as ``GET /wp-json/wc/v3/orders/<id>`` returns it
  (https://woocommerce.github.io/woocommerce-rest-api-docs/#webhooks,
  https://woocommerce.github.io/woocommerce-rest-api-docs/#orders). ``order.deleted`` fires on
  trash (``wp_trash_post``, ``woocommerce_trash_order``), ``order.restored`` on untrash.
- WooCommerce never retries a failed delivery and disables the webhook after more than 5
  consecutive failures (``failed_delivery``): the catch-up poll below is the safety net, not an
  optimisation. It lists ``GET /orders?modified_after=…&dates_are_gmt=true&orderby=modified&
  order=asc`` page by page (``X-WP-Total`` / ``X-WP-TotalPages``,
  https://woocommerce.github.io/woocommerce-rest-api-docs/#pagination); ``modified_after`` is
  exclusive (a WP ``date_query`` ``after``), so the window starts one second early.
- Auth: HTTP Basic with the consumer key and secret over HTTPS
  (https://woocommerce.github.io/woocommerce-rest-api-docs/#authentication-over-https); errors are
  ``{"code", "message", "data": {"status"}}``
  (https://woocommerce.github.io/woocommerce-rest-api-docs/#errors).
- Money: order and item amounts are decimal strings rounded to the store's price decimals, but
  ``taxes[].total`` is the unrounded stored tax and ``price`` is a float (total / quantity), so
  neither is used for amounts. Line ``subtotal``/``total`` always exclude tax, even when
  ``prices_include_tax`` is true; ``refunds[].total`` is negative.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import html
import json
import re
import secrets as _secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from broker.channels.api import ChannelApi
from broker.channels.base import (
    CatchUpWindow,
    Channel,
    Envelope,
    Patch,
    PayloadError,
    PolledEvent,
    SignatureError,
)
from broker.channels.mapping import decimal, money, pruned, utc_iso
from broker.schemas.order import UNIT_PRICE_EXTRA_PLACES, minor_units

API_PATH = "/wp-json/wc/v3"
FULL_TOPICS = frozenset({"order.created", "order.updated", "order.restored"})
DELETED_TOPIC = "order.deleted"
POLL_TOPIC = "order.updated"
PER_PAGE = 100
MAX_PAGES = 10_000
MAX_SIGNATURE_HEADER = 128  # base64 of a SHA-256 MAC is 44 characters
MAX_HEADER = 255
_PING = re.compile(rb"webhook_id=(\d{1,20})")
# Statuses an order has before checkout completes: WooCommerce sends no webhook for them.
DRAFT_STATUSES = frozenset({"checkout-draft", "draft", "auto-draft", "new"})
CANCELLED_STATUSES = frozenset({"cancelled", "trash"})


def sign(secret: str, body: bytes) -> str:
    """X-WC-Webhook-Signature of a body, as ``WC_Webhook::generate_signature`` computes it."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


class WooCommerceChannel(Channel):
    """A WooCommerce store: order.* webhooks (API version 3) and the REST API v3."""

    kind = "woocommerce"
    topics = frozenset(FULL_TOPICS | {DELETED_TOPIC})
    kept_headers = ("content-type", "x-wc-webhook-source", "x-wc-webhook-topic",
                    "x-wc-webhook-resource", "x-wc-webhook-event", "x-wc-webhook-id",
                    "x-wc-webhook-delivery-id")
    settings_fields = {
        "store_url": "The store's address, e.g. https://shop.example.com (the API is "
                     "{store_url}/wp-json/wc/v3).",
        "api_url": "Optional: the full REST API base URL, when it is not {store_url}/wp-json/wc/v3.",
    }
    credential_fields = {
        "consumer_key": "REST API consumer key (ck_…), from WooCommerce → Settings → Advanced → "
                        "REST API, with Read permission.",
        "consumer_secret": "REST API consumer secret (cs_…) of that key.",
    }

    # --- gateway ----------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        """Check the HMAC over the raw body; the key is webhook id + order id + modification time.

        WooCommerce signs no timestamp, so `now` and `tolerance` cannot apply; replays are
        caught by the event key (one key per order version).
        """
        signature = headers.get("x-wc-webhook-signature", "")
        if not signature:
            ping = _PING.fullmatch(body)
            if ping:  # WC_Webhook::deliver_ping: unsigned by design, answered 200, stored nowhere
                return Envelope(event_key=f"ping:{ping.group(1).decode()}", ping=True)
            raise SignatureError("missing X-WC-Webhook-Signature")
        if len(signature) > MAX_SIGNATURE_HEADER:
            raise SignatureError("X-WC-Webhook-Signature too long")
        if not secrets:
            raise SignatureError("the source has no signing secret")
        offered = signature.encode()
        if not any(hmac.compare_digest(offered, sign(secret, body).encode()) for secret in secrets):
            raise SignatureError("no matching signature")
        ping = _PING.fullmatch(body)
        if ping:
            return Envelope(event_key=f"ping:{ping.group(1).decode()}", ping=True)
        topic = headers.get("x-wc-webhook-topic", "")
        webhook_id = headers.get("x-wc-webhook-id", "")
        delivery_id = headers.get("x-wc-webhook-delivery-id", "")
        if not topic or not webhook_id:
            raise SignatureError("missing X-WC-Webhook-Topic or X-WC-Webhook-ID")
        if any(len(v) > MAX_HEADER for v in (topic, webhook_id, delivery_id)):
            raise SignatureError("X-WC-Webhook-* header too long")
        resource, _, event = topic.partition(".")
        for name, part in (("resource", resource), ("event", event)):
            sent = headers.get(f"x-wc-webhook-{name}")
            if sent is not None and sent != part:
                raise SignatureError(f"X-WC-Webhook-{name.title()} does not match the topic")
        return Envelope(event_key=self._event_key(topic, webhook_id, delivery_id, body), topic=topic)

    @staticmethod
    def _event_key(topic: str, webhook_id: str, delivery_id: str, body: bytes) -> str:
        """``{webhook}:{order}:{date_modified_gmt}``: the delivery id collides within a second.

        The topic header is not signed, so an order topic must agree with the signed body:
        a captured order.updated re-sent as order.deleted would otherwise cancel the order.
        """
        fallback = f"{webhook_id}:{topic}:{delivery_id}"
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            return fallback  # the gateway answers 400 to a body that is not JSON
        if not topic.startswith("order."):
            return fallback
        if not isinstance(doc, dict):
            raise SignatureError("X-WC-Webhook-Topic does not match the signed body")
        only_id = set(doc) == {"id"}
        if (topic == DELETED_TOPIC) != only_id and topic in FULL_TOPICS | {DELETED_TOPIC}:
            raise SignatureError("X-WC-Webhook-Topic does not match the signed body")
        order_id, modified = _identity(doc)
        if order_id is None:
            return fallback
        if topic == DELETED_TOPIC:
            return f"{webhook_id}:{order_id}:deleted:{delivery_id}"
        if modified is None:
            return fallback
        return f"{webhook_id}:{order_id}:{modified}"

    # --- worker -----------------------------------------------------------------------------

    def needs_api(self, topic: str | None, payload: Any) -> bool:
        """A webhook set to the legacy or v1 API sends another shape: fetch the v3 order."""
        if topic not in FULL_TOPICS or not isinstance(payload, dict) or _is_error(payload):
            return False
        return "date_modified_gmt" not in payload and _identity(payload)[0] is not None

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        if not self.needs_api(topic, payload):
            return payload
        order_id, _ = _identity(payload)
        return api.get(f"/orders/{order_id}")

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any] | Patch]:
        if topic == DELETED_TOPIC:
            if not isinstance(payload, dict) or _identity(payload)[0] is None:
                raise PayloadError("order.deleted without an order id")
            return [Patch(str(_identity(payload)[0]), {"status": "cancelled"})]
        if topic not in FULL_TOPICS:
            return []
        if not isinstance(payload, dict):
            raise PayloadError("a WooCommerce order webhook must carry a JSON object")
        if _is_error(payload):
            raise PayloadError(
                f"WooCommerce sent an error instead of the order ({payload.get('code')}: "
                f"{str(payload.get('message'))[:200]}); give the webhook's user permission to "
                "read orders (WooCommerce → Settings → Advanced → Webhooks); catch-up will "
                "fetch the order")
        if payload.get("status") in DRAFT_STATUSES:
            return []
        return [map_order(payload)]

    # --- channel API ------------------------------------------------------------------------

    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        key = credentials.get("consumer_key", "")
        secret = credentials.get("consumer_secret", "")
        if not key or not secret:
            raise PayloadError("the source has no WooCommerce consumer_key and consumer_secret; "
                               "set them with `broker sources configure`")
        return ChannelApi(self.api_url(), auth=(key, secret), secrets=(key, secret))

    def api_url(self) -> str:
        """{store_url}/wp-json/wc/v3 unless `api_url` names the base itself."""
        if self.settings.get("api_url"):
            return str(self.settings["api_url"]).rstrip("/")
        store = str(self.settings.get("store_url") or "").rstrip("/")
        return store + API_PATH if store else ""

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        """Order versions modified since the window, oldest first, keyed ``poll:{id}:{modified}``.

        WooCommerce never retries a failed webhook, so this poll is what recovers a lost one.
        Trashed orders are left out of ``status=any``; they are listed apart and merged in, so a
        lost order.deleted still cancels the order (as a version with its own time).
        """
        since = window.since if window.since.tzinfo else window.since.replace(tzinfo=UTC)
        after = (since.astimezone(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        trashed = list(self._pages(api, after, "trash"))
        for order in heapq.merge(self._pages(api, after, "any"), trashed, key=_poll_sort_key):
            if order.get("status") in DRAFT_STATUSES:
                continue
            order_id, modified = _identity(order)
            if order_id is None or modified is None:
                continue
            yield PolledEvent(f"poll:{order_id}:{modified}", POLL_TOPIC, order)

    @staticmethod
    def _pages(api: ChannelApi, after: str, status: str) -> Iterator[dict[str, Any]]:
        for page in range(1, MAX_PAGES + 1):
            response = api.request("GET", "/orders", params={
                "modified_after": after, "dates_are_gmt": "true", "per_page": PER_PAGE,
                "page": page, "orderby": "modified", "order": "asc", "status": status})
            orders = api.parse(response)
            if not isinstance(orders, list):
                raise PayloadError("GET /orders did not answer with a list")
            yield from (o for o in orders if isinstance(o, dict))
            try:
                pages = int(response.headers.get("X-WP-TotalPages", "0"))
            except ValueError:
                pages = 0
            if len(orders) < PER_PAGE or (pages and page >= pages):
                return

    def new_secret(self) -> str:
        """A secret for the merchant to paste into the webhook form (WooCommerce accepts any)."""
        return _secrets.token_urlsafe(32)


# --- mapping ---------------------------------------------------------------------------------

def _identity(doc: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(order id, UTC modification time as sent) of a v2/v3 order, a legacy one or a deletion."""
    if isinstance(doc.get("order"), dict):  # legacy REST API payload {"order": {...}}
        legacy = doc["order"]
        return _int(legacy.get("id")), legacy.get("updated_at") or None
    return _int(doc.get("id")), doc.get("date_modified_gmt") or None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def _is_error(payload: Mapping[str, Any]) -> bool:
    """A WP REST error body, which a webhook carries when its user may not read the order."""
    return "code" in payload and "message" in payload and "id" not in payload


def _poll_sort_key(order: Mapping[str, Any]) -> tuple[str, int]:
    return str(order.get("date_modified_gmt") or ""), _int(order.get("id")) or 0


def _text(value: Any) -> str | None:
    """A WooCommerce string without HTML entities (item names carry `&ndash;`), or None."""
    if value is None:
        return None
    text = html.unescape(str(value)).strip()
    return text or None


def _address(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    name = " ".join(filter(None, (_text(raw.get("first_name")), _text(raw.get("last_name")))))
    country = _text(raw.get("country"))
    return pruned({
        "name": name or None, "company": _text(raw.get("company")),
        "line1": _text(raw.get("address_1")), "line2": _text(raw.get("address_2")),
        "city": _text(raw.get("city")), "region": _text(raw.get("state")),
        "postal_code": _text(raw.get("postcode")), "country": country.upper() if country else None,
        "phone": _text(raw.get("phone")),
    }) or None


def _unit_price(gross: Decimal, quantity: Decimal, currency: str) -> Decimal:
    """gross / quantity, exact when it fits the canonical unit-price places, else rounded."""
    places = minor_units(currency) + UNIT_PRICE_EXTRA_PLACES
    with localcontext(prec=50):
        price = gross / quantity
    step = Decimal(1).scaleb(-places)
    return price if price == price.quantize(step) else price.quantize(step, ROUND_HALF_UP)


def _rates(order: Mapping[str, Any]) -> dict[int, tuple[str | None, Decimal | None]]:
    """tax_lines by rate id: the label and the rate (rate_percent / 100) the item taxes lack."""
    rates: dict[int, tuple[str | None, Decimal | None]] = {}
    for line in order.get("tax_lines") or []:
        rate_id = _int(line.get("rate_id"))
        if rate_id is None:
            continue
        percent = line.get("rate_percent")
        rate = decimal(percent) / 100 if percent not in (None, "") else None
        rates[rate_id] = (_text(line.get("label")) or _text(line.get("rate_code")), rate)
    return rates


def _taxes(item: Mapping[str, Any], rates: Mapping[int, tuple[str | None, Decimal | None]],
           currency: str) -> list[dict[str, Any]]:
    """Item taxes rounded to the currency, summing to the item's own rounded ``total_tax``.

    WooCommerce keeps ``taxes[].total`` unrounded ("4.495") but rounds ``total_tax`` ("4.49");
    the rounding difference goes to the last rate so the line shows what WooCommerce charged.
    """
    taxes: list[dict[str, Any]] = []
    for tax in item.get("taxes") or []:
        if tax.get("total") in (None, ""):
            continue
        amount = decimal(tax["total"])
        if amount <= 0:
            continue  # a negative fee's tax is already netted in the order's total_tax
        name, rate = rates.get(_int(tax.get("id")) or 0, (None, None))
        taxes.append({"name": name, "rate": None if rate is None else f"{rate.normalize():f}",
                      "amount": decimal(money(amount, currency))})
    if taxes and item.get("total_tax") not in (None, ""):
        gap = decimal(money(item["total_tax"], currency)) - sum(t["amount"] for t in taxes)
        minor = Decimal(1).scaleb(-minor_units(currency))
        if gap and abs(gap) <= len(taxes) * minor and taxes[-1]["amount"] + gap >= 0:
            taxes[-1]["amount"] += gap
    return [pruned({**t, "amount": money(t["amount"], currency)}) for t in taxes]


def _payment(order: Mapping[str, Any], status: str, charged: Decimal, refunded: Decimal,
             currency: str) -> dict[str, Any]:
    """Payment state from the order status, date_paid and the refunds list.

    `charged` is WooCommerce's total: what the gateway takes once gift cards are applied.
    """
    if refunded > 0 or status == "refunded":
        state = "refunded" if status == "refunded" or refunded >= charged else "partially_refunded"
    elif status in ("processing", "completed") or order.get("date_paid_gmt"):
        state = "paid"
    elif status == "on-hold" and order.get("transaction_id"):
        state = "authorized"  # e.g. a card gateway set to authorise only holds the charge id
    elif status in CANCELLED_STATUSES:
        state = "voided"  # nothing was taken and nothing will be
    else:
        state = "pending"  # pending, failed (the customer may pay again), on-hold without charge
    return pruned({
        "status": state, "method": _text(order.get("payment_method_title")),
        "gateway": _text(order.get("payment_method")),
        "transaction_id": _text(order.get("transaction_id")), "amount": money(charged, currency),
    })


def map_order(order: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical order of a REST API v3 order (webhook body or GET /orders/<id>).

    Lines carry WooCommerce's own per-line coupon allocation (subtotal - total), so the line
    taxes, computed after discounts, match the line amounts. Coupons are therefore listed in
    metadata and not in `discounts`, which holds only what is not spread over lines (negative
    fees): listing them in both would subtract them twice. With prices_include_tax, amounts are
    shown tax-inclusive (WooCommerce stores them net, so tax is added back).
    """
    order_id = _int(order.get("id"))
    if order_id is None:
        raise PayloadError("the WooCommerce order has no id")
    currency = str(order.get("currency") or "").upper()
    if not currency:
        raise PayloadError(f"order {order_id} has no currency")
    status = str(order.get("status") or "")
    inclusive = bool(order.get("prices_include_tax"))
    rates = _rates(order)

    def gross(item: Mapping[str, Any], key: str, tax_key: str) -> Decimal:
        return decimal(item.get(key)) + (decimal(item.get(tax_key)) if inclusive else 0)

    lines: list[dict[str, Any]] = []
    for item in order.get("line_items") or []:
        quantity = decimal(item.get("quantity"))
        if quantity <= 0:
            raise PayloadError(f"order {order_id}: line {item.get('id')} has quantity {quantity}")
        after = gross(item, "total", "total_tax")
        before = max(gross(item, "subtotal", "subtotal_tax"), after)  # a price raised by hand
        lines.append(pruned({
            "external_id": str(item.get("id")) if item.get("id") is not None else None,
            "sku": _text(item.get("sku")), "name": _text(item.get("name")),
            "quantity": f"{quantity.normalize():f}",
            "unit_price": f"{_unit_price(before, quantity, currency):f}",
            "discount": money(before - after, currency),
            "taxes": _taxes(item, rates, currency),
        }))
    discounts: list[dict[str, Any]] = []
    for fee in order.get("fee_lines") or []:
        amount = gross(fee, "total", "total_tax")
        if amount < 0:  # a negative fee is how WooCommerce records a cart-wide discount
            discounts.append(pruned({"code": _text(fee.get("name")),
                                     "amount": money(-amount, currency)}))
            continue
        lines.append(pruned({
            "external_id": f"fee:{fee.get('id')}", "name": _text(fee.get("name")) or "Fee",
            "quantity": "1", "unit_price": money(amount, currency), "discount": money(0, currency),
            "taxes": _taxes(fee, rates, currency),
        }))
    if not lines:
        raise PayloadError(f"order {order_id} has no line items")
    shipping = [pruned({
        "method": _text(item.get("method_title")) or _text(item.get("method_id")),
        "amount": money(gross(item, "total", "total_tax"), currency),
        "taxes": _taxes(item, rates, currency),
    }) for item in order.get("shipping_lines") or []]

    total = decimal(order.get("total"))
    gift_cards = [card for card in order.get("gift_cards") or [] if isinstance(card, Mapping)]
    gift_card_total = sum((decimal(card.get("amount")) for card in gift_cards), Decimal(0))
    refunded = sum((abs(decimal(r.get("total"))) for r in order.get("refunds") or []), Decimal(0))
    value = total + gift_card_total  # a gift card pays for the order; it is not a discount
    subtotal = sum((decimal(ln["unit_price"]) * decimal(ln["quantity"]) - decimal(ln["discount"])
                    for ln in lines), Decimal(0))
    customer_id = _int(order.get("customer_id"))
    billing = order.get("billing") if isinstance(order.get("billing"), Mapping) else {}
    coupons = [pruned({"code": _text(c.get("code")),
                       "amount": money(gross(c, "discount", "discount_tax"), currency)})
               for c in order.get("coupon_lines") or []]
    metadata = pruned({
        "status": status or None, "created_via": _text(order.get("created_via")),
        "coupons": coupons,
        "refunded": money(refunded, currency) if refunded else None,
        "gift_cards": [pruned({"code": _masked(card.get("code")),
                               "amount": money(card.get("amount"), currency)})
                       for card in gift_cards],
    })
    return pruned({
        "external_id": str(order_id),
        "number": _text(order.get("number")) or str(order_id),
        "channel": WooCommerceChannel.kind,
        "placed_at": utc_iso(order.get("date_created_gmt")),
        "updated_at": utc_iso(order.get("date_modified_gmt") or order.get("date_created_gmt")),
        "status": "cancelled" if status in CANCELLED_STATUSES else "open",
        "currency": currency,
        "customer": pruned({
            "external_id": str(customer_id) if customer_id else None,  # 0 is a guest checkout
            "email": _text(billing.get("email")),
            "first_name": _text(billing.get("first_name")),
            "last_name": _text(billing.get("last_name")),
            "phone": _text(billing.get("phone")), "company": _text(billing.get("company")),
        }) or None,
        "billing_address": _address(order.get("billing")),
        "shipping_address": _address(order.get("shipping")),
        "lines": lines,
        "shipping": shipping,
        "discounts": discounts,
        "prices_include_tax": inclusive,
        "totals": {
            "subtotal": money(subtotal, currency),
            "discount": money(sum((decimal(d["amount"]) for d in discounts), Decimal(0)), currency),
            "shipping": money(sum((decimal(s["amount"]) for s in shipping), Decimal(0)), currency),
            "tax": money(order.get("total_tax"), currency),
            "total": money(value, currency),
        },
        "payment": _payment(order, status, total, refunded, currency),
        "note": _text(order.get("customer_note")),
        "metadata": metadata,
    })


def _masked(code: Any) -> str | None:
    """A gift card code is a bearer credential: keep only its last four characters."""
    text = _text(code)
    return None if text is None else "…" + text[-4:]
