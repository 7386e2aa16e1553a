"""Stripe: paid Checkout Sessions and paid invoices as canonical orders.

Vendor facts this adapter relies on, from Stripe's own documentation:

- Signatures (https://docs.stripe.com/webhooks#verify-manually): the `Stripe-Signature` header is
  `t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`; v1 is the hex HMAC-SHA256 of f"{t}.{raw body}" keyed
  with the endpoint secret, the whole `whsec_…` string taken as the key bytes. While a secret is
  being rolled Stripe sends one v1 per active secret; v0 is a test-mode scheme and is ignored.
  The timestamp is checked against a tolerance in both directions (Stripe's libraries use 300 s).
- Events (https://docs.stripe.com/api/events/object) carry `id` (evt_…), `type`, `created` and a
  snapshot of the object in `data.object`; the list endpoint
  (https://docs.stripe.com/api/events/list) filters by `types[]`, `delivery_success` and
  `created[gte]`, returns newest first and pages with `starting_after`
  (https://docs.stripe.com/api/pagination); it reaches back 30 days.
- Checkout (https://docs.stripe.com/checkout/fulfillment): webhooks never include line items, so
  they are fetched from GET /v1/checkout/sessions/{id}/line_items
  (https://docs.stripe.com/api/checkout/sessions/line_items), expanding `data.price.product`,
  `data.taxes` and `data.discounts` (https://docs.stripe.com/expand). Delayed payment methods
  complete a session with `payment_status=unpaid` and later send
  `checkout.session.async_payment_succeeded` or `…_failed`.
  API 2025-03-31.basil moved `shipping_details` to `collected_information.shipping_details`.
- Invoices (https://docs.stripe.com/api/invoices/object): `lines` holds the first page only
  (`has_more`), the rest comes from GET /v1/invoices/{id}/lines. A line's `discounts` are its own;
  `discount_amounts` also carries its share of invoice-level discounts.
- Money (https://docs.stripe.com/currencies): integers in the smallest unit. Stripe's exponent is
  not always ISO 4217's: BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF are
  zero-decimal (ISO gives MGA two places), BHD JOD KWD OMR TND three-decimal, and ISK stays
  two-decimal in the API although whole króna only are allowed
  (https://support.stripe.com/questions/deprecation-of-fractional-isk-charges-and-refunds).
  So amounts are converted with Stripe's exponent, not `mapping.from_minor` (ISO's).
- API (https://docs.stripe.com/api/authentication, https://docs.stripe.com/api/errors,
  https://docs.stripe.com/rate-limits): `Authorization: Bearer sk_…`, form-encoded query
  parameters, errors as {"error": {"type", "code", "message"}}, 429 when rate limited.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from datetime import UTC
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from broker.channels.api import ChannelApi
from broker.channels.base import (
    CatchUpWindow,
    Channel,
    Envelope,
    PayloadError,
    PolledEvent,
    SignatureError,
)
from broker.channels.mapping import pruned, utc_iso
from broker.schemas.order import UNIT_PRICE_EXTRA_PLACES, minor_units

API_URL = "https://api.stripe.com"
MAX_SIGNATURE_HEADER = 8192
MAX_EVENT_ID = 255
PAGE_LIMIT = 100  # Stripe's largest page

CHECKOUT_TOPICS = frozenset({"checkout.session.completed",
                             "checkout.session.async_payment_succeeded",
                             "checkout.session.async_payment_failed"})
INVOICE_TOPICS = frozenset({"invoice.paid"})
REFUND_TOPICS = frozenset({"charge.refunded"})
TOPICS = CHECKOUT_TOPICS | INVOICE_TOPICS | REFUND_TOPICS
LINE_ITEM_EXPAND = ("data.price.product", "data.taxes", "data.discounts")
RELATED = "fobo_related"  # where enrich puts the session or invoice a refunded charge belongs to

ZERO_DECIMAL = frozenset({"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF",
                          "UGX", "VND", "VUV", "XAF", "XOF", "XPF"})
THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
_FALSE = ("0", "false", "no", "off")
MAX_MERCHANT_METADATA = 4096  # bytes of JSON; Stripe allows ~27 KB, canonical metadata caps at 16


# --- money ---------------------------------------------------------------------------------------

def stripe_exponent(currency: str) -> int:
    """Decimal places of Stripe's integer amounts in this currency (its own table, see above)."""
    code = currency.upper()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def stripe_amount(amount: Any, currency: str) -> str:
    """A Stripe integer amount as a canonical decimal string: 1999 USD -> "19.99", 500 JPY ->
    "500", 1250 KWD -> "1.250", 50000 ISK -> "500", 500 MGA -> "500.00".

    Raises PayloadError when the amount needs more places than ISO 4217 allows (ISK 40.10)."""
    try:
        value = Decimal(int(amount)).scaleb(-stripe_exponent(currency))
    except (TypeError, ValueError):
        raise PayloadError(f"not a Stripe amount: {amount!r}") from None
    places = minor_units(currency)
    exact = value.quantize(Decimal(1).scaleb(-places))
    if exact != value:
        raise PayloadError(f"{currency.upper()} amount {amount} has more decimals than "
                           f"ISO 4217 allows ({places})")
    return f"{exact:f}"


