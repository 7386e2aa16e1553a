"""The deployment kit's topology (deploy/compose.yaml, deploy/kubernetes, deploy/systemd) with
real processes on one machine: the migrations as a one-shot `broker db upgrade`, two gateways
(`broker serve`), two workers on separate queues (connector A's; connector B's and the broker
queue), one `broker beat`, on PostgreSQL + Redis. Orders sent through both gateways are booked
once at each back office (the first push to A fails and is retried), and each worker consumes
exactly the queues it was given."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.sink import Sink
from harness import Stack, free_port, order, wait_until

from broker.models import Delivery, DeliveryStatus


@pytest.fixture
def empty_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, "postgresql", "redis", migrate=False)
    try:
        yield stack
    finally:
        stack.close()


def _healthcheck_command() -> list[str]:
    """deploy/Dockerfile's HEALTHCHECK command, run here with this interpreter."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile").read_text()
    found = re.search(r"^HEALTHCHECK .*?CMD (\[.*?\])$", text.replace("\\\n", " "), re.M | re.S)
    assert found, "no HEALTHCHECK CMD in deploy/Dockerfile"
    command = json.loads(found.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def _db_check(stack: Stack) -> int:
    return stack.app.test_cli_runner().invoke(args=["broker", "db", "check"]).exit_code


@pytest.mark.slow  # migrate, 2 gateways, 2 workers and a beat: ~15-30 s
def test_compose_topology_with_real_processes(empty_stack: Stack) -> None:
    stack = empty_stack
    assert _db_check(stack) == 1  # what the pods' init containers wait on
    migrate = stack.run_broker("db", "upgrade")  # the one-shot, as a process of its own
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert _db_check(stack) == 0

    with Sink() as back_a, Sink() as back_b:
        secret = stack.source("shop")
        stack.http_connector("a", back_a.url + "/orders")
        stack.http_connector("b", back_b.url + "/orders")
        stack.route("shop", "a")
        stack.route("shop", "b")

        # every process starts at once, as compose starts them after the migrations;
        # worker-0.log: connector A's queue; worker-1.log: connector B's and the broker queue
        processes = [stack.start_worker(beat=False, concurrency=1, queues="connector.a", wait=False),
                     stack.start_worker(beat=False, concurrency=1, queues="connector.b,broker",
                                        wait=False),
                     stack.start_broker("beat", "beat")]
        gateways = [stack.start_gateway(f"gateway-{n}", wait=False) for n in (1, 2)]
        for proc in [*processes, *(proc for _, proc in gateways)]:
            stack.wait_started(proc)

        # the image's HEALTHCHECK command passes against a gateway and fails without one
        healthcheck = _healthcheck_command()
        port = gateways[0][0].rsplit(":", 1)[1]
        assert subprocess.run(healthcheck, env={**os.environ, "BROKER_BIND": f"0.0.0.0:{port}"},
                              capture_output=True, timeout=30).returncode == 0
        assert subprocess.run(healthcheck, env={**os.environ, "BROKER_BIND": f"0.0.0.0:{free_port()}"},
                              capture_output=True, timeout=30).returncode != 0

        ids = [f"T-{secrets.token_hex(3)}-{n}" for n in range(6)]
        for n, external_id in enumerate(ids):
            stack.base_url = gateways[n % 2][0]  # a load balancer's round robin
            status, body = stack.webhook("shop", secret, order(external_id))
            assert status == 202, body
        assert back_b.wait_for(len(ids), timeout=60), stack.worker_logs()[-3000:]
        assert back_a.wait_for(len(ids), timeout=60), stack.worker_logs()[-3000:]

        # A's next push fails: nothing wakes connector A again but the beat's sweep
        back_a.script([(503, {"Content-Type": "application/json"}, b'{"error": "busy"}')])
        ids.append(f"T-{secrets.token_hex(3)}-retried")
        assert stack.webhook("shop", secret, order(ids[-1]))[0] == 202
        assert back_a.wait_for(len(ids), timeout=60), stack.worker_logs()[-3000:]
        assert back_b.wait_for(len(ids), timeout=60)
        wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 2 * len(ids),
                   timeout=60, message="every delivery recorded as booked")
        assert all(p.poll() is None for p in stack.workers)  # every process still up

    expected = {external_id: 1 for external_id in ids}
    assert dict(back_a.creates) == expected  # booked once, the retried one too
    assert dict(back_b.creates) == expected
    assert stack.count(Delivery) == 2 * len(ids)
    # the beat's sweep (run by B's worker, which has the broker queue) woke connector A
    assert re.search(r"sweep re-enqueued \d+ events and [1-9]\d* connectors",
                     (stack.tmp / "worker-1.log").read_text())

    # each worker consumes only its queues (asked of the running workers, after the connectors
    # were created: no worker added another connector's queue by itself)
    consumed = stack.runtime.publisher.celery.control.inspect(timeout=5).active_queues() or {}
    by_worker = {name.split("-")[0]: sorted(q["name"] for q in queues) for name, queues in consumed.items()}
    assert by_worker == {"w0": ["connector.a"], "w1": ["broker", "connector.b"]}
