"""Square: signed webhooks about orders, payments and refunds, mapped from the Orders API.

Vendor facts this adapter relies on (Square developer documentation):
- Signature (https://developer.squareup.com/docs/webhooks/step3validate): header
  `x-square-hmacsha256-signature` = base64(HMAC-SHA256(signature key, notification URL + raw
  body)). The notification URL is the one registered in the Developer Console, so it is a
  source setting and never rebuilt from the request (a proxy or a Host header would change it).
  Nothing in the signature is a timestamp: replays are caught by the `event_id` dedupe only.
  The signature key is issued by Square per subscription, so there is no `new_secret`.
  Vector from Square's own SDK (square-python-sdk tests/utilities/test_webhooks_helper.py).
- Headers (https://developer.squareup.com/docs/webhooks/step2subscribe): square-environment,
  square-initial-delivery-timestamp, square-retry-number, square-retry-reason.
- Events are thin (https://developer.squareup.com/reference/square/webhooks/order.updated,
  .../order.created, .../order.fulfillment.updated): data.object.order_updated holds only
  order_id, version, state, location_id and times; payment.updated and refund.created/updated
  (https://developer.squareup.com/docs/payments-api/webhooks) carry a Payment / Refund whose
  order_id names the order. Every handled event is enriched with GET /v2/orders/{order_id}
  (https://developer.squareup.com/reference/square/orders-api/retrieve-order), stored as
  data.object.order, and only that Order object is mapped, so a poll of the same version maps
  to the very same canonical order.
- Catch-up: POST /v2/orders/search (https://developer.squareup.com/docs/orders-api/manage-orders/
  search-orders): at most 10 location_ids a request, a date_time_filter on updated_at must be
  sorted by UPDATED_AT, the cursor continues the original query, a page may hold fewer orders
  than `limit`. Without a `location_ids` setting, GET /v2/locations lists them.
- Money is an integer in the currency's minor units (JPY has none). Errors are
  {"errors": [{"category", "code", "detail"}]}; throttling is 429 RATE_LIMITED
  (https://developer.squareup.com/reference/square/enums/ErrorCategory), which asks for
  backoff without always naming a delay.

Mapping decisions:
- sku = the line's catalog_object_id (the CatalogItemVariation id): the variation's own SKU
  would need a catalog call per line, and a catalog edit between webhook and poll would make
  the two versions differ. name = "item (variation)".
- unit_price = gross_sales_money / quantity (base price plus modifiers); the line discount is
  the part of total_discount_money coming from LINE_ITEM-scoped discounts, while ORDER-scoped
  discounts (which Square apportions onto lines) become canonical order discounts.
- Service charges (shipping, delivery fees, auto-gratuity) are the canonical `shipping` lines:
  they are the order's additive charges. Tips are not part of the canonical total (an ERP books
  them apart); they are kept in metadata, and payment.amount is the tendered amount less tips.
- prices_include_tax is true when every applied tax is INCLUSIVE. Mixed INCLUSIVE and ADDITIVE
  taxes are expressed exclusive: the inclusive tax is taken out of the line's unit price.
- state OPEN/COMPLETED -> open, CANCELED -> cancelled, DRAFT -> ignored (not yet an order).
- payment: no tender -> pending; all card tenders VOIDED/FAILED -> voided; any AUTHORIZED ->
  authorized; else paid, then partially_refunded / refunded by the PENDING or APPROVED refunds
  (or return_amounts, whichever is larger) against the tendered amount.
- number = reference_id, else ticket_name. No billing address exists on a Square order; the
  shipping address and contact come from the first SHIPMENT/DELIVERY/PICKUP recipient.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, ClassVar
from urllib.parse import quote

import requests

from broker.channels.api import ChannelApi, ChannelUnavailable
from broker.channels.base import (
    CatchUpWindow,
    Channel,
    Envelope,
    PayloadError,
    PolledEvent,
    SignatureError,
)
from broker.channels.mapping import from_minor, pruned, utc_iso
from broker.schemas.order import minor_units
from connectors.wire import retry_after

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
MAX_SIGNATURE_HEADER = 256  # a base64 SHA-256 is 44 characters
DEFAULT_API_URL = "https://connect.squareup.com"
DEFAULT_API_VERSION = "2025-10-16"
SEARCH_LIMIT = 100
MAX_LOCATIONS_PER_SEARCH = 10  # SearchOrders: "Max: 10 location IDs"
TEST_NOTIFICATION = "webhooks.test_notification"

ORDER_TOPICS = {"order.created": "order_created", "order.updated": "order_updated",
                "order.fulfillment.updated": "order_fulfillment_updated"}
PAYMENT_TOPICS = {"payment.created": "payment", "payment.updated": "payment",
                  "refund.created": "refund", "refund.updated": "refund"}
COUNTED_REFUNDS = ("PENDING", "APPROVED")
TENDER_METHODS = {"CARD": "card", "SQUARE_GIFT_CARD": "gift_card", "CASH": "cash",
                  "THIRD_PARTY_CARD": "third_party_card", "BANK_ACCOUNT": "bank_account",
                  "WALLET": "wallet", "BUY_NOW_PAY_LATER": "buy_now_pay_later",
                  "SQUARE_ACCOUNT": "square_account", "OTHER": "other"}


def sign(signature_key: str, notification_url: str, body: bytes) -> str:
    """The `x-square-hmacsha256-signature` value Square sends for this body and URL."""
    mac = hmac.new(signature_key.encode(), notification_url.encode() + body, hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class SquareApi(ChannelApi):
    """The Square API client; a 429 without Retry-After still gets a short backoff."""

    default_retry_after: ClassVar[float] = 1.0

    def retry_after(self, response: requests.Response) -> float | None:
        wait = retry_after(response.headers.get("Retry-After"))
        return self.default_retry_after if wait is None else wait


class SquareChannel(Channel):
    """Square sources: verify with the notification URL, enrich thin events, poll SearchOrders."""

    kind = "square"
    topics = frozenset(ORDER_TOPICS) | frozenset(PAYMENT_TOPICS)
    kept_headers = ("content-type", "square-environment", "square-initial-delivery-timestamp",
                    "square-retry-number", "square-retry-reason")
    settings_fields: ClassVar[dict[str, str]] = {
        "notification_url": "the webhook's notification URL exactly as entered in the Square "
                            "Developer Console (it is part of what Square signs)",
        "api_url": f"Square API base URL (default {DEFAULT_API_URL}; sandbox: "
                   "https://connect.squareupsandbox.com)",
        "api_version": f"Square-Version header (default {DEFAULT_API_VERSION})",
        "location_ids": "comma-separated location ids to poll (default: every location of the "
                        "seller, from GET /v2/locations)",
    }
    credential_fields: ClassVar[dict[str, str]] = {
        "access_token": "a Square access token (or OAuth token) with ORDERS_READ, "
                        "PAYMENTS_READ and MERCHANT_PROFILE_READ",
    }

    # --- webhooks -------------------------------------------------------------------------
    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        url = str(self.settings.get("notification_url") or "").strip()
        if not url:
            raise SignatureError("the source has no notification_url setting: set it to the "
                                 "notification URL configured in the Square Developer Console")
        offered = headers.get(SIGNATURE_HEADER, "")
        if not offered:
            raise SignatureError(f"missing {SIGNATURE_HEADER}")
        if len(offered) > MAX_SIGNATURE_HEADER:
            raise SignatureError(f"{SIGNATURE_HEADER} too long")
        if not secrets:
            raise SignatureError("no signature key configured for this source")
        offered_bytes = offered.strip().encode()
        if not any(hmac.compare_digest(offered_bytes, sign(key, url, body).encode())
                   for key in secrets):
            raise SignatureError("no matching signature (check the signature key and that "
                                 "notification_url matches the subscription exactly)")
        return self._envelope(body)

    @staticmethod
    def _envelope(body: bytes) -> Envelope:
        try:
            doc = json.loads(body, parse_float=Decimal)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not doc.get("event_id"):
            # authentic but not an event: key it on the bytes so a resend still dedupes
            return Envelope(event_key="sha256:" + hashlib.sha256(body).hexdigest())
        topic = doc.get("type") if isinstance(doc.get("type"), str) else None
        return Envelope(event_key=str(doc["event_id"]), topic=topic,
                        ping=topic == TEST_NOTIFICATION)

    # --- enrichment -----------------------------------------------------------------------
    def needs_api(self, topic: str | None, payload: Any) -> bool:
        return (_order_id(topic, payload) is not None
                and not isinstance(_object(payload).get("order"), dict))

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        """The event with the current Order (GET /v2/orders/{id}) as data.object.order."""
        order_id = _order_id(topic, payload)
        if order_id is None or isinstance(_object(payload).get("order"), dict):
            return payload
        order = api.get(f"/v2/orders/{quote(order_id, safe='')}").get("order")
        if not isinstance(order, dict):
            raise PayloadError(f"GET /v2/orders/{order_id}: the answer holds no order")
        notified = _notified_version(topic, payload)
        if notified is not None and isinstance(order.get("version"), int) \
                and order["version"] < notified:
            raise ChannelUnavailable(f"Square served version {order['version']} of order "
                                     f"{order_id}, older than the notified {notified}", 5)
        data = dict(payload["data"])
        data["object"] = {**_object(payload), "order": order}
        return {**payload, "data": data}

    # --- mapping --------------------------------------------------------------------------
    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any]]:
        if topic not in ORDER_TOPICS and topic not in PAYMENT_TOPICS:
            return []
        if not isinstance(payload, dict):
            raise PayloadError("a Square event is a JSON object")
        order = _object(payload).get("order")
        if not isinstance(order, dict):
            if _order_id(topic, payload) is None:
                if topic in ORDER_TOPICS:
                    raise PayloadError(f"Square {topic} event names no order id")
                return []  # a payment or refund taken without an order: nothing to book
            raise PayloadError(f"thin Square {topic} event: the order was not fetched "
                               "(enrich first)")
        if order.get("state") == "DRAFT":
            return []
        return [map_order(order)]

    # --- API and catch-up -----------------------------------------------------------------
    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        token = (credentials or {}).get("access_token")
        if not token:
            raise PayloadError("the Square source has no access_token credential; set it with "
                               "`broker sources configure`")
        version = str(self.settings.get("api_version") or DEFAULT_API_VERSION)
        return SquareApi(str(self.settings.get("api_url") or DEFAULT_API_URL),
                         headers={"Authorization": f"Bearer {token}", "Square-Version": version},
                         secrets=(token,))

    def location_ids(self, api: ChannelApi) -> list[str]:
        """The configured locations, else every location of the seller."""
        configured = self.settings.get("location_ids") or ""
        if isinstance(configured, str):
            configured = configured.split(",")
        ids = [str(i).strip() for i in configured if str(i).strip()]
        if ids:
            return ids
        locations = api.get("/v2/locations").get("locations") or []
        return [loc["id"] for loc in locations if isinstance(loc, dict) and loc.get("id")]

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        locations = self.location_ids(api)
        if not locations:
            return
        start = utc_iso(window.since)
        chunks = [locations[i:i + MAX_LOCATIONS_PER_SEARCH]
                  for i in range(0, len(locations), MAX_LOCATIONS_PER_SEARCH)]
        searches = [self._search(api, chunk, start) for chunk in chunks]
        merged = searches[0] if len(searches) == 1 else heapq.merge(*searches, key=_updated_key)
        for order in merged:
            if order.get("state") == "DRAFT" or not order.get("id"):
                continue
            yield PolledEvent(event_key=f"poll:{order['id']}:{_version_tag(order)}",
                              topic="order.updated", payload=polled_payload(order))

    @staticmethod
    def _search(api: ChannelApi, location_ids: list[str], start: str | None) -> Iterator[dict]:
        """Orders of these locations updated since `start`, oldest first, page by page."""
        body: dict[str, Any] = {
            "location_ids": location_ids,
            "query": {"filter": {"date_time_filter": {"updated_at": {"start_at": start}}},
                      "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"}},
            "limit": SEARCH_LIMIT,
        }
        while True:
            page = api.post("/v2/orders/search", body)
            yield from (o for o in page.get("orders") or [] if isinstance(o, dict))
            cursor = page.get("cursor")
            if not cursor:
                return
            body = {**body, "cursor": cursor}


def polled_payload(order: dict[str, Any]) -> dict[str, Any]:
    """A polled order shaped like an enriched order.updated webhook."""
    summary = pruned({"order_id": order.get("id"), "version": order.get("version"),
                      "location_id": order.get("location_id"), "state": order.get("state"),
                      "created_at": order.get("created_at"),
                      "updated_at": order.get("updated_at")})
    return {"type": "order.updated", "event_id": f"poll:{order.get('id')}:{_version_tag(order)}",
            "created_at": order.get("updated_at"),
            "data": {"type": "order", "id": order.get("id"),
                     "object": {"order_updated": summary, "order": order}}}


# --- event helpers ----------------------------------------------------------------------------
def _object(payload: Any) -> dict[str, Any]:
    data = payload.get("data") if isinstance(payload, dict) else None
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _order_id(topic: str | None, payload: Any) -> str | None:
    """The id of the order an event is about, or None for an event not about one."""
    if not isinstance(payload, dict):
        return None
    obj = _object(payload)
    if topic in ORDER_TOPICS:
        summary = obj.get(ORDER_TOPICS[topic])
        data = payload.get("data")
        found = summary.get("order_id") if isinstance(summary, dict) else None
        found = found or (data.get("id") if isinstance(data, dict) else None)
    elif topic in PAYMENT_TOPICS:
        inner = obj.get(PAYMENT_TOPICS[topic])
        found = inner.get("order_id") if isinstance(inner, dict) else None
    else:
        return None
    return str(found) if found else None


def _notified_version(topic: str | None, payload: Any) -> int | None:
    summary = _object(payload).get(ORDER_TOPICS.get(topic or "", ""))
    version = summary.get("version") if isinstance(summary, dict) else None
    return version if isinstance(version, int) else None


def _version_tag(order: dict[str, Any]) -> str:
    """The order's version; orders not created through the API have none, so their time."""
    version = order.get("version")
    return str(version) if version is not None else str(order.get("updated_at"))


