"""Who may get in: trusted company issuers, local console users, console sessions, login
throttles, and the OAuth grants the broker holds on behalf of connectors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from broker.db import Base, UTCDateTime, new_id, utcnow


class TrustedIssuer(Base):
    """A company OpenID Connect provider whose access tokens the API accepts and through
    which people sign in to the console; `role_rules` map its claims to broker roles."""

    __tablename__ = "trusted_issuers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    issuer: Mapped[str] = mapped_column(String(255), unique=True)
    audience: Mapped[str] = mapped_column(String(255))
    algorithms: Mapped[list[str]] = mapped_column(JSON)
    token_types: Mapped[list[str]] = mapped_column(JSON)
    # [{"role": "admin", "claim": "groups", "value": "broker-admins"}, ...]; none → no access.
    role_rules: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    client_id: Mapped[str | None] = mapped_column(String(255))  # console sign-in, optional
    client_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(String(255), default="openid email profile")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class User(Base):
    """A local console user (the bootstrap admin); people from a company IdP are not stored."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="admin")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed sign-ins per user name and per client address, shared by every gateway process."""

    __tablename__ = "login_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A server-side console session; the cookie holds a random id, this row its SHA-256."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ConnectorGrant(Base):
    """Tokens an admin's one-time consent gave a connector; both tokens encrypted at rest.

    `status` is what the connector's health shows: ok, or refresh_failed with `last_error`
    (the admin must consent again; deliveries park meanwhile instead of dying).
    """

    __tablename__ = "connector_grants"

    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"),
                                              primary_key=True)
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scope: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="ok")
    last_error: Mapped[str | None] = mapped_column(Text)
    granted_by: Mapped[str] = mapped_column(String(255))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    refreshed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
