"""BigCommerce: signed thin webhooks, orders read back from the V2 Orders API.

Vendor documentation this adapter follows:

- Webhook signature, https://developer.bigcommerce.com/docs/integrations/webhooks/https-webhook-overview
  ("Security"): callbacks are signed with the Standard Webhooks scheme (headers `webhook-id`,
  `webhook-timestamp`, `webhook-signature: v1,<base64>`), keyed with the app's client secret.
  BigCommerce's own samples hand `base64(client_secret)` to the standardwebhooks library, which
  base64-decodes it again: the HMAC-SHA256 key is the raw UTF-8 bytes of the client secret.
  We reuse the Standard Webhooks verifier with that encoding, so rotation, the timestamp
  tolerance (both ways) and constant-time comparison are the same code.
- Callback payloads, https://developer.bigcommerce.com/docs/integrations/webhooks/events
  (`scope`, `store_id`, `data: {type: order, id}`, `hash`, `created_at`, `producer`): every
  order event carries only the order id, so each is enriched from the API.
- Orders V2, https://developer.bigcommerce.com/docs/rest-management/orders (GET
  /v2/orders/{id}, /products, /shipping_addresses; list filters `min_date_modified`,
  `sort=date_modified:asc`, `page`, `limit` up to 250; an empty V2 list answers 204 No Content;
  status ids 0-14 from /v2/order_statuses; dates in RFC 2822).
- Auth and limits, https://developer.bigcommerce.com/docs/start/authentication and
  https://developer.bigcommerce.com/docs/start/best-practices/api-rate-limits: header
  `X-Auth-Token`; a 429 says how long to wait in `X-Rate-Limit-Time-Reset-Ms`, not Retry-After.

The enriched payload (kept as the event's `fetched`) is the webhook plus the API answers:
`{..webhook.., "order": {...}, "products": [...], "shipping_addresses": [...]}`.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import requests

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
from broker.channels.standard_webhooks import StandardWebhooksChannel
from broker.schemas.order import minor_units

API_ROOT = "https://api.bigcommerce.com"
# Order scopes whose payload is {"type": "order", "id": N}: the order is fetched and mapped.
ORDER_TOPICS = frozenset({"store/order/created", "store/order/updated",
                          "store/order/statusUpdated", "store/order/refund/created"})
ARCHIVED = "store/order/archived"
POLL_TOPIC = "store/order/updated"
MAX_PAGES = 200  # 50,000 rows at 250 a page: a loop guard, never a real limit

# /v2/order_statuses. 0 Incomplete = the shopper left at the payment page: not an order yet.
INCOMPLETE = 0
CANCELLED_STATUSES = {5: "Cancelled", 6: "Declined"}
REFUND_STATUSES = {4: "refunded", 14: "partially_refunded"}
PENDING_STATUSES = {1, 7, 12}  # Pending, Awaiting Payment, Manual Verification Required
# The order's `payment_status` (Orders V2 order_RespOnly enum) when it is set.
PAYMENT_STATUSES = {
    "authorized": "authorized", "capture pending": "authorized", "held for review": "pending",
    "pending": "pending", "captured": "paid", "paid": "paid", "declined": "voided",
    "void": "voided", "void pending": "voided", "refunded": "refunded",
    "partially refunded": "partially_refunded",
}
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def client_secret_key(client_secret: str) -> str:
    """The Standard Webhooks secret BigCommerce's samples build: base64 of the client secret."""
    return base64.b64encode(client_secret.encode()).decode()


