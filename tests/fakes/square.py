"""A fake Square API and webhook sender on loopback, for the Square channel's tests.

It follows Square's documented behaviour:
- Auth: `Authorization: Bearer <access token>`; a missing or wrong token is 401
  {"errors": [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED", ...}]}. Every error
  body is {"errors": [{"category", "code", "detail", "field"?}]}
  (https://developer.squareup.com/docs/build-basics/general-considerations/handling-errors);
  throttling is 429 RATE_LIMIT_ERROR / RATE_LIMITED
  (https://developer.squareup.com/reference/square/enums/ErrorCategory).
- Webhooks (https://developer.squareup.com/docs/webhooks/step3validate and .../step2subscribe):
  `x-square-hmacsha256-signature` = base64(HMAC-SHA256(signature key, notification URL + body)),
  sent with square-environment and square-initial-delivery-timestamp; bodies are compact JSON
  as in Square's SDK test vector. Event shapes follow the reference examples
  (https://developer.squareup.com/reference/square/webhooks/order.updated, order.created,
  order.fulfillment.updated, payment.updated, refund.updated): order events are thin.

Endpoints:
    GET  /v2/orders/{order_id}   {"order": {...}}; 404 NOT_FOUND
         (https://developer.squareup.com/reference/square/orders-api/retrieve-order)
    POST /v2/orders/search       location_ids (1..10, required), query.filter.state_filter and
         date_time_filter (created_at | updated_at | closed_at; start/end inclusive; the sort_field
         must be the filtered field or it is a 400), query.sort (default CREATED_AT DESC), limit
         (1..1000, default 500), cursor (continues the original query, which must be sent
         again unchanged; the result set is fixed at the first request, like Square's default
         end_at "time of the first request for the cursor"), return_entries
         (https://developer.squareup.com/docs/orders-api/manage-orders/search-orders).
         `max_page_size` caps a page below `limit` ("it is possible to receive fewer results
         than the specified limit"), so tests can page with few orders.
    GET  /v2/locations           {"locations": [...]}

Seed with `put_order` (a later put of the same id bumps `version`, as Square does on every
committed update) or build one with `make_order`, whose totals are computed the way Square
computes them. `event(...)` builds a webhook body, `webhook(...)` its bytes and headers, `sign`
the signature. `Driver` implements tests/fakes/driver.py for the shared channel matrix.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fakes.vendor import FakeVendor, header
from flask import Request, Response, jsonify, request

from broker.channels.square import SIGNATURE_HEADER, sign

MERCHANT_ID = "MLEFBHHSJGVHD"
LOCATION_ID = "L88917AVBK2S5"
OTHER_LOCATION_ID = "LH2GQ6WYV4NE8"
API_VERSION = "2025-10-16"
_STATUS_ERRORS = {
    400: ("INVALID_REQUEST_ERROR", "BAD_REQUEST"),
    401: ("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
    403: ("AUTHENTICATION_ERROR", "FORBIDDEN"),
    404: ("INVALID_REQUEST_ERROR", "NOT_FOUND"),
    429: ("RATE_LIMIT_ERROR", "RATE_LIMITED"),
    500: ("API_ERROR", "INTERNAL_SERVER_ERROR"),
    503: ("API_ERROR", "SERVICE_UNAVAILABLE"),
}
_TIME_FIELDS = {"created_at": "CREATED_AT", "updated_at": "UPDATED_AT", "closed_at": "CLOSED_AT"}


def rfc3339(moment: datetime | None = None) -> str:
    """A UTC time the way Square writes it: milliseconds and a Z."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency}


