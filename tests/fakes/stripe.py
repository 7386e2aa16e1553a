"""A fake Stripe API on loopback, and the `Driver` of the shared channel test matrix.

It models the slice of the Stripe API (https://docs.stripe.com/api) the stripe channel reads,
with Stripe's paths, list objects and errors:

    GET /v1/events                              newest first; types[], type (with * wildcards),
                                                delivery_success, created / created[gt|gte|lt|lte]
                                                (https://docs.stripe.com/api/events/list)
    GET /v1/events/<id>
    GET /v1/checkout/sessions                   payment_intent=, customer= filters
                                                (https://docs.stripe.com/api/checkout/sessions/list)
    GET /v1/checkout/sessions/<id>              expand[]=line_items includes the first page
    GET /v1/checkout/sessions/<id>/line_items   expand[]=data.price.product; `taxes` and `discounts`
                                                only when expand[]=data.taxes / data.discounts
                                                (https://docs.stripe.com/api/checkout/sessions/line_items)
    GET /v1/invoices/<id>                       `lines` holds the first 10 lines, has_more beyond
    GET /v1/invoices/<id>/lines                 (https://docs.stripe.com/api/invoices/invoice_lines)
    GET /v1/shipping_rates/<id>                 (https://docs.stripe.com/api/shipping_rates/retrieve)

Lists are {"object": "list", "data", "has_more", "url"} paged by limit (1-100, default 10),
starting_after and ending_before (https://docs.stripe.com/api/pagination). Authentication is
`Authorization: Bearer <key>` or HTTP Basic with the key as user name
(https://docs.stripe.com/api/authentication). Errors are {"error": {"type", "code", "message",
"param", "doc_url"}} (https://docs.stripe.com/api/errors): 401 for a bad key (the message shows
only the key's last four characters, as Stripe's does), 404 resource_missing, 400 for bad
parameters, 429 rate_limit (https://docs.stripe.com/rate-limits).

Webhooks: `webhook(event)` gives the body as Stripe posts it (pretty-printed JSON) and
`sign(...)` adds `Stripe-Signature: t=…,v1=…` as https://docs.stripe.com/webhooks#verify-manually
describes. Scenario fixtures (tests/fixtures/stripe/*.json) are loaded with `load()`:
{"uses": [other scenarios], "event", "line_items", "products", "shipping_rates", "invoice_lines"}.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import hmac
import itertools
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from flask import Response, request

from broker.channels.stripe import signature_header

from .vendor import FakeVendor

API_VERSION = "2025-06-30.basil"
DEFAULT_KEY = "sk_test_51FoboFake000000000000000000000000000000000000000000000000000xyz9"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stripe"
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                402: "card_error", 403: "invalid_request_error", 404: "invalid_request_error",
                409: "idempotency_error", 429: "invalid_request_error"}


def _json(doc: Any, status: int = 200) -> Response:
    response = Response(json.dumps(doc, indent=2, ensure_ascii=False), status=status,
                        mimetype="application/json")
    response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
    response.headers["Stripe-Version"] = API_VERSION
    return response


def _stripe_id(prefix: str) -> str:
    return f"{prefix}_1Fobo{secrets.token_hex(9)}"


def epoch(value: str | int | float) -> int:
    """Seconds since the epoch of an ISO 8601 time (or of an epoch already)."""
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


class StripeApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


class FakeStripe(FakeVendor):
    name = "stripe"

    def __init__(self, api_key: str = DEFAULT_KEY) -> None:
        self.api_key = api_key
        self.products: dict[str, dict[str, Any]] = {}
        self.shipping_rates: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_lines: dict[str, list[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.delivered: set[str] = set()
        self._order = itertools.count()
        self._event_order: dict[str, int] = {}
        super().__init__()

    # --- seeding ---------------------------------------------------------------------------------

    def add_product(self, product: Mapping[str, Any]) -> None:
        self.products[product["id"]] = copy.deepcopy(dict(product))

    def add_shipping_rate(self, rate: Mapping[str, Any]) -> None:
        self.shipping_rates[rate["id"]] = copy.deepcopy(dict(rate))

    def add_session(self, session: Mapping[str, Any], line_items: Iterable[Mapping[str, Any]]) -> None:
        """Store a Checkout Session (its latest state) and all of its line items (with `taxes`
        and `discounts`; the list endpoint strips them unless expanded)."""
        stored = copy.deepcopy(dict(session))
        stored.pop("line_items", None)
        self.sessions[stored["id"]] = stored
        self.line_items[stored["id"]] = [copy.deepcopy(dict(i)) for i in line_items]

    def add_invoice(self, invoice: Mapping[str, Any], lines: Iterable[Mapping[str, Any]]) -> None:
        self.invoices[invoice["id"]] = copy.deepcopy(dict(invoice))
        self.invoice_lines[invoice["id"]] = [copy.deepcopy(dict(line)) for line in lines]

    def add_event(self, event_type: str, obj: Mapping[str, Any], *, created: int | str | None = None,
                  event_id: str | None = None, delivered: bool = False) -> dict[str, Any]:
        """Record an event as Stripe creates one (a snapshot of `obj`) and return it."""
        event = {
            "id": event_id or _stripe_id("evt"), "object": "event", "api_version": API_VERSION,
            "created": epoch(created) if created is not None else int(time.time()),
            "data": {"object": copy.deepcopy(dict(obj))}, "livemode": bool(obj.get("livemode")),
            "pending_webhooks": 0 if delivered else 1,
            "request": {"id": None, "idempotency_key": None}, "type": event_type,
        }
        return self.store_event(event, delivered=delivered)

    def store_event(self, event: Mapping[str, Any], *, delivered: bool = False) -> dict[str, Any]:
        event = copy.deepcopy(dict(event))
        self.events.append(event)
        self._event_order[event["id"]] = next(self._order)
        if delivered:
            self.delivered.add(event["id"])
        return event

    def mark_delivered(self, event_id: str) -> None:
        self.delivered.add(event_id)

    def load(self, scenario: str | Path | Mapping[str, Any], *, with_event: bool = True,
             ) -> dict[str, Any] | None:
        """Seed the fake from a scenario fixture; returns its event (stored when with_event)."""
        doc = scenario if isinstance(scenario, Mapping) else read_fixture(scenario)
        for used in doc.get("uses") or []:
            self.load(used, with_event=False)
        for product in doc.get("products") or []:
            self.add_product(product)
        for rate in doc.get("shipping_rates") or []:
            self.add_shipping_rate(rate)
        event = doc.get("event")
        if not event:
            return None
        obj = event["data"]["object"]
        if obj.get("object") == "checkout.session":
            items = doc["line_items"] if "line_items" in doc else self.line_items.get(obj["id"], [])
            self.add_session(obj, items)
        elif obj.get("object") == "invoice":
            self.add_invoice(obj, doc.get("invoice_lines") or obj["lines"]["data"])
        return self.store_event(event) if with_event else copy.deepcopy(event)

    # --- webhooks --------------------------------------------------------------------------------

    @staticmethod
    def webhook(event: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and (unsigned) headers of the POST Stripe sends for this event."""
        body = json.dumps(event, indent=2, ensure_ascii=False).encode()
        return body, {"Content-Type": "application/json; charset=utf-8",
                      "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                      "Cache-Control": "no-cache", "Accept": "*/*; q=0.5, application/xml"}

    @staticmethod
    def sign(secret: str | list[str], body: bytes, headers: Mapping[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        """The headers with `Stripe-Signature` (one v1 per secret, as while rolling secrets)."""
        keys = [secret] if isinstance(secret, str) else list(secret)
        stamp = int(time.time()) if timestamp is None else int(timestamp)
        return {**headers, "Stripe-Signature": signature_header(keys, stamp, body)}

    # --- a ready-made order, for the shared matrix and for volume tests --------------------------

    def seed_checkout(self, session_id: str, *, created: int | None = None,
                      items: Iterable[tuple[str, str | None, int, int, int]] | None = None,
                      shipping: tuple[str, int] | None = ("Standard shipping", 500),
                      payment_status: str = "paid", currency: str = "usd") -> dict[str, Any]:
        """Store a paid (or unpaid) Checkout Session with tax-exclusive lines given as
        (name, sku or None, unit_amount, quantity, amount_tax); returns the session."""
        items = list(items if items is not None else DRIVER_ITEMS)
        created = created if created is not None else int(time.time())
        line_items, subtotal, tax = [], 0, 0
        for index, (name, sku, unit, quantity, line_tax) in enumerate(items):
            product_id = f"prod_Fobo{index:04d}{session_id[-6:]}"
            self.add_product({"id": product_id, "object": "product", "active": True,
                              "created": created, "default_price": None, "description": None,
                              "images": [], "livemode": False,
                              "metadata": {"sku": sku} if sku else {}, "name": name,
                              "shippable": True, "tax_code": "txcd_99999999", "type": "good",
                              "unit_label": None, "updated": created, "url": None})
            line_items.append(_item(f"li_Fobo{index:04d}{session_id[-8:]}", name, product_id,
                                    unit, quantity, line_tax, currency, created))
            subtotal += unit * quantity
            tax += line_tax
        shipping_amount = 0
        cost = None
        if shipping:
            rate_id = f"shr_Fobo{session_id[-10:]}"
            shipping_amount = shipping[1]
            self.add_shipping_rate({"id": rate_id, "object": "shipping_rate", "active": True,
                                    "created": created, "delivery_estimate": None,
                                    "display_name": shipping[0],
                                    "fixed_amount": {"amount": shipping[1], "currency": currency},
                                    "livemode": False, "metadata": {},
                                    "tax_behavior": "exclusive", "tax_code": "txcd_92010001",
                                    "type": "fixed_amount"})
            cost = {"amount_subtotal": shipping[1], "amount_tax": 0, "amount_total": shipping[1],
                    "shipping_rate": rate_id}
        total = subtotal + shipping_amount + tax
        session = _session(session_id, currency=currency, created=created, subtotal=subtotal,
                           total=total, shipping_cost=cost, payment_status=payment_status,
                           totals={"amount_discount": 0, "amount_shipping": shipping_amount,
                                   "amount_tax": tax})
        self.add_session(session, line_items)
        return copy.deepcopy(session)

    # --- the API ---------------------------------------------------------------------------------

    def authorized(self, req: Any) -> bool:
        header = req.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            offered = header[7:]
        elif header.startswith("Basic "):
            try:
                offered = base64.b64decode(header[6:]).decode().partition(":")[0]
            except ValueError:
                return False
        else:
            return False
        return hmac.compare_digest(offered.encode(), self.api_key.encode())

    def error(self, status: int, message: str, *, code: str | None = None,
              param: str | None = None) -> Response:
        if status == 401:
            header = request.headers.get("Authorization", "")
            key = header[7:] if header.startswith("Bearer ") else ""
            message = (f"Invalid API Key provided: {key[:8]}{'*' * 20}{key[-4:]}" if key else
                       "You did not provide an API key. You need to provide your API key in the "
                       "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                       "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                       "details, or we can help at https://support.stripe.com/.")
        elif status == 429:
            code = "rate_limit"
            message = ("Request rate limit exceeded. Learn more about rate limits here "
                       "https://stripe.com/docs/rate-limits.")
        error: dict[str, Any] = {"message": message,
                                 "type": _ERROR_TYPES.get(status, "api_error")}
        if code:
            error["code"] = code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            error["param"] = param
        return _json({"error": error}, status)

    def routes(self) -> None:
        app = self.app

        @app.errorhandler(StripeApiError)
        def _api_error(exc: StripeApiError) -> Response:
            return self.error(exc.status, str(exc), code=exc.code, param=exc.param)

        @app.errorhandler(404)
        def _no_route(_exc: Exception) -> Response:
            return self.error(404, f"Unrecognized request URL ({request.method}: {request.path}). "
                                   "Please see https://stripe.com/docs or we can help at "
                                   "https://support.stripe.com/.")

        @app.errorhandler(405)
        def _no_method(_exc: Exception) -> Response:
            return self.error(404, f"Unrecognized request URL ({request.method}: {request.path}).")

        @app.get("/v1/events")
        def list_events() -> Response:
            events = [e for e in self.events if self._event_matches(e)]
            events.sort(key=lambda e: (e["created"], self._event_order[e["id"]]), reverse=True)
            return _json(_page(events, "/v1/events"))

        @app.get("/v1/events/<event_id>")
        def get_event(event_id: str) -> Response:
            for event in self.events:
                if event["id"] == event_id:
                    return _json(event)
            raise _missing("event", event_id)

        @app.get("/v1/checkout/sessions")
        def list_sessions() -> Response:
            sessions = list(self.sessions.values())
            for name in ("payment_intent", "customer", "status"):
                if request.args.get(name):
                    sessions = [s for s in sessions if _ref(s.get(name)) == request.args[name]]
            sessions.sort(key=lambda s: s.get("created") or 0, reverse=True)
            return _json(_page(sessions, "/v1/checkout/sessions"))

        @app.get("/v1/checkout/sessions/<session_id>")
        def get_session(session_id: str) -> Response:
            session = copy.deepcopy(self._session(session_id))
            if "line_items" in _expand():
                session["line_items"] = _page(self._items(session_id, set()),
                                              f"/v1/checkout/sessions/{session_id}/line_items",
                                              limit=10)
            return _json(session)

        @app.get("/v1/checkout/sessions/<session_id>/line_items")
        def list_line_items(session_id: str) -> Response:
            self._session(session_id)
            items = self._items(session_id, _expand())
            return _json(_page(items, f"/v1/checkout/sessions/{session_id}/line_items"))

        @app.get("/v1/invoices/<invoice_id>")
        def get_invoice(invoice_id: str) -> Response:
            invoice = copy.deepcopy(self._invoice(invoice_id))
            lines = self.invoice_lines.get(invoice_id, [])
            invoice["lines"] = {"object": "list", "data": copy.deepcopy(lines[:10]),
                                "has_more": len(lines) > 10,
                                "url": f"/v1/invoices/{invoice_id}/lines"}
            return _json(invoice)

        @app.get("/v1/invoices/<invoice_id>/lines")
        def list_invoice_lines(invoice_id: str) -> Response:
            self._invoice(invoice_id)
            lines = copy.deepcopy(self.invoice_lines.get(invoice_id, []))
            return _json(_page(lines, f"/v1/invoices/{invoice_id}/lines"))

        @app.get("/v1/shipping_rates/<rate_id>")
        def get_shipping_rate(rate_id: str) -> Response:
            if rate_id not in self.shipping_rates:
                raise _missing("shipping_rate", rate_id)
            return _json(self.shipping_rates[rate_id])

    # --- helpers ---------------------------------------------------------------------------------

    def _session(self, session_id: str) -> dict[str, Any]:
        if session_id not in self.sessions:
            raise _missing("checkout.session", session_id)
        return self.sessions[session_id]

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        if invoice_id not in self.invoices:
            raise _missing("invoice", invoice_id)
        return self.invoices[invoice_id]

    def _items(self, session_id: str, expand: set[str]) -> list[dict[str, Any]]:
        items = copy.deepcopy(self.line_items.get(session_id, []))
        for item in items:
            for field in ("taxes", "discounts"):
                if f"data.{field}" not in expand:
                    item.pop(field, None)
            price = item.get("price") or {}
            if "data.price.product" in expand and isinstance(price.get("product"), str):
                price["product"] = copy.deepcopy(self.products.get(price["product"],
                                                                   price["product"]))
        return items

    def _event_matches(self, event: Mapping[str, Any]) -> bool:
        args = request.args
        types = args.getlist("types[]")
        if args.get("type") and types:
            raise StripeApiError(400, "You may pass either `type` or `types`, but not both.",
                                 code="parameter_invalid_string", param="types")
        if types and event["type"] not in types:
            return False
        if args.get("type") and not fnmatch.fnmatchcase(event["type"], args["type"]):
            return False
        delivery = args.get("delivery_success")
        if delivery is not None:
            if delivery not in ("true", "false"):
                raise StripeApiError(400, "Invalid boolean: " + delivery,
                                     code="parameter_invalid_boolean", param="delivery_success")
            if (event["id"] in self.delivered) != (delivery == "true"):
                return False
        created = event["created"]
        bounds = {"created": created.__eq__, "created[gt]": created.__gt__,
                  "created[gte]": created.__ge__, "created[lt]": created.__lt__,
                  "created[lte]": created.__le__}
        for name, check in bounds.items():
            if args.get(name) is not None and not check(_integer(name)):
                return False
        return True


# --- list objects --------------------------------------------------------------------------------

def _integer(name: str) -> int:
    value = request.args.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise StripeApiError(400, f"Invalid integer: {value}", code="parameter_invalid_integer",
                             param=name) from None


def _expand() -> set[str]:
    return set(request.args.getlist("expand[]"))


def _ref(value: Any) -> Any:
    return value.get("id") if isinstance(value, Mapping) else value


def _missing(kind: str, object_id: str) -> StripeApiError:
    return StripeApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param="id")


def _page(items: list[dict[str, Any]], url: str, *, limit: int | None = None) -> dict[str, Any]:
    """One page of a Stripe list: `limit` items after `starting_after` or before `ending_before`."""
    if limit is None:
        limit = _integer("limit") if request.args.get("limit") is not None else 10
    if not 1 <= limit <= 100:
        raise StripeApiError(400, "This value must be greater than or equal to 1 and less than "
                                  "or equal to 100.", code="parameter_invalid_integer", param="limit")
    ids = [item.get("id") for item in items]
    after, before = request.args.get("starting_after"), request.args.get("ending_before")
    if after is not None or before is not None:
        cursor = after if after is not None else before
        if cursor not in ids:
            raise StripeApiError(400, f"No such object: '{cursor}'", code="resource_missing",
                                 param="starting_after" if after is not None else "ending_before")
    if after is not None:
        rest = items[ids.index(after) + 1:]
        page, has_more = rest[:limit], len(rest) > limit
    elif before is not None:
        head = items[:ids.index(before)]
        page, has_more = head[-limit:], len(head) > limit
    else:
        page, has_more = items[:limit], len(items) > limit
    return {"object": "list", "data": copy.deepcopy(page), "has_more": has_more, "url": url}


# --- Stripe-shaped objects -----------------------------------------------------------------------

DRIVER_ITEMS = (("Blue Widget", "SKU-001", 1250, 2, 206), ("Ünïcode Mug", None, 800, 1, 66))


def _tax_rate(created: int) -> dict[str, Any]:
    return {"id": "txr_1FoboCaSalesTax", "object": "tax_rate", "active": True, "country": "US",
            "created": created, "description": None, "display_name": "Sales Tax",
            "effective_percentage": 8.25, "flat_amount": None, "inclusive": False,
            "jurisdiction": "CALIFORNIA", "jurisdiction_level": "multiple", "livemode": False,
            "metadata": {}, "percentage": 8.25, "rate_type": "percentage", "state": "CA",
            "tax_type": "sales_tax"}


def _item(item_id: str, name: str, product_id: str, unit: int, quantity: int, tax: int,
          currency: str, created: int) -> dict[str, Any]:
    subtotal = unit * quantity
    return {
        "id": item_id, "object": "item", "amount_discount": 0, "amount_subtotal": subtotal,
        "amount_tax": tax, "amount_total": subtotal + tax, "currency": currency,
        "description": name, "discounts": [],
        "price": {"id": "price_" + product_id[5:], "object": "price", "active": True,
                  "billing_scheme": "per_unit", "created": created, "currency": currency,
                  "custom_unit_amount": None, "livemode": False, "lookup_key": None,
                  "metadata": {}, "nickname": None, "product": product_id, "recurring": None,
                  "tax_behavior": "exclusive", "tiers_mode": None, "transform_quantity": None,
                  "type": "one_time", "unit_amount": unit, "unit_amount_decimal": str(unit)},
        "quantity": quantity,
        "taxes": [{"amount": tax, "rate": _tax_rate(created), "taxability_reason": "standard_rated",
                   "taxable_amount": subtotal}] if tax else [],
    }


def _session(session_id: str, *, currency: str, created: int, subtotal: int, total: int,
             shipping_cost: dict[str, Any] | None, payment_status: str,
             totals: dict[str, int]) -> dict[str, Any]:
    address = {"city": "San Francisco", "country": "US", "line1": "510 Townsend St",
               "line2": None, "postal_code": "94103", "state": "CA"}
    return {
        "id": session_id, "object": "checkout.session", "adaptive_pricing": {"enabled": False},
        "after_expiration": None, "allow_promotion_codes": False, "amount_subtotal": subtotal,
        "amount_total": total,
        "automatic_tax": {"enabled": True, "liability": {"type": "self"}, "provider": "stripe",
                          "status": "complete"},
        "billing_address_collection": "required", "cancel_url": "https://shop.example.com/cart",
        "client_reference_id": f"ORDER-{session_id[-6:]}", "client_secret": None,
        "collected_information": {"shipping_details": {"address": dict(address),
                                                       "name": "Ana Silva"}},
        "consent": None, "consent_collection": None, "created": created, "currency": currency,
        "currency_conversion": None, "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": "cus_FoboAnaSilva01", "customer_creation": "always",
        "customer_details": {"address": dict(address), "email": "ana.silva@example.com",
                             "name": "Ana Silva", "phone": "+14155550100", "tax_exempt": "none",
                             "tax_ids": []},
        "customer_email": None, "discounts": [], "expires_at": created + 86400, "invoice": None,
        "invoice_creation": None, "livemode": False, "locale": "auto", "metadata": {},
        "mode": "payment", "origin_context": None, "payment_intent": f"pi_3Fobo{session_id[-10:]}",
        "payment_link": None, "payment_method_collection": "if_required",
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "payment_status": payment_status, "permissions": None,
        "phone_number_collection": {"enabled": True}, "recovered_from": None,
        "setup_intent": None,
        "shipping_address_collection": {"allowed_countries": ["US"]},
        "shipping_cost": shipping_cost, "shipping_options": [
            {"shipping_amount": shipping_cost["amount_subtotal"],
             "shipping_rate": shipping_cost["shipping_rate"]}] if shipping_cost else [],
        "status": "complete", "submit_type": "pay", "subscription": None,
        "success_url": "https://shop.example.com/thanks", "total_details": totals,
        "ui_mode": "hosted", "url": None, "wallet_options": None,
    }


def read_fixture(name: str | Path) -> dict[str, Any]:
    """A scenario fixture by file name (in tests/fixtures/stripe) or path, floats as floats,
    as the fake serves them."""
    path = Path(name)
    if not path.is_absolute() and not path.exists():
        path = FIXTURES / path
    return json.loads(path.read_text(encoding="utf-8"))


# --- the shared matrix's driver ------------------------------------------------------------------

class Driver:
    """tests/fakes/driver.py's ChannelDriver for Stripe: Checkout Sessions in payment mode."""

    kind: ClassVar[str] = "stripe"
    signs_timestamp: ClassVar[bool] = True
    reserialised_fails: ClassVar[bool] = True

    def __init__(self, fake: FakeStripe) -> None:
        self.fake = fake

    def settings(self, webhook_url: str) -> dict[str, Any]:
        return {"api_url": self.fake.url}

    def credentials(self) -> dict[str, str]:
        return {"api_key": self.fake.api_key}

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        """A completed session's event, or (cancelled) its delayed payment failing."""
        created = epoch(updated_at)
        if external_id in self.fake.sessions:
            session = copy.deepcopy(self.fake.sessions[external_id])
        else:
            session = self.fake.seed_checkout(external_id, created=created - 60)
        session["payment_status"] = "unpaid" if cancelled else "paid"
        event_type = ("checkout.session.async_payment_failed" if cancelled
                      else "checkout.session.completed")
        event = self.fake.add_event(event_type, session, created=created)
        body, headers = self.fake.webhook(event)
        return "", body, headers

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        return self.fake.sign(secret, body, headers, timestamp=timestamp)

    def expected(self, external_id: str) -> dict[str, str]:
        return {"external_id": external_id, "currency": "USD", "lines.0.sku": "SKU-001",
                "lines.0.quantity": "2", "lines.0.unit_price": "12.50",
                "shipping.0.amount": "5.00", "totals.tax": "2.72", "totals.total": "40.72"}
