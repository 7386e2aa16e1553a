"""leases with fencing tokens: one beat of many publishes the sweeps

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import broker.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("acquired_at", broker.db.UTCDateTime(), nullable=False),
        sa.Column("renewed_at", broker.db.UTCDateTime(), nullable=False),
        sa.Column("expires_at", broker.db.UTCDateTime(), nullable=False),
        sa.Column("last_act_at", broker.db.UTCDateTime(), nullable=True),
        sa.Column("acts", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leases")
