"""Identity links and mappings over REST (customer, product, tax, shipping, payment): adding one
resumes the deliveries parked for it and wakes their connector."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import select

from broker.api.admin import decode_cursor, encode_cursor, guarded, limit_of, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.models import Connector, IdentityLink
from broker.schemas.api import (
    MappingArgsSchema,
    MappingCreatedSchema,
    MappingCreateSchema,
    MappingSchema,
    page_of,
)
from broker.services.links import add_mapping, list_mappings, remove_mapping

blp = Blueprint("admin_mappings", __name__, url_prefix="/api/v1", description="Identity links and mappings")


def _get(mapping_id: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        row = session.execute(select(IdentityLink, Connector.name)
                              .join(Connector, Connector.id == IdentityLink.connector_id)
                              .where(IdentityLink.id == mapping_id)).first()
    if row is None:
        raise ApiError(404, "not_found", f"no mapping {mapping_id}")
    link, connector = row
    return {"id": link.id, "connector": connector, "kind": link.kind, "key": link.key,
            "value": link.value, "origin": link.origin}


def _cursor(item: dict[str, Any]) -> str:
    return encode_cursor(item["connector"], item["kind"], item["key"])


@blp.route("/mappings", methods=["GET"])
@guarded(blp, "admin", "Mappings by connector, kind and key (cursor pagination)",
         description="Both what admins mapped (origin admin) and what connectors learned while "
                     "booking (origin learned).")
@blp.arguments(MappingArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(MappingSchema, "MappingPage"))
def list_all(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    after = decode_cursor(args["cursor"], (str, str, str)) if args.get("cursor") else None
    with runtime().db.begin() as session:
        items = list_mappings(session, connector=args.get("connector"), kind=args.get("kind"),
                              key=args.get("key"), after=after, limit=limit)
    return page(items, limit, _cursor)


@blp.route("/mappings", methods=["POST"])
@guarded(blp, "admin", "Map a front-office key to a back-office id; parked deliveries resume", 404, 422,
         description="Creates the mapping, or changes its value. Deliveries parked for this key "
                     "(missing mapping, identity review) become due at once; `resumed` says how many.")
@blp.arguments(MappingCreateSchema)
@blp.response(201, MappingCreatedSchema)
def create(body: dict[str, Any]) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        if not session.execute(select(Connector.id).where(Connector.name == body["connector"])).first():
            raise ApiError(404, "not_found", f"no connector named {body['connector']!r}")
    with service_errors():
        resumed, wake = add_mapping(rt.db, body["connector"], body["kind"], body["key"], body["value"],
                                    actor=request_actor())
    rt.publisher.wake(wake)
    with rt.db.begin() as session:
        [item] = list_mappings(session, connector=body["connector"], kind=body["kind"], key=body["key"])
    return {**item, "resumed": resumed}, 201


@blp.route("/mappings/<mapping_id>", methods=["GET"])
@guarded(blp, "admin", "A mapping", 404)
@blp.response(200, MappingSchema)
def get(mapping_id: str) -> ResponseReturnValue:
    return _get(mapping_id)


@blp.route("/mappings/<mapping_id>", methods=["DELETE"])
@guarded(blp, "admin", "Remove a mapping", 404)
@blp.response(204)
def remove(mapping_id: str) -> ResponseReturnValue:
    mapping = _get(mapping_id)
    with service_errors():
        if not remove_mapping(runtime().db, mapping["connector"], mapping["kind"], mapping["key"],
                              actor=request_actor()):
            raise ApiError(404, "not_found", f"no mapping {mapping_id}")
    return "", 204
