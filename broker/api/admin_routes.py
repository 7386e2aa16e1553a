"""Routes over REST, for admins: which orders of a source go to which connector."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import select

from broker.api.admin import guarded, limit_of, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.models import Connector, Route, Source
from broker.schemas.api import (
    PageArgsSchema,
    RouteCreateSchema,
    RouteSchema,
    RouteUpdateSchema,
    page_of,
)
from broker.services.setup import add_route, remove_route

blp = Blueprint("admin_routes", __name__, url_prefix="/api/v1", description="Routes")


def _routes() -> Any:
    return (select(Route, Source.name, Connector.name).join(Source, Source.id == Route.source_id)
            .join(Connector, Connector.id == Route.connector_id))


def _view(route: Route, source: str, connector: str) -> dict[str, Any]:
    return {"id": route.id, "source": source, "connector": connector, "filters": route.filters or {},
            "enabled": route.enabled,
            "created_at": route.created_at.isoformat().replace("+00:00", "Z") if route.created_at else None}


def _get(route_id: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        row = session.execute(_routes().where(Route.id == route_id)).first()
    if row is None:
        raise ApiError(404, "not_found", f"no route {route_id}")
    return _view(*row)


def _find(source: str, connector: str) -> str:
    with runtime().db.begin() as session:
        return session.execute(select(Route.id).join(Source, Source.id == Route.source_id)
                               .join(Connector, Connector.id == Route.connector_id)
                               .where(Source.name == source, Connector.name == connector)).scalar_one()


@blp.route("/routes", methods=["GET"])
@guarded(blp, "admin", "Routes, by creation (cursor pagination)")
@blp.arguments(PageArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(RouteSchema, "RoutePage"))
def list_routes(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    query = _routes().order_by(Route.id).limit(limit)
    if args.get("cursor"):
        query = query.where(Route.id > args["cursor"])
    with runtime().db.begin() as session:
        return page([_view(*row) for row in session.execute(query)], limit)


@blp.route("/routes", methods=["POST"])
@guarded(blp, "admin", "Route a source's orders to a connector (filters optional)", 409, 422,
         description="Filters narrow which orders the route takes (channel, tags, currency, "
                     "country; any listed value matches); none means every order.")
@blp.arguments(RouteCreateSchema)
@blp.response(201, RouteSchema)
def create(body: dict[str, Any]) -> ResponseReturnValue:
    db = runtime().db
    with db.begin() as session:
        exists = session.execute(select(Route.id).join(Source, Source.id == Route.source_id)
                                 .join(Connector, Connector.id == Route.connector_id).where(
            Source.name == body["source"], Connector.name == body["connector"])).first()
    if exists:
        raise ApiError(409, "conflict", f"a route {body['source']} -> {body['connector']} exists "
                       f"already; PUT /routes/{exists[0]} changes its filters")
    with service_errors():
        add_route(db, body["source"], body["connector"], body["filters"], actor=request_actor())
    return _get(_find(body["source"], body["connector"])), 201


@blp.route("/routes/<route_id>", methods=["GET"])
@guarded(blp, "admin", "A route", 404)
@blp.response(200, RouteSchema)
def get(route_id: str) -> ResponseReturnValue:
    return _get(route_id)


@blp.route("/routes/<route_id>", methods=["PUT"])
@guarded(blp, "admin", "Replace a route's filters", 404, 422)
@blp.arguments(RouteUpdateSchema)
@blp.response(200, RouteSchema)
def update(body: dict[str, Any], route_id: str) -> ResponseReturnValue:
    route = _get(route_id)
    with service_errors():
        add_route(runtime().db, route["source"], route["connector"], body["filters"], actor=request_actor())
    return _get(route_id)


@blp.route("/routes/<route_id>", methods=["DELETE"])
@guarded(blp, "admin", "Remove a route (deliveries it made are kept)", 404)
@blp.response(204)
def remove(route_id: str) -> ResponseReturnValue:
    with service_errors():
        remove_route(runtime().db, route_id, actor=request_actor())
    return "", 204
