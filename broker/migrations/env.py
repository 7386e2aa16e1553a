"""Alembic environment: runs against the engine of the configured database URL."""

from __future__ import annotations

from alembic import context

from broker.db import Base, make_engine
from broker.models import *  # noqa: F403  (registers every table on Base.metadata)

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
