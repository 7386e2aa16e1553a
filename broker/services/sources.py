"""Sources: create, list, and the gateway's short-lived cache of decrypted signing secrets."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from broker.channels.base import Channel, channel_for, channel_kinds
from broker.db import Database
from broker.logging import register_secret
from broker.models import Source
from broker.services.crypto import SecretBox

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
REST_KIND = "rest"


class SetupError(ValueError):
    """Invalid setup input; the message says which value and why."""


def check_name(name: str, what: str) -> str:
    if not NAME_RE.match(name or ""):
        raise SetupError(f"{what} name {name!r} must be 1-64 lower-case letters, digits, '-' or '_'")
    return name


def source_kinds() -> list[str]:
    return sorted([*channel_kinds(), REST_KIND])


def create_source(db: Database, box: SecretBox, name: str, kind: str,
                  secret: str | None = None, max_body_bytes: int | None = None) -> tuple[Source, str | None]:
    """Create a source; returns it and its signing secret (shown to the admin once)."""
    check_name(name, "source")
    if kind not in source_kinds():
        raise SetupError(f"unknown source kind {kind!r}; choose one of {', '.join(source_kinds())}")
    secrets: list[str] = []
    if kind != REST_KIND:
        channel = channel_for(kind)
        secret = secret or channel.new_secret()
        secrets = [secret]
    with db.begin() as session:
        if session.execute(select(Source.id).where(Source.name == name)).first():
            raise SetupError(f"a source named {name!r} exists already")
        source = Source(name=name, kind=kind, max_body_bytes=max_body_bytes, settings={},
                        secrets_encrypted=box.encrypt(secrets) if secrets else None)
        session.add(source)
    return source, secret


def rotate_secret(db: Database, box: SecretBox, name: str, secret: str | None = None,
                  keep_old: bool = True) -> str:
    """Add a new signing secret; the old one stays valid until removed (zero-downtime rotation)."""
    with db.begin() as session:
        source = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        if source is None:
            raise SetupError(f"no source named {name!r}")
        if source.kind == REST_KIND:
            raise SetupError("REST sources have no signing secret; their clients use OAuth")
        secret = secret or channel_for(source.kind).new_secret()
        old = box.decrypt(source.secrets_encrypted, []) if keep_old else []
        source.secrets_encrypted = box.encrypt([secret, *old][:3])
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
                              channel_for(row.kind) if row.kind in channel_kinds() else None,
                              secrets, row.max_body_bytes, row.enabled)
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[name] = (now + self.ttl, info)
        return info
