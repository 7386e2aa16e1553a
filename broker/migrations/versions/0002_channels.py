"""channels: enrichment backoff, parked thin events, channel API credentials, catch-up state

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

import broker.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BLOB = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mariadb").with_variant(mysql.LONGBLOB(), "mysql")


def upgrade() -> None:
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", broker.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("waiting_for", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("fetched", BLOB, nullable=True))
        batch_op.create_index("ix_inbound_events_waiting", ["source_id", "waiting_for"], unique=False)
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("credentials_encrypted", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("catchup_since", broker.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("catchup_at", broker.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("catchup_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        for column in ("catchup_error", "catchup_at", "catchup_since", "credentials_encrypted"):
            batch_op.drop_column(column)
    with op.batch_alter_table("inbound_events", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_events_waiting")
        for column in ("fetched", "waiting_for", "next_attempt_at"):
            batch_op.drop_column(column)