def rfc2822(value: Any) -> datetime | None:
    """A V2 date ("Tue, 20 Nov 2012 00:00:00 +0000"), or None when empty."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        raise PayloadError(f"not an RFC 2822 date: {str(value)[:40]!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BigCommerceApi(ChannelApi):
    """The Management API; a 429 carries its wait in X-Rate-Limit-Time-Reset-Ms."""

    def retry_after(self, response: requests.Response) -> float | None:
        reset = response.headers.get("X-Rate-Limit-Time-Reset-Ms")
        if reset:
            try:
                return max(0.0, float(reset) / 1000)
            except ValueError:
                pass
        return super().retry_after(response)


def pages(api: ChannelApi, path: str, page_size: int = 250, **params: Any) -> Iterator[list[Any]]:
    """Pages of a V2 collection until a short page or 204 No Content (V2's empty answer)."""
    for page in range(1, MAX_PAGES + 1):
        response = api.request("GET", path, params={**params, "page": page, "limit": page_size})
        if response.status_code == 204 or not response.content.strip():
            return
        rows = api.parse(response)
        if not isinstance(rows, list):
            raise PayloadError(f"GET {path}: expected a JSON array from BigCommerce")
        if rows:
            yield rows
        if len(rows) < page_size:
            return
    raise PayloadError(f"GET {path}: more than {MAX_PAGES} pages")


class BigCommerceChannel(Channel):
    kind = "bigcommerce"
    topics = frozenset(ORDER_TOPICS | {ARCHIVED})
    kept_headers = ("content-type", "webhook-id", "webhook-timestamp")
    settings_fields = {
        "store_hash": "The store hash from the API path (https://api.bigcommerce.com/stores/{hash}).",
        "api_url": "Optional API base URL overriding https://api.bigcommerce.com/stores/{store_hash}.",
    }
    credential_fields = {
        "access_token": "The API account's access token (X-Auth-Token); Orders read-only scope.",
    }
    page_size = 250  # the V2 maximum for `limit`

    # --- webhooks -------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        """Standard Webhooks over the raw bytes, keyed with each (rotated) app client secret."""
        keys = [client_secret_key(secret) for secret in secrets if secret]
        if not keys:
            raise SignatureError("no client secret configured")
        envelope = StandardWebhooksChannel().verify(headers, body, keys, now, tolerance)
        scope = None
        try:
            payload = json.loads(body, parse_float=Decimal)
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("scope"), str):
            scope = payload["scope"][:255]
        return Envelope(event_key=envelope.event_key, topic=scope)

    def needs_api(self, topic: str | None, payload: Any) -> bool:
        return (_scope(topic, payload) in ORDER_TOPICS and isinstance(payload, dict)
                and "order" not in payload)

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        """The order, its products and shipping addresses, read now (the latest version)."""
        order_id = _order_id(payload)
        base = f"/v2/orders/{quote(order_id)}"
        order = api.get(base, include="fees")
        if not isinstance(order, dict):
            raise PayloadError(f"GET {base}: expected a JSON object from BigCommerce")
        products: list[Any] = []
        addresses: list[Any] = []
        if order.get("status_id") != INCOMPLETE:
            products = [row for page in pages(api, f"{base}/products", self.page_size) for row in page]
            addresses = [row for page in pages(api, f"{base}/shipping_addresses", self.page_size)
                         for row in page]
        return {**payload, "order": order, "products": products, "shipping_addresses": addresses}

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any] | Patch]:
        scope = _scope(topic, payload)
        if scope == ARCHIVED:
            # Archiving is BigCommerce's delete: the order leaves the store, so the back office
            # gets a cancellation. A patch needs no API call; it is timed when the broker
            # received it, as the payload's created_at is documented as the "hook creation date".
            return [Patch(_order_id(payload), {"status": "cancelled"})]
        if scope not in ORDER_TOPICS:
            return []
        if not isinstance(payload, dict) or not isinstance(payload.get("order"), dict):
            raise PayloadError("BigCommerce order event was not enriched from the API")
        document = order_document(payload["order"], payload.get("products") or [],
                                  payload.get("shipping_addresses") or [])
        return [] if document is None else [document]

    # --- API ------------------------------------------------------------------------------------

    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        token = credentials.get("access_token", "")
        if not token:
            raise PayloadError("the BigCommerce source has no access_token credential")
        return BigCommerceApi(self.base_url(), headers={"X-Auth-Token": token}, secrets=(token,))

    def base_url(self) -> str:
        store_hash = str(self.settings.get("store_hash") or "").strip()
        url = str(self.settings.get("api_url") or "").strip().rstrip("/")
        if url and (not store_hash or "/stores/" in url):
            return url
        if not store_hash:
            raise PayloadError("the BigCommerce source has no store_hash setting")
        return f"{url or API_ROOT}/stores/{quote(store_hash)}"

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        """Orders modified since the window, oldest first, as store/order/updated events.

        The list answer has no products, so each poll is stored thin and enriched like a
        webhook: a version seen both ways maps to the same canonical order and is booked once.
        """
        since = window.since if window.since.tzinfo else window.since.replace(tzinfo=UTC)
        store_hash = str(self.settings.get("store_hash") or "")
        params = {"min_date_modified": format_datetime(since.astimezone(UTC)),
                  "sort": "date_modified:asc"}
        for page in pages(api, "/v2/orders", self.page_size, **params):
            for order in page:
                if not isinstance(order, dict) or order.get("status_id") == INCOMPLETE:
                    continue
                modified = rfc2822(order.get("date_modified"))
                payload = pruned({
                    "scope": POLL_TOPIC, "producer": f"stores/{store_hash}" if store_hash else None,
                    "data": {"type": "order", "id": order.get("id")},
                    "created_at": int(modified.timestamp()) if modified else None,
                })
                yield PolledEvent(f"poll:{order.get('id')}:{utc_iso(modified) if modified else ''}",
                                  POLL_TOPIC, payload)


