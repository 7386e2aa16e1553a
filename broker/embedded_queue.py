"""The embedded queue: kombu's SQLAlchemy transport on SQLite, tuned for the one-host default.

kombu polls this transport; its default one-second poll capped the embedded broker at about
two messages a second (prefetch 1 x 2 processes), so poll every 50 ms and use WAL so the
gateway's inserts and the worker's polls do not block each other.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import sqlalchemy as sqla
from sqlalchemy import event


class Channel(sqla.Channel):
    def _engine_from_config(self) -> Any:
        engine = super()._engine_from_config()
        if engine.dialect.name == "sqlite":

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()

        return engine


class Transport(sqla.Transport):
    Channel = Channel
    polling_interval = 0.05
