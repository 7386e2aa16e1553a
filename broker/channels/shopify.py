"""Shopify: HMAC-signed order webhooks, the REST Admin API Order resource, catch-up by `updated_at`.

Vendor documentation this adapter follows:
- Verification: https://shopify.dev/docs/apps/build/webhooks/verify-deliveries — the
  `X-Shopify-Hmac-Sha256` header is base64(HMAC-SHA256(app client secret, raw body)); after a
  secret rotation Shopify may sign with the old secret for up to an hour, hence several secrets.
- Headers: https://shopify.dev/docs/apps/build/webhooks/delivery-structure — `X-Shopify-Topic`,
  `-Shop-Domain`, `-API-Version`, `-Webhook-Id` (one per delivery), `-Triggered-At`, `-Event-Id`
  (the same across retries); Events deliveries use the unprefixed names
  (https://shopify.dev/docs/apps/build/events/delivery-structure). `X-Shopify-Test: true` marks
  the admin's "Send test notification" button: a ping.
- Duplicates: https://shopify.dev/docs/apps/build/webhooks/ignore-duplicates (key on the event id).
- Payloads: the REST Admin API Order resource (https://shopify.dev/docs/api/admin-rest/latest/resources/order);
  topics: https://shopify.dev/docs/api/webhooks (orders/delete carries only the id, refunds/create
  a Refund, orders/edited an `order_edit` summary — those are fetched in full).
- API: https://shopify.dev/docs/api/admin-rest — `X-Shopify-Access-Token`, cursor pagination
  through the `Link` header (https://shopify.dev/docs/api/admin-rest/usage/pagination: a request
  with `page_info` takes only `limit` and `fields`), 429 + `Retry-After`
  (https://shopify.dev/docs/api/admin-rest/usage/rate-limits), errors as `{"errors": ...}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

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

DEFAULT_API_VERSION = "2025-10"
PAGE_LIMIT = 250  # the REST Admin API's maximum page size
MAX_HEADER = 255
MAX_HMAC_HEADER = 128  # a base64 SHA-256 digest is 44 characters
# Shopify retries a failed delivery 8 times over 4 hours with the same X-Shopify-Triggered-At; a
# delivery triggered longer ago than this is a replay (the header is not signed, so this only stops
# naive replays of captured requests; the event-id dedupe stops the rest).
MAX_DELIVERY_AGE = timedelta(hours=12)
_SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
_API_VERSION = re.compile(r"\d{4}-\d{2}|unstable")

# Legacy webhooks send X-Shopify-*, Events deliveries the unprefixed shopify-* names.
HEADER_NAMES = ("hmac-sha256", "topic", "shop-domain", "api-version", "webhook-id", "event-id",
                "triggered-at")

ORDER_TOPICS = frozenset({
    "orders/create", "orders/updated", "orders/paid", "orders/cancelled", "orders/fulfilled",
    "orders/partially_fulfilled", "orders/edited", "refunds/create"})
DELETE_TOPIC = "orders/delete"
THIN_TOPICS = frozenset({"orders/edited", "refunds/create"})

# financial_status -> payment.status. partially_paid has no canonical peer: money is still owed,
# so it stays pending; an expired authorization can no longer be captured, like a void.
PAYMENT_STATUS = {
    "pending": "pending", "authorized": "authorized", "partially_paid": "pending",
    "paid": "paid", "partially_refunded": "partially_refunded", "refunded": "refunded",
    "voided": "voided", "expired": "voided",
}


def sign(secret: str, body: bytes) -> str:
    """The `X-Shopify-Hmac-Sha256` value of a body (used by the fake and the tests)."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _header(headers: Mapping[str, str], name: str) -> str:
    """A Shopify header by its suffix, under either the legacy or the Events name."""
    return headers.get(f"x-shopify-{name}") or headers.get(f"shopify-{name}") or ""