# --- mapping ------------------------------------------------------------------------------------

def order_document(order: Mapping[str, Any], products: list[Any],
                   addresses: list[Any]) -> dict[str, Any] | None:
    """The canonical order of a V2 order, or None for an Incomplete (status 0) one.

    `is_tax_inclusive_pricing` says which of the _inc_tax/_ex_tax figures are the store's
    actual (not estimated) ones, so unit prices, discounts and shipping come from that side.
    Discounts come from each product's `applied_discounts` (all kinds: coupon, automatic,
    manual): `target: product` ones are the line's discount, `target: order` ones are summed
    per code into order discounts. Gift certificates and store credit pay for the order, so
    they reduce `payment.amount`, not the total.
    """
    status_id = _int(order.get("status_id"))
    if status_id == INCOMPLETE:
        return None
    currency = str(order.get("default_currency_code") or order.get("currency_code") or "").upper()
    if not currency:
        raise PayloadError("BigCommerce order has no currency")
    inclusive = bool(order.get("is_tax_inclusive_pricing"))
    side = "inc_tax" if inclusive else "ex_tax"

    lines, order_discounts = [], {}
    for product in products:
        if not isinstance(product, dict):
            continue
        line_discount = Decimal(0)
        for applied in product.get("applied_discounts") or []:
            amount = decimal(applied.get("amount"))
            if applied.get("target") == "product":
                line_discount += amount
            else:
                label = _text(applied.get("code")) or _text(applied.get("name")) or _text(applied.get("id"))
                order_discounts[label] = order_discounts.get(label, Decimal(0)) + amount
        lines.append({
            "external_id": _id(product.get("id")), "sku": _text(product.get("sku")),
            "name": _text(product.get("name")), "quantity": str(decimal(product.get("quantity"))),
            "unit_price": _price(product.get(f"price_{side}"), currency),
            "discount": money(line_discount, currency),
            "taxes": _taxes(product.get("total_tax"), currency),
        })
    lines += _charges(order, side, currency)
    shipping = _shipping(order, addresses, side, currency)
    discounts = [{"code": code, "amount": money(amount, currency)}
                 for code, amount in order_discounts.items() if amount]

    total = decimal(order.get("total_inc_tax"))
    tendered = decimal(order.get("gift_certificate_amount")) + decimal(order.get("store_credit_amount"))
    subtotal = sum((decimal(ln["quantity"]) * decimal(ln["unit_price"]) - decimal(ln["discount"])
                    for ln in lines), Decimal(0))
    billing = order.get("billing_address") if isinstance(order.get("billing_address"), dict) else {}
    customer_id = _int(order.get("customer_id"))
    modified, created = rfc2822(order.get("date_modified")), rfc2822(order.get("date_created"))
    return pruned({
        "external_id": str(order.get("id")), "number": str(order.get("id")),
        "channel": "bigcommerce",
        "placed_at": utc_iso(created) if created else None,
        "updated_at": utc_iso(modified) if modified else None,
        "status": "cancelled" if status_id in CANCELLED_STATUSES else "open",
        "currency": currency,
        "customer": {
            "external_id": str(customer_id) if customer_id else None,  # 0 = guest checkout
            "email": _text(billing.get("email")), "first_name": _text(billing.get("first_name")),
            "last_name": _text(billing.get("last_name")), "phone": _text(billing.get("phone")),
            "company": _text(billing.get("company")),
        },
        "billing_address": _address(billing),
        "shipping_address": _address(next((a for a in addresses if isinstance(a, dict)), {})),
        "lines": lines, "shipping": shipping, "discounts": discounts,
        "prices_include_tax": inclusive,
        "totals": {
            "subtotal": money(subtotal, currency),
            "discount": money(sum((decimal(d["amount"]) for d in discounts), Decimal(0)), currency),
            "shipping": money(sum((decimal(s["amount"]) for s in shipping), Decimal(0)), currency),
            "tax": money(order.get("total_tax"), currency), "total": money(total, currency),
        },
        "payment": {
            "status": _payment_status(status_id, order.get("payment_status")),
            "method": _text(order.get("payment_method")),
            "transaction_id": _text(order.get("payment_provider_id")),
            "amount": money(max(Decimal(0), total - tendered), currency),
        },
        "note": _text(order.get("customer_message")),
        "metadata": {
            "status_id": status_id, "status": _text(order.get("status")),
            "payment_status": _text(order.get("payment_status")),
            "order_source": _text(order.get("order_source")), "channel_id": order.get("channel_id"),
            "external_source": _text(order.get("external_source")),
            "staff_notes": _text(order.get("staff_notes")), "cart_id": _text(order.get("cart_id")),
            "customer_locale": _text(order.get("customer_locale")),
            "display_currency": _text(order.get("currency_code")),
            "gift_certificate_amount": _nonzero(order.get("gift_certificate_amount"), currency),
            "store_credit_amount": _nonzero(order.get("store_credit_amount"), currency),
            "shipping_address_count": len(addresses) if len(addresses) > 1 else None,
        },
    })


