"""The audit log over REST, for admins: who changed what and when (secrets never included)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import g, jsonify, request
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker.api.common import runtime
from broker.errors import ApiError
from broker.identity.protect import require
from broker.services import audit

blp = Blueprint("audit", __name__, url_prefix="/api/v1", description="Audit log")
BEARER = [{"oauth2": ["admin"]}]
FILTERS = ("action", "target_type", "target", "actor")


def request_actor() -> str:
    """The actor of an API call for `audit.record`: a client id, or issuer:subject."""
    return g.principal.actor


def _since() -> datetime | None:
    value = request.args.get("since")
    if not value:
        return None
    try:
        since = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_since", "since must be an ISO 8601 time, e.g. "
                       "2025-01-31T00:00:00Z") from None
    return since if since.tzinfo else since.replace(tzinfo=UTC)


def _limit() -> int:
    try:
        limit = int(request.args.get("limit", 50))
    except ValueError:
        raise ApiError(400, "invalid_limit", "limit must be a whole number") from None
    if limit < 1:
        raise ApiError(400, "invalid_limit", "limit must be at least 1")
    return min(limit, audit.MAX_PAGE)


@blp.route("/audit", methods=["GET"])
@blp.doc(summary="Audit entries, newest first (cursor pagination)", security=BEARER,
         parameters=[{"in": "query", "name": "limit",
                      "schema": {"type": "integer", "minimum": 1, "maximum": audit.MAX_PAGE}},
                     {"in": "query", "name": "cursor", "schema": {"type": "string"}},
                     {"in": "query", "name": "since",
                      "schema": {"type": "string", "format": "date-time"}},
                     *({"in": "query", "name": name, "schema": {"type": "string"}}
                       for name in FILTERS)],
         responses={"400": {"description": "invalid limit or since"},
                    "401": {"description": "missing or invalid token"},
                    "403": {"description": "token lacks the admin scope"}})
@require("admin")
def list_audit() -> ResponseReturnValue:
    limit, since = _limit(), _since()
    with runtime().db.begin() as session:
        items = audit.list_entries(session, since=since, before=request.args.get("cursor"),
                                   limit=limit, **{k: request.args.get(k) for k in FILTERS})
    next_cursor = items[-1]["id"] if len(items) == limit else None
    return jsonify({"items": items, "next_cursor": next_cursor})