class ShopifyChannel(Channel):
    kind = "shopify"
    topics = frozenset(ORDER_TOPICS | THIN_TOPICS | {DELETE_TOPIC})
    kept_headers = ("content-type",
                    *(f"{prefix}{name}" for prefix in ("x-shopify-", "shopify-")
                      for name in HEADER_NAMES if name != "hmac-sha256"))
    settings_fields = {
        "shop": "The shop's myshopify.com domain, e.g. acme.myshopify.com (webhooks from another "
                "shop are refused: an app's client secret is shared by every shop that installs it)",
        "api_version": f"REST Admin API version, e.g. {DEFAULT_API_VERSION} (the default)",
        "api_url": "Override of https://{shop}/admin/api/{api_version} (tests, proxies)",
        "currency": "'shop' (default): amounts in the shop's currency; 'presentment': in the "
                    "currency the customer paid in (the other one is kept in metadata)",
    }
    credential_fields = {
        "access_token": "Admin API access token (shpat_...) with the read_orders scope, used to "
                        "fetch refunded and edited orders and for catch-up polls",
    }

    # --- webhooks -----------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        offered = _header(headers, "hmac-sha256")
        topic = _header(headers, "topic")
        if not offered or not topic:
            raise SignatureError("missing X-Shopify-Hmac-Sha256 or X-Shopify-Topic")
        if len(offered) > MAX_HMAC_HEADER or any(
                len(_header(headers, name)) > MAX_HEADER for name in HEADER_NAMES[1:]):
            raise SignatureError("Shopify headers too long")
        try:
            digest = base64.b64decode(offered, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError("X-Shopify-Hmac-Sha256 is not base64") from None
        if not secrets:
            raise SignatureError("the source has no client secret configured")
        # Check every secret (no early exit) so timing does not reveal which one matched.
        matched = False
        for secret in secrets:
            expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
            matched |= hmac.compare_digest(expected, digest)
        if not matched:
            raise SignatureError("no matching signature")
        shop = str(self.settings.get("shop") or "").lower()
        if shop and not hmac.compare_digest(_header(headers, "shop-domain").lower().encode(),
                                            shop.encode()):
            raise SignatureError("the webhook comes from another shop than the source's")
        self._check_triggered_at(_header(headers, "triggered-at"), now, tolerance)
        if headers.get("x-shopify-test", "").lower() == "true":
            # The admin's "Send test notification": a sample order that must not be booked.
            return Envelope(event_key="test", topic=topic.lower(), ping=True)
        # The event id is the same across retries of one delivery; older deliveries lack it.
        key = _header(headers, "event-id") or _header(headers, "webhook-id")
        if not key:
            raise SignatureError("missing X-Shopify-Event-Id and X-Shopify-Webhook-Id")
        return Envelope(event_key=key, topic=topic.lower())

    @staticmethod
    def _check_triggered_at(value: str, now: float, tolerance: int) -> None:
        if not value:
            return
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SignatureError("X-Shopify-Triggered-At is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
        if at < now - MAX_DELIVERY_AGE.total_seconds():
            raise SignatureError("delivery triggered too long ago (replay)")
        if at > now + tolerance:
            raise SignatureError("delivery triggered in the future")

    # --- thin payloads ------------------------------------------------------------------------

    def needs_api(self, topic: str | None, payload: Any) -> bool:
        """Refunds and edits carry no order; a subscription with include_fields may not either."""
        if topic in THIN_TOPICS:
            return True
        return topic in ORDER_TOPICS and isinstance(payload, dict) and not _is_order(payload)

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        """The full order the event is about, as GET /orders/{id}.json returns it."""
        if not self.needs_api(topic, payload):
            return payload
        order_id = _order_id(topic, payload)
        return _unwrap(api.get(f"/orders/{order_id}.json"), "order")

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any] | Patch]:
        if topic == DELETE_TOPIC:
            if not isinstance(payload, dict) or payload.get("id") in (None, ""):
                raise PayloadError("orders/delete payload without an order id")
            return [Patch(str(payload["id"]), {"status": "cancelled"})]
        if topic not in ORDER_TOPICS:
            return []
        if not isinstance(payload, dict) or not _is_order(payload):
            raise PayloadError(f"{topic} payload is not a full order; it must be fetched from the "
                               "Shopify API first (enrich)")
        return [map_order(payload, self.settings.get("currency") or "shop")]

    # --- API ----------------------------------------------------------------------------------

    def api_base(self) -> str:
        if self.settings.get("api_url"):
            return str(self.settings["api_url"])
        shop = str(self.settings.get("shop") or "").lower()
        version = str(self.settings.get("api_version") or DEFAULT_API_VERSION)
        if not _SHOP_DOMAIN.fullmatch(shop):
            raise PayloadError("set the source's 'shop' to its myshopify.com domain, "
                               "e.g. acme.myshopify.com")
        if not _API_VERSION.fullmatch(version):
            raise PayloadError(f"api_version '{version}' is not like {DEFAULT_API_VERSION}")
        return f"https://{shop}/admin/api/{version}"

    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        token = credentials.get("access_token") or ""
        if not token:
            raise PayloadError("the source has no Shopify access_token; add one with "
                               "`broker sources configure`")
        return ChannelApi(self.api_base(), headers={"X-Shopify-Access-Token": token},
                          secrets=(token,))

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        """Every order updated since `window.since`, oldest first, through the Link cursor."""
        since = window.since if window.since.tzinfo else window.since.replace(tzinfo=UTC)
        params: dict[str, Any] = {"updated_at_min": since.isoformat(), "status": "any",
                                  "limit": PAGE_LIMIT, "order": "updated_at asc"}
        while True:
            response = api.request("GET", "/orders.json", params=params)
            orders = _unwrap(api.parse(response), "orders")
            if not isinstance(orders, list):
                raise PayloadError("GET /orders.json answered without an orders list")
            for order in sorted(orders, key=_updated_key):
                yield PolledEvent(f"poll:{order.get('id')}:{order.get('updated_at')}",
                                  "orders/updated", order)
            page_info = next_page_info(response.headers.get("Link"))
            if not page_info:
                return
            # Follow the cursor on our own base URL rather than the link's host: the access
            # token is never sent anywhere but the configured shop.
            params = {"limit": PAGE_LIMIT, "page_info": page_info}


