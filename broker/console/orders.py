"""Orders in the console: search (every filter on an indexed column, newest first, by cursor)
and an order's journey — versions, deliveries with each attempt and error, back-office
references, the raw payloads it came from (secrets scrubbed) and replay for operators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from broker.console.auth import requires
from broker.console.common import actor, names, page_limit, runtime, wake
from broker.models import Delivery, DeliveryStatus, Source
from broker.services import queries
from broker.services.audit import scrub
from broker.services.operations import (
    REPLAYABLE,
    NotReplayable,
    replay_delivery,
    replay_order,
    retry_delivery,
)
from broker.services.status import STATES, fold_attempts, fold_timeline

bp = Blueprint("console_orders", __name__, url_prefix="/console/orders")
TEXT_FILTERS = ("number", "email", "external_id", "reference")
STATUSES = ("open", "cancelled")
DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)


def _day(name: str, errors: dict[str, str]) -> datetime | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        errors[name] = "a date like 2025-01-31"
        return None


def search_args() -> tuple[dict[str, Any], dict[str, str]]:
    """The search form's filters as queries.list_orders takes them, and what was wrong."""
    errors: dict[str, str] = {}
    filters: dict[str, Any] = {k: request.args.get(k, "").strip()[:320] or None for k in TEXT_FILTERS}
    for name, allowed in (("status", STATUSES), ("delivery_status", DELIVERY_STATUSES)):
        value = request.args.get(name, "")
        if value and value not in allowed:
            errors[name] = f"one of {', '.join(allowed)}"
        filters[name] = value if value in allowed else None
    state = request.args.get("state", "")
    if state and state not in STATES:
        errors["state"] = f"one of {', '.join(STATES)}"
    filters["state"] = state if state in STATES else None
    filters["source"] = request.args.get("source", "").strip() or None
    filters["received_from"] = _day("received_from", errors)
    received_to = _day("received_to", errors)
    filters["received_to"] = received_to + timedelta(days=1) if received_to else None  # that whole day
    return filters, errors


@bp.route("/", methods=["GET"])
@requires("orders:read")
def index() -> ResponseReturnValue:
    filters, errors = search_args()
    limit, before = page_limit(), request.args.get("before") or None
    with runtime().db.begin() as session:
        items = [] if errors else queries.list_orders(session, limit=limit, before=before, **filters)
        sources = names(session, Source)
    args = {k: v for k, v in request.args.items() if k not in ("before", "csrf_token") and v}
    return render_template(
        "console/orders.html", items=items, errors=errors, args=args, sources=sources, statuses=STATUSES,
        delivery_statuses=DELIVERY_STATUSES, states=STATES,
        next_url=url_for("console_orders.index", **args, before=items[-1]["id"]) if len(items) == limit
        else None, first_url=url_for("console_orders.index", **args) if before else None)


@bp.route("/<order_id>", methods=["GET"])
@requires("orders:read")
def journey(order_id: str) -> ResponseReturnValue:
    with runtime().db.begin() as session:
        detail = queries.order_detail(session, order_id, None, payloads=True)
    if detail is None:
        abort(404, f"no order {order_id}")
    detail["order"] = scrub(detail["order"])
    replayable = any(d["status"] in REPLAYABLE for d in detail["deliveries"]) or not detail["deliveries"]
    for d in detail["deliveries"]:
        d["attempt_log"] = fold_attempts(d["attempt_log"])
    return render_template("console/order.html", o=detail, replayable=replayable,
                           timeline=fold_timeline(detail["timeline"]))


@bp.route("/<order_id>/replay", methods=["POST"])
@requires("operate")
def replay(order_id: str) -> ResponseReturnValue:
    try:
        connectors = replay_order(runtime().db, order_id, actor=actor())
    except LookupError:
        abort(404, f"no order {order_id}")
    wake(connectors)
    flash(f"Replayed: {len(connectors)} deliveries are due again." if connectors
          else "Nothing to replay: no delivery of this order is dead or parked.")
    return redirect(url_for("console_orders.journey", order_id=order_id), 303)


def _delivery_order(delivery_id: str) -> str:
    with runtime().db.begin() as session:
        order_id = session.execute(select(Delivery.order_id).where(Delivery.id == delivery_id)).scalar()
    if order_id is None:
        abort(404, f"no delivery {delivery_id}")
    return str(order_id)


@bp.route("/deliveries/<delivery_id>/replay", methods=["POST"])
@requires("operate")
def replay_one(delivery_id: str) -> ResponseReturnValue:
    order_id = _delivery_order(delivery_id)
    try:
        wake(replay_delivery(runtime().db, delivery_id, actor=actor()))
        flash(f"Delivery {delivery_id} replayed: it is due again.")
    except NotReplayable as exc:
        flash(str(exc), "error")
    return redirect(_back(url_for("console_orders.journey", order_id=order_id)), 303)


@bp.route("/deliveries/<delivery_id>/retry", methods=["POST"])
@requires("operate")
def retry_one(delivery_id: str) -> ResponseReturnValue:
    order_id = _delivery_order(delivery_id)
    try:
        wake(retry_delivery(runtime().db, delivery_id, actor=actor()))
        flash(f"Delivery {delivery_id} will be attempted now.")
    except NotReplayable as exc:
        flash(str(exc), "error")
    return redirect(_back(url_for("console_orders.journey", order_id=order_id)), 303)


def _back(default: str) -> str:
    """Where a form asked to return to (a console path only), else `default`."""
    target = request.form.get("next", "")
    return target if target.startswith("/console/") and "//" not in target and "\\" not in target else default