def stripe_unit_price(minor: Any, currency: str) -> str:
    """A unit price in (possibly fractional) minor units, e.g. unit_amount_decimal "0.5" USD ->
    "0.005"; rounded to the canonical limit of ISO places + 4."""
    value = Decimal(str(minor)).scaleb(-stripe_exponent(currency))
    places = minor_units(currency)
    exponent = min(max(-value.as_tuple().exponent, places), places + UNIT_PRICE_EXTRA_PLACES)
    return f"{value.quantize(Decimal(1).scaleb(-exponent), ROUND_HALF_EVEN):f}"


# --- signatures ----------------------------------------------------------------------------------

def compute_signature(secret: str, timestamp: int | str, body: bytes) -> str:
    """Hex v1 signature of a payload, as Stripe computes it (the secret is the key as-is)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str] | tuple[str, ...], timestamp: int, body: bytes) -> str:
    """A `Stripe-Signature` value with one v1 per secret, as sent while a secret is rolled."""
    return ",".join([f"t={timestamp}", *(f"v1={compute_signature(s, timestamp, body)}"
                                         for s in secrets)])


def _parse_signature_header(value: str) -> tuple[int, list[str]]:
    stamps: list[str] = []
    signatures: list[str] = []
    for element in value.split(","):
        key, sep, item = element.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            stamps.append(item)
        elif key == "v1":
            signatures.append(item)
    if len(stamps) != 1:
        raise SignatureError("Stripe-Signature must carry exactly one t= timestamp")
    if not (stamps[0].isascii() and stamps[0].isdigit()):
        raise SignatureError("Stripe-Signature timestamp is not an integer")
    if not signatures:
        raise SignatureError("Stripe-Signature has no v1 signature")
    return int(stamps[0]), signatures


# --- small readers -------------------------------------------------------------------------------

def _id(value: Any) -> str | None:
    """The id of an expandable field, whether it came as an id or as the expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value not in (None, "") else None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """The items of a Stripe list object (or of a plain list)."""
    if isinstance(value, Mapping):
        value = value.get("data")
    return list(value) if isinstance(value, list) else []