def next_page_info(link: str | None) -> str | None:
    """The `page_info` of the rel="next" entry of a Link header, if any."""
    for part in (link or "").split(","):
        target, _, rest = part.partition(";")
        if re.search(r'rel\s*=\s*"?next"?', rest):
            query = parse_qs(urlsplit(target.strip().strip("<>")).query)
            return (query.get("page_info") or [None])[0]
    return None


def _is_order(payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("line_items"), list) and "id" in payload


def _order_id(topic: str | None, payload: Any) -> str:
    if not isinstance(payload, dict):
        raise PayloadError(f"{topic} payload is not a JSON object")
    if topic == "refunds/create":
        found = payload.get("order_id")
    elif topic == "orders/edited":
        found = (payload.get("order_edit") or {}).get("order_id")
    else:
        found = payload.get("id")
    if found in (None, "") or not str(found).isdigit():
        raise PayloadError(f"{topic} payload names no order id")
    return str(found)


def _unwrap(doc: Any, key: str) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise PayloadError(f"the Shopify API answered without '{key}'")
    return doc[key]


def _updated_key(order: dict[str, Any]) -> tuple[str, int]:
    return utc_iso(order.get("updated_at")) or "", int(order.get("id") or 0)


# --- mapping --------------------------------------------------------------------------------------


class _Bag:
    """Reads amounts from the `*_set` money bags in one currency (shop or presentment)."""

    def __init__(self, order: dict[str, Any], mode: str) -> None:
        if mode not in ("shop", "presentment"):
            raise PayloadError(f"currency setting must be 'shop' or 'presentment', not '{mode}'")
        self.shop_currency = str(order.get("currency") or "").upper()
        self.presentment_currency = str(order.get("presentment_currency")
                                        or self.shop_currency).upper()
        self.bag = f"{mode}_money"
        self.currency = self.shop_currency if mode == "shop" else self.presentment_currency
        # The plain fields are in the shop's currency; they stand in for a missing bag only then.
        self.plain_ok = self.currency == self.shop_currency
        if not self.currency:
            raise PayloadError("order without a currency")

    def amount(self, holder: dict[str, Any], key: str, *, required: bool = True) -> Decimal:
        bag = holder.get(f"{key}_set")
        if isinstance(bag, dict) and isinstance(bag.get(self.bag), dict):
            money_doc = bag[self.bag]
            code = str(money_doc.get("currency_code") or self.currency).upper()
            if code != self.currency:
                raise PayloadError(f"{key}_set.{self.bag} is in {code}, not {self.currency}")
            return decimal(money_doc.get("amount"))
        if self.plain_ok and holder.get(key) not in (None, ""):
            return decimal(holder.get(key))
        if required:
            raise PayloadError(f"{key}_set.{self.bag} missing")
        return Decimal(0)

    def text(self, value: Decimal) -> str:
        return money(value, self.currency)


