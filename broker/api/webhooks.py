"""POST /webhooks/<source>: verify over the raw bytes, store raw, commit, then answer.

Normalisation happens in a worker, so a mapping problem never costs the vendor a retry
and never loses the event. A body that is a canonical order itself (standard-webhooks) is
validated after the signature and before anything is stored, like a REST order: 422 with the
field paths, so the sender learns of a broken order at once.
"""

from __future__ import annotations

import json
import time

from flask import jsonify, request
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker import metrics
from broker.api.common import read_body, read_json_body, runtime
from broker.channels.base import SignatureError
from broker.errors import ApiError
from broker.models import EventStatus
from broker.services.intake import canonical_errors, store_event

blp = Blueprint("webhooks", __name__, description="Signed webhooks from front-office channels")


@blp.route("/webhooks/<source_name>", methods=["POST"])
@blp.doc(summary="Receive a signed webhook", security=[], responses={
    "202": {"description": "stored; it will be normalised by a worker"},
    "200": {"description": "a duplicate of an event already stored, a topic the channel does "
                           "not map (recorded as ignored), or a channel's set-up ping"},
    "400": {"description": "not JSON"}, "401": {"description": "forged, stale or unsigned"},
    "422": {"description": "a canonical order (standard-webhooks sources) that is invalid; "
                           "`fields` maps paths to messages and nothing is stored"},
    "404": {"description": "unknown source"}, "413": {"description": "body too large"},
    "415": {"description": "not JSON content"}})
def receive(source_name: str) -> ResponseReturnValue:
    rt = runtime()
    source = rt.sources.get(source_name)
    if source is None or not source.enabled:
        raise ApiError(404, "unknown_source", f"no source named '{source_name}'")
    if source.channel is None:
        raise ApiError(404, "unknown_source",
                       f"source '{source_name}' takes orders through POST /api/v1/orders")
    body = read_body(source.max_body_bytes or rt.settings.max_body_bytes)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        envelope = source.channel.verify(headers, body, source.secrets, time.time(),
                                         rt.settings.webhook_tolerance)
    except SignatureError as exc:
        metrics.ORDERS_RECEIVED.labels(source=source.name, outcome="unauthorized").inc()
        raise ApiError(401, "invalid_signature", f"webhook rejected: {exc}") from None
    if envelope.ping:  # e.g. WooCommerce's unsigned creation ping: acknowledge, store nothing
        metrics.ORDERS_RECEIVED.labels(source=source.name, outcome="ping").inc()
        return jsonify({"status": "ping"}), 200
    read_json_body(parse=json.loads)  # syntax only; the worker parses with exact decimals
    invalid = canonical_errors(source.kind, body)
    if invalid is not None:  # a canonical order that would be rejected later: say so now
        metrics.ORDERS_RECEIVED.labels(source=source.name, outcome="invalid").inc()
        raise ApiError(422, "invalid_order", "the order is invalid; see fields (nothing was stored)",
                       fields=invalid)
    kept = {name: headers[name] for name in source.channel.kept_headers if name in headers}
    topics = source.channel.topics
    ignored = topics is not None and envelope.topic not in topics
    new, event_id = store_event(rt.db, source.id, envelope.event_key, envelope.topic, kept, body,
                                status=EventStatus.IGNORED if ignored else EventStatus.RECEIVED)
    outcome = "duplicate" if not new else "ignored" if ignored else "accepted"
    metrics.ORDERS_RECEIVED.labels(source=source.name, outcome=outcome).inc()
    if outcome == "accepted":
        rt.publisher.normalise_soon(event_id)
    response = jsonify({"status": outcome, "event_id": event_id})
    response.status_code = 202 if outcome == "accepted" else 200
    return response
