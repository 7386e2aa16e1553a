"""Connectors, routes and API clients: validated creation used by the CLI, YAML and API."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select

from broker.db import Database
from broker.identity.server import SCOPES, digest, new_client_credentials
from broker.models import Client, Connector, Delivery, Route, Source
from broker.schemas.order import flatten_errors
from broker.services import audit
from broker.services.crypto import SecretBox
from broker.services.routing import FILTER_KEYS
from broker.services.sources import (
    REST_KIND,
    Conflict,
    NotFound,
    SetupError,
    check_name,
    create_source,
)
from connectors.config import merge_secrets, split_secrets
from connectors.errors import MissingSetting
from connectors.registry import connector_class


class InvalidConfig(SetupError):
    """A connector config its kind's schema refuses; `fields` maps each path to its messages."""

    def __init__(self, message: str, fields: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.fields = fields


def validate_connector_config(kind: str, config: dict[str, Any]) -> tuple[dict, dict]:
    """(public config, secrets) after validation by the kind's schema; errors name the path."""
    try:
        cls = connector_class(kind)
    except LookupError as exc:
        raise SetupError(str(exc)) from None
    schema = cls.Config()
    try:
        loaded = schema.load(config)
    except ValidationError as exc:
        fields = flatten_errors(exc.messages)
        details = "; ".join(f"{path}: {' '.join(m)}" for path, m in sorted(fields.items()))
        raise InvalidConfig(f"invalid config for connector kind '{kind}': {details}", fields) from None
    return split_secrets(schema, loaded)


def upsert_connector(db: Database, box: SecretBox, name: str, kind: str,
                     config: dict[str, Any], *, actor: str = audit.SYSTEM) -> tuple[Connector, bool]:
    """Create or reconfigure a connector; a secret left out on update keeps the stored one.

    Audited when something changed: the public config in clear, secrets by name only.
    """
    check_name(name, "connector")
    with db.begin() as session:
        stored = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    try:
        public, secrets = validate_connector_config(kind, config)
    except SetupError:
        if stored is None or stored.kind != kind or not stored.secrets_encrypted:
            raise
        # An update may leave secrets out: validate again with the stored ones filled in.
        given_public, given = split_secrets(connector_class(kind).Config(), config)
        merged = merge_secrets(given_public, {**box.decrypt(stored.secrets_encrypted, {}), **given})
        public, secrets = validate_connector_config(kind, merged)
    with db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
        created = row is None
        old_public: dict[str, Any] | None = None
        old_secrets: dict[str, Any] = {}
        if row is None:
            row = Connector(name=name, kind=kind)
            session.add(row)
        elif row.kind != kind:
            raise SetupError(f"connector {name!r} is of kind {row.kind!r}, not {kind!r}")
        else:
            old_public, old_secrets = dict(row.config or {}), box.decrypt(row.secrets_encrypted, {})
            kept = {**old_secrets, **secrets}
            try:  # a stored secret the new config has no place for (auth basic -> bearer) goes
                validate_connector_config(kind, merge_secrets(public, kept))
                secrets = kept
            except InvalidConfig:
                pass
        changed = audit.changed_names(old_secrets, secrets)
        if created or changed or public != old_public:
            audit.record(session, actor=actor, action="connector.create" if created else "connector.update",
                         target_type="connector", target=name,
                         before=None if created else {"kind": kind, "config": old_public,
                                                      "secrets": audit.secret_names(old_secrets)},
                         after={"kind": kind, "config": public, "secrets": audit.secret_names(secrets),
                                "changed": changed})
        row.config = public
        if created or changed:
            row.secrets_encrypted = box.encrypt(secrets) if secrets else None
        if not created and (changed or public != old_public):
            from broker.services.links import resume_parked

            resume_parked(session, row, MissingSetting.KIND, None,
                          f"the configuration of {name} was saved by {actor}; trying again")
    return row, created


def add_route(db: Database, source: str, connector: str,
              filters: dict[str, list[str]] | None = None, *, actor: str = audit.SYSTEM) -> Route:
    """Create a route, or replace its filters; audited when it is new or its filters change."""
    filters = {k: list(v) for k, v in (filters or {}).items() if v}
    unknown = set(filters) - set(FILTER_KEYS)
    if unknown:
        raise SetupError(f"unknown route filter {sorted(unknown)[0]!r}; use {', '.join(FILTER_KEYS)}")
    with db.begin() as session:
        src = session.execute(select(Source).where(Source.name == source)).scalar_one_or_none()
        dst = session.execute(select(Connector).where(Connector.name == connector)).scalar_one_or_none()
        if src is None:
            raise SetupError(f"no source named {source!r}")
        if dst is None:
            raise SetupError(f"no connector named {connector!r}")
        route = session.execute(select(Route).where(
            Route.source_id == src.id, Route.connector_id == dst.id)).scalar_one_or_none()
        before = None if route is None else {"filters": route.filters or {}}
        if route is None:
            route = Route(source_id=src.id, connector_id=dst.id)
            session.add(route)
        route.filters = filters
        if before is None or before["filters"] != filters:
            audit.record(session, actor=actor, action="route.create" if before is None else "route.update",
                         target_type="route", target=f"{source}->{connector}", before=before,
                         after={"filters": filters})
    return route


def create_client(db: Database, box: SecretBox, name: str, scope: str,
                  source: str | None = None, *, actor: str = audit.SYSTEM) -> tuple[Client, str]:
    """Create an API client bound to a REST source (made if absent); the secret is shown once."""
    check_name(name, "client")
    scopes = scope.split()
    bad = [s for s in scopes if s not in SCOPES]
    if not scopes or bad:
        raise SetupError(f"unknown scope {bad[0] if bad else ''!r}; use {', '.join(SCOPES)}")
    source = source or name
    with db.begin() as session:
        exists = session.execute(select(Source).where(Source.name == source)).scalar_one_or_none()
    if exists is None:
        exists, _ = create_source(db, box, source, REST_KIND, actor=actor)
    client_id, secret = new_client_credentials()
    with db.begin() as session:
        if session.execute(select(Client.id).where(Client.name == name)).first():
            raise SetupError(f"a client named {name!r} exists already")
        client = Client(client_id=client_id, name=name, secret_hash=digest(secret),
                        scope=" ".join(scopes), source_id=exists.id)
        session.add(client)
        audit.record(session, actor=actor, action="client.create", target_type="client", target=name,
                     after={"client_id": client_id, "scope": client.scope, "source": source,
                            "client_secret": audit.REDACTED})
    return client, secret


def set_enabled(db: Database, model: type[Source] | type[Connector], name: str, enabled: bool, *,
                actor: str = audit.SYSTEM) -> bool:
    """Enable or disable a source (its webhooks answer 404) or a connector (its deliveries
    wait); audited when it changes. Returns whether it changed."""
    what = model.__tablename__[:-1]
    with db.begin() as session:
        row = session.execute(select(model).where(model.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no {what} named {name!r}")
        if row.enabled == enabled:
            return False
        audit.record(session, actor=actor, action=f"{what}.{'enable' if enabled else 'disable'}",
                     target_type=what, target=name, before={"enabled": row.enabled},
                     after={"enabled": enabled})
        row.enabled = enabled
        return True


def set_push_limit(db: Database, name: str, max_in_flight: int | None, *,
                   actor: str = audit.SYSTEM) -> Connector:
    """Pushes in flight at once for a connector across all workers (None: the kind's default);
    audited when it changes."""
    with db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no connector named {name!r}")
        if row.max_in_flight != max_in_flight:
            audit.record(session, actor=actor, action="connector.limit", target_type="connector",
                         target=name, before={"max_in_flight": row.max_in_flight},
                         after={"max_in_flight": max_in_flight})
            row.max_in_flight = max_in_flight
        session.flush()
        session.expunge(row)
        return row


def remove_connector(db: Database, name: str, *, actor: str = audit.SYSTEM) -> None:
    """Delete a connector that has no deliveries (its routes and mappings go with it); one with
    deliveries is refused, since they are the orders' record in that back office."""
    with db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)
                              .with_for_update()).scalar_one_or_none()
        if row is None:
            raise NotFound(f"no connector named {name!r}")
        if session.execute(select(Delivery.id).where(Delivery.connector_id == row.id).limit(1)).first():
            raise Conflict(f"connector {name!r} has deliveries; removing it would delete their "
                           "record. Disable it instead (enabled: false)")
        audit.record(session, actor=actor, action="connector.remove", target_type="connector",
                     target=name, before={"kind": row.kind, "config": row.config, "enabled": row.enabled})
        session.delete(row)


def remove_route(db: Database, route_id: str, *, actor: str = audit.SYSTEM) -> None:
    """Delete a route; deliveries it already made are kept."""
    with db.begin() as session:
        found = session.execute(
            select(Route, Source.name, Connector.name).join(Source, Source.id == Route.source_id)
            .join(Connector, Connector.id == Route.connector_id).where(Route.id == route_id)).first()
        if found is None:
            raise NotFound(f"no route {route_id}")
        route, source, connector = found
        audit.record(session, actor=actor, action="route.remove", target_type="route",
                     target=f"{source}->{connector}", before={"filters": route.filters or {}})
        session.delete(route)


def revoke_client(db: Database, name: str, *, actor: str = audit.SYSTEM) -> bool:
    """Revoke an API client: it gets no new token and its tokens stop working at once.
    Returns False when it was revoked already."""
    with db.begin() as session:
        client = session.execute(select(Client).where(Client.name == name)).scalar_one_or_none()
        if client is None:
            raise NotFound(f"no client named {name!r}")
        if client.revoked:
            return False
        client.revoked = True
        audit.record(session, actor=actor, action="client.revoke", target_type="client", target=name,
                     before={"client_id": client.client_id, "revoked": False}, after={"revoked": True})
        return True