def _event_parts(payload: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(_obj(payload.get("data")).get("object"), dict):
        raise PayloadError("not a Stripe event: expected {id, type, created, data: {object}}")
    return payload, payload["data"]["object"]


def _rate(percentage: Any) -> str | None:
    if percentage is None:
        return None
    return f"{(Decimal(str(percentage)) / 100).normalize():f}"


def _taxes(entries: Any, fallback: Any, currency: str) -> list[dict[str, Any]]:
    """Canonical taxes of a line or shipping cost: Stripe's per-rate taxes when present (checkout
    `taxes[].rate`, invoice `taxes[]` or older `tax_amounts[]`), else the bare `amount_tax`."""
    out = []
    for entry in entries if isinstance(entries, list) else []:
        rate = entry.get("rate") or entry.get("tax_rate") or \
            _obj(entry.get("tax_rate_details")).get("tax_rate")
        rate = _obj(rate)
        name = rate.get("display_name")
        if name and rate.get("jurisdiction"):
            name = f"{name} ({rate['jurisdiction']})"
        out.append({"name": name, "rate": _rate(rate.get("percentage")),
                    "amount": stripe_amount(entry.get("amount") or 0, currency)})
    if not out and fallback:
        out.append({"amount": stripe_amount(fallback, currency)})
    return out


def _behaviours(taxes: Any, tax_behavior: Any = None) -> set[str]:
    """Whether taxed amounts include their tax: {"inclusive"}, {"exclusive"} or both/neither."""
    found = {tax_behavior} & {"inclusive", "exclusive"}
    for entry in taxes if isinstance(taxes, list) else []:
        if not entry.get("amount"):
            continue
        if entry.get("tax_behavior") in ("inclusive", "exclusive"):
            found.add(entry["tax_behavior"])
        rate = _obj(entry.get("rate") or entry.get("tax_rate"))
        inclusive = entry.get("inclusive", rate.get("inclusive"))
        if isinstance(inclusive, bool):
            found.add("inclusive" if inclusive else "exclusive")
    return found


def _prices_include_tax(found: set[str]) -> bool:
    if found == {"inclusive", "exclusive"}:
        raise PayloadError("the order mixes tax-inclusive and tax-exclusive prices, which one "
                           "canonical order cannot express")
    return found == {"inclusive"}


def _address(address: Any, *, name: Any = None, phone: Any = None,
             company: Any = None) -> dict[str, Any] | None:
    address = _obj(address)
    if not any(address.values()):
        return None
    return {"name": name or None, "company": company or None,
            "line1": address.get("line1") or None, "line2": address.get("line2") or None,
            "city": address.get("city") or None, "region": address.get("state") or None,
            "postal_code": address.get("postal_code") or None,
            "country": address.get("country") or None, "phone": phone or None}


def _text(value: Any, limit: int = 255) -> str | None:
    """Free text cut to the canonical field's length (Stripe allows longer descriptions)."""
    return str(value)[:limit] if value not in (None, "") else None


def _merchant_metadata(metadata: Any) -> Any:
    """The merchant's own Stripe metadata, unless too large for the canonical metadata cap."""
    if not metadata:
        return None
    if len(json.dumps(metadata, default=str).encode()) > MAX_MERCHANT_METADATA:
        return {"omitted": f"larger than {MAX_MERCHANT_METADATA} bytes"}
    return metadata


def _first_tax_id(tax_ids: Any) -> str | None:
    for entry in tax_ids if isinstance(tax_ids, list) else []:
        if isinstance(entry, Mapping) and entry.get("value"):
            return str(entry["value"])
    return None


def _unit_price(unit_decimal: Any, quantity: int, line_amount: int, currency: str) -> str:
    """The price's own unit amount when it explains the line (per-unit pricing), else the line
    amount over the quantity (tiers, custom amounts, transform_quantity)."""
    if unit_decimal not in (None, ""):
        unit = Decimal(str(unit_decimal))
        if unit * quantity == line_amount:
            return stripe_unit_price(unit, currency)
    return stripe_unit_price(Decimal(line_amount) / quantity, currency)


def _shipping(cost: Any, fallback_amount: Any, currency: str) -> tuple[list[dict], set[str]]:
    cost = _obj(cost)
    if not cost:
        if fallback_amount:
            return [{"amount": stripe_amount(fallback_amount, currency)}], set()
        return [], set()
    rate = _obj(cost.get("shipping_rate"))
    line = {"method": rate.get("display_name"),
            "amount": stripe_amount(cost.get("amount_subtotal") or 0, currency),
            "taxes": _taxes(cost.get("taxes"), cost.get("amount_tax"), currency)}
    found = _behaviours(cost.get("taxes"), rate.get("tax_behavior") if cost.get("amount_tax") else None)
    return [line], found


# --- the channel ---------------------------------------------------------------------------------

class StripeChannel(Channel):
    """Checkout Sessions (mode=payment) and paid invoices; refunds update the order's payment.

    Subscription and setup sessions are ignored: a subscription's money arrives as invoice.paid.
    """

    kind = "stripe"
    topics = frozenset(TOPICS)
    kept_headers = ("content-type",)
    settings_fields = {
        "api_url": f"Stripe API base URL (default {API_URL})",
        "api_version": "Stripe-Version header for API reads (default: the account's version)",
        "book_invoices": "book invoice.paid as orders: true (default) or false, e.g. when "
                         "Checkout in payment mode also creates invoices",
    }
    credential_fields = {
        "api_key": "secret or restricted key (sk_… / rk_…) that can read Checkout Sessions, "
                   "Invoices, Products, Shipping Rates and Events",
    }

    # --- gateway -------------------------------------------------------------------------------

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        header = headers.get("stripe-signature", "")
        if not header:
            raise SignatureError("missing Stripe-Signature header")
        if len(header) > MAX_SIGNATURE_HEADER:
            raise SignatureError("Stripe-Signature header too long")
        timestamp, offered = _parse_signature_header(header)
        if timestamp < now - tolerance:
            raise SignatureError("timestamp too old")
        if timestamp > now + tolerance:
            raise SignatureError("timestamp too new")
        offered_bytes = [sig.encode() for sig in offered]
        if not any(hmac.compare_digest(compute_signature(secret, timestamp, body).encode(), sig)
                   for secret in secrets if secret for sig in offered_bytes):
            raise SignatureError("no matching v1 signature")
        try:
            event = json.loads(body)
        except ValueError:
            raise SignatureError("signed body is not a Stripe event (not JSON)") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise SignatureError("signed body is not a Stripe event (no id)")
        if len(event["id"]) > MAX_EVENT_ID:
            raise SignatureError("event id too long")
        topic = event.get("type")
        return Envelope(event_key=event["id"], topic=topic if isinstance(topic, str) else None)

    # --- worker --------------------------------------------------------------------------------

    def _book_invoices(self) -> bool:
        return str(self.settings.get("book_invoices", "true")).strip().lower() not in _FALSE

    def needs_api(self, topic: str | None, payload: Any) -> bool:
        topic = topic or _obj(payload).get("type")
        if topic not in TOPICS or not isinstance(payload, dict):
            return False
        _, obj = _event_parts(payload)
        if topic in CHECKOUT_TOPICS:
            return obj.get("mode") == "payment" and not _session_complete(obj)
        if topic in INVOICE_TOPICS:
            return self._book_invoices() and not _invoice_complete(obj)
        return RELATED not in payload

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        """The event with what its snapshot lacks, in Stripe's own shapes: the session's
        `line_items` (as `expand[]=line_items` would give them), the invoice's full `lines`,
        expanded shipping rates; for charge.refunded the session or invoice it paid, under
        "fobo_related" (None when the charge paid neither)."""
        if not self.needs_api(topic, payload):
            return payload
        topic = topic or payload.get("type")
        event = copy.deepcopy(payload)
        obj = event["data"]["object"]
        if topic in CHECKOUT_TOPICS:
            _complete_session(api, obj)
        elif topic in INVOICE_TOPICS:
            _complete_invoice(api, obj)
        else:
            event[RELATED] = _refunded_order_source(api, obj, self._book_invoices())
        return event

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any]]:
        event, obj = _event_parts(payload)
        topic = topic or event.get("type")
        updated_at = utc_iso(event.get("created"))
        if topic in CHECKOUT_TOPICS:
            if obj.get("mode") != "payment":
                return []
            failed = topic == "checkout.session.async_payment_failed"
            return [_session_order(obj, updated_at, cancelled=failed)]
        if topic in INVOICE_TOPICS:
            return [_invoice_order(obj, updated_at)] if self._book_invoices() else []
        if topic in REFUND_TOPICS:
            if RELATED not in event:
                raise PayloadError("charge.refunded needs the API: its session was not fetched")
            related = event[RELATED]
            if not isinstance(related, dict):
                return []
            if related.get("object") == "invoice":
                order = _invoice_order(related, updated_at)
            elif related.get("mode") == "payment":
                order = _session_order(related, updated_at)
            else:
                return []
            _apply_refund(order, obj)
            return [order]
        return []

    # --- API -----------------------------------------------------------------------------------

    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        key = credentials.get("api_key") or ""
        if not key:
            raise PayloadError("the source has no Stripe API key (credential api_key)")
        headers = {"Authorization": f"Bearer {key}"}
        if self.settings.get("api_version"):
            headers["Stripe-Version"] = str(self.settings["api_version"])
        return ChannelApi(self.settings.get("api_url") or API_URL, headers=headers, secrets=(key,))

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        """Order events Stripe has not delivered yet (pending or failed), oldest first.

        The event id is the key, as for the webhook, so an event seen both ways is stored once."""
        since = window.since if window.since.tzinfo else window.since.replace(tzinfo=UTC)
        params: dict[str, Any] = {"types[]": sorted(TOPICS), "delivery_success": "false",
                                  "created[gte]": int(since.timestamp()), "limit": PAGE_LIMIT}
        events = list(_all_pages(api, "/v1/events", params))
        events.reverse()  # Stripe lists newest first
        events.sort(key=lambda e: int(e.get("created") or 0))  # stable: keeps ties in order
        for event in events:
            if isinstance(event, dict) and event.get("id") and event.get("type"):
                yield PolledEvent(event_key=str(event["id"]), topic=str(event["type"]),
                                  payload=event)


