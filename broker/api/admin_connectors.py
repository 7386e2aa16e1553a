"""Connector kinds (with the JSON Schema of their config) and connectors over REST, for admins.

Secrets are write-only: a read names the secret paths that are set, an update that leaves a
secret out keeps the stored one, and `check` answers the back office's error, never a 500.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import OpenAPIConverter
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import select

from broker.api.admin import guarded, limit_of, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.logging import redact
from broker.models import Connector
from broker.schemas.api import (
    CheckSchema,
    ConnectorCreateSchema,
    ConnectorKindSchema,
    ConnectorSchema,
    ConnectorUpdateSchema,
    PageArgsSchema,
    page_of,
)
from broker.services.setup import remove_connector, set_enabled, upsert_connector
from connectors.base import Connector as ConnectorKind
from connectors.config import Secret, secret_paths
from connectors.errors import ConnectorError
from connectors.registry import connector_kinds
from connectors.ssrf import Refused, check_settings

log = logging.getLogger(__name__)
blp = Blueprint("admin_connectors", __name__, url_prefix="/api/v1", description="Connectors (back office)")


# --- kinds and their JSON Schema ---------------------------------------------------------------

def _secret_attributes(_converter: Any, field: fields.Field, **_: Any) -> dict[str, Any]:
    return {"writeOnly": True, "format": "password"} if isinstance(field, Secret) else {}


@cache
def _converter() -> OpenAPIConverter:
    """marshmallow → JSON Schema (OpenAPI 3.1 schemas are JSON Schema 2020-12), nested
    schemas inlined, so each kind's schema stands alone (a form can be built from it)."""
    spec = APISpec("connector configs", "1", "3.1.0")
    converter = OpenAPIConverter("3.1.0", lambda _schema: None, spec)
    converter.add_attribute_function(_secret_attributes)
    return converter


def config_json_schema(cls: type[ConnectorKind]) -> dict[str, Any]:
    schema = cls.Config()
    document = _converter().schema2jsonschema(schema)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"{cls.kind} config",
            "additionalProperties": False, **document}


def kind_view(kind: str, cls: type[ConnectorKind]) -> dict[str, Any]:
    return {"kind": kind, "class_name": f"{cls.__module__}.{cls.__qualname__}",
            "secrets": secret_paths(cls.Config()), "config_schema": config_json_schema(cls)}


KindList = Schema.from_dict({"items": fields.List(fields.Nested(ConnectorKindSchema))},
                            name="ConnectorKindList")


@blp.route("/connector-kinds", methods=["GET"])
@guarded(blp, "admin", "Installed connector kinds, each with the JSON Schema of its config")
@blp.response(200, KindList)
def list_kinds() -> ResponseReturnValue:
    return {"items": [kind_view(k, c) for k, c in sorted(connector_kinds().items())]}


@blp.route("/connector-kinds/<kind>", methods=["GET"])
@guarded(blp, "admin", "One connector kind with the JSON Schema of its config", 404)
@blp.response(200, ConnectorKindSchema)
def get_kind(kind: str) -> ResponseReturnValue:
    cls = connector_kinds().get(kind)
    if cls is None:
        raise ApiError(404, "not_found", f"no connector kind {kind!r}; installed: "
                       f"{', '.join(sorted(connector_kinds())) or 'none'}")
    return kind_view(kind, cls)


# --- connectors ------------------------------------------------------------------------------

def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _consent(session: Any, row: Connector) -> dict[str, str] | None:
    from broker.services.custody import consent_health

    health = consent_health(session, runtime().box, row)
    return {"state": health["state"], "summary": health["summary"]} if health else None


def connector_view(session: Any, row: Connector) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "kind": row.kind, "enabled": row.enabled, "queue": row.queue,
            "config": row.config or {}, "secrets": sorted(runtime().box.decrypt(row.secrets_encrypted, {})),
            "consent": _consent(session, row), "created_at": _iso(row.created_at)}


def _row(session: Any, name: str) -> Connector:
    row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if row is None:
        raise ApiError(404, "not_found", f"no connector named {name!r}")
    return row


