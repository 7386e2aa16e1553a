"""Fixtures: a broker stack on each database/queue pair, and the fake back office."""

from __future__ import annotations

import os
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


# Left out of the fast tier (`python -m pytest -m "not slow"`), with why: each of these waits on
# real time (token expiries, leases after kill -9, retries), starts real servers (trytond, the
# OpenID provider, Chromium, gunicorn) or pushes dozens of orders. CI runs them all. A test may
# also carry @pytest.mark.slow itself.
SLOW = (
    "tests/browser/",                                      # Chromium
    "tests/integration/test_custody.py",                   # real access-token expiries
    "tests/integration/test_tryton_pipeline.py",           # trytond + workers
    "tests/integration/test_contract_tryton.py",           # trytond (test_tryton_connector stays)
    "tests/integration/test_admin_api.py::test_schema_driven_requests",  # schemathesis
    "tests/integration/test_reliability.py::test_worker_kill_9",
    "tests/integration/test_reliability.py::test_embedded_broker_up_survives",
    "tests/integration/test_reliability.py::test_purged_queue",
    "tests/integration/test_reliability.py::test_duplicate_webhook_storm",
    "tests/integration/test_reliability.py::test_back_office_503",
    "tests/integration/test_pipeline.py::test_connectors_created_while",
    "tests/integration/test_observability.py::test_metrics_add_up",
    "tests/integration/test_channel_lifecycle.py::test_channel_api_outage",
    "tests/integration/test_channel_lifecycle.py::test_scheduled_catch_up",
    "tests/integration/test_channel_matrix.py::test_webhook_and_catch_up",
    "tests/integration/test_oauth_tokens.py::test_rotation_keeps_old_tokens",
    "tests/integration/test_safe_defaults.py::test_gunicorn_answers",  # a real gunicorn
    "tests/unit/test_settings.py::test_gateway_and_worker_refuse",     # gunicorn and celery start
    "tests/integration/test_beat_lease.py::test_two_beats_one_publishes",  # beats, kill -9
    "tests/integration/test_graceful_stop.py",             # two workers, SIGTERM mid-batch
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(SLOW):
            item.add_marker(pytest.mark.slow)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A run with Tryton tests starts building Tryton's database at once (backoffice/tryton.py)."""
    if any("tryton" in item.nodeid for item in session.items):
        from backoffice.tryton import prepare_in_background

        prepare_in_background()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one test process per core, at most three (each test may start broker workers,
    a gateway and back offices of its own; more would only queue for the CPU and the databases)."""
    return max(1, min(3, os.cpu_count() or 1))


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


@pytest.fixture(params=sorted(STACKS))
def every_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Every database/queue pair, MariaDB + Redis included, with workers."""
    yield from _stack(tmp_path, request.param)


@pytest.fixture(params=["pg-redis", "pg-rabbitmq"])
def scaled_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    yield from _stack(tmp_path, request.param)


@pytest.fixture(params=["embedded", "pg-redis", "mariadb-redis"])
def db_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """Each database (workers not started): SQLite, PostgreSQL, MariaDB."""
    yield from _stack(tmp_path, request.param)
