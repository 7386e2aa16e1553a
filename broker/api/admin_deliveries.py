"""Deliveries over REST: read them, retry or replay one, replay dead letters in bulk (with an
explicit confirmation), and see dead and parked deliveries grouped by what to fix."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker.api.admin import caller_sources, guarded, limit_of, offset_page, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.schemas.api import (
    BulkReplayResultSchema,
    BulkReplaySchema,
    DeadLetterGroupSchema,
    DeliveryArgsSchema,
    DeliveryDetailSchema,
    DeliverySchema,
    GroupArgsSchema,
    ParkedGroupSchema,
    page_of,
)
from broker.services import queries, throttle
from broker.services.dead_letters import dead_letter_groups, dead_letter_ids
from broker.services.links import mapping_gaps
from broker.services.operations import replay_dead_letters, replay_delivery, retry_delivery

blp = Blueprint("admin_deliveries", __name__, url_prefix="/api/v1", description="Deliveries")


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _visible(delivery_id: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        detail = queries.delivery_detail(session, delivery_id, caller_sources())
    if detail is None:
        raise ApiError(404, "not_found", f"no delivery {delivery_id}")
    return detail


@blp.route("/deliveries", methods=["GET"])
@guarded(blp, "orders:read", "Deliveries, newest first (cursor pagination)")
@blp.arguments(DeliveryArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(DeliverySchema, "DeliveryPage"))
def list_deliveries(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    with runtime().db.begin() as session:
        items = queries.list_deliveries(session, source_ids=caller_sources(), status=args.get("status"),
                                        connector=args.get("connector"), order_id=args.get("order_id"),
                                        before=args.get("cursor"), limit=limit)
    return page(items, limit)


@blp.route("/deliveries/<delivery_id>", methods=["GET"])
@guarded(blp, "orders:read", "A delivery with its attempts", 404)
@blp.response(200, DeliveryDetailSchema)
def get(delivery_id: str) -> ResponseReturnValue:
    return _visible(delivery_id)


@blp.route("/deliveries/<delivery_id>/retry", methods=["POST"])
@guarded(blp, "operate", "Attempt a pending delivery now instead of at its next retry", 404, 409,
         description="Only a pending delivery (waiting for its next attempt) can be retried; a dead "
                     "or parked one is replayed (409 otherwise).")
@blp.response(202, DeliverySchema)
def retry(delivery_id: str) -> ResponseReturnValue:
    _visible(delivery_id)
    with service_errors():
        wake = retry_delivery(runtime().db, delivery_id, actor=request_actor())
    runtime().publisher.wake(wake)
    return _visible(delivery_id), 202


@blp.route("/deliveries/<delivery_id>/replay", methods=["POST"])
@guarded(blp, "operate", "Make a dead or parked delivery due again", 404, 409,
         description="Pushes are idempotent (looked up by the order's external key first), so a "
                     "replay never books twice.")
@blp.response(202, DeliverySchema)
def replay(delivery_id: str) -> ResponseReturnValue:
    _visible(delivery_id)
    with service_errors():
        wake = replay_delivery(runtime().db, delivery_id, actor=request_actor())
    runtime().publisher.wake(wake)
    return _visible(delivery_id), 202


@blp.route("/deliveries/replay", methods=["POST"])
@guarded(blp, "operate", "Replay dead letters in bulk, after an explicit confirmation", 409, 429,
         description="Without `confirm` this is a dry run: it answers how many dead letters the filter "
                     "(connector, reason) selects as `matched`. Send the same filter again with "
                     "`confirm` set to that count to replay them; if the selection changed "
                     "meanwhile the answer is 409 with the new count, and nothing is replayed. "
                     "Confirmed replays are limited per caller (429 with Retry-After).")
@blp.arguments(BulkReplaySchema)
@blp.response(200, BulkReplayResultSchema)
@blp.alt_response(202, schema=BulkReplayResultSchema, description="replayed")
def bulk_replay(body: dict[str, Any]) -> ResponseReturnValue:
    rt = runtime()
    selection = {"connector": body.get("connector"), "reason": body.get("reason")}
    with rt.db.begin() as session:
        ids = dead_letter_ids(session, **selection)
    if "confirm" not in body:
        return {"matched": len(ids), "replayed": 0, "dry_run": True}
    throttle.admit(rt.db, throttle.BULK_OPERATIONS, request_actor(), "bulk replays")
    if body["confirm"] != len(ids):
        raise ApiError(409, "confirmation_mismatch",
                       f"{len(ids)} dead letters match now, not {body['confirm']}; check them again "
                       f"and confirm {len(ids)}")
    replayed, wake = replay_dead_letters(rt.db, ids, selection=selection, actor=request_actor())
    rt.publisher.wake(wake)
    return {"matched": len(ids), "replayed": replayed, "dry_run": False}, 202


@blp.route("/dead-letters", methods=["GET"])
@guarded(blp, "orders:read", "Dead letters grouped by connector and reason, biggest first",
         description="A reason is the error class and the error message with order-specific values "
                     "elided; pass its `reason` to POST /deliveries/replay.")
@blp.arguments(GroupArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(DeadLetterGroupSchema, "DeadLetterGroupPage"))
def dead_letters(**args: Any) -> ResponseReturnValue:
    with runtime().db.begin() as session:
        groups = dead_letter_groups(session, connector=args.get("connector"), source_ids=caller_sources())
    for group in groups:
        group["oldest"], group["newest"] = _iso(group["oldest"]), _iso(group["newest"])
    return offset_page(groups, args)


@blp.route("/parked", methods=["GET"])
@guarded(blp, "orders:read", "Parked deliveries grouped by what they wait for, biggest first",
         description="Missing mappings and identity reviews name the mapping kind and key: adding "
                     "it (POST /mappings) resumes every delivery of the group.")
@blp.arguments(GroupArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(ParkedGroupSchema, "ParkedGroupPage"))
def parked(**args: Any) -> ResponseReturnValue:
    with runtime().db.begin() as session:
        groups = mapping_gaps(session, connector=args.get("connector"), source_ids=caller_sources())
    return offset_page(groups, args)
