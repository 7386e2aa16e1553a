"""API clients over REST, for admins: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import select

from broker.api.admin import guarded, limit_of, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.models import Client, Source
from broker.schemas.api import ClientCreatedSchema, ClientCreateSchema, ClientSchema, PageArgsSchema, page_of
from broker.services.setup import create_client, revoke_client

blp = Blueprint("admin_clients", __name__, url_prefix="/api/v1", description="API clients")


def _clients() -> Any:
    return select(Client, Source.name).outerjoin(Source, Source.id == Client.source_id)


def _view(client: Client, source: str | None) -> dict[str, Any]:
    return {"id": client.id, "name": client.name, "client_id": client.client_id, "scope": client.scope,
            "source": source, "revoked": client.revoked,
            "created_at": client.created_at.isoformat().replace("+00:00", "Z") if client.created_at else None}


def _get(name: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        row = session.execute(_clients().where(Client.name == name)).first()
    if row is None:
        raise ApiError(404, "not_found", f"no client named {name!r}")
    return _view(*row)


@blp.route("/clients", methods=["GET"])
@guarded(blp, "admin", "API clients, by creation (cursor pagination); secrets are never shown")
@blp.arguments(PageArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(ClientSchema, "ClientPage"))
def list_clients(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    query = _clients().order_by(Client.id).limit(limit)
    if args.get("cursor"):
        query = query.where(Client.id > args["cursor"])
    with runtime().db.begin() as session:
        return page([_view(*row) for row in session.execute(query)], limit)


@blp.route("/clients", methods=["POST"])
@guarded(blp, "admin", "Create an API client; its secret is shown this once", 409, 422,
         description="The client is bound to a REST source (created when absent) whose orders it "
                     "submits and reads; the scope admin gives it every source.")
@blp.arguments(ClientCreateSchema)
@blp.response(201, ClientCreatedSchema)
def create(body: dict[str, Any]) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        if session.execute(select(Client.id).where(Client.name == body["name"])).first():
            raise ApiError(409, "conflict", f"a client named {body['name']!r} exists already")
    with service_errors():
        _, secret = create_client(rt.db, rt.box, body["name"], body["scope"], body.get("source"),
                                  actor=request_actor())
    return {**_get(body["name"]), "client_secret": secret,
            "token_url": f"{rt.settings.public_url}/oauth/token"}, 201


@blp.route("/clients/<name>", methods=["GET"])
@guarded(blp, "admin", "An API client", 404)
@blp.response(200, ClientSchema)
def get(name: str) -> ResponseReturnValue:
    return _get(name)


@blp.route("/clients/<name>/revoke", methods=["POST"])
@guarded(blp, "admin", "Revoke an API client: no new tokens, and its tokens stop working at once", 404)
@blp.response(200, ClientSchema)
def revoke(name: str) -> ResponseReturnValue:
    with service_errors():
        revoke_client(runtime().db, name, actor=request_actor())
    return _get(name)
