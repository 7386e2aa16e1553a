"""A fake Shopify shop on loopback: the REST Admin API's Order endpoints and signed webhooks.

It follows the vendor's documentation:
- REST Admin API, Order resource (https://shopify.dev/docs/api/admin-rest/latest/resources/order):
    GET /admin/api/{version}/orders/{id}.json   {"order": {...}}; 404 {"errors": "Not Found"}
    GET /admin/api/{version}/orders.json        {"orders": [...]}; filters `updated_at_min`,
        `status` (open — the default —, closed, cancelled, any), `order` ("updated_at asc",
        default "created_at desc"), `limit` (default 50, at most 250; the fake also caps it at
        `page_size` so a test can page through a few orders)
- Authentication (https://shopify.dev/docs/apps/build/authentication-authorization/access-tokens):
  `X-Shopify-Access-Token`; a wrong token answers 401 {"errors": "[API] Invalid API key or access
  token (unrecognized login or wrong password)"}.
- Cursor pagination (https://shopify.dev/docs/api/admin-rest/usage/pagination): a `Link` header
  with rel="next"/rel="previous" URLs carrying an opaque `page_info` (here base64url JSON of the
  position and the filters, as Shopify's own cursors are); a request with `page_info` accepts
  only `limit` and `fields` — anything else is a 400 (the message text is ours).
- Rate limits (https://shopify.dev/docs/api/admin-rest/usage/rate-limits): `throttle()` answers
  429 with `Retry-After` and {"errors": "Exceeded 2 calls per second for api client. Reduce
  request rates to resume uninterrupted service."}; every answer carries
  `X-Shopify-Shop-Api-Call-Limit`.
- Webhooks (https://shopify.dev/docs/apps/build/webhooks/delivery-structure and
  .../verify-deliveries): JSON body, `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(client secret,
  body)), `X-Shopify-Topic`, `-Shop-Domain`, `-API-Version`, `-Webhook-Id` (fresh per delivery),
  `-Event-Id`, `-Triggered-At` (nanosecond UTC, as Shopify sends it).

Also the shared channel-matrix `Driver` (tests/fakes/driver.py).
"""

from __future__ import annotations

import base64
import copy
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from fakes.vendor import FakeVendor
from flask import Request, Response, jsonify, request

from broker.channels.shopify import sign as shopify_sign

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shopify"
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = ("Exceeded 2 calls per second for api client. Reduce request rates to resume "
             "uninterrupted service.")
MAX_LIMIT = 250


