"""REST intake for digital teams: POST a canonical order with a bearer token, read it back."""

from __future__ import annotations

import logging
from typing import Any

from flask import g, jsonify, request, url_for
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from marshmallow import ValidationError

from broker import metrics
from broker.api.common import caller_sources, read_json_body, runtime
from broker.errors import ApiError
from broker.identity.protect import require
from broker.logging import order_context
from broker.models import Source
from broker.schemas.api import (
    MAX_PAGE,
    OrderDetailArgsSchema,
    OrderSearchArgsSchema,
    OrderSummarySchema,
    page_of,
)
from broker.schemas.order import flatten_errors, load_order
from broker.services import queries
from broker.services.intake import IdempotencyMismatch, request_fingerprint, submit_order
from broker.services.orders import VersionOutcome

log = logging.getLogger(__name__)
blp = Blueprint("orders", __name__, url_prefix="/api/v1", description="Orders")
BEARER = [{"oauth2": []}]
MAX_KEY = 255


def _created_body(outcome: VersionOutcome) -> tuple[int, dict[str, Any]]:
    body = {"id": outcome.order_id, "version": outcome.version, "created": outcome.created,
            "duplicate": outcome.duplicate, "stale": outcome.stale,
            "links": {"self": url_for("orders.get_order", order_id=outcome.order_id,
                                      _external=False)}}
    return (201 if outcome.created else 200), body


@blp.route("/orders", methods=["POST"])
@blp.doc(summary="Submit a canonical order", security=BEARER,
         parameters=[{"in": "header", "name": "Idempotency-Key", "required": False,
                      "schema": {"type": "string", "maxLength": MAX_KEY}}],
         requestBody={"required": True, "content": {
             "application/json": {"schema": {"$ref": "#/components/schemas/Order"}}}},
         responses={"201": {"description": "order created"},
                    "200": {"description": "a new version of a known order, or a duplicate"},
                    "401": {"description": "missing or invalid token"},
                    "403": {"description": "token lacks orders:write"},
                    "422": {"description": "invalid order; `fields` maps paths to messages"}})
@require("orders:write")
def post_order() -> ResponseReturnValue:
    rt = runtime()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY:
        raise ApiError(400, "invalid_idempotency_key",
                       f"Idempotency-Key must be 1 to {MAX_KEY} characters")
    body, payload = read_json_body(rt.settings.max_body_bytes)
    try:
        order = load_order(payload)
    except ValidationError as exc:
        raise ApiError(422, "invalid_order", "the order is invalid; see fields",
                       fields=flatten_errors(exc.messages)) from None
    client = g.principal.client
    with rt.db.begin() as session:
        source = session.get(Source, client.source_id) if client.source_id else None
    if source is None:
        raise ApiError(403, "no_source", "this client is not bound to a REST source; "
                       "recreate it with `broker clients create NAME --source SOURCE`")
    try:
        stored, outcome = submit_order(
            rt.db, client_id=client.id, source=source, order=order, idempotency_key=key,
            fingerprint=request_fingerprint(request.method, request.path, body),
            render=_created_body)
    except IdempotencyMismatch as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    if outcome is not None:
        result = "duplicate" if outcome.duplicate else "accepted"
        metrics.ORDERS_RECEIVED.labels(source=source.name, outcome=result).inc()
        with order_context(outcome.order_id):
            log.info("order %s from client %s: version %d %s", order["external_id"],
                     client.name, outcome.version, result)
        rt.publisher.wake(outcome.wake)
    response = jsonify(stored.body)
    response.status_code = stored.status
    if stored.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if stored.body.get("links"):
        response.headers["Location"] = stored.body["links"]["self"]
    return response


@blp.route("/orders/<order_id>", methods=["GET"])
@blp.doc(summary="An order with its versions, deliveries and timeline (and raw payloads on request)",
         security=BEARER, responses={"404": {"description": "unknown, or not visible to this client"}})
@require("orders:read")
@blp.arguments(OrderDetailArgsSchema, location="query", as_kwargs=True)
def get_order(order_id: str, payloads: bool = False) -> ResponseReturnValue:
    with runtime().db.begin() as session:
        detail = queries.order_detail(session, order_id, caller_sources(), payloads=payloads)
    if detail is None:
        raise ApiError(404, "not_found", f"no order {order_id}")
    return jsonify(detail)


@blp.route("/orders", methods=["GET"])
@blp.doc(summary="Orders, newest first, searched by number, email, channel id, back-office "
                 "reference, status, source or received date (cursor pagination)", security=BEARER)
@require("orders:read")
@blp.arguments(OrderSearchArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(OrderSummarySchema, "OrderPage"))
def list_orders(limit: int, cursor: str | None = None, **filters: Any) -> ResponseReturnValue:
    limit = min(limit, MAX_PAGE)
    with runtime().db.begin() as session:
        items = queries.list_orders(session, source_ids=caller_sources(), limit=limit, before=cursor,
                                    **filters)
    return {"items": items, "next_cursor": items[-1]["id"] if len(items) == limit else None}


@blp.route("/orders/<order_id>/replay", methods=["POST"])
@blp.doc(summary="Replay the order's dead or parked deliveries (needs the operator role or "
                 "the admin scope); pushes are idempotent, so nothing is booked twice",
         security=[{"oauth2": ["admin"]}],
         responses={"202": {"description": "deliveries made due again"},
                    "403": {"description": "caller may not operate"},
                    "404": {"description": "unknown, or not visible to this caller"}})
@require("operate")
def replay(order_id: str) -> ResponseReturnValue:
    from broker.api.audit import request_actor
    from broker.services.operations import replay_order

    rt = runtime()
    with rt.db.begin() as session:
        visible = queries.order_visible(session, order_id, caller_sources())
    if not visible:
        raise ApiError(404, "not_found", f"no order {order_id}")
    wake = replay_order(rt.db, order_id, actor=request_actor())
    rt.publisher.wake(wake)
    return jsonify({"id": order_id, "replayed": len(wake)}), 202
