"""Fixtures: a broker stack on each database/queue pair, and the fake back office."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import harness
import pytest
from fakes.sink import Sink
from harness import Stack

from connectors import ssrf

STACKS = {
    "embedded": ("sqlite", "embedded"),
    "pg-redis": ("postgresql", "redis"),
    "pg-rabbitmq": ("postgresql", "rabbitmq"),
    "mariadb-redis": ("mariadb", "redis"),
}


@pytest.fixture(scope="session", autouse=True)
def _private_networks_allowed() -> Iterator[None]:
    """Every fake listens on loopback: allow private networks in-process (SSRF tests opt out)."""
    with ssrf.policy(allow_private=True):
        yield


@pytest.fixture(scope="session", autouse=True)
def _test_servers_tidied() -> Iterator[None]:
    """The RabbitMQ vhosts the stacks used are deleted together, once, at the end; the
    databases they made are dropped in the background meanwhile."""
    yield
    harness.drop_vhosts()
    harness.finish_drops()


@pytest.fixture(autouse=True)
def _ssrf_policy_restored() -> Iterator[None]:
    """A Runtime built by a test re-applies its settings' policy; restore ours afterwards."""
    previous = ssrf.private_allowed()
    yield
    ssrf.configure(allow_private=previous)


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
