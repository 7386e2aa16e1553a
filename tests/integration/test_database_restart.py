"""T23-lite: connections the database dropped are replaced before a request sees them."""

from __future__ import annotations

from harness import order
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from broker import db as broker_db
from broker.models import InboundEvent


def test_webhooks_survive_the_database_killing_every_connection(tmp_path, monkeypatch):
    from harness import Stack

    stack = Stack(tmp_path, "postgresql", "redis")
    try:
        secret = stack.source("shop")
        assert stack.webhook("shop", secret, order("R1"))[0] == 202
        monkeypatch.setattr(broker_db, "PING_AFTER_IDLE", 0.0)
        engine = stack.runtime.db.engine
        pooled = [engine.connect() for _ in range(3)]
        for conn in pooled:
            conn.close()  # back to the pool, still open
        killer = create_engine(stack.db_url, poolclass=NullPool)
        with killer.connect() as conn:  # what a PostgreSQL restart does to pooled connections
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        killer.dispose()
        assert killed >= 3
        assert stack.webhook("shop", secret, order("R2"))[0] == 202
        assert stack.count(InboundEvent) == 2
    finally:
        stack.close()
