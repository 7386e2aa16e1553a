"""The embedded queue: kombu's SQLAlchemy transport on SQLite, tuned for the one-host default.

kombu polls this transport; its default one-second poll capped the embedded broker at about
two messages a second (prefetch 1 x 2 processes), so poll every 50 ms and use WAL so the
gateway's inserts and the worker's polls do not block each other.

A channel's SQLAlchemy session is not thread-safe, yet this transport has no event loop: the
worker's timer (which subscribes to the queue of a connector created meanwhile,
workers/celery.py) runs in its own thread while the consumer polls. Every method that uses
the session therefore holds the channel's lock; without it the two threads broke the session
(IllegalStateChangeError) and the worker stopped taking messages.

Declaring a queue is not safe across processes in kombu (its `_get_or_create` looks, then
inserts, under a lock of its own process only, and handles OperationalError but not
IntegrityError): when the gateway and a worker declare a new connector's queue at the same
moment, the loser's insert fails on the unique name and its session is left needing a
rollback, which stopped the worker ("Unrecoverable error: PendingRollbackError"). The loser
rolls back and reads the winner's row. Creating kombu's tables has the same race when the
gateway and the workers start together ("table kombu_queue already exists"): the loser looks
again and finds them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from typing import Any

from kombu.transport import sqlalchemy as sqla
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, OperationalError


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(method)
    def call(self: Channel, *args: Any, **kwargs: Any) -> Any:
        with self._session_lock:
            return method(self, *args, **kwargs)

    return call


class Channel(sqla.Channel):
    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._session_lock = threading.RLock()
        super().__init__(connection, **kwargs)

    def _open(self) -> Any:
        for attempt in range(3):
            try:
                return super()._open()
            except OperationalError as exc:  # another process created the tables just now
                if "already exists" not in str(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @_locked
    def _get_or_create(self, queue: str) -> Any:
        try:
            return super()._get_or_create(queue)
        except IntegrityError:  # another process declared it between our look and our insert
            self.session.rollback()
            return self.session.query(self.queue_cls).filter(self.queue_cls.name == queue).one()

    _new_queue = _locked(sqla.Channel._new_queue)
    _put = _locked(sqla.Channel._put)
    _get = _locked(sqla.Channel._get)
    _query_all = _locked(sqla.Channel._query_all)
    _purge = _locked(sqla.Channel._purge)
    _size = _locked(sqla.Channel._size)
    close = _locked(sqla.Channel.close)

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