class FakeSquare(FakeVendor):
    name = "square"

    def __init__(self, access_token: str = "EAAAl9fakeSquareAccessToken0001",
                 signature_key: str = "Ibxx_5AKakO-3qeNVR61Dw",
                 environment: str = "Production") -> None:
        self.access_token = access_token
        self.signature_key = signature_key
        self.environment = environment
        self._seed_lock = threading.Lock()
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Forget orders, cursors, requests and pending faults (a server shared by tests)."""
        with self._seed_lock:
            self.orders: dict[str, dict[str, Any]] = {}
            self.locations: list[dict[str, Any]] = [
                {"id": LOCATION_ID, "name": "Main Street", "status": "ACTIVE", "country": "US",
                 "currency": "USD", "merchant_id": MERCHANT_ID, "timezone": "America/New_York"}]
            self.max_page_size = 1000
            self._cursors: dict[str, dict[str, Any]] = {}
            self.search_bodies: list[dict[str, Any]] = []  # what each SearchOrders call asked
        with self._lock:
            self._faults.clear()
        self.requests.clear()

    # --- vendor conventions ---------------------------------------------------------------
    def authorized(self, req: Request) -> bool:
        return header(req.headers, "Authorization") == f"Bearer {self.access_token}"

    def error(self, status: int, message: str) -> Response:
        category, code = _STATUS_ERRORS.get(status, ("API_ERROR", "INTERNAL_SERVER_ERROR"))
        if status == 401:
            message = "This request could not be authorized."
        return self.errors(status, code, message, category=category)

    @staticmethod
    def errors(status: int, code: str, detail: str, *, field: str | None = None,
               category: str = "INVALID_REQUEST_ERROR") -> Response:
        error = {"category": category, "code": code, "detail": detail}
        if field:
            error["field"] = field
        response = jsonify({"errors": [error]})
        response.status_code = status
        return response

    # --- routes ---------------------------------------------------------------------------
    def routes(self) -> None:
        app = self.app
        app.add_url_rule("/v2/orders/<order_id>", "retrieve_order", self._retrieve,
                         methods=["GET"])
        app.add_url_rule("/v2/orders/search", "search_orders", self._search, methods=["POST"])
        app.add_url_rule("/v2/locations", "list_locations", self._locations, methods=["GET"])

    def _retrieve(self, order_id: str) -> Response:
        with self._seed_lock:
            order = copy.deepcopy(self.orders.get(order_id))
        if order is None:
            return self.errors(404, "NOT_FOUND", f"Could not find order with id `{order_id}`.",
                               field="order_id")
        return jsonify({"order": order})

    def _locations(self) -> Response:
        return jsonify({"locations": copy.deepcopy(self.locations)})

    def _search(self) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self.errors(400, "INVALID_BODY", "The request body is not a JSON object.")
        self.search_bodies.append(copy.deepcopy(body))
        location_ids = body.get("location_ids") or []
        if not location_ids:
            return self.errors(400, "MISSING_REQUIRED_PARAMETER",
                               "Must provide at least 1 location_id.", field="location_ids")
        if len(location_ids) > 10:
            return self.errors(400, "INVALID_VALUE", "Cannot provide more than 10 location_ids.",
                               field="location_ids")
        limit = body.get("limit", 500)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            return self.errors(400, "INVALID_VALUE", "`limit` must be between 1 and 1000.",
                               field="limit")
        query = body.get("query") or {}
        key = json.dumps([location_ids, query, bool(body.get("return_entries"))], sort_keys=True)
        if body.get("cursor"):
            state = self._cursors.get(body["cursor"])
            if state is None or state["key"] != key:
                return self.errors(400, "INVALID_CURSOR",
                                   "The cursor is invalid or was issued for another query.",
                                   field="cursor")
            results, offset = state["results"], state["offset"]
        else:
            found = self._matching(location_ids, query)
            if isinstance(found, Response):
                return found
            results, offset = found, 0
        take = min(limit, self.max_page_size)
        page = results[offset:offset + take]
        answer: dict[str, Any] = {}
        if page and body.get("return_entries"):
            answer["order_entries"] = [{"order_id": o["id"], "version": o.get("version"),
                                        "location_id": o["location_id"]} for o in page]
        elif page:
            answer["orders"] = page
        if offset + take < len(results):
            cursor = secrets.token_urlsafe(24)
            self._cursors[cursor] = {"key": key, "results": results, "offset": offset + take}
            answer["cursor"] = cursor
        return jsonify(answer)

    def _matching(self, location_ids: list[str], query: dict[str, Any]
                  ) -> list[dict[str, Any]] | Response:
        """The orders a query selects, sorted, frozen at the first request."""
        filters = query.get("filter") or {}
        unknown = set(filters) - {"state_filter", "date_time_filter"}
        if unknown:
            return self.errors(400, "BAD_REQUEST",
                               f"the fake does not implement filters {sorted(unknown)}")
        sort = query.get("sort") or {}
        sort_field = sort.get("sort_field", "CREATED_AT")
        descending = sort.get("sort_order", "DESC") == "DESC"
        time_filter = filters.get("date_time_filter") or {}
        if len(time_filter) > 1:
            return self.errors(400, "INVALID_VALUE", "Only one time range can be filtered.")
        ranges = []
        for name, bounds in time_filter.items():
            if _TIME_FIELDS.get(name) != sort_field:
                return self.errors(400, "INVALID_VALUE",
                                   f"sort_field must be {_TIME_FIELDS.get(name)} when filtering "
                                   f"on {name}.", field="query.sort.sort_field")
            ranges.append((name, bounds.get("start_at"), bounds.get("end_at")))
        states = (filters.get("state_filter") or {}).get("states")
        sort_key = {v: k for k, v in _TIME_FIELDS.items()}.get(sort_field, "created_at")
        with self._seed_lock:
            orders = copy.deepcopy(list(self.orders.values()))
        selected = []
        for order in orders:
            if order.get("location_id") not in location_ids:
                continue
            if states and order.get("state") not in states:
                continue
            if not all(order.get(name) and (not start or _parse(order[name]) >= _parse(start))
                       and (not end or _parse(order[name]) <= _parse(end))
                       for name, start, end in ranges):
                continue
            selected.append(order)
        stamp = datetime.min.replace(tzinfo=UTC)
        selected.sort(key=lambda o: (_parse(o[sort_key]) if o.get(sort_key) else stamp, o["id"]),
                      reverse=descending)
        return selected

    # --- seeding --------------------------------------------------------------------------
    def put_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Store an order version; a known id gets the next version number."""
        stored = copy.deepcopy(order)
        with self._seed_lock:
            previous = self.orders.get(stored["id"])
            if previous is not None:
                stored["version"] = int(previous.get("version") or 0) + 1
            else:
                stored.setdefault("version", 1)
            self.orders[stored["id"]] = stored
        return copy.deepcopy(stored)

    @staticmethod
    def make_order(order_id: str, *, updated_at: str, created_at: str | None = None,
                   state: str = "COMPLETED", currency: str = "USD",
                   location_id: str = LOCATION_ID,
                   lines: tuple[tuple[str, str, int], ...] = (("Blue Widget", "2", 1250),),
                   tax_percentage: str | None = "8.875", shipping: int = 599,
                   tender_status: str | None = "CAPTURED", customer_id: str | None =
                   "JDKYHBWT1D4F8MFH63DBMEN8Y4", reference_id: str | None = None
                   ) -> dict[str, Any]:
        """An order with ADDITIVE order-scoped tax, a shipping service charge and a card tender,
        totals computed as Square does (tax per line, rounded half up to the minor unit)."""
        tax_uid = "tax-1"
        line_items, total_tax, gross_total = [], 0, 0
        for i, (name, quantity, base) in enumerate(lines):
            gross = int((Decimal(quantity) * base).to_integral_value(ROUND_HALF_UP))
            tax = int((Decimal(gross) * Decimal(tax_percentage or 0) / 100)
                      .to_integral_value(ROUND_HALF_UP))
            total_tax, gross_total = total_tax + tax, gross_total + gross
            line = {"uid": f"line-{i + 1}", "name": name, "quantity": quantity,
                    "catalog_object_id": f"VAR{i + 1:03d}{order_id[:8].upper()}",
                    "variation_name": "Regular", "item_type": "ITEM",
                    "base_price_money": _money(base, currency),
                    "variation_total_price_money": _money(gross, currency),
                    "gross_sales_money": _money(gross, currency),
                    "total_discount_money": _money(0, currency),
                    "total_tax_money": _money(tax, currency),
                    "total_money": _money(gross + tax, currency)}
            if tax_percentage:
                line["applied_taxes"] = [{"uid": f"applied-tax-{i + 1}", "tax_uid": tax_uid,
                                          "applied_money": _money(tax, currency)}]
            line_items.append(line)
        total = gross_total + total_tax + shipping
        order: dict[str, Any] = {
            "id": order_id, "location_id": location_id, "state": state,
            "source": {"name": "Square Online"},
            "created_at": created_at or updated_at, "updated_at": updated_at,
            "line_items": line_items,
            "total_money": _money(total, currency),
            "total_tax_money": _money(total_tax, currency),
            "total_discount_money": _money(0, currency),
            "total_tip_money": _money(0, currency),
            "total_service_charge_money": _money(shipping, currency),
            "net_amounts": {"total_money": _money(total, currency),
                            "tax_money": _money(total_tax, currency),
                            "discount_money": _money(0, currency),
                            "tip_money": _money(0, currency),
                            "service_charge_money": _money(shipping, currency)},
        }
        if reference_id:
            order["reference_id"] = reference_id
        if customer_id:
            order["customer_id"] = customer_id
        if tax_percentage:
            order["taxes"] = [{"uid": tax_uid, "name": "Sales Tax", "percentage": tax_percentage,
                               "type": "ADDITIVE", "scope": "ORDER",
                               "applied_money": _money(total_tax, currency)}]
        if shipping:
            order["service_charges"] = [{
                "uid": "sc-shipping", "name": "Shipping", "type": "CUSTOM",
                "amount_money": _money(shipping, currency),
                "applied_money": _money(shipping, currency),
                "total_money": _money(shipping, currency),
                "total_tax_money": _money(0, currency),
                "calculation_phase": "SUBTOTAL_PHASE", "taxable": False}]
        if state == "CANCELED" or state == "COMPLETED":
            order["closed_at"] = updated_at
        if tender_status:
            payment_id = f"PAY{order_id[:12].upper()}"
            order["tenders"] = [{
                "id": payment_id, "location_id": location_id, "transaction_id": order_id,
                "created_at": created_at or updated_at, "amount_money": _money(total, currency),
                "type": "CARD", "payment_id": payment_id,
                "card_details": {"status": tender_status, "entry_method": "KEYED",
                                 "card": {"card_brand": "VISA", "last_4": "1111"}}}]
        return order

    # --- webhooks -------------------------------------------------------------------------
    def event(self, event_type: str, order: dict[str, Any], *, event_id: str | None = None,
              created_at: str | None = None, **extra: Any) -> dict[str, Any]:
        """A webhook body about `order` (thin, as Square sends it)."""
        base = {"merchant_id": MERCHANT_ID, "type": event_type,
                "event_id": event_id or str(uuid.uuid4()), "created_at": created_at or rfc3339()}
        summary = {"created_at": order.get("created_at"), "location_id": order.get("location_id"),
                   "order_id": order["id"], "state": order.get("state"),
                   "updated_at": order.get("updated_at"), "version": order.get("version")}
        if event_type == "order.created":
            summary.pop("updated_at")
            return {**base, "data": {"type": "order", "id": order["id"],
                                     "object": {"order_created": summary}}}
        if event_type == "order.updated":
            return {**base, "data": {"type": "order", "id": order["id"],
                                     "object": {"order_updated": summary}}}
        if event_type == "order.fulfillment.updated":
            summary["fulfillment_update"] = extra.get("fulfillment_update") or [
                {"fulfillment_uid": "fulfillment-1", "old_state": "PROPOSED",
                 "new_state": "RESERVED"}]
            return {**base, "data": {"type": "order", "id": order["id"],
                                     "object": {"order_fulfillment_updated": summary}}}
        tender = (order.get("tenders") or [{}])[0]
        total = tender.get("amount_money") or order.get("total_money")
        if event_type in ("payment.created", "payment.updated"):
            payment = {"id": tender.get("payment_id") or f"PAY{order['id'][:12]}",
                       "created_at": order.get("created_at"),
                       "updated_at": order.get("updated_at"), "amount_money": total,
                       "total_money": total, "status": extra.get("status", "COMPLETED"),
                       "source_type": "CARD", "location_id": order.get("location_id"),
                       "order_id": order["id"], "version": extra.get("version", 3)}
            return {**base, "data": {"type": "payment", "id": payment["id"],
                                     "object": {"payment": payment}}}
        if event_type in ("refund.created", "refund.updated"):
            refund_id = extra.get("refund_id") or f"{tender.get('payment_id', 'PAY')}_REF1"
            refund = {"id": refund_id, "created_at": order.get("updated_at"),
                      "updated_at": order.get("updated_at"),
                      "amount_money": extra.get("amount_money") or total,
                      "status": extra.get("status", "PENDING"),
                      "location_id": order.get("location_id"), "order_id": order["id"],
                      "payment_id": tender.get("payment_id"), "version": 1}
            return {**base, "data": {"type": "refund", "id": refund_id,
                                     "object": {"refund": refund}}}
        return {**base, "data": {"type": event_type.split(".")[0], "id": order["id"],
                                 "object": {}}}

    def webhook(self, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The bytes and unsigned headers of a notification, as Square posts it."""
        body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
        return body, {"content-type": "application/json",
                      "square-environment": self.environment,
                      "square-initial-delivery-timestamp": rfc3339()}

    def sign(self, body: bytes, notification_url: str, key: str | None = None) -> str:
        return sign(key or self.signature_key, notification_url, body)


class Driver:
    """The shared channel matrix's view of Square (see tests/fakes/driver.py)."""

    kind = "square"
    signs_timestamp = False   # Square signs notification URL + body only
    reserialised_fails = True

    def __init__(self, fake: FakeSquare) -> None:
        self.fake = fake
        self.notification_url: str | None = None
        self._states: dict[str, str] = {}

    def settings(self, webhook_url: str) -> dict[str, Any]:
        self.notification_url = webhook_url
        return {"api_url": self.fake.url, "notification_url": webhook_url,
                "location_ids": LOCATION_ID, "api_version": API_VERSION}

    def credentials(self) -> dict[str, str]:
        return {"access_token": self.fake.access_token}

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        state = "CANCELED" if cancelled else "COMPLETED"
        order = self.fake.put_order(self.fake.make_order(
            external_id, updated_at=updated_at, created_at="2026-11-20T14:03:00.000Z",
            state=state, tender_status="VOIDED" if cancelled else "CAPTURED"))
        self._states[external_id] = state
        body, headers = self.fake.webhook(self.fake.event("order.updated", order))
        return "", body, headers

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        if not self.notification_url:
            raise RuntimeError("call settings() first: Square signs the notification URL")
        return {**headers, SIGNATURE_HEADER: sign(secret, self.notification_url, body)}

    def expected(self, external_id: str) -> dict[str, str]:
        cancelled = self._states.get(external_id) == "CANCELED"
        return {"external_id": external_id, "currency": "USD", "lines.0.unit_price": "12.50",
                "lines.0.quantity": "2", "shipping.0.amount": "5.99", "totals.tax": "2.22",
                "totals.total": "33.21", "status": "cancelled" if cancelled else "open",
                "payment.status": "voided" if cancelled else "paid"}
