"""Inbound events, orders, their versions and the per-order timeline."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, mapped_column

from broker.db import Base, UTCDateTime, new_id, utcnow

Blob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class EventStatus(enum.StrEnum):
    RECEIVED = "received"
    NORMALISED = "normalised"
    REJECTED = "rejected"
    IGNORED = "ignored"
    PARKED = "parked"  # a thin update of an order whose create has not arrived yet


class InboundEvent(Base):
    """A webhook exactly as it arrived; committed before the 2xx and normalised later."""

    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("source_id", "event_key", name="uq_inbound_events_source_key"),
        Index("ix_inbound_events_status_received", "status", "received_at"),
        Index("ix_inbound_events_waiting", "source_id", "waiting_for"),
        Index("ix_inbound_events_order", "order_id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str | None] = mapped_column(String(128))
    headers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes] = mapped_column(Blob)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED)
    error: Mapped[str | None] = mapped_column(Text)
    order_id: Mapped[str | None] = mapped_column(String(32))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Not before this time: the channel API was unavailable while enriching.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The external id of the order a parked event waits for.
    waiting_for: Mapped[str | None] = mapped_column(String(255))
    # What enrichment fetched from the channel API (JSON), kept beside the raw body.
    fetched: Mapped[bytes | None] = mapped_column(Blob)


class Order(Base):
    """One order, identified by (source, external id); its content lives in versions."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("source_id", "external_id", name="uq_orders_source_external"),
        Index("ix_orders_received_at", "received_at"),
        # order search (GET /api/v1/orders): each filter on an index, newest first by id
        Index("ix_orders_external_id", "external_id"),
        Index("ix_orders_source_id", "source_id", "id"),
        Index("ix_orders_status_id", "status", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(255))
    number: Mapped[str | None] = mapped_column(String(64), index=True)
    channel: Mapped[str | None] = mapped_column(String(64))
    email: Mapped[str | None] = mapped_column(String(320), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[str] = mapped_column(String(32))
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    channel_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OrderVersion(Base):
    """One content of an order; a stale one is recorded with applied = false."""

    __tablename__ = "order_versions"
    __table_args__ = (
        UniqueConstraint("order_id", "version", name="uq_order_versions_order_version"),
        UniqueConstraint("order_id", "digest", name="uq_order_versions_order_digest"),
        Index("ix_order_versions_created", "created_at"),  # retention, oldest first
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    channel_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    applied: Mapped[bool] = mapped_column(Boolean, default=True)
    inbound_event_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TimelineEntry(Base):
    """One step of an order's journey, for the operator (DESIGN invariant 3)."""

    __tablename__ = "timeline"
    __table_args__ = (Index("ix_timeline_order_at", "order_id", "at"),
                      Index("ix_timeline_at", "at"))  # retention, oldest first

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    step: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
