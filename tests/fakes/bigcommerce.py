"""A fake BigCommerce store on loopback: the Orders V2 API and signed order webhooks.

Modelled on BigCommerce's own documentation:

- Orders V2, https://developer.bigcommerce.com/docs/rest-management/orders (OpenAPI source:
  github.com/bigcommerce/docs, reference/orders.v2.oas2.yml). Base path
  `/stores/{store_hash}/v2`, auth header `X-Auth-Token`. Money is a string with 4 places
  ("55.9900"), dates are RFC 2822 ("Tue, 05 Mar 2019 21:40:11 +0000"). Errors are a JSON array
  `[{"status": 404, "message": "The requested resource was not found."}]`.
- Collections page with `page` (from 1) and `limit` (default 50, at most 250; more is a 413,
  https://developer.bigcommerce.com/docs/start/about/status-codes); an empty page answers
  204 No Content with no body, as V2 collections do.
- Rate limits, https://developer.bigcommerce.com/docs/start/best-practices/api-rate-limits: a
  429 carries `X-Rate-Limit-Time-Reset-Ms` (and the window/quota headers), not Retry-After.
- Webhooks, https://developer.bigcommerce.com/docs/integrations/webhooks/events and
  .../https-webhook-overview: thin JSON callbacks (`scope`, `store_id`, `data`, `hash`,
  `created_at`, `producer`) signed with Standard Webhooks headers, the HMAC-SHA256 keyed with
  the raw bytes of the app's client secret (computed here independently of the adapter).

Endpoints (under /stores/<store_hash>/v2):
    GET /orders                             filters min/max_date_modified, min/max_date_created
                                            (RFC 2822 or ISO 8601), status_id, min_id, max_id;
                                            sort=id|date_created|date_modified[:asc|:desc]
    GET /orders/<id>                        include=fees embeds the fees array
    GET /orders/<id>/products               paged
    GET /orders/<id>/shipping_addresses     paged (also the legacy /shippingaddresses spelling)
    GET /orders/<id>/coupons                paged

Like the real store, the stored state only moves forward: seeding an order version older than
the one held (by date_modified) leaves the newer one in place, so webhooks delivered out of
order are still enriched with the latest version.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, ClassVar

from fakes.vendor import FakeVendor
from flask import Request, Response, jsonify, request

MAX_LIMIT = 250
DEFAULT_LIMIT = 50
NOT_FOUND = "The requested resource was not found."


def rfc2822(moment: datetime | str) -> str:
    """A V2 date string from a datetime, an ISO 8601 string or an RFC 2822 string."""
    if isinstance(moment, str):
        moment = _parse_date(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC))


def _parse_date(value: str) -> datetime:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def signature(client_secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """`v1,<base64>`: HMAC-SHA256 keyed with the client secret's bytes over id.timestamp.body."""
    mac = hmac.new(client_secret.encode(), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def amount(value: Decimal | str | int) -> str:
    """Money as V2 writes it: a string with 4 places."""
    return f"{Decimal(str(value)).quantize(Decimal('0.0001')):f}"


class FakeBigCommerce(FakeVendor):
    name = "bigcommerce"

    def __init__(self, store_hash: str = "a1b2c3d4e5", access_token: str | None = None,
                 client_secret: str | None = None, store_id: str = "1025646") -> None:
        self.store_hash = store_hash
        self.store_id = store_id
        self.access_token = access_token or "bc-token-" + secrets.token_hex(12)
        self.client_secret = client_secret or secrets.token_hex(16)
        self.orders: dict[str, dict[str, Any]] = {}
        self.products: dict[str, list[dict[str, Any]]] = {}
        self.shipping_addresses: dict[str, list[dict[str, Any]]] = {}
        self.coupons: dict[str, list[dict[str, Any]]] = {}
        super().__init__()

    # --- vendor behaviour -----------------------------------------------------------------

    def authorized(self, req: Request) -> bool:
        return hmac.compare_digest(req.headers.get("X-Auth-Token", "").encode(),
                                   self.access_token.encode())

    def error(self, status: int, message: str) -> Response:
        response = jsonify([{"status": status, "message": message}])
        response.status_code = status
        return response

    def throttle(self, times: int = 1, retry_after: str = "1") -> None:
        """The next `times` API requests answer 429 with BigCommerce's rate-limit headers."""
        reset_ms = str(int(float(retry_after) * 1000))
        headers = {"X-Rate-Limit-Time-Window-Ms": "30000", "X-Rate-Limit-Time-Reset-Ms": reset_ms,
                   "X-Rate-Limit-Requests-Quota": "150", "X-Rate-Limit-Requests-Left": "0"}
        super().throttle(times, headers=headers)

    def reset(self) -> None:
        """Forget orders, requests and faults (a module-scoped fake between tests)."""
        with self._lock:
            self._faults.clear()
        self.requests.clear()
        for store in (self.orders, self.products, self.shipping_addresses, self.coupons):
            store.clear()

    def routes(self) -> None:
        base = "/stores/<store_hash>/v2"
        self.app.add_url_rule(f"{base}/orders", "orders", self._orders)
        self.app.add_url_rule(f"{base}/orders/<order_id>", "order", self._order)
        for name, store in (("products", "products"), ("shipping_addresses", "shipping_addresses"),
                            ("shippingaddresses", "shipping_addresses"), ("coupons", "coupons")):
            self.app.add_url_rule(f"{base}/orders/<order_id>/{name}", name,
                                  self._collection(store))

    # --- API handlers -------------------------------------------------------------------------

    def _store_or_404(self, store_hash: str) -> Response | None:
        if hmac.compare_digest(store_hash.encode(), self.store_hash.encode()):
            return None
        return self.error(404, NOT_FOUND)

    def _page(self, rows: list[Any]) -> Response:
        try:
            page = int(request.args.get("page", 1))
            limit = int(request.args.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return self.error(400, "The page and limit parameters must be integers.")
        if limit > MAX_LIMIT:
            return self.error(413, f"The limit parameter may not exceed {MAX_LIMIT}.")
        if page < 1 or limit < 1:
            return self.error(400, "The page and limit parameters must be positive.")
        chunk = rows[(page - 1) * limit: page * limit]
        if not chunk:
            return Response(status=204)
        return jsonify(chunk)

    def _orders(self, store_hash: str) -> Response:
        missing = self._store_or_404(store_hash)
        if missing:
            return missing
        args = request.args
        rows = list(self.orders.values())
        for key, field, test in (("min_date_modified", "date_modified", lambda a, b: a >= b),
                                 ("max_date_modified", "date_modified", lambda a, b: a <= b),
                                 ("min_date_created", "date_created", lambda a, b: a >= b),
                                 ("max_date_created", "date_created", lambda a, b: a <= b)):
            if args.get(key):
                bound = _parse_date(args[key])
                rows = [o for o in rows if test(_parse_date(o[field]), bound)]
        if args.get("status_id") is not None:
            rows = [o for o in rows if str(o["status_id"]) == args["status_id"]]
        if args.get("min_id"):
            rows = [o for o in rows if int(o["id"]) >= int(args["min_id"])]
        if args.get("max_id"):
            rows = [o for o in rows if int(o["id"]) <= int(args["max_id"])]
        field, _, direction = args.get("sort", "id").partition(":")
        if field not in ("id", "date_created", "date_modified"):
            return self.error(400, f"The sort field '{field}' is not supported.")
        keyed = (lambda o: int(o["id"])) if field == "id" else (lambda o: _parse_date(o[field]))
        rows.sort(key=lambda o: (keyed(o), int(o["id"])), reverse=direction == "desc")
        return self._page([self._public(o, fees=False) for o in rows])

    def _order(self, store_hash: str, order_id: str) -> Response:
        missing = self._store_or_404(store_hash)
        if missing or order_id not in self.orders:
            return missing or self.error(404, NOT_FOUND)
        include = request.args.get("include", "").split(",")
        return jsonify(self._public(self.orders[order_id], fees="fees" in include))

    def _collection(self, store: str) -> Any:
        def handler(store_hash: str, order_id: str) -> Response:
            missing = self._store_or_404(store_hash)
            if missing or order_id not in self.orders:
                return missing or self.error(404, NOT_FOUND)
            return self._page(getattr(self, store).get(order_id, []))
        return handler

    def _public(self, order: dict[str, Any], *, fees: bool) -> dict[str, Any]:
        """The order as the API answers it: sub-resources as links, fees inline on request."""
        doc = copy.deepcopy(order)
        root = f"https://api.bigcommerce.com/stores/{self.store_hash}/v2"
        for name, path in (("products", "products"), ("shipping_addresses", "shippingaddresses"),
                           ("coupons", "coupons"), ("fees", "fees")):
            if name != "fees" or not fees:
                resource = f"/orders/{order['id']}/{path}"
                doc[name] = {"url": root + resource, "resource": resource}
        if fees:
            doc["fees"] = doc.get("fees") if isinstance(doc.get("fees"), list) else []
        return doc

    # --- seeding ------------------------------------------------------------------------------

    def seed(self, order: Mapping[str, Any], products: Iterable[Mapping[str, Any]] = (),
             shipping_addresses: Iterable[Mapping[str, Any]] = (),
             coupons: Iterable[Mapping[str, Any]] = ()) -> bool:
        """Hold this order version; False (and nothing changes) if a newer one is held."""
        key = str(order["id"])
        held = self.orders.get(key)
        if held and _parse_date(held["date_modified"]) > _parse_date(order["date_modified"]):
            return False
        self.orders[key] = {**copy.deepcopy(dict(order)),
                            "fees": copy.deepcopy(order.get("fees") or [])}
        self.products[key] = [copy.deepcopy(dict(p)) for p in products]
        self.shipping_addresses[key] = [copy.deepcopy(dict(a)) for a in shipping_addresses]
        self.coupons[key] = [copy.deepcopy(dict(c)) for c in coupons]
        return True

    def seed_fixture(self, doc: Mapping[str, Any]) -> bool:
        """Seed from a tests/fixtures/bigcommerce file ({"order", "products", ...})."""
        return self.seed(doc["order"], doc.get("products", ()), doc.get("shipping_addresses", ()),
                         doc.get("coupons", ()))

    def simple_order(self, order_id: str | int, *, date_modified: datetime | str,
                     status_id: int = 11, status: str = "Awaiting Fulfillment",
                     payment_status: str = "captured", quantity: int = 2, price: str = "12.50",
                     shipping: str = "5.00", tax_rate: str = "0.0625",
                     customer_id: int = 11) -> dict[str, Any]:
        """Seed a consistent tax-exclusive USD order (2 x 12.50, 5.00 shipping, 6.25% tax on
        the goods: 1.56, total 31.56 by default) and return what the store now holds."""
        key = str(order_id)
        held = self.orders.get(key)
        created = held["date_created"] if held else rfc2822(date_modified)
        goods = Decimal(price) * quantity
        tax = (goods * Decimal(tax_rate)).quantize(Decimal("0.01"))
        total_ex = goods + Decimal(shipping)
        numeric_id: int | str = int(key) if key.isdigit() else key
        billing = {"first_name": "Ana", "last_name": "Silva", "company": "", "street_1": "1 Main St",
                   "street_2": "", "city": "Springfield", "state": "Illinois", "zip": "62701",
                   "country": "United States", "country_iso2": "US", "phone": "",
                   "email": "ana@example.com", "form_fields": []}
        order = {
            "id": numeric_id, "customer_id": customer_id, "date_created": created,
            "date_modified": rfc2822(date_modified), "date_shipped": "", "status_id": status_id,
            "status": status, "custom_status": status,
            "subtotal_ex_tax": amount(goods), "subtotal_inc_tax": amount(goods + tax),
            "subtotal_tax": amount(tax), "base_shipping_cost": amount(shipping),
            "shipping_cost_ex_tax": amount(shipping), "shipping_cost_inc_tax": amount(shipping),
            "shipping_cost_tax": amount(0), "shipping_cost_tax_class_id": 2,
            "base_handling_cost": amount(0), "handling_cost_ex_tax": amount(0),
            "handling_cost_inc_tax": amount(0), "handling_cost_tax": amount(0),
            "base_wrapping_cost": amount(0), "wrapping_cost_ex_tax": amount(0),
            "wrapping_cost_inc_tax": amount(0), "wrapping_cost_tax": amount(0),
            "total_ex_tax": amount(total_ex), "total_inc_tax": amount(total_ex + tax),
            "total_tax": amount(tax), "is_tax_inclusive_pricing": False,
            "items_total": quantity, "items_shipped": 0, "payment_method": "Credit Card",
            "payment_provider_id": f"ch_{key}", "payment_status": payment_status,
            "refunded_amount": amount(0), "order_is_digital": False,
            "store_credit_amount": amount(0), "gift_certificate_amount": amount(0),
            "currency_id": 1, "currency_code": "USD", "currency_exchange_rate": "1.0000000000",
            "default_currency_id": 1, "default_currency_code": "USD", "staff_notes": "",
            "customer_message": "", "discount_amount": amount(0), "coupon_discount": amount(0),
            "shipping_address_count": 1, "ebay_order_id": "0", "cart_id": str(uuid.uuid4()),
            "billing_address": billing, "is_email_opt_in": False, "credit_card_type": None,
            "order_source": "www", "channel_id": 1, "external_source": None, "external_id": None,
            "tax_provider_id": "BasicTaxProvider", "customer_locale": "en", "fees": [],
        }
        product = {
            "id": 1, "order_id": numeric_id, "product_id": 77, "variant_id": 93,
            "order_address_id": 1, "name": "Blue Widget", "name_customer": "Blue Widget",
            "name_merchant": "Blue Widget", "sku": "SKU-001", "upc": "", "type": "physical",
            "base_price": amount(price), "price_ex_tax": amount(price),
            "price_inc_tax": amount(Decimal(price) + tax / quantity),
            "price_tax": amount(tax / quantity), "base_total": amount(goods),
            "total_ex_tax": amount(goods), "total_inc_tax": amount(goods + tax),
            "total_tax": amount(tax), "quantity": quantity, "is_refunded": False,
            "quantity_refunded": 0, "refund_amount": amount(0), "applied_discounts": [],
            "product_options": [], "configurable_fields": [],
            "discounted_total_inc_tax": amount(goods + tax),
        }
        address = {
            "id": 1, "order_id": numeric_id, **{k: v for k, v in billing.items() if k != "form_fields"},
            "items_total": quantity, "items_shipped": 0, "shipping_method": "Standard",
            "base_cost": amount(shipping), "cost_ex_tax": amount(shipping),
            "cost_inc_tax": amount(shipping), "cost_tax": amount(0), "cost_tax_class_id": 2,
            "base_handling_cost": amount(0), "handling_cost_ex_tax": amount(0),
            "handling_cost_inc_tax": amount(0), "handling_cost_tax": amount(0),
            "handling_cost_tax_class_id": 2, "shipping_zone_id": 1,
            "shipping_zone_name": "United States", "form_fields": [],
        }
        self.seed(order, [product], [address])
        return self.orders[key]

    # --- webhooks -----------------------------------------------------------------------------

    def webhook(self, scope: str, order_id: str | int, *, msg_id: str | None = None,
                created_at: int | None = None,
                data: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
        """An order callback as BigCommerce POSTs it (compact JSON) and its unsigned headers."""
        key = str(order_id)
        payload_data = {"type": "order", "id": int(key) if key.isdigit() else key, **(data or {})}
        payload = {
            "scope": scope, "store_id": self.store_id, "data": payload_data,
            "hash": hashlib.sha1(json.dumps(payload_data).encode()).hexdigest(),
            "created_at": int(time.time()) if created_at is None else created_at,
            "producer": f"stores/{self.store_hash}",
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return body, {"content-type": "application/json",
                      "webhook-id": msg_id or f"msg_{uuid.uuid4().hex}"}

    def sign(self, body: bytes, headers: Mapping[str, str], *, secret: str | None = None,
             timestamp: int | None = None) -> dict[str, str]:
        """The headers plus webhook-timestamp and webhook-signature (now, or `timestamp`)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        msg_id = headers["webhook-id"]
        return {**headers, "webhook-timestamp": str(stamp),
                "webhook-signature": signature(secret or self.client_secret, msg_id, stamp, body)}


class Driver:
    """The shared channel matrix's view of this fake (tests/fakes/driver.py)."""

    kind: ClassVar[str] = "bigcommerce"
    signs_timestamp: ClassVar[bool] = True
    reserialised_fails: ClassVar[bool] = True

    def __init__(self, fake: FakeBigCommerce) -> None:
        self.fake = fake

    def settings(self, webhook_url: str) -> dict[str, Any]:
        return {"store_hash": self.fake.store_hash,
                "api_url": f"{self.fake.url}/stores/{self.fake.store_hash}"}

    def credentials(self) -> dict[str, str]:
        return {"access_token": self.fake.access_token}

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        """Seed the version (the store keeps the newest) and return a store/order/updated
        callback for it with a fresh webhook-id."""
        if cancelled:
            self.fake.simple_order(external_id, date_modified=updated_at, status_id=5,
                                   status="Cancelled", payment_status="void")
        else:
            self.fake.simple_order(external_id, date_modified=updated_at)
        body, headers = self.fake.webhook("store/order/updated", external_id)
        return "", body, headers

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        return self.fake.sign(body, headers, secret=secret, timestamp=timestamp)

    def expected(self, external_id: str) -> dict[str, str]:
        held = self.fake.orders[str(external_id)]
        cancelled = held["status_id"] == 5
        return {"external_id": str(external_id), "channel": "bigcommerce", "currency": "USD",
                "status": "cancelled" if cancelled else "open",
                "lines.0.sku": "SKU-001", "lines.0.quantity": "2", "lines.0.unit_price": "12.50",
                "totals.subtotal": "25.00", "totals.shipping": "5.00", "totals.tax": "1.56",
                "totals.total": "31.56", "payment.status": "voided" if cancelled else "paid",
                "payment.amount": "31.56"}
