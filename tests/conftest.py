"""Fixtures: a broker stack on each database/queue pair, and the fake back office."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.sink import Sink
from harness import Stack

STACKS = {
    "embedded": ("sqlite", "embedded"),
    "pg-redis": ("postgresql", "redis"),
    "pg-rabbitmq": ("postgresql", "rabbitmq"),
    "mariadb-redis": ("mariadb", "redis"),
}


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as fake:
        yield fake


def _stack(tmp_path: Path, name: str) -> Iterator[Stack]:
    database, queue = STACKS[name]
    stack = Stack(tmp_path, database, queue)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The embedded default (SQLite + SQLAlchemy queue): no server needed."""
    yield from _stack(tmp_path, "embedded")


@pytest.fixture(params=["embedded", "pg-redis", "pg-rabbitmq"])
def any_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Each supported deployment: embedded, PostgreSQL + Redis, PostgreSQL + RabbitMQ."""
    yield from _stack(tmp_path, request.param)


@pytest.fixture(params=["pg-redis", "pg-rabbitmq"])
def scaled_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(tmp_path, request.param)


@pytest.fixture(params=["embedded", "pg-redis", "mariadb-redis"])
def db_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Each database (workers not started): SQLite, PostgreSQL, MariaDB."""
    yield from _stack(tmp_path, request.param)