def _updated_key(order: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(utc_iso(order.get("updated_at") or "1970-01-01T00:00:00Z")
                                  .replace("Z", "+00:00"))


# --- the Order object -> canonical order ------------------------------------------------------
def _minor(money: Any) -> int:
    """The integer amount of a Square Money object (absent -> 0)."""
    if isinstance(money, dict) and money.get("amount") is not None:
        return int(money["amount"])
    return 0


def _currency(order: dict[str, Any]) -> str:
    for key in ("total_money", "net_amounts", "total_tax_money"):
        money = order.get(key)
        if isinstance(money, dict) and money.get("currency"):
            return str(money["currency"])
        if isinstance(money, dict):
            for inner in money.values():
                if isinstance(inner, dict) and inner.get("currency"):
                    return str(inner["currency"])
    for line in order.get("line_items") or []:
        money = line.get("base_price_money") or {}
        if money.get("currency"):
            return str(money["currency"])
    raise PayloadError(f"Square order {order.get('id')} names no currency")


def _fraction(minor_amount: Decimal, currency: str) -> str:
    """A possibly fractional minor-unit amount (a unit price) as a canonical decimal string."""
    places = minor_units(currency)
    value = minor_amount.scaleb(-places).quantize(Decimal(1).scaleb(-(places + 4)), ROUND_HALF_UP)
    short = value.quantize(Decimal(1).scaleb(-places))
    if value == short:
        return f"{short:.{places}f}"
    return f"{value.normalize():f}"


def _major(value: Decimal, currency: str) -> str:
    """A major-unit amount rounded to the currency's minor units."""
    places = minor_units(currency)
    return f"{value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP):.{places}f}"


def _rate(percentage: Any) -> str | None:
    if percentage in (None, ""):
        return None
    return f"{(Decimal(str(percentage)) / 100).normalize():f}"


def _quantity(raw: Any) -> Decimal:
    try:
        quantity = Decimal(str(raw))
    except ArithmeticError:
        quantity = Decimal("NaN")
    if not quantity.is_finite():
        raise PayloadError(f"Square line quantity {raw!r} is not a decimal")
    return quantity


class _Taxes:
    """The order's taxes by uid, and whether prices include them."""

    def __init__(self, order: dict[str, Any], currency: str) -> None:
        self.currency = currency
        self.by_uid = {t.get("uid"): t for t in order.get("taxes") or [] if isinstance(t, dict)}
        types = {self.by_uid.get(a.get("tax_uid"), {}).get("type")
                 for item in [*(order.get("line_items") or []), *(order.get("service_charges") or [])]
                 for a in item.get("applied_taxes") or [] if isinstance(a, dict)}
        self.inclusive = "INCLUSIVE" in types
        self.mixed = self.inclusive and types != {"INCLUSIVE"}

    def of(self, item: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        """Canonical taxes of a line or a charge, and the inclusive part in minor units."""
        out, included = [], 0
        applied = [a for a in item.get("applied_taxes") or [] if isinstance(a, dict)]
        for a in applied:
            tax = self.by_uid.get(a.get("tax_uid"), {})
            amount = _minor(a.get("applied_money"))
            if tax.get("type") == "INCLUSIVE":
                included += amount
            out.append({"name": tax.get("name"), "rate": _rate(tax.get("percentage")),
                        "amount": from_minor(amount, self.currency)})
        if not applied and _minor(item.get("total_tax_money")):  # only totals were given
            out.append({"name": None, "rate": None,
                        "amount": from_minor(_minor(item["total_tax_money"]), self.currency)})
        return out, included


def _lines(order: dict[str, Any], currency: str, taxes: _Taxes
           ) -> tuple[list[dict[str, Any]], dict[str, list[Any]]]:
    """Canonical lines, and the ORDER-scoped discounts Square apportioned onto them."""
    discounts = {d.get("uid"): d for d in order.get("discounts") or [] if isinstance(d, dict)}
    lines: list[dict[str, Any]] = []
    order_discounts: dict[str, list[Any]] = {}  # uid -> [name, minor amount]
    for item in order.get("line_items") or []:
        quantity = _quantity(item.get("quantity", "0"))
        if quantity <= 0:
            continue  # Square drops zero-quantity lines when the order is paid
        gross = _minor(item.get("gross_sales_money")) or int(
            _minor(item.get("base_price_money")) * quantity)
        from_order = 0
        for applied in item.get("applied_discounts") or []:
            discount = discounts.get(applied.get("discount_uid"), {})
            if discount.get("scope") != "ORDER":
                continue
            amount = _minor(applied.get("applied_money"))
            from_order += amount
            entry = order_discounts.setdefault(
                str(applied.get("discount_uid")),
                [discount.get("name") or discount.get("catalog_object_id"), 0])
            entry[1] += amount
        line_taxes, included = taxes.of(item)
        net_gross = Decimal(gross - (included if taxes.mixed else 0))
        name, variation = item.get("name"), item.get("variation_name")
        if name and variation and variation != name:
            name = f"{name} ({variation})"
        lines.append({
            "external_id": item.get("uid"),
            "sku": item.get("catalog_object_id"),
            "name": name or variation,
            "quantity": f"{quantity.normalize():f}",
            "unit_price": _fraction(net_gross / quantity, currency),
            "discount": from_minor(max(_minor(item.get("total_discount_money")) - from_order, 0),
                                   currency),
            "taxes": line_taxes,
        })
    return lines, order_discounts


def _shipping(order: dict[str, Any], currency: str, taxes: _Taxes) -> list[dict[str, Any]]:
    """Service charges (shipping, delivery, auto-gratuity): the order's additive charges."""
    shipping = []
    for charge in order.get("service_charges") or []:
        charge_taxes, included = taxes.of(charge)
        amount = _minor(charge.get("applied_money")) or _minor(charge.get("amount_money"))
        shipping.append({"method": charge.get("name"),
                         "amount": from_minor(amount - (included if taxes.mixed else 0), currency),
                         "taxes": charge_taxes})
    return shipping


def map_order(order: dict[str, Any]) -> dict[str, Any]:
    """A Square Order object as a canonical order document (not yet validated)."""
    if not order.get("id"):
        raise PayloadError("the Square order has no id")
    currency = _currency(order)
    taxes = _Taxes(order, currency)
    lines, order_discounts = _lines(order, currency, taxes)
    shipping = _shipping(order, currency, taxes)
    zero = Decimal(0)
    subtotal = sum((Decimal(ln["quantity"]) * Decimal(ln["unit_price"]) - Decimal(ln["discount"])
                    for ln in lines), zero)
    discount_total = sum((amount for _name, amount in order_discounts.values()), 0)
    discount = Decimal(from_minor(discount_total, currency))
    shipping_total = sum((Decimal(s["amount"]) for s in shipping), zero)
    tax_total = sum((Decimal(t["amount"]) for x in (*lines, *shipping) for t in x["taxes"]), zero)
    include = taxes.inclusive and not taxes.mixed
    computed = subtotal - discount + shipping_total + (zero if include else tax_total)
    tip = _minor(order.get("total_tip_money"))
    recipient = _recipient(order)
    doc = {
        "external_id": str(order["id"]),
        "number": order.get("reference_id") or order.get("ticket_name"),
        "channel": "square",
        "placed_at": utc_iso(order.get("created_at")),
        "updated_at": utc_iso(order.get("updated_at") or order.get("created_at")),
        "status": "cancelled" if order.get("state") == "CANCELED" else "open",
        "currency": currency,
        "customer": _customer(order, recipient),
        "shipping_address": _address(recipient),
        "lines": lines,
        "shipping": shipping,
        "discounts": [{"code": name, "amount": from_minor(amount, currency)}
                      for name, amount in order_discounts.values()],
        "prices_include_tax": include,
        "totals": {"subtotal": _major(subtotal, currency),
                   "discount": _major(discount, currency),
                   "shipping": _major(shipping_total, currency),
                   "tax": _major(tax_total, currency),
                   "total": _reported_total(order, tip, computed, len(lines), currency)},
        "payment": _payment(order, currency),
        "metadata": _metadata(order, currency, tip, taxes.mixed),
    }
    return pruned(doc)


def _metadata(order: dict[str, Any], currency: str, tip: int, mixed: bool) -> dict[str, Any]:
    """What an ERP may want to see but the canonical order has no field for."""
    return pruned({
        "location_id": order.get("location_id"),
        "version": order.get("version"),
        "state": order.get("state"),
        "source": (order.get("source") or {}).get("name"),
        "closed_at": order.get("closed_at"),
        "tip": from_minor(tip, currency) if tip else None,
        "fulfillments": [pruned({"uid": f.get("uid"), "type": f.get("type"),
                                 "state": f.get("state")})
                         for f in order.get("fulfillments") or [] if isinstance(f, dict)],
        "tenders": [pruned({"id": t.get("id"), "type": t.get("type"),
                            "status": (t.get("card_details") or {}).get("status"),
                            "amount": from_minor(_minor(t.get("amount_money")), currency)})
                    for t in order.get("tenders") or [] if isinstance(t, dict)],
        "mixed_taxes": True if mixed else None,
    })


def _reported_total(order: dict[str, Any], tip: int, computed: Decimal, lines: int,
                    currency: str) -> str:
    """Square's total_money without the tip, or as reported when that is what adds up.

    Square's docs do not say whether Order.total_money counts tips (Tender.amount_money does),
    so both readings are tried against the sum of the parts; when neither adds up the tip-less
    figure is kept and the canonical schema rejects the order naming totals.total.
    """
    if order.get("total_money") is None:
        return _major(computed, currency)
    reported = _minor(order["total_money"])
    tolerance = Decimal(lines).scaleb(-minor_units(currency))
    for candidate in (reported - tip, reported):
        value = Decimal(from_minor(candidate, currency))
        if abs(value - computed) <= tolerance:
            return from_minor(candidate, currency)
    return from_minor(reported - tip, currency)


def _recipient(order: dict[str, Any]) -> dict[str, Any]:
    """The recipient of the first shipment or delivery, else of the first pickup."""
    found: dict[str, Any] = {}
    for fulfillment in order.get("fulfillments") or []:
        kind = fulfillment.get("type")
        details = {"SHIPMENT": "shipment_details", "DELIVERY": "delivery_details",
                   "PICKUP": "pickup_details"}.get(kind)
        recipient = (fulfillment.get(details) or {}).get("recipient") if details else None
        if not isinstance(recipient, dict):
            continue
        if kind in ("SHIPMENT", "DELIVERY"):
            return recipient
        found = found or recipient
    return found


def _split_name(recipient: dict[str, Any]) -> tuple[str | None, str | None]:
    address = recipient.get("address") or {}
    if address.get("first_name") or address.get("last_name"):
        return address.get("first_name"), address.get("last_name")
    display = (recipient.get("display_name") or "").strip()
    if not display:
        return None, None
    first, _, last = display.partition(" ")
    return (first, last.strip()) if last.strip() else (None, first)


def _customer(order: dict[str, Any], recipient: dict[str, Any]) -> dict[str, Any] | None:
    first, last = _split_name(recipient)
    customer = pruned({"external_id": order.get("customer_id"),
                       "email": recipient.get("email_address"),
                       "first_name": first, "last_name": last,
                       "phone": recipient.get("phone_number")})
    return customer or None


def _address(recipient: dict[str, Any]) -> dict[str, Any] | None:
    address = recipient.get("address")
    if not isinstance(address, dict):
        return None
    first, last = _split_name(recipient)
    name = recipient.get("display_name") or " ".join(p for p in (first, last) if p) or None
    extra = [address.get(k) for k in ("address_line_2", "address_line_3") if address.get(k)]
    return pruned({"name": name, "line1": address.get("address_line_1"),
                   "line2": ", ".join(extra) or None, "city": address.get("locality"),
                   "region": address.get("administrative_district_level_1"),
                   "postal_code": address.get("postal_code"), "country": address.get("country"),
                   "phone": recipient.get("phone_number")})


def _payment(order: dict[str, Any], currency: str) -> dict[str, Any] | None:
    tenders = [t for t in order.get("tenders") or [] if isinstance(t, dict)]
    if not tenders:
        return {"status": "pending", "gateway": "square"}
    statuses = [(t.get("card_details") or {}).get("status") for t in tenders]
    kept = [t for t, s in zip(tenders, statuses, strict=True) if s not in ("VOIDED", "FAILED")]
    if not kept:
        status = "voided" if "VOIDED" in statuses else "pending"
    elif "AUTHORIZED" in statuses:
        status = "authorized"
    else:
        status = "paid"
    counted = kept or tenders
    tendered = sum(_minor(t.get("amount_money")) for t in counted)
    tips = sum(_minor(t.get("tip_money")) for t in counted)
    refunded = max(sum(_minor(r.get("amount_money")) for r in order.get("refunds") or []
                       if isinstance(r, dict) and r.get("status") in COUNTED_REFUNDS),
                   _minor((order.get("return_amounts") or {}).get("total_money")))
    if status == "paid" and refunded:
        status = "refunded" if refunded >= tendered else "partially_refunded"
    main = max(counted, key=lambda t: _minor(t.get("amount_money")))
    methods = list(dict.fromkeys(TENDER_METHODS.get(str(t.get("type")), str(t.get("type")).lower())
                                 for t in counted))
    return {"status": status, "method": "+".join(methods), "gateway": "square",
            "transaction_id": main.get("payment_id") or main.get("id"),
            "amount": from_minor(tendered - tips, currency)}
