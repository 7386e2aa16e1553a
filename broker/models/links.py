"""Identity links: a front-office key and its counterpart in one connector's back office."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from broker.db import Base, UTCDateTime, new_id, utcnow


class IdentityLink(Base):
    """customer anchor → party, SKU → product, tax/shipping/payment name → back-office id.

    `origin` says who made it: "learned" (a connector booked with it) or "admin" (a person
    mapped it, which also resumes the deliveries parked for it).
    """

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("connector_id", "kind", "key", name="uq_identity_links_key"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    value: Mapped[str] = mapped_column(String(255))
    origin: Mapped[str] = mapped_column(String(16), default="admin")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
