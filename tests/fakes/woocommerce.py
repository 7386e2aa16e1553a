"""A fake WooCommerce store on loopback: REST API v3 orders, and webhook deliveries as WC sends them.

It follows WooCommerce's documentation and source:
- REST API v3 (https://woocommerce.github.io/woocommerce-rest-api-docs/#orders): the order
  resource with money as decimal strings, ``*_gmt`` dates without offset, ``price`` as a number,
  ``refunds[].total`` negative.
- Pagination (https://woocommerce.github.io/woocommerce-rest-api-docs/#pagination): ``page``,
  ``per_page`` (1-100, else 400 ``rest_invalid_param``), ``X-WP-Total``, ``X-WP-TotalPages`` and a
  ``Link`` header. Filters: ``modified_after`` (exclusive, a WP ``date_query`` ``after``) compared
  with ``date_modified_gmt`` only when ``dates_are_gmt=true``, otherwise with the site's local
  ``date_modified``; ``status`` (``any`` leaves out trashed orders); ``orderby``/``order``.
- Authentication over HTTPS
  (https://woocommerce.github.io/woocommerce-rest-api-docs/#authentication-over-https): HTTP Basic
  consumer key:secret, or ``consumer_key``/``consumer_secret`` query parameters. A wrong key is
  401 ``woocommerce_rest_authentication_error`` "Consumer key is invalid."; no credentials at all
  is 401 ``woocommerce_rest_cannot_view``. Errors are ``{"code", "message", "data": {"status"}}``
  (https://woocommerce.github.io/woocommerce-rest-api-docs/#errors); an unknown id is 404
  ``woocommerce_rest_shop_order_invalid_id`` "Invalid ID.".
- Webhooks (``WC_Webhook::deliver``/``generate_signature``/``deliver_ping`` in
  https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/class-wc-webhook.php):
  body ``trim(wp_json_encode($payload))`` (PHP escapes ``/`` and non-ASCII), signature
  ``base64(HMAC-SHA256(secret, body))``, headers ``X-WC-Webhook-Source/-Topic/-Resource/-Event/
  -Signature/-ID/-Delivery-ID`` where the delivery id is ``wp_hash(webhook id . time())`` (equal
  for every delivery of one webhook in one second); a deletion carries ``{"id": N}`` only; the
  creation ping is ``webhook_id=N``, form-encoded and unsigned.

Seed orders with ``put_order`` (any REST v3 document, e.g. a fixture) or ``build_order``; build
deliveries with ``delivery`` (unsigned) / ``webhook`` (signed) / ``ping``. Faults come from
FakeVendor (``throttle``, ``fail``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fakes.vendor import FakeVendor
from flask import Request, Response, g, request

API = "/wp-json/wc/v3"
STORE_URL = "https://shop.example.com"
ORDERBY = ("date", "id", "include", "title", "slug", "modified")
USER_AGENT = "WooCommerce/9.9.3 Hookshot (WordPress/6.8.1)"


def wp_json_encode(value: Any) -> bytes:
    """PHP json_encode with default flags: compact, ``\\/`` for slashes, ``\\uXXXX`` for non-ASCII."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def gmt(moment: datetime) -> str:
    """A ``*_gmt`` field: UTC, second precision, no offset (wc_rest_prepare_date_response)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_time(value: str | datetime) -> datetime:
    """An ISO 8601 time (``Z``, offset or naive = UTC) as an aware datetime."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(
        str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: str) -> int | float:
    """How PHP json_encode writes a float that is integral (3) or not (12.5)."""
    number = float(value)
    return int(number) if number.is_integer() else number


