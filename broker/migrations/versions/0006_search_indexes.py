"""indexes for order search and the admin API

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = [
    ("orders", "ix_orders_external_id", ["external_id"]),
    ("orders", "ix_orders_source_id", ["source_id", "id"]),
    ("orders", "ix_orders_status_id", ["status", "id"]),
    ("deliveries", "ix_deliveries_reference", ["reference"]),
    ("inbound_events", "ix_inbound_events_order", ["order_id"]),
]


def upgrade() -> None:
    for table, name, columns in INDEXES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    for table, name, _ in reversed(INDEXES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(name)
