"""Leases: which one of several like processes acts (the sweeper's beat), with a fencing token."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.db import Base, UTCDateTime


class Lease(Base):
    """One row per lease: its holder, until when (database clock), and a token that grows at
    every takeover, so work published under an older token can be told apart and refused."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    token: Mapped[int] = mapped_column(BigInteger)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The last time work was done under the lease (a sweep), and how many times: what
    # "the sweeper is absent" alerts and the takeover tests read.
    last_act_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acts: Mapped[int] = mapped_column(BigInteger, default=0)
