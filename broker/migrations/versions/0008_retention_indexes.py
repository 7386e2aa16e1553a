"""indexes the retention purge walks, oldest first: versions, attempts, timeline

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_order_versions_created", "order_versions", ["created_at"])
    op.create_index("ix_delivery_attempts_started", "delivery_attempts", ["started_at"])
    op.create_index("ix_timeline_at", "timeline", ["at"])


def downgrade() -> None:
    op.drop_index("ix_timeline_at", table_name="timeline")
    op.drop_index("ix_delivery_attempts_started", table_name="delivery_attempts")
    op.drop_index("ix_order_versions_created", table_name="order_versions")