def _payment_status(status_id: int | None, payment_status: Any) -> str:
    """Refund statuses win (the order's refund state); then the payment's own; then the order's."""
    if status_id in REFUND_STATUSES:
        return REFUND_STATUSES[status_id]
    known = PAYMENT_STATUSES.get(str(payment_status or "").strip().lower())
    if known:
        return known
    if status_id in CANCELLED_STATUSES:
        return "voided"
    return "pending" if status_id in PENDING_STATUSES else "paid"


def _shipping(order: Mapping[str, Any], addresses: list[Any], side: str,
              currency: str) -> list[dict[str, Any]]:
    """One shipping line per shipping address (method and cost), handling as its own line."""
    total = decimal(order.get(f"shipping_cost_{side}"))
    rows = [a for a in addresses if isinstance(a, dict)]
    lines = [{"method": _text(a.get("shipping_method")), "amount": money(a.get(f"cost_{side}"), currency),
              "taxes": _taxes(a.get("cost_tax"), currency)} for a in rows]
    if sum((decimal(line["amount"]) for line in lines), Decimal(0)) != _rounded(total, currency):
        # Addresses that do not add up to the order's figure (or none): trust the order.
        lines = [{"method": _text(rows[0].get("shipping_method")) if rows else None,
                  "amount": money(total, currency),
                  "taxes": _taxes(order.get("shipping_cost_tax"), currency)}] if total else []
    handling = decimal(order.get(f"handling_cost_{side}"))
    if handling:
        lines.append({"method": "Handling", "amount": money(handling, currency),
                      "taxes": _taxes(order.get("handling_cost_tax"), currency)})
    return lines


