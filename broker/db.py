"""Database access shared by the gateway and the workers (no Flask import).

SQLite gets WAL, FULL sync and BEGIN IMMEDIATE so the embedded default is as durable as a
server; PostgreSQL and MariaDB run in UTC with pre-ping so restarts are survived.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, create_engine, event, select
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator


def new_id() -> str:
    """Time-ordered opaque id: 48-bit milliseconds + 80 random bits, 32 hex characters."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(10)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in Python on every backend (SQLite and MariaDB store naive UTC)."""

    impl = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class db_clock(FunctionElement):
    """The database's own UTC clock, so leases agree across hosts."""

    type = UTCDateTime()
    inherit_cache = True


@compiles(db_clock, "postgresql")
def _pg_clock(element: Any, compiler: Any, **kw: Any) -> str:
    return "clock_timestamp()"


@compiles(db_clock, "mysql")
@compiles(db_clock, "mariadb")
def _my_clock(element: Any, compiler: Any, **kw: Any) -> str:
    return "UTC_TIMESTAMP(6)"


@compiles(db_clock, "sqlite")
def _sqlite_clock(element: Any, compiler: Any, **kw: Any) -> str:
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class Base(DeclarativeBase):
    pass


def _prepare_sqlite(engine: Engine, path: str | None) -> None:
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=10000",
                       "foreign_keys=ON"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: deferred BEGIN + later write = SQLITE_BUSY deadlocks.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kw: Any) -> Engine:
    """Create an engine with the reliability settings of RELIABILITY.md §4d."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"pool_pre_ping": backend == "sqlite", "future": True}
    if backend == "sqlite":
        options["connect_args"] = {"timeout": 10, "check_same_thread": False}
    else:
        options["pool_recycle"] = 1800
        # Sized for a gevent gateway (many requests per process): overflow connections are
        # closed on return, and reconnect churn cost more than the idle connections.
        options["pool_size"] = kw.pop("pool_size", 20)
        options["max_overflow"] = kw.pop("max_overflow", 10)
    if backend == "postgresql":
        options["connect_args"] = {"options": "-c timezone=UTC -c statement_timeout=30000 "
                                              "-c idle_in_transaction_session_timeout=60000"}
    if backend in ("mysql", "mariadb"):
        options["isolation_level"] = "READ COMMITTED"
        options["connect_args"] = {"init_command": "SET time_zone = '+00:00'", "charset": "utf8mb4"}
    options.update(kw)
    engine = create_engine(parsed, **options)
    if backend == "sqlite":
        _prepare_sqlite(engine, parsed.database)
    else:
        _ping_idle_connections(engine)
    return engine


PING_AFTER_IDLE = 5.0


def _ping_idle_connections(engine: Engine) -> None:
    """Pessimistic disconnect handling, but only for connections idle a while.

    SQLAlchemy's pool_pre_ping pings on every checkout: a quarter of a webhook's database
    round trips. A connection used within the last PING_AFTER_IDLE seconds is handed out as
    is; an older one is pinged and, if dead, replaced before anyone sees it (the pattern of
    SQLAlchemy's "Disconnect Handling - Pessimistic" docs).
    """

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < PING_AFTER_IDLE:
            return
        try:
            cursor = dbapi_conn.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_conn.rollback()
        except Exception as exc:
            raise DisconnectionError(f"stale connection: {exc}") from exc


class Database:
    """An engine and its session factory; one per process."""

    def __init__(self, url: str, **engine_kw: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kw)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on error."""
        with self.sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


@lru_cache(maxsize=64)
def _insert_ignore_statement(table: Table, dialect: str) -> Any:
    """Built once per table and dialect: constructing it per call cost more than running it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql  # imported when used: the CLI starts faster

        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()
    # MariaDB: a no-op update instead of INSERT IGNORE, which would hide other errors
    return mysql.insert(table).on_duplicate_key_update(id=table.c.id)


def insert_ignore(session: Session | Connection, model: type[Base], values: dict[str, Any],
                  unique: tuple[str, ...]) -> tuple[bool, str]:
    """Insert a row unless its unique key exists; return (inserted, id of the row).

    Deduplication by the unique constraint, never by a prior look-up, so concurrent
    duplicates cannot both win.
    """
    table = model.__table__
    dialect = (session.get_bind() if isinstance(session, Session) else session).dialect.name
    values = {"id": new_id(), **values}
    result = session.execute(_insert_ignore_statement(table, dialect), values)
    if dialect not in ("mysql", "mariadb") and result.rowcount == 1:
        return True, values["id"]
    where = [table.c[name] == values[name] for name in unique]
    existing = session.execute(select(table.c.id).where(*where)).scalar_one()
    return existing == values["id"], existing