def fixture(name: str) -> dict[str, Any]:
    """A payload from tests/fixtures/shopify (plain json: Shopify's amounts are strings)."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _moment(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now_triggered_at() -> str:
    """Shopify's X-Shopify-Triggered-At format: UTC with nanoseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class FakeShopify(FakeVendor):
    name = "shopify"

    def __init__(self, *, access_token: str = "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",
                 client_secret: str = "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",
                 shop: str = "acme.myshopify.com", api_version: str = "2025-10",
                 page_size: int = MAX_LIMIT) -> None:
        self.access_token = access_token
        self.client_secret = client_secret
        self.shop = shop
        self.api_version = api_version
        self.page_size = page_size
        self.orders: dict[str, dict[str, Any]] = {}
        super().__init__()
        self.app.after_request(self._call_limit)

    @property
    def api_url(self) -> str:
        return f"{self.url}/admin/api/{self.api_version}"

    def reset(self) -> None:
        """Forget orders, the request log and pending faults (one server for many tests)."""
        with self._lock:
            self._faults.clear()
        self.orders.clear()
        self.requests.clear()

    # --- seeding and webhooks -----------------------------------------------------------------

    def add_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) an order as the API will return it."""
        stored = copy.deepcopy(order)
        self.orders[str(stored["id"])] = stored
        return stored

    def webhook(self, topic: str, payload: Any, *, secret: str | None = None,
                event_id: str | None = None, test: bool = False) -> tuple[bytes, dict[str, str]]:
        """The body and headers Shopify would POST; signed with `secret` (default: the app's)."""
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = self.webhook_headers(topic, event_id=event_id)
        if test:
            headers["X-Shopify-Test"] = "true"
        headers["X-Shopify-Hmac-Sha256"] = shopify_sign(secret or self.client_secret, body)
        return body, headers

    def webhook_headers(self, topic: str, *, event_id: str | None = None) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Shopify-Topic": topic,
                "X-Shopify-Shop-Domain": self.shop, "X-Shopify-API-Version": self.api_version,
                "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
                "X-Shopify-Triggered-At": _now_triggered_at()}

    # --- vendor behaviour ---------------------------------------------------------------------

    def authorized(self, req: Request) -> bool:
        offered = req.headers.get("X-Shopify-Access-Token", "")
        return hmac.compare_digest(offered.encode(), self.access_token.encode())

    def error(self, status: int, message: str) -> Response:
        if status == 401:
            message = INVALID_TOKEN
        elif status == 429:
            message = THROTTLED
        response = jsonify({"errors": message})
        response.status_code = status
        return response

    def _call_limit(self, response: Response) -> Response:
        response.headers["X-Shopify-Shop-Api-Call-Limit"] = "1/40"
        return response

    def routes(self) -> None:
        self.app.add_url_rule("/admin/api/<version>/orders/<order_id>.json", "order",
                              self._order, methods=["GET"])
        self.app.add_url_rule("/admin/api/<version>/orders.json", "orders", self._orders,
                              methods=["GET"])

    def _order(self, version: str, order_id: str) -> Response:
        order = self.orders.get(order_id)
        if order is None:
            return self.error(404, "Not Found")
        return jsonify({"order": order})

    def _orders(self, version: str) -> Response:
        args = request.args
        try:
            limit = min(int(args.get("limit", 50)), MAX_LIMIT, self.page_size)
        except ValueError:
            return self.error(400, "limit - Invalid value")
        if "page_info" in args:
            extra = set(args) - {"page_info", "limit", "fields"}
            if extra:
                return self.error(400, "page_info can only be combined with limit and fields, "
                                       f"not {', '.join(sorted(extra))}")
            try:
                cursor = json.loads(base64.urlsafe_b64decode(args["page_info"] + "=="))
                filters = cursor["filters"]
            except (ValueError, KeyError, TypeError):
                return self.error(400, "page_info - Invalid value")
        else:
            cursor, filters = None, {k: args[k] for k in ("updated_at_min", "status", "order")
                                     if k in args}
        ordered = self._select(filters)
        keys = [self._key(o, filters) for o in ordered]
        if cursor is None:
            start = 0
        elif cursor["direction"] == "next":
            start = next((i for i, k in enumerate(keys) if k > tuple(cursor["key"])), len(keys))
        else:  # previous: the `limit` entries before the cursor
            end = next((i for i, k in enumerate(keys) if k >= tuple(cursor["key"])), len(keys))
            start = max(0, end - limit)
        page = ordered[start:start + limit]
        response = jsonify({"orders": page})
        links = []
        if start > 0 and page:
            links.append(self._link(version, limit, filters, "previous", keys[start]))
        if start + limit < len(ordered) and page:
            links.append(self._link(version, limit, filters, "next", keys[start + len(page) - 1]))
        if links:
            response.headers["Link"] = ", ".join(links)
        return response

    def _select(self, filters: dict[str, str]) -> list[dict[str, Any]]:
        status = filters.get("status", "open")
        since = _moment(filters["updated_at_min"]) if filters.get("updated_at_min") else None
        chosen = []
        for order in self.orders.values():
            if since and _moment(order.get("updated_at")) < since:
                continue
            cancelled, closed = bool(order.get("cancelled_at")), bool(order.get("closed_at"))
            if (status == "open" and (cancelled or closed)) or (status == "closed" and not closed) \
                    or (status == "cancelled" and not cancelled):
                continue
            chosen.append(order)
        return sorted(chosen, key=lambda o: self._key(o, filters))

    @staticmethod
    def _key(order: dict[str, Any], filters: dict[str, str]) -> tuple[Any, ...]:
        """A sort key in which a larger key comes later on the listing."""
        field, _, direction = filters.get("order", "created_at desc").partition(" ")
        field = field if field in ("created_at", "updated_at", "processed_at") else "created_at"
        stamp = _moment(order.get(field)).timestamp()
        ident = int(order.get("id") or 0)
        return (stamp, ident) if direction.lower() == "asc" else (-stamp, -ident)

    def _link(self, version: str, limit: int, filters: dict[str, str], rel: str,
              key: tuple[Any, ...]) -> str:
        cursor = {"direction": "next" if rel == "next" else "prev", "key": list(key),
                  "filters": filters}
        token = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
        return (f"<{self.url}/admin/api/{version}/orders.json?limit={limit}&page_info={token}>; "
                f'rel="{rel}"')


class Driver:
    """The channel matrix's view of Shopify (tests/fakes/driver.py)."""

    kind: ClassVar[str] = "shopify"
    signs_timestamp: ClassVar[bool] = False   # X-Shopify-Triggered-At is not signed
    reserialised_fails: ClassVar[bool] = True  # the HMAC covers the raw bytes

    TEMPLATE = "order_create.json"
    EXPECTED: ClassVar[dict[str, str]] = {
        "currency": "USD", "number": "#1001", "totals.subtotal": "288.98",
        "totals.discount": "10.00", "totals.shipping": "10.00", "totals.tax": "17.34",
        "totals.total": "306.32", "lines.0.unit_price": "199.00", "lines.1.quantity": "2",
        "lines.1.unit_price": "49.99", "lines.1.discount": "10.00",
        "discounts.0.code": "TENOFF", "discounts.0.amount": "10.00",
    }

    def __init__(self, fake: FakeShopify) -> None:
        self.fake = fake
        self._cancelled: dict[str, bool] = {}

    def settings(self, webhook_url: str) -> dict[str, Any]:
        return {"shop": self.fake.shop, "api_version": self.fake.api_version,
                "api_url": self.fake.api_url}

    def credentials(self) -> dict[str, str]:
        return {"access_token": self.fake.access_token}

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        order = fixture(self.TEMPLATE)
        order["id"] = int(external_id) if external_id.isdigit() else external_id
        order["admin_graphql_api_id"] = f"gid://shopify/Order/{external_id}"
        order["updated_at"] = updated_at
        if cancelled:
            order["cancelled_at"] = order["closed_at"] = updated_at
            order["cancel_reason"] = "customer"
        self.fake.add_order(order)
        self._cancelled[external_id] = cancelled
        topic = "orders/cancelled" if cancelled else "orders/updated"
        body = json.dumps(order, ensure_ascii=False, separators=(",", ":")).encode()
        return "", body, self.fake.webhook_headers(topic)

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        # Shopify signs no timestamp (signs_timestamp is False), so `timestamp` changes nothing.
        return {**headers, "X-Shopify-Hmac-Sha256": shopify_sign(secret, body)}

    def expected(self, external_id: str) -> dict[str, str]:
        status = "cancelled" if self._cancelled.get(external_id) else "open"
        return {**self.EXPECTED, "external_id": external_id, "status": status}
