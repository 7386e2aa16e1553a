"""identity links, parked-delivery reasons, an index for the sweeper's status scans

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import broker.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_links",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("connector_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("created_at", broker.db.UTCDateTime(), nullable=False),
        sa.Column("updated_at", broker.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["connector_id"], ["connectors.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("connector_id", "kind", "key", name="uq_identity_links_key"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parked_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("parked_kind", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("parked_key", sa.String(length=255), nullable=True))
        batch_op.create_index("ix_deliveries_parked", ["connector_id", "parked_kind", "parked_key"],
                              unique=False)
        batch_op.create_index("ix_deliveries_status_updated", ["status", "updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_status_updated")
        batch_op.drop_index("ix_deliveries_parked")
        for column in ("parked_key", "parked_kind", "parked_reason"):
            batch_op.drop_column(column)
    op.drop_table("identity_links")