def map_order(order: dict[str, Any], currency_mode: str = "shop") -> dict[str, Any]:
    """One canonical order from a REST Order resource (webhook body or API answer alike).

    Quantities are those sold after order edits and before refunds (refunds show in
    payment.status, with amounts as originally charged), so totals come from the non-`current_`
    figures. Discounts on every line ("target_selection": "all") are order discounts; the others
    are line discounts. Shipping is the discounted price.
    """
    bag = _Bag(order, currency_mode)
    apps = order.get("discount_applications") or []
    refunded = _refunded_quantities(order)

    lines: list[dict[str, Any]] = []
    order_discounts: dict[int, Decimal] = {}
    gift_card_lines: list[str] = []
    for item in order.get("line_items") or []:
        quantity = _sold_quantity(item, refunded)
        if quantity <= 0:
            continue  # removed by an order edit
        line_discount = Decimal(0)
        for allocation in item.get("discount_allocations") or []:
            amount = bag.amount(allocation, "amount")
            index = allocation.get("discount_application_index")
            if _is_order_level(apps, index):
                order_discounts[index] = order_discounts.get(index, Decimal(0)) + amount
            else:
                line_discount += amount
        if item.get("gift_card"):
            gift_card_lines.append(str(item.get("id")))
        lines.append({
            "external_id": _text(item.get("id")),
            "sku": _text(item.get("sku")),
            "name": _text(item.get("name") or item.get("title")),
            "quantity": str(quantity),
            "unit_price": bag.text(bag.amount(item, "price")),
            "discount": bag.text(line_discount),
            "taxes": [_tax(tax, bag) for tax in item.get("tax_lines") or []],
        })
    if not lines:
        raise PayloadError("the order has no line items left")
    tip = decimal(order.get("total_tip_received"))
    if tip:
        # total_price includes tips, which are no line item in the REST resource; the figure
        # exists in the shop's currency only.
        if not bag.plain_ok:
            raise PayloadError("the order has a tip, known only in the shop's currency; "
                               "map this source with currency 'shop'")
        lines.append({"external_id": "tip", "name": "Tip", "quantity": "1",
                      "unit_price": bag.text(tip), "discount": bag.text(Decimal(0))})

    shipping = []
    for ship in order.get("shipping_lines") or []:
        if ship.get("is_removed"):
            continue
        if ship.get("discounted_price_set") or ship.get("discounted_price") not in (None, ""):
            amount = bag.amount(ship, "discounted_price")
        else:
            amount = bag.amount(ship, "price") - sum(
                (bag.amount(a, "amount") for a in ship.get("discount_allocations") or []),
                Decimal(0))
        shipping.append({"method": _text(ship.get("title") or ship.get("code")),
                         "amount": bag.text(amount),
                         "taxes": [_tax(tax, bag) for tax in ship.get("tax_lines") or []]})

    discounts = [{"code": _discount_name(apps[index]), "amount": bag.text(amount)}
                 for index, amount in sorted(order_discounts.items())]
    subtotal = sum((Decimal(ln["quantity"]) * Decimal(ln["unit_price"]) - Decimal(ln["discount"])
                    for ln in lines), Decimal(0))
    total = bag.amount(order, "total_price")
    cancelled = bool(order.get("cancelled_at"))
    gateways = [str(g) for g in order.get("payment_gateway_names") or []]
    paid_with = [g for g in gateways if g != "gift_card"]

    doc = {
        "external_id": _text(order.get("id")),
        "number": _text(order.get("name")),
        "channel": "shopify",
        "placed_at": utc_iso(order.get("processed_at") or order.get("created_at")),
        "updated_at": utc_iso(order.get("updated_at")),
        "status": "cancelled" if cancelled else "open",
        "currency": bag.currency,
        "customer": _customer(order),
        "billing_address": _address(order.get("billing_address")),
        "shipping_address": _address(order.get("shipping_address")),
        "lines": lines,
        "shipping": shipping,
        "discounts": discounts,
        "prices_include_tax": bool(order.get("taxes_included")),
        "totals": {
            "subtotal": bag.text(subtotal),
            "discount": bag.text(sum(order_discounts.values(), Decimal(0))),
            "shipping": bag.text(sum((Decimal(s["amount"]) for s in shipping), Decimal(0))),
            "tax": bag.text(bag.amount(order, "total_tax", required=False)),
            "total": bag.text(total),
        },
        "payment": {
            "status": PAYMENT_STATUS.get(str(order.get("financial_status") or "")),
            "method": "gift_card" if gateways and not paid_with else None,
            "gateway": paid_with[0] if paid_with else (gateways[0] if gateways else None),
            "amount": bag.text(total),
        },
        "note": order.get("note") or None,
        "tags": [t.strip() for t in str(order.get("tags") or "").split(",") if t.strip()],
        "metadata": _metadata(order, bag, gateways, gift_card_lines),
    }
    return pruned(doc)


