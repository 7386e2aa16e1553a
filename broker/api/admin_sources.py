"""Sources over REST, for admins: create, read, configure, disable, remove, rotate the signing
secret. A secret is shown once, in the answer that made it; reads name the credentials set."""

from __future__ import annotations

from typing import Any

from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from sqlalchemy import select

from broker.api.admin import guarded, limit_of, page, service_errors
from broker.api.audit import request_actor
from broker.api.common import runtime
from broker.errors import ApiError
from broker.models import Source
from broker.schemas.api import (
    PageArgsSchema,
    RotatedSchema,
    RotateSecretSchema,
    SourceCreatedSchema,
    SourceCreateSchema,
    SourceSchema,
    SourceUpdateSchema,
    page_of,
)
from broker.services.setup import set_enabled
from broker.services.sources import (
    REST_KIND,
    configure_source,
    create_source,
    remove_source,
    rotate_secret,
)
from connectors.ssrf import Refused, check_settings

blp = Blueprint("admin_sources", __name__, url_prefix="/api/v1", description="Sources (front office)")
SOURCE_URL_KEYS = ("api_url", "store_url")  # as `broker sources add` checks them


def _iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def source_view(source: Source) -> dict[str, Any]:
    rt = runtime()
    return {"id": source.id, "name": source.name, "kind": source.kind, "enabled": source.enabled,
            "webhook_url": None if source.kind == REST_KIND
            else f"{rt.settings.public_url}/webhooks/{source.name}",
            "settings": source.settings or {},
            "credentials": sorted(rt.box.decrypt(source.credentials_encrypted, {})),
            "signing_secrets": len(rt.box.decrypt(source.secrets_encrypted, [])),
            "max_body_bytes": source.max_body_bytes, "created_at": _iso(source.created_at),
            "catchup_at": _iso(source.catchup_at), "catchup_error": source.catchup_error}


def _check_urls(settings: dict[str, Any]) -> None:
    try:
        check_settings(settings, url_keys=SOURCE_URL_KEYS)
    except Refused as exc:
        raise ApiError(422, "invalid_setup", str(exc)) from None


def _get(name: str) -> dict[str, Any]:
    with runtime().db.begin() as session:
        source = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        if source is None:
            raise ApiError(404, "not_found", f"no source named {name!r}")
        return source_view(source)


@blp.route("/sources", methods=["GET"])
@guarded(blp, "admin", "Sources, by creation (cursor pagination)")
@blp.arguments(PageArgsSchema, location="query", as_kwargs=True)
@blp.response(200, page_of(SourceSchema, "SourcePage"))
def list_sources(**args: Any) -> ResponseReturnValue:
    limit = limit_of(args)
    query = select(Source).order_by(Source.id).limit(limit)
    if args.get("cursor"):
        query = query.where(Source.id > args["cursor"])
    with runtime().db.begin() as session:
        return page([source_view(s) for s in session.execute(query).scalars()], limit)


@blp.route("/sources", methods=["POST"])
@guarded(blp, "admin", "Create a source; a generated signing secret is shown this once", 409, 422)
@blp.arguments(SourceCreateSchema)
@blp.response(201, SourceCreatedSchema)
def create(body: dict[str, Any]) -> ResponseReturnValue:
    rt = runtime()
    _check_urls(body["settings"])
    with rt.db.begin() as session:
        if session.execute(select(Source.id).where(Source.name == body["name"])).first():
            raise ApiError(409, "conflict", f"a source named {body['name']!r} exists already")
    with service_errors():
        _, secret = create_source(rt.db, rt.box, body["name"], body["kind"], body.get("secret"),
                                  body.get("max_body_bytes"), settings=body["settings"],
                                  credentials=body["credentials"], actor=request_actor())
    return {**_get(body["name"]), "signing_secret": None if body.get("secret") else secret}, 201


@blp.route("/sources/<name>", methods=["GET"])
@guarded(blp, "admin", "A source, with its webhook URL and the names of its credentials", 404)
@blp.response(200, SourceSchema)
def get(name: str) -> ResponseReturnValue:
    return _get(name)


@blp.route("/sources/<name>", methods=["PATCH"])
@guarded(blp, "admin", "Configure a source: merge settings and credentials, enable or disable it",
         404, 422)
@blp.arguments(SourceUpdateSchema)
@blp.response(200, SourceSchema)
def update(body: dict[str, Any], name: str) -> ResponseReturnValue:
    rt = runtime()
    _get(name)
    _check_urls(body.get("settings") or {})
    with service_errors():
        if "settings" in body or "credentials" in body:
            configure_source(rt.db, rt.box, name, settings=body.get("settings"),
                             credentials=body.get("credentials"), actor=request_actor())
        if "enabled" in body:
            set_enabled(rt.db, Source, name, body["enabled"], actor=request_actor())
    rt.sources.forget(name)
    return _get(name)


@blp.route("/sources/<name>", methods=["DELETE"])
@guarded(blp, "admin", "Remove a source that never received an order or event", 404, 409,
         description="A source with orders or stored events is refused (409): disable it instead.")
@blp.response(204)
def remove(name: str) -> ResponseReturnValue:
    with service_errors():
        remove_source(runtime().db, name, actor=request_actor())
    runtime().sources.forget(name)
    return "", 204


@blp.route("/sources/<name>/rotate-secret", methods=["POST"])
@guarded(blp, "admin", "Add a new signing secret, shown this once", 404, 422,
         description="The previous secrets stay valid (up to three in all) unless keep_previous is "
                     "false, so the channel can switch without losing a webhook. Gateways use the "
                     "new secret within 5 s.")
@blp.arguments(RotateSecretSchema)
@blp.response(200, RotatedSchema)
def rotate(body: dict[str, Any], name: str) -> ResponseReturnValue:
    rt = runtime()
    _get(name)
    with service_errors():
        secret = rotate_secret(rt.db, rt.box, name, body.get("secret"), body["keep_previous"],
                               actor=request_actor())
    rt.sources.forget(name)
    return {"name": name, "signing_secret": secret, "kept_previous": body["keep_previous"]}
