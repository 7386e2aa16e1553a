"""What an admin configures: sources (front office), connectors (back office), routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db import Base, UTCDateTime, new_id, utcnow


class Source(Base):
    """One front-office channel instance; its signing secrets are stored encrypted."""

    __tablename__ = "sources"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    max_body_bytes: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Channel API credentials (JSON object), encrypted like the signing secrets.
    credentials_encrypted: Mapped[str | None] = mapped_column(Text)
    # Catch-up: changes since `catchup_since` are polled next; the last run's time and error.
    catchup_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    catchup_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    catchup_error: Mapped[str | None] = mapped_column(Text)


class Connector(Base):
    """One back-office destination; non-secret config in clear, secrets encrypted."""

    __tablename__ = "connectors"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Pushes in flight at once across all workers; None: the kind's default (max_in_flight).
    max_in_flight: Mapped[int | None] = mapped_column(Integer)

    @property
    def queue(self) -> str:
        """The Celery queue of this connector, so a slow ERP never blocks another."""
        return f"connector.{self.name}"


class Route(Base):
    """Orders from a source go to a connector, optionally filtered."""

    __tablename__ = "routes"
    __table_args__ = (UniqueConstraint("source_id", "connector_id", name="uq_routes_source_connector"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    # {"channel": [...], "tags": [...], "currency": [...], "country": [...]}; empty = everything.
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
