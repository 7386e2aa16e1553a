"""Deliveries (order version x connector) and their attempts: the outbox and the audit trail."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from broker.db import Base, UTCDateTime, new_id, utcnow


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"        # due at next_attempt_at
    LEASED = "leased"          # a worker holds it until lease_until
    BOOKED = "booked"          # the back office has it; reference recorded
    PARKED = "parked"          # waits for a person or another event
    DEAD = "dead"              # permanent error or attempts exhausted; replayable
    SUPERSEDED = "superseded"  # a newer version of the order replaced it before it ran


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("order_version_id", "connector_id", name="uq_deliveries_version_connector"),
        Index("ix_deliveries_due", "connector_id", "status", "next_attempt_at"),
        Index("ix_deliveries_order", "order_id", "connector_id"),
        Index("ix_deliveries_parked", "connector_id", "parked_kind", "parked_key"),
        Index("ix_deliveries_status_updated", "status", "updated_at"),
        Index("ix_deliveries_reference", "reference"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    order_version_id: Mapped[str] = mapped_column(ForeignKey("order_versions.id", ondelete="CASCADE"))
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(16), default="create")
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    booked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Why a parked delivery waits ("missing mapping", "identity review") and for which
    # link (kind, key): adding that link resumes it.
    parked_reason: Mapped[str | None] = mapped_column(String(32))
    parked_kind: Mapped[str | None] = mapped_column(String(16))
    parked_key: Mapped[str | None] = mapped_column(String(255))
    # Deliveries with the same key (one customer) are never pushed to one connector at once,
    # so two first orders of a new customer cannot create it twice. None: the order alone.
    serial_key: Mapped[str | None] = mapped_column(String(64))

    # Never loaded; declared so the unit of work inserts versions before their deliveries.
    version = relationship("OrderVersion", lazy="raise", viewonly=False)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"
    __table_args__ = (Index("ix_delivery_attempts_delivery", "delivery_id", "started_at"),
                      Index("ix_delivery_attempts_started", "started_at"))  # retention

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
