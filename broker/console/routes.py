"""Routes in the console (admins): which orders of a source go to which connector."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from broker.console.auth import requires
from broker.console.common import actor, names, page_limit, runtime
from broker.models import Connector, Route, Source
from broker.services.routing import FILTER_KEYS
from broker.services.setup import add_route, remove_route
from broker.services.sources import SetupError

bp = Blueprint("console_routes", __name__, url_prefix="/console/routes")


def _filters() -> dict[str, list[str]]:
    """Comma-separated values per filter; an empty one matches everything."""
    return {key: [v.strip() for v in request.form.get(key, "").split(",") if v.strip()]
            for key in FILTER_KEYS}


@bp.route("/", methods=["GET"])
@requires("admin")
def index() -> ResponseReturnValue:
    limit, after = page_limit(), request.args.get("after")
    query = (select(Route, Source.name, Connector.name).join(Source, Source.id == Route.source_id)
             .join(Connector, Connector.id == Route.connector_id).order_by(Route.id).limit(limit))
    if after:
        query = query.where(Route.id > after)
    with runtime().db.begin() as session:
        items = [{"id": r.id, "source": s, "connector": c, "filters": r.filters or {}, "enabled": r.enabled}
                 for r, s, c in session.execute(query)]
        sources, connectors = names(session, Source), names(session, Connector)
    return render_template("console/routes.html", items=items, sources=sources, connectors=connectors,
                           filter_keys=FILTER_KEYS,
                           next_after=items[-1]["id"] if len(items) == limit else None)


@bp.route("/", methods=["POST"])
@requires("admin")
def create() -> ResponseReturnValue:
    source, connector = request.form.get("source", ""), request.form.get("connector", "")
    try:
        add_route(runtime().db, source, connector, _filters(), actor=actor())
    except SetupError as exc:
        flash(f"Route not saved: {exc}", "error")
    else:
        flash(f"Orders of {source} now go to {connector}.")
    return redirect(url_for("console_routes.index"), 303)


@bp.route("/<route_id>/remove", methods=["POST"])
@requires("admin")
def remove(route_id: str) -> ResponseReturnValue:
    try:
        remove_route(runtime().db, route_id, actor=actor())
    except SetupError as exc:
        flash(str(exc), "error")
    else:
        flash("Route removed; the deliveries it made are kept.")
    return redirect(url_for("console_routes.index"), 303)