def _refunded_quantities(order: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for refund in order.get("refunds") or []:
        for item in refund.get("refund_line_items") or []:
            key = str(item.get("line_item_id"))
            counts[key] = counts.get(key, 0) + int(item.get("quantity") or 0)
    return counts


def _sold_quantity(item: dict[str, Any], refunded: dict[str, int]) -> int:
    """`current_quantity` (API 2024-01+) excludes edit removals and refunds; add refunds back."""
    if item.get("current_quantity") is None:
        return int(item.get("quantity") or 0)
    return int(item["current_quantity"]) + refunded.get(str(item.get("id")), 0)


def _is_order_level(apps: list[dict[str, Any]], index: Any) -> bool:
    if not isinstance(index, int) or not 0 <= index < len(apps):
        return False
    app = apps[index]
    return app.get("target_selection") == "all" and app.get("target_type", "line_item") == "line_item"


def _discount_name(app: dict[str, Any]) -> str | None:
    return _text(app.get("code") or app.get("title") or app.get("description") or app.get("type"))


def _tax(tax: dict[str, Any], bag: _Bag) -> dict[str, Any]:
    rate = tax.get("rate")
    return {"name": _text(tax.get("title")),
            "rate": None if rate in (None, "") else str(decimal(rate)),
            "amount": bag.text(bag.amount(tax, "price"))}


def _text(value: Any) -> str | None:
    """A string field, or None for null and blanks (Shopify sends "" for empty address lines)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _address(address: Any) -> dict[str, Any] | None:
    if not isinstance(address, dict):
        return None
    name = _text(address.get("name")) or _text(
        " ".join(filter(None, (address.get("first_name"), address.get("last_name")))))
    return {
        "name": name, "company": _text(address.get("company")),
        "line1": _text(address.get("address1")), "line2": _text(address.get("address2")),
        "city": _text(address.get("city")),
        "region": _text(address.get("province_code") or address.get("province")),
        "postal_code": _text(address.get("zip")),
        "country": _text(address.get("country_code")), "phone": _text(address.get("phone")),
    }


def _customer(order: dict[str, Any]) -> dict[str, Any] | None:
    customer = order.get("customer")
    email = _text(order.get("email") or order.get("contact_email"))
    if isinstance(customer, dict) and customer.get("id") is not None:
        return {"external_id": _text(customer.get("id")),
                "email": _text(customer.get("email")) or email,
                "email_verified": bool(customer.get("verified_email")),
                "first_name": _text(customer.get("first_name")),
                "last_name": _text(customer.get("last_name")),
                "phone": _text(customer.get("phone")) or _text(order.get("phone"))}
    # Guest checkout: no customer id; the contact details come from the order and its address.
    address = order.get("billing_address") or order.get("shipping_address") or {}
    return {"email": email, "phone": _text(order.get("phone")),
            "first_name": _text(address.get("first_name")),
            "last_name": _text(address.get("last_name"))}


def _metadata(order: dict[str, Any], bag: _Bag, gateways: list[str],
              gift_card_lines: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "order_number": order.get("order_number"),
        "financial_status": order.get("financial_status"),
        "fulfillment_status": order.get("fulfillment_status"),
        "cancel_reason": order.get("cancel_reason"),
        "source_name": order.get("source_name"),
        "payment_gateway_names": gateways,
        "gift_card_payment": True if "gift_card" in gateways else None,
        "gift_card_lines": gift_card_lines,
        "test": True if order.get("test") else None,
    }
    other = "presentment" if bag.bag == "shop_money" else "shop"
    other_currency = bag.presentment_currency if other == "presentment" else bag.shop_currency
    if other_currency != bag.currency:
        other_bag = _Bag(order, other)
        meta[other] = {"currency": other_currency,
                       "total": other_bag.text(other_bag.amount(order, "total_price")),
                       "tax": other_bag.text(other_bag.amount(order, "total_tax", required=False))}
    current = bag.amount(order, "current_total_price", required=False)
    if order.get("current_total_price_set") and current != bag.amount(order, "total_price"):
        meta["current_total"] = bag.text(current)  # after refunds and returns
    return pruned(meta)