def _charges(order: Mapping[str, Any], side: str, currency: str) -> list[dict[str, Any]]:
    """Gift wrapping and order fees, which the total includes, as lines of their own."""
    lines = []
    wrapping = decimal(order.get(f"wrapping_cost_{side}"))
    if wrapping:
        lines.append({"name": "Gift wrapping", "quantity": "1", "unit_price": money(wrapping, currency),
                      "discount": money(0, currency),
                      "taxes": _taxes(order.get("wrapping_cost_tax"), currency)})
    fees = order.get("fees")
    for fee in fees if isinstance(fees, list) else []:
        if not isinstance(fee, dict):
            continue
        # The Orders V2 reference spells the ex-tax cost both cost_ex_tax and cost_exc_tax.
        amount = fee.get("cost_inc_tax") if side == "inc_tax" else (
            fee.get("cost_ex_tax", fee.get("cost_exc_tax")))
        lines.append({"external_id": f"fee:{fee.get('id')}",
                      "name": _text(fee.get("display_name_customer"))
                      or _text(fee.get("display_name_merchant")) or _text(fee.get("type")),
                      "quantity": "1", "unit_price": money(amount, currency),
                      "discount": money(0, currency), "taxes": _taxes(fee.get("cost_tax"), currency)})
    return lines


def _address(address: Mapping[str, Any]) -> dict[str, Any] | None:
    if not address:
        return None
    name = " ".join(filter(None, (_text(address.get("first_name")), _text(address.get("last_name")))))
    return {"name": name or None, "company": _text(address.get("company")),
            "line1": _text(address.get("street_1")), "line2": _text(address.get("street_2")),
            "city": _text(address.get("city")), "region": _text(address.get("state")),
            "postal_code": _text(address.get("zip")),
            "country": (_text(address.get("country_iso2")) or "").upper() or None,
            "phone": _text(address.get("phone"))}


def _taxes(amount: Any, currency: str) -> list[dict[str, str]]:
    return [{"amount": money(amount, currency)}] if decimal(amount) else []


def _price(value: Any, currency: str) -> str:
    """A unit price at the currency's places when exact, else as precise as BigCommerce sent it
    (its amounts carry 4 places; the canonical unit price may carry 4 beyond the minor unit)."""
    amount = decimal(value)
    rounded = _rounded(amount, currency)
    if rounded == amount:
        return money(amount, currency)
    return f"{amount.normalize():f}"


def _rounded(value: Any, currency: str) -> Decimal:
    return decimal(value).quantize(Decimal(1).scaleb(-minor_units(currency)))


def _nonzero(value: Any, currency: str) -> str | None:
    return money(value, currency) if decimal(value) else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _scope(topic: str | None, payload: Any) -> str | None:
    if topic:
        return topic
    return payload.get("scope") if isinstance(payload, dict) else None


def _order_id(payload: Any) -> str:
    data = payload.get("data") if isinstance(payload, dict) else None
    value = data.get("id") if isinstance(data, dict) else None
    text = "" if value is None or isinstance(value, bool) else str(value)
    if isinstance(value, Decimal) or not _ORDER_ID.fullmatch(text):
        raise PayloadError("BigCommerce order event has no usable data.id")
    return text