# --- enrichment ----------------------------------------------------------------------------------

def _all_pages(api: ChannelApi, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    after: str | None = None
    while True:
        page = api.get(path, **params, **({"starting_after": after} if after else {}))
        data = [item for item in _list(page) if isinstance(item, dict)]
        yield from data
        if not _obj(page).get("has_more") or not data:
            return
        after = str(data[-1].get("id"))


def _session_complete(session: dict[str, Any]) -> bool:
    items = session.get("line_items")
    rate = _obj(session.get("shipping_cost")).get("shipping_rate")
    return isinstance(items, dict) and not items.get("has_more") and not isinstance(rate, str)


def _invoice_complete(invoice: dict[str, Any]) -> bool:
    rate = _obj(invoice.get("shipping_cost")).get("shipping_rate")
    return not _obj(invoice.get("lines")).get("has_more") and not isinstance(rate, str)


def _expand_shipping_rate(api: ChannelApi, holder: dict[str, Any]) -> None:
    cost = _obj(holder.get("shipping_cost"))
    if isinstance(cost.get("shipping_rate"), str):
        cost["shipping_rate"] = api.get(f"/v1/shipping_rates/{cost['shipping_rate']}")


def _complete_session(api: ChannelApi, session: dict[str, Any]) -> None:
    session_id = _id(session)
    if not session_id:
        raise PayloadError("checkout session without an id")
    if not (isinstance(session.get("line_items"), dict) and not session["line_items"].get("has_more")):
        path = f"/v1/checkout/sessions/{session_id}/line_items"
        items = list(_all_pages(api, path, {"limit": PAGE_LIMIT, "expand[]": list(LINE_ITEM_EXPAND)}))
        session["line_items"] = {"object": "list", "data": items, "has_more": False, "url": path}
    _expand_shipping_rate(api, session)


def _complete_invoice(api: ChannelApi, invoice: dict[str, Any]) -> None:
    lines = _obj(invoice.get("lines"))
    if lines.get("has_more"):
        path = f"/v1/invoices/{_id(invoice)}/lines"
        data = list(_all_pages(api, path, {"limit": PAGE_LIMIT}))
        invoice["lines"] = {"object": "list", "data": data, "has_more": False, "url": path}
    _expand_shipping_rate(api, invoice)


def _refunded_order_source(api: ChannelApi, charge: dict[str, Any],
                           book_invoices: bool) -> dict[str, Any] | None:
    """The Checkout Session (found by payment intent) or invoice the refunded charge paid."""
    intent = _id(charge.get("payment_intent"))
    if intent:
        found = _list(api.get("/v1/checkout/sessions", payment_intent=intent, limit=1))
        if found and isinstance(found[0], dict):
            session = found[0]
            if session.get("mode") == "payment":
                _complete_session(api, session)
            return session
    invoice_id = _id(charge.get("invoice"))  # present on charges before API 2025-03-31.basil
    if invoice_id and book_invoices:
        invoice = api.get(f"/v1/invoices/{invoice_id}")
        _complete_invoice(api, invoice)
        return invoice
    return None


# --- mapping -------------------------------------------------------------------------------------

def _currency(obj: Mapping[str, Any]) -> str:
    currency = obj.get("currency")
    if not isinstance(currency, str) or len(currency) != 3:
        raise PayloadError("the Stripe object has no currency")
    return currency.upper()


def _discount_code(discount: Any) -> str | None:
    """The promotion code when expanded, else the coupon's id (merchants name coupons by code),
    else the discount's own id (di_…), which still identifies it for reconciliation."""
    discount = _obj(discount) if isinstance(discount, Mapping) else {"id": discount}
    promo = discount.get("promotion_code")
    if isinstance(promo, Mapping) and promo.get("code"):
        return str(promo["code"])
    coupon = discount.get("coupon") or _obj(discount.get("source")).get("coupon")
    return _id(coupon) or _id(discount)


def _session_line(item: dict[str, Any], currency: str) -> dict[str, Any]:
    quantity = int(item.get("quantity") or 1)
    price = _obj(item.get("price"))
    product = price.get("product") or item.get("product")
    sku = _obj(_obj(product).get("metadata")).get("sku") or _id(product)
    unit = price.get("unit_amount_decimal")
    if unit in (None, ""):
        unit = price.get("unit_amount")
    return {
        "external_id": _id(item), "sku": sku,
        "name": _text(item.get("description") or _obj(product).get("name")),
        "quantity": str(quantity),
        "unit_price": _unit_price(unit, quantity, int(item.get("amount_subtotal") or 0), currency),
        "discount": stripe_amount(0, currency),
        "taxes": _taxes(item.get("taxes"), item.get("amount_tax"), currency),
    }


def _session_order(session: dict[str, Any], updated_at: str | None, *,
                   cancelled: bool = False) -> dict[str, Any]:
    """A Checkout Session in payment mode, with its fetched line items.

    Checkout discounts belong to the session (coupons and promotion codes), so they are order
    discounts, summed per discount from the lines' shares; lines carry no discount of their own.
    """
    items = session.get("line_items")
    if not isinstance(items, dict) or items.get("has_more"):
        raise PayloadError("the session's line items were not fetched from the Stripe API")
    currency = _currency(session)
    lines, found = [], set()
    codes: dict[str, list[Any]] = {}
    for item in _list(items):
        lines.append(_session_line(item, currency))
        if item.get("amount_tax"):
            found |= _behaviours(item.get("taxes"), _obj(item.get("price")).get("tax_behavior"))
        for share in item.get("discounts") or []:
            key = _id(share.get("discount")) or ""
            entry = codes.setdefault(key, [_discount_code(share.get("discount")), 0])
            entry[1] += int(share.get("amount") or 0)
    if not lines:
        raise PayloadError("the checkout session has no line items")
    details = _obj(session.get("total_details"))
    discounts = [{"code": code, "amount": stripe_amount(amount, currency)}
                 for code, amount in codes.values() if amount]
    if not discounts and details.get("amount_discount"):
        breakdown = _list(_obj(details.get("breakdown")).get("discounts"))
        discounts = [{"code": _discount_code(d.get("discount")),
                      "amount": stripe_amount(d.get("amount") or 0, currency)} for d in breakdown]
        if not discounts:
            discounts = [{"amount": stripe_amount(details["amount_discount"], currency)}]
    shipping, shipping_found = _shipping(session.get("shipping_cost"),
                                         details.get("amount_shipping"), currency)
    customer_details = _obj(session.get("customer_details"))
    shipping_details = (_obj(session.get("collected_information")).get("shipping_details")
                        or session.get("shipping_details"))
    shipping_details = _obj(shipping_details)
    paid = session.get("payment_status") in ("paid", "no_payment_required")
    methods = session.get("payment_method_types") or []
    doc = {
        "external_id": _id(session), "number": _text(session.get("client_reference_id")),
        "channel": "stripe", "placed_at": utc_iso(session.get("created")),
        "updated_at": updated_at, "status": "cancelled" if cancelled else "open",
        "currency": currency,
        "customer": {
            "external_id": _id(session.get("customer")),
            "email": customer_details.get("email") or session.get("customer_email"),
            "phone": customer_details.get("phone"),
            "company": customer_details.get("business_name"),
            "tax_id": _first_tax_id(customer_details.get("tax_ids")),
        },
        "billing_address": _address(customer_details.get("address"),
                                    name=customer_details.get("name"),
                                    phone=customer_details.get("phone"),
                                    company=customer_details.get("business_name")),
        "shipping_address": _address(shipping_details.get("address"),
                                     name=shipping_details.get("name"),
                                     phone=shipping_details.get("phone")),
        "lines": lines, "shipping": shipping, "discounts": discounts,
        "prices_include_tax": _prices_include_tax(found | shipping_found),
        "totals": {
            "subtotal": stripe_amount(session.get("amount_subtotal") or 0, currency),
            "discount": stripe_amount(details.get("amount_discount") or 0, currency),
            "shipping": stripe_amount(details.get("amount_shipping") or 0, currency),
            "tax": stripe_amount(details.get("amount_tax") or 0, currency),
            "total": stripe_amount(session.get("amount_total") or 0, currency),
        },
        "payment": {
            "status": "voided" if cancelled else "paid" if paid else "pending",
            "method": methods[0] if len(methods) == 1 else None, "gateway": "stripe",
            "transaction_id": _id(session.get("payment_intent")),
            "amount": stripe_amount(session.get("amount_total") or 0, currency) if paid else None,
        },
        "metadata": {"stripe_object": "checkout.session", "livemode": session.get("livemode"),
                     "stripe_metadata": _merchant_metadata(session.get("metadata"))},
    }
    return pruned(doc)


def _invoice_line(line: dict[str, Any], currency: str, own: set[str]) -> dict[str, Any]:
    quantity = int(line.get("quantity") or 1)
    pricing = _obj(line.get("pricing"))
    price = _obj(line.get("price"))
    product = _obj(pricing.get("price_details")).get("product") or price.get("product")
    unit = pricing.get("unit_amount_decimal") or price.get("unit_amount_decimal")
    amount = int(line.get("amount") or 0)
    discount = sum(int(d.get("amount") or 0) for d in line.get("discount_amounts") or []
                   if _id(d.get("discount")) in own)
    return {
        "external_id": _id(line),
        "sku": _obj(line.get("metadata")).get("sku") or _id(product),
        "name": _text(line.get("description")), "quantity": str(quantity),
        "unit_price": _unit_price(unit, quantity, amount, currency),
        "discount": stripe_amount(discount, currency),
        "taxes": _taxes(line.get("taxes") or line.get("tax_amounts"), None, currency),
    }


def _invoice_order(invoice: dict[str, Any], updated_at: str | None) -> dict[str, Any]:
    """A paid invoice. A line's own discounts stay on the line; its share of invoice-level
    discounts is summed per discount into order discounts; credit lines (negative amounts, e.g.
    prorations) become order discounts too, since canonical amounts are never negative."""
    lines_obj = _obj(invoice.get("lines"))
    if lines_obj.get("has_more"):
        raise PayloadError("the invoice's lines were not all fetched from the Stripe API")
    currency = _currency(invoice)
    lines, found, subtotal = [], set(), 0
    codes: dict[str, list[Any]] = {}
    credits = []
    for line in _list(lines_obj):
        amount = int(line.get("amount") or 0)
        if amount < 0:
            credits.append({"code": _text(line.get("description")) or _id(line),
                            "amount": stripe_amount(-amount, currency)})
            continue
        own = {i for i in (_id(d) for d in line.get("discounts") or []) if i}
        lines.append(_invoice_line(line, currency, own))
        subtotal += amount - sum(int(d.get("amount") or 0) for d in line.get("discount_amounts") or []
                                 if _id(d.get("discount")) in own)
        found |= _behaviours(line.get("taxes") or line.get("tax_amounts"))
        for share in line.get("discount_amounts") or []:
            key = _id(share.get("discount")) or ""
            if key in own:
                continue
            entry = codes.setdefault(key, [_discount_code(share.get("discount")), 0])
            entry[1] += int(share.get("amount") or 0)
    if not lines:
        raise PayloadError("the invoice has no chargeable lines")
    discounts = [{"code": code, "amount": stripe_amount(amount, currency)}
                 for code, amount in codes.values() if amount] + credits
    taxes = invoice.get("total_taxes") or invoice.get("total_tax_amounts") or []
    found |= _behaviours(taxes)
    tax = sum(int(t.get("amount") or 0) for t in taxes) if taxes else int(invoice.get("tax") or 0)
    shipping, shipping_found = _shipping(invoice.get("shipping_cost"),
                                         invoice.get("amount_shipping"), currency)
    shipping_to = _obj(invoice.get("shipping_details") or invoice.get("customer_shipping"))
    applied_balance = int(invoice.get("ending_balance") or 0) - int(invoice.get("starting_balance") or 0)
    discount_total = sum(Decimal(d["amount"]) for d in discounts)
    doc = {
        "external_id": _id(invoice), "number": invoice.get("number"), "channel": "stripe",
        "placed_at": utc_iso(_obj(invoice.get("status_transitions")).get("finalized_at")
                             or invoice.get("created")),
        "updated_at": updated_at, "status": "open", "currency": currency,
        "customer": {
            "external_id": _id(invoice.get("customer")), "email": invoice.get("customer_email"),
            "phone": invoice.get("customer_phone"),
            "tax_id": _first_tax_id(invoice.get("customer_tax_ids")),
        },
        "billing_address": _address(invoice.get("customer_address"),
                                    name=invoice.get("customer_name"),
                                    phone=invoice.get("customer_phone")),
        "shipping_address": _address(shipping_to.get("address"), name=shipping_to.get("name"),
                                     phone=shipping_to.get("phone")),
        "lines": lines, "shipping": shipping, "discounts": discounts,
        "prices_include_tax": _prices_include_tax(found | shipping_found),
        "totals": {
            "subtotal": stripe_amount(subtotal, currency),
            "discount": f"{discount_total:f}",
            "shipping": stripe_amount(_obj(invoice.get("shipping_cost")).get("amount_subtotal")
                                      or invoice.get("amount_shipping") or 0, currency),
            "tax": stripe_amount(tax, currency),
            "total": stripe_amount(invoice.get("total") or 0, currency),
        },
        "payment": {
            "status": "paid", "gateway": "stripe",
            "transaction_id": _id(invoice.get("charge")) or _id(invoice.get("payment_intent")),
            "amount": stripe_amount(invoice.get("amount_paid") or 0, currency),
        },
        "note": _text(invoice.get("description"), 5000),
        "metadata": {
            "stripe_object": "invoice", "livemode": invoice.get("livemode"),
            "customer_name": invoice.get("customer_name"),
            "customer_balance_applied": stripe_amount(applied_balance, currency)
            if applied_balance > 0 else None,
            "stripe_metadata": _merchant_metadata(invoice.get("metadata")),
        },
    }
    return pruned(doc)


def _apply_refund(order: dict[str, Any], charge: dict[str, Any]) -> None:
    """The order version after a refund: its payment says how much of the charge came back."""
    currency = order["currency"]
    paid = int(charge.get("amount_captured") or charge.get("amount") or 0)
    refunded = int(charge.get("amount_refunded") or 0)
    payment = order.setdefault("payment", {"gateway": "stripe"})
    payment["status"] = ("refunded" if charge.get("refunded") or refunded >= paid
                         else "partially_refunded")
    payment["transaction_id"] = _id(charge.get("payment_intent")) or _id(charge)
    payment["amount"] = stripe_amount(paid, currency)
    order.setdefault("metadata", {})["amount_refunded"] = stripe_amount(refunded, currency)
