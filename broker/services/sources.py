"""Sources: create, list, and the gateway's short-lived cache of decrypted signing secrets."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from broker.channels.base import COMMON_SETTINGS, Channel, channel_for, channel_kinds
from broker.db import Database
from broker.logging import register_secret
from broker.models import InboundEvent, Order, Source
from broker.services import audit
from broker.services.crypto import SecretBox

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REST_KIND = "rest"


class SetupError(ValueError):
    """Invalid setup input; the message says which value and why."""


class NotFound(SetupError):
    """No source, connector, route or client of that name or id."""


class Conflict(SetupError):
    """The change clashes with what exists (e.g. removing a source that has orders)."""


def check_name(name: str, what: str) -> str:
    if not NAME_RE.match(name or ""):
        raise SetupError(f"{what} name {name!r} must be 1-64 lower-case letters, digits, '-' or '_'")
    return name


def source_kinds() -> list[str]:
    return sorted([*channel_kinds(), REST_KIND])


def _new_secret(kind: str) -> str:
    try:
        return channel_for(kind).new_secret()
    except NotImplementedError:
        raise SetupError(f"{kind} issues the signing secret itself: copy it from the channel's "
                         "admin and pass it with --secret") from None


def check_settings(kind: str, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
    """Only names the channel kind knows, so a typo never passes silently."""
    if kind == REST_KIND and (settings or credentials):
        raise SetupError("REST sources take no channel settings or credentials")
    if kind == REST_KIND:
        return
    cls = channel_kinds()[kind]
    for given, known, what in ((settings, {**COMMON_SETTINGS, **cls.settings_fields}, "setting"),
                               (credentials, cls.credential_fields, "credential")):
        for key in given:
            if key not in known:
                raise SetupError(f"{kind} sources have no {what} {key!r}; known: "
                                 f"{', '.join(sorted(known)) or 'none'}")
    for key in ("catchup_interval", "catchup_lookback"):
        if settings.get(key) not in (None, ""):  # empty removes the setting
            try:
                if float(settings[key]) < 0:
                    raise ValueError
            except (TypeError, ValueError):
                raise SetupError(f"setting {key} must be a number of seconds >= 0") from None


def create_source(db: Database, box: SecretBox, name: str, kind: str,
                  secret: str | None = None, max_body_bytes: int | None = None, *,
                  settings: Mapping[str, Any] | None = None,
                  credentials: Mapping[str, str] | None = None,
                  actor: str = audit.SYSTEM) -> tuple[Source, str | None]:
    """Create a source; returns it and its signing secret (shown to the admin once)."""
    check_name(name, "source")
    if kind not in source_kinds():
        raise SetupError(f"unknown source kind {kind!r}; choose one of {', '.join(source_kinds())}")
    settings, credentials = dict(settings or {}), dict(credentials or {})
    check_settings(kind, settings, credentials)
    secrets: list[str] = []
    if kind != REST_KIND:
        secret = secret or _new_secret(kind)
        secrets = [secret]
    with db.begin() as session:
        if session.execute(select(Source.id).where(Source.name == name)).first():
            raise SetupError(f"a source named {name!r} exists already")
        source = Source(name=name, kind=kind, max_body_bytes=max_body_bytes, settings=settings,
                        secrets_encrypted=box.encrypt(secrets) if secrets else None,
                        credentials_encrypted=box.encrypt(credentials) if credentials else None)
        session.add(source)
        audit.record(session, actor=actor, action="source.create", target_type="source", target=name,
                     after={"kind": kind, "settings": settings, "max_body_bytes": max_body_bytes,
                            "signing_secrets": [audit.REDACTED] * len(secrets),
                            "credentials": audit.secret_names(credentials)})
    return source, secret


def configure_source(db: Database, box: SecretBox, name: str, *,
                     settings: Mapping[str, Any] | None = None,
                     credentials: Mapping[str, str] | None = None,
                     actor: str = audit.SYSTEM) -> dict[str, Any]:
    """Merge settings and credentials into a source (an empty value removes one).

    Returns the settings and the names (never the values) of the stored credentials. Audited
    only when something changed, so re-applying the same configuration leaves no trace.
    """
    with db.begin() as session:
        source = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        if source is None:
            raise SetupError(f"no source named {name!r}")
        check_settings(source.kind, settings or {}, credentials or {})
        merged = {**source.settings, **(settings or {})}
        old_settings = dict(source.settings or {})
        old_credentials = box.decrypt(source.credentials_encrypted, {})
        source.settings = {k: v for k, v in merged.items() if v not in ("", None)}
        stored = {**old_credentials, **(credentials or {})}
        stored = {k: v for k, v in stored.items() if v}
        changed = audit.changed_names(old_credentials, stored)
        if changed:
            source.credentials_encrypted = box.encrypt(stored) if stored else None
        if changed or source.settings != old_settings:
            audit.record(session, actor=actor, action="source.configure", target_type="source",
                         target=name, before={"settings": old_settings,
                                              "credentials": audit.secret_names(old_credentials)},
                         after={"settings": source.settings, "credentials": audit.secret_names(stored),
                                "changed": changed})
        return {"name": name, "settings": source.settings, "credentials": sorted(stored)}


def rotate_secret(db: Database, box: SecretBox, name: str, secret: str | None = None,
                  keep_old: bool = True, *, actor: str = audit.SYSTEM) -> str:
    """Add a new signing secret; the old one stays valid until removed (zero-downtime rotation)."""
    with db.begin() as session:
        source = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        if source is None:
            raise SetupError(f"no source named {name!r}")
        if source.kind == REST_KIND:
            raise SetupError("REST sources have no signing secret; their clients use OAuth")
        secret = secret or _new_secret(source.kind)
        previous = box.decrypt(source.secrets_encrypted, [])
        old = previous if keep_old else []
        source.secrets_encrypted = box.encrypt([secret, *old][:3])
        audit.record(session, actor=actor, action="source.rotate_secret", target_type="source",
                     target=name, before={"signing_secrets": [audit.REDACTED] * len(previous)},
                     after={"signing_secrets": [audit.REDACTED] * len([secret, *old][:3]),
                            "kept_previous": keep_old})
    return secret


@dataclass(frozen=True)
class SourceInfo:
    id: str
    name: str
    kind: str
    channel: Channel | None
    secrets: list[str]
    max_body_bytes: int | None
    enabled: bool


class SourceCache:
    """Gateway-side cache, so a webhook costs no decryption; changes apply within `ttl`."""

    def __init__(self, db: Database, box: SecretBox, ttl: float = 5.0) -> None:
        self.db, self.box, self.ttl = db, box, ttl
        self._items: dict[str, tuple[float, SourceInfo | None]] = {}
        self._lock = threading.Lock()

    def forget(self, name: str) -> None:
        """Drop a cached source so this process sees a change at once."""
        with self._lock:
            self._items.pop(name, None)

    def get(self, name: str) -> SourceInfo | None:
        now = time.monotonic()
        cached = self._items.get(name)
        if cached and cached[0] > now:
            return cached[1]
        with self.db.begin() as session:
            row = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        info = None
        if row is not None:
            secrets = self.box.decrypt(row.secrets_encrypted, [])
            for secret in secrets:
                register_secret(secret)
            info = SourceInfo(row.id, row.name, row.kind,
                              channel_for(row.kind, row.settings)
                              if row.kind in channel_kinds() else None,
                              secrets, row.max_body_bytes, row.enabled)
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[name] = (now + self.ttl, info)
        return info


def remove_source(db: Database, name: str, *, actor: str = audit.SYSTEM) -> None:
    """Delete a source that never received anything (its routes go with it); one with orders or
    stored events is refused, since deleting it would delete them: disable it instead."""
    with db.begin() as session:  # the row lock keeps an order from arriving meanwhile
        source = session.execute(select(Source).where(Source.name == name)
                                 .with_for_update()).scalar_one_or_none()
        if source is None:
            raise NotFound(f"no source named {name!r}")
        for model, what in ((Order, "orders"), (InboundEvent, "stored events")):
            if session.execute(select(model.id).where(model.source_id == source.id).limit(1)).first():
                raise Conflict(f"source {name!r} has {what}; removing it would delete them. "
                               "Disable it instead (enabled: false)")
        audit.record(session, actor=actor, action="source.remove", target_type="source", target=name,
                     before={"kind": source.kind, "settings": source.settings, "enabled": source.enabled})
        session.delete(source)