def _get(name: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        return connector_view(session, _row(session, name))


def _check_urls(config: dict[str, Any]) -> None:
    try:
        check_settings(config)
    except Refused as exc:
        raise ApiError(422, "invalid_setup", str(exc)) from None


@blp.route("/connectors", methods=["GET"])
@guarded(blp, "admin", "Connectors, by creation (cursor pagination)")
@blp.arguments(PageArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(ConnectorSchema, "ConnectorPage"))
def list_connectors(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    query = select(Connector).order_by(Connector.id).limit(limit)
    if args.get("cursor"):
        query = query.where(Connector.id > args["cursor"])
    with runtime().db.begin() as session:
        return page([connector_view(session, c) for c in session.execute(query).scalars()], limit)


@blp.route("/connectors", methods=["POST"])
@guarded(blp, "admin", "Create a connector; its config is validated by its kind's schema", 409, 422)
@blp.arguments(ConnectorCreateSchema)
@blp.response(201, ConnectorSchema)
def create(body: dict[str, Any]) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        if session.execute(select(Connector.id).where(Connector.name == body["name"])).first():
            raise ApiError(409, "conflict", f"a connector named {body['name']!r} exists already; "
                           "PUT /connectors/{name} changes it")
    _check_urls(body["config"])
    with service_errors():
        upsert_connector(rt.db, rt.box, body["name"], body["kind"], body["config"], actor=request_actor())
        if not body["enabled"]:
            set_enabled(rt.db, Connector, body["name"], False, actor=request_actor())
    return _get(body["name"]), 201


@blp.route("/connectors/<name>", methods=["GET"])
@guarded(blp, "admin", "A connector: its public config and the paths of the secrets set", 404)
@blp.response(200, ConnectorSchema)
def get(name: str) -> ResponseReturnValue:
    return _get(name)


@blp.route("/connectors/<name>", methods=["PUT"])
@guarded(blp, "admin", "Reconfigure a connector, enable or disable it", 404, 422,
         description="`config` replaces the whole config; a secret left out keeps the stored one.")
@blp.arguments(ConnectorUpdateSchema)
@blp.response(200, ConnectorSchema)
def update(body: dict[str, Any], name: str) -> ResponseReturnValue:
    rt = runtime()
    kind = _get(name)["kind"]
    with service_errors():
        if "config" in body:
            _check_urls(body["config"])
            upsert_connector(rt.db, rt.box, name, kind, body["config"], actor=request_actor())
        if "enabled" in body:
            set_enabled(rt.db, Connector, name, body["enabled"], actor=request_actor())
    return _get(name)


@blp.route("/connectors/<name>", methods=["DELETE"])
@guarded(blp, "admin", "Remove a connector that has no deliveries (its routes and mappings go too)",
         404, 409, description="A connector with deliveries is refused (409): disable it instead.")
@blp.response(204)
def remove(name: str) -> ResponseReturnValue:
    with service_errors():
        remove_connector(runtime().db, name, actor=request_actor())
    return "", 204


@blp.route("/connectors/<name>/check", methods=["POST"])
@guarded(blp, "admin", "Test the connection and credentials of a connector", 404,
         description="Answers 200 with `ok` false and the back office's error when the check fails; "
                     "`warnings` says what the configuration weakens (an `http` connector without "
                     "`lookup_url` is at-least-once against a back office that ignores its "
                     "idempotency header).")
@blp.response(200, CheckSchema)
def check(name: str) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        consent = _consent(session, row)
    error, warnings = None, []
    try:
        connector = rt.connector(row)
        warnings = connector.warnings()
        connector.check()
    except Exception as exc:  # a ConnectorError, or an invalid stored config: the admin reads it
        if not isinstance(exc, ConnectorError):
            log.warning("check of connector %s raised %s", name, type(exc).__name__, exc_info=True)
        error = redact(f"{type(exc).__name__}: {exc}")
    return {"name": name, "ok": error is None, "error": error, "consent": consent, "warnings": warnings}