class FakeWooCommerce(FakeVendor):
    name = "woocommerce"

    def __init__(self, consumer_key: str = "ck_5f0e3c1b9a7d4e2f8c6b0a1d3e5f7a9b1c3d5e7f",
                 consumer_secret: str = "cs_9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d",
                 *, site_utc_offset: timedelta = timedelta(hours=-3)) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.site_utc_offset = site_utc_offset  # the docs' examples are 3 h behind GMT
        self.orders: dict[int, dict[str, Any]] = {}
        self.store_url = STORE_URL
        super().__init__()

    @property
    def api_url(self) -> str:
        return self.url + API

    # --- API ----------------------------------------------------------------------------------

    def routes(self) -> None:
        self.app.add_url_rule(f"{API}/orders", "orders", self._list_orders, methods=["GET"])
        self.app.add_url_rule(f"{API}/orders/<int:order_id>", "order", self._get_order,
                              methods=["GET"])

    def authorized(self, req: Request) -> bool:
        auth = req.authorization
        if auth is not None and auth.type == "basic":
            key, secret = auth.username or "", auth.password or ""
        else:
            key, secret = req.args.get("consumer_key", ""), req.args.get("consumer_secret", "")
        if not key and not secret:
            # no WooCommerce credentials: WordPress falls back to cookies, i.e. anonymous
            g.wc_error = ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
            return False
        if not hmac.compare_digest(key.encode(), self.consumer_key.encode()):
            g.wc_error = ("woocommerce_rest_authentication_error", "Consumer key is invalid.")
            return False
        if not hmac.compare_digest(secret.encode(), self.consumer_secret.encode()):
            g.wc_error = ("woocommerce_rest_authentication_error", "Consumer secret is invalid.")
            return False
        return True

    def error(self, status: int, message: str) -> Response:
        code, text = getattr(g, "wc_error", None) or {
            404: ("woocommerce_rest_shop_order_invalid_id", "Invalid ID."),
            429: ("rest_too_many_requests", "Too many requests."),
        }.get(status, ("internal_server_error" if status >= 500 else "rest_error", message))
        return self._json({"code": code, "message": text, "data": {"status": status}}, status)

    @staticmethod
    def _json(doc: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return Response(wp_json_encode(doc), status=status, headers=dict(headers or {}),
                        content_type="application/json; charset=UTF-8")

    def _invalid(self, param: str, reason: str) -> Response:
        return self._json({"code": "rest_invalid_param", "message": f"Invalid parameter(s): {param}",
                           "data": {"status": 400, "params": {param: reason}}}, 400)

    def _get_order(self, order_id: int) -> Response:
        order = self.orders.get(order_id)
        if order is None:
            return self.error(404, "Invalid ID.")
        return self._json(order)

    def _list_orders(self) -> Response:
        args = request.args
        try:
            page = int(args.get("page", "1"))
            per_page = int(args.get("per_page", "10"))
        except ValueError:
            return self._invalid("page", "page is not of type integer.")
        if not 1 <= per_page <= 100:
            return self._invalid("per_page", "per_page must be between 1 (inclusive) and 100 "
                                             "(inclusive)")
        if page < 1:
            return self._invalid("page", "page must be greater than or equal to 1")
        orderby, order = args.get("orderby", "date"), args.get("order", "desc")
        if orderby not in ORDERBY:
            return self._invalid("orderby", f"orderby is not one of {', '.join(ORDERBY)}.")
        if order not in ("asc", "desc"):
            return self._invalid("order", "order is not one of asc and desc.")
        flag = args.get("dates_are_gmt", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            return self._invalid("dates_are_gmt", "dates_are_gmt is not of type boolean.")
        use_gmt = flag in ("true", "1")
        rows = list(self.orders.values())
        if "modified_after" in args:
            try:
                after = parse_time(args["modified_after"])
            except ValueError:
                return self._invalid("modified_after", "Invalid date.")
            column = "date_modified_gmt" if use_gmt else "date_modified"
            # a naive parameter is read in the column's own clock, like MySQL compares strings
            bound = after.replace(tzinfo=None) if not use_gmt else after.astimezone(UTC).replace(
                tzinfo=None)
            rows = [o for o in rows if datetime.fromisoformat(o[column]) > bound]
        statuses = [s for s in args.get("status", "any").split(",") if s]
        if "any" not in statuses:
            rows = [o for o in rows if o["status"] in statuses]
        else:
            rows = [o for o in rows if o["status"] != "trash"]
        sort = {"modified": lambda o: (o["date_modified_gmt"], o["id"]),
                "date": lambda o: (o["date_created_gmt"], o["id"])}.get(orderby, lambda o: o["id"])
        rows.sort(key=sort, reverse=order == "desc")
        total, pages = len(rows), max(1, math.ceil(len(rows) / per_page))
        chunk = rows[(page - 1) * per_page: page * per_page]
        base = {k: v for k, v in args.items() if k not in ("page", "consumer_key", "consumer_secret")}
        links = []
        if page > 1:
            links.append(f'<{self.api_url}/orders?{urlencode({**base, "page": page - 1})}>; rel="prev"')
        if page < pages:
            links.append(f'<{self.api_url}/orders?{urlencode({**base, "page": page + 1})}>; rel="next"')
        headers = {"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        if links:
            headers["Link"] = ", ".join(links)
        return self._json(chunk, headers=headers)

    # --- seeding ------------------------------------------------------------------------------

    def put_order(self, order: Mapping[str, Any]) -> dict[str, Any]:
        """Store a REST v3 order document as the API and the webhooks will show it."""
        doc = json.loads(json.dumps(order))
        self.orders[int(doc["id"])] = doc
        return doc

    def local(self, moment: datetime) -> str:
        """A site-time field (``date_created``), in the store's timezone without offset."""
        return (moment.astimezone(UTC) + self.site_utc_offset).strftime("%Y-%m-%dT%H:%M:%S")

    def touch(self, order_id: int, at: str | datetime, **changes: Any) -> dict[str, Any]:
        """Change an order and set its modification time, as any save does."""
        order = self.orders[order_id]
        order.update(changes)
        moment = parse_time(at)
        order["date_modified"], order["date_modified_gmt"] = self.local(moment), gmt(moment)
        return order

    def trash(self, order_id: int, at: str | datetime) -> dict[str, Any]:
        return self.touch(order_id, at, status="trash")

    def build_order(self, order_id: int, *, modified: str | datetime,
                    created: str | datetime | None = None, status: str = "processing",
                    customer_id: int = 0) -> dict[str, Any]:
        """A paid USD checkout: 2 x Blue Widget at 12.50, 6.25 % tax, 5.00 flat rate = 31.56."""
        moment = parse_time(modified)
        born = parse_time(created) if created else moment - timedelta(minutes=2)
        paid = status in ("processing", "completed", "refunded")
        return {
            "id": order_id, "parent_id": 0, "number": str(order_id),
            "order_key": f"wc_order_{hashlib.md5(str(order_id).encode()).hexdigest()[:13]}",
            "created_via": "checkout", "version": "9.9.3", "status": status, "currency": "USD",
            "date_created": self.local(born), "date_created_gmt": gmt(born),
            "date_modified": self.local(moment), "date_modified_gmt": gmt(moment),
            "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "5.00",
            "shipping_tax": "0.00", "cart_tax": "1.56", "total": "31.56", "total_tax": "1.56",
            "prices_include_tax": False, "customer_id": customer_id,
            "customer_ip_address": "203.0.113.7", "customer_user_agent": "Mozilla/5.0",
            "customer_note": "Leave at the door",
            "billing": {"first_name": "João", "last_name": "Silva", "company": "",
                        "address_1": "1 Main St", "address_2": "", "city": "Springfield",
                        "state": "IL", "postcode": "62701", "country": "US",
                        "email": "joao.silva@example.com", "phone": "+15550100"},
            "shipping": {"first_name": "João", "last_name": "Silva", "company": "",
                         "address_1": "1 Main St", "address_2": "", "city": "Springfield",
                         "state": "IL", "postcode": "62701", "country": "US", "phone": ""},
            "payment_method": "stripe", "payment_method_title": "Credit Card (Stripe)",
            "transaction_id": f"ch_{order_id:08d}" if paid else "",
            "date_paid": self.local(born) if paid else None,
            "date_paid_gmt": gmt(born) if paid else None,
            "date_completed": None, "date_completed_gmt": None, "cart_hash": "",
            "meta_data": [],
            "line_items": [{
                "id": order_id * 10 + 1, "name": "Blue Widget", "product_id": 93,
                "variation_id": 0, "quantity": 2, "tax_class": "", "subtotal": "25.00",
                "subtotal_tax": "1.56", "total": "25.00", "total_tax": "1.56",
                "taxes": [{"id": 1, "total": "1.5625", "subtotal": "1.5625"}],
                "meta_data": [], "sku": "WIDGET-BLUE", "price": _number("12.5"),
            }],
            "tax_lines": [{"id": order_id * 10 + 3, "rate_code": "US-IL-STATE TAX-1", "rate_id": 1,
                           "label": "IL State Tax", "compound": False, "tax_total": "1.56",
                           "shipping_tax_total": "0.00", "rate_percent": 6.25, "meta_data": []}],
            "shipping_lines": [{"id": order_id * 10 + 2, "method_title": "Flat rate",
                                "method_id": "flat_rate", "instance_id": "1", "total": "5.00",
                                "total_tax": "0.00", "taxes": [], "meta_data": []}],
            "fee_lines": [], "coupon_lines": [], "refunds": [],
            "payment_url": f"{self.store_url}/checkout/order-pay/{order_id}/",
            "is_editable": False, "needs_payment": False, "needs_processing": True,
            "_links": {"self": [{"href": f"{self.store_url}{API}/orders/{order_id}"}],
                       "collection": [{"href": f"{self.store_url}{API}/orders"}]},
        }

    # --- webhooks -----------------------------------------------------------------------------

    @staticmethod
    def sign(secret: str, body: bytes) -> str:
        """``WC_Webhook::generate_signature``: base64 of the raw HMAC-SHA256."""
        return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()

    @staticmethod
    def delivery_id(webhook_id: int, now: float) -> str:
        """``wp_hash($id . strtotime('now'))``: one value per webhook per second."""
        return hmac.new(b"wp-salt", f"{webhook_id}{int(now)}".encode(), hashlib.md5).hexdigest()

    def delivery(self, topic: str, order_id: int, *, webhook_id: int = 7,
                 now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers WooCommerce posts for `topic`, without the signature."""
        resource, _, event = topic.partition(".")
        payload = {"id": order_id} if event == "deleted" else self.orders[order_id]
        body = wp_json_encode(payload).strip()
        stamp = datetime.now(UTC).timestamp() if now is None else now
        return body, {
            "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-WC-Webhook-Source": self.store_url + "/", "X-WC-Webhook-Topic": topic,
            "X-WC-Webhook-Resource": resource, "X-WC-Webhook-Event": event,
            "X-WC-Webhook-ID": str(webhook_id),
            "X-WC-Webhook-Delivery-ID": self.delivery_id(webhook_id, stamp),
        }

    def webhook(self, topic: str, order_id: int, secret: str, *, webhook_id: int = 7,
                now: float | None = None) -> tuple[bytes, dict[str, str]]:
        """A signed delivery, exactly as ``WC_Webhook::deliver`` sends it."""
        body, headers = self.delivery(topic, order_id, webhook_id=webhook_id, now=now)
        headers["X-WC-Webhook-Signature"] = self.sign(secret, body)
        return body, headers

    @staticmethod
    def ping(webhook_id: int = 7) -> tuple[bytes, dict[str, str]]:
        """``WC_Webhook::deliver_ping``: ``webhook_id=N`` as a form post, no signature."""
        return f"webhook_id={webhook_id}".encode(), {
            "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
            "User-Agent": USER_AGENT}


class Driver:
    """The shared channel matrix's view of this fake (tests/fakes/driver.py).

    WooCommerce order ids are integers: `external_id` must be a decimal integer string.
    """

    kind = "woocommerce"
    signs_timestamp = False      # WooCommerce signs the body only
    reserialised_fails = True    # the HMAC covers the exact bytes

    def __init__(self, fake: FakeWooCommerce) -> None:
        self.fake = fake
        self.webhook_id = 7

    def settings(self, webhook_url: str) -> dict[str, Any]:
        return {"store_url": self.fake.store_url, "api_url": self.fake.api_url}

    def credentials(self) -> dict[str, str]:
        return {"consumer_key": self.fake.consumer_key,
                "consumer_secret": self.fake.consumer_secret}

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        if not external_id.isdigit() or int(external_id) <= 0:
            raise ValueError(f"WooCommerce order ids are positive integers, not {external_id!r}")
        order_id = int(external_id)
        topic = "order.updated" if order_id in self.fake.orders else "order.created"
        self.fake.put_order(self.fake.build_order(
            order_id, modified=updated_at, status="cancelled" if cancelled else "processing"))
        body, headers = self.fake.delivery(topic, order_id, webhook_id=self.webhook_id)
        return "", body, headers

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        return {**headers, "X-WC-Webhook-Signature": self.fake.sign(secret, body)}

    def expected(self, external_id: str) -> dict[str, str]:
        order = self.fake.orders[int(external_id)]
        return {"external_id": external_id, "channel": "woocommerce", "currency": "USD",
                "status": "cancelled" if order["status"] == "cancelled" else "open",
                "lines.0.sku": "WIDGET-BLUE", "lines.0.quantity": "2",
                "lines.0.unit_price": "12.50", "lines.0.taxes.0.amount": "1.56",
                "shipping.0.amount": "5.00", "totals.subtotal": "25.00", "totals.tax": "1.56",
                "totals.total": "31.56",
                "updated_at": order["date_modified_gmt"] + "Z"}
