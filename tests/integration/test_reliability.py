"""The invariants of DESIGN.md under faults: nothing acknowledged is lost, nothing booked twice."""

from __future__ import annotations

import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import order, wait_until

from broker.models import Delivery, DeliveryAttempt, DeliveryStatus, InboundEvent, Order
from broker.services.operations import replay_order


def _booked(stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED)


def _setup(stack, sink, source="shop", connector="erp"):
    secret = stack.source(source)
    stack.http_connector(connector, sink.url + "/orders")
    stack.route(source, connector)
    return secret


def test_back_office_503_then_200_books_after_retry(any_stack, sink):
    stack = any_stack
    secret = _setup(stack, sink)
    sink.script([(503, {"Retry-After": "1"}, b"busy"), (503, {}, b"still busy")])
    stack.start_worker()
    assert stack.webhook("shop", secret, order("2001"))[0] == 202
    wait_until(lambda: _booked(stack) == 1, message="booking after retries")
    assert sink.creates["2001"] == 1
    assert '"level": "ERROR"' not in stack.worker_logs()
    assert stack.count(DeliveryAttempt) == 3
    detail = stack.cli("orders", "show", stack.cli("orders", "list", "--json")[0]["id"], "--json")
    assert [t["step"] for t in detail["timeline"]].count("retry") == 2


def test_back_office_422_dead_letters_then_replay_books_once(any_stack, sink):
    stack = any_stack
    secret = _setup(stack, sink)
    sink.script([(422, {"Content-Type": "application/json"}, b'{"error":"unknown SKU SKU-001"}')])
    stack.start_worker()
    stack.webhook("shop", secret, order("2002"))
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 1,
               message="dead letter")
    with stack.runtime.db.begin() as session:
        dead = session.query(Delivery).one()
        order_id = dead.order_id
    assert dead.attempts == 1
    assert "422" in dead.last_error and "unknown SKU SKU-001" in dead.last_error
    assert sink.creates["2002"] == 0
    stack.runtime.publisher.wake(replay_order(stack.runtime.db, order_id))
    wait_until(lambda: _booked(stack) == 1, message="booking after replay")
    assert sink.creates["2002"] == 1
    assert stack.count(DeliveryAttempt) == 2
    assert '"level": "ERROR"' not in stack.worker_logs()


def test_duplicate_webhook_storm_books_each_order_once(any_stack, sink):
    stack = any_stack
    secret = _setup(stack, sink)
    stack.serve()
    stack.start_worker()
    orders = [order(f"30{i:02d}") for i in range(60)]
    jobs = [(doc, f"msg_storm_{doc['external_id']}") for doc in orders for _ in range(3)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda job: stack.webhook("shop", secret, job[0], msg_id=job[1]),
                                jobs))
    statuses = [status for status, _ in answers]
    assert all(s in (200, 202) for s in statuses), statuses
    assert statuses.count(202) == 60
    wait_until(lambda: _booked(stack) == 60, timeout=90, message="60 bookings")
    assert stack.count(InboundEvent) == 60 and stack.count(Order) == 60
    assert len(sink.records) == 60 and max(sink.creates.values()) == 1
    assert '"level": "ERROR"' not in stack.worker_logs()


def test_worker_kill_9_during_deliveries_loses_nothing_and_books_nothing_twice(scaled_stack, sink):
    stack = scaled_stack
    secret = _setup(stack, sink)
    sink.delay(0.02)
    total = 150
    for i in range(total):
        assert stack.webhook("shop", secret, order(f"40{i:03d}"))[0] == 202
    for kills in range(2):
        stack.start_worker()
        target = (kills + 1) * 30
        wait_until(lambda t=target: len(sink.records) >= t, timeout=90, message=f"{target} records")
        stack.kill_workers(signal.SIGKILL)
    stack.start_worker()
    wait_until(lambda: _booked(stack) == total, timeout=120, message="all bookings after kills")
    assert len(sink.records) == total
    assert max(sink.creates.values()) == 1, "an order was created twice in the back office"


def test_purged_queue_still_delivers_everything_through_the_sweeper(any_stack, sink):
    stack = any_stack
    secret = _setup(stack, sink)
    for i in range(20):
        stack.webhook("shop", secret, order(f"50{i:02d}"))
    purged = stack.runtime.publisher.celery.control.purge()
    assert purged >= 1, "the wake-up messages should have been in the queue"  # coalesced: <= 20
    stack.start_worker(beat=True)
    wait_until(lambda: _booked(stack) == 20, timeout=90, message="sweeper-driven bookings")
    assert max(sink.creates.values()) == 1


def test_one_order_fans_out_to_every_matching_route(stack, sink):
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.http_connector("warehouse", sink.url + "/orders")
    stack.http_connector("eu-ledger", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.route("shop", "warehouse", "--tag", "vip")
    stack.route("shop", "eu-ledger", "--currency", "EUR")
    stack.start_worker()
    stack.webhook("shop", secret, order("6001"))          # USD, tagged vip
    wait_until(lambda: _booked(stack) == 2, message="fan-out")
    with stack.runtime.db.begin() as session:
        names = sorted(d.connector_id for d in session.query(Delivery))
    assert len(names) == 2
    assert stack.count(Delivery) == 2  # no delivery for the EUR-only route


def test_out_of_order_versions_end_in_the_newest_state(stack, sink):
    secret = _setup(stack, sink)
    newer = order("7001", status="cancelled", updated_at="2026-11-20T15:00:00Z")
    older = order("7001", updated_at="2026-11-20T14:05:00Z")
    stack.webhook("shop", secret, newer)
    stack.webhook("shop", secret, older)
    stack.start_worker()
    wait_until(lambda: stack.count(InboundEvent, InboundEvent.status == "normalised") == 2,
               message="normalisation")
    wait_until(lambda: _booked(stack) >= 1, message="booking")
    with stack.runtime.db.begin() as session:
        final = session.query(Order).one()
    assert final.status == "cancelled"
    wait_until(lambda: stack.count(Delivery, Delivery.status.in_(["pending", "leased"])) == 0,
               message="no delivery left to run")
    assert sink.records["7001"]["order"]["status"] == "cancelled"
    assert sink.creates["7001"] == 1


@pytest.mark.parametrize("kills", [1])
def test_embedded_broker_up_survives_kill_9_and_restart(tmp_path, sink, kills):
    """T28: the one-command embedded broker, killed mid-delivery, books everything once."""
    import os
    import subprocess
    import sys

    from harness import TEST_KEY, free_port

    port = free_port()
    env = {**os.environ, "BROKER_DATA_DIR": str(tmp_path), "BROKER_BIND": f"127.0.0.1:{port}",
           "BROKER_SECRET_KEYS": TEST_KEY, "BROKER_SWEEP_INTERVAL": "1",
           "BROKER_LEASE_SECONDS": "5", "BROKER_RETRY_BASE": "0.3",
           "BROKER_ALLOW_PRIVATE_NETWORKS": "true"}  # the fake ERP is on loopback

    def broker(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "broker.cli", *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def up() -> subprocess.Popen[bytes]:
        log = open(tmp_path / "up.log", "ab")  # noqa: SIM115
        return subprocess.Popen([sys.executable, "-m", "broker.cli", "up"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    broker("db", "upgrade")
    import json

    secret = json.loads(broker("sources", "add", "shop", "--kind", "standard-webhooks",
                               "--json"))["secret"]
    broker("connectors", "add", "erp", "--kind", "http", "--config",
           json.dumps({"url": sink.url + "/orders", "timeout": 5}))
    broker("routes", "add", "--source", "shop", "--connector", "erp")
    sink.delay(0.05)
    proc = up()
    import urllib.request

    def ready() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait_until(ready, timeout=60, message="broker up")
    from harness import Stack

    sender = Stack.__new__(Stack)
    sender.base_url = f"http://127.0.0.1:{port}"
    total = 60
    for i in range(total):
        assert sender.webhook("shop", secret, order(f"80{i:02d}"))[0] == 202
    wait_until(lambda: len(sink.records) >= 10, timeout=60, message="first bookings")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc = up()
    try:
        wait_until(lambda: len(sink.records) == total, timeout=120, message="all bookings")
        booked = json.loads(broker("orders", "list", "--limit", "200", "--json"))
        assert len(booked) == total
        assert max(sink.creates.values()) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    assert "stopped" in (tmp_path / "up.log").read_text()


def test_an_unrouted_order_is_routed_by_a_replay_after_the_route_is_added(stack, sink):
    from broker.services.intake import normalise_event

    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    _, body = stack.webhook("shop", secret, order("9001"))
    result = normalise_event(stack.runtime.db, body["event_id"])
    order_id = result.outcomes[0].order_id
    assert result.wake == [] and stack.count(Delivery) == 0
    detail = stack.cli("orders", "show", order_id, "--json")
    assert detail["timeline"][-1]["step"] == "unrouted"
    stack.route("shop", "erp")
    wake = replay_order(stack.runtime.db, order_id)
    assert len(wake) == 1 and stack.count(Delivery) == 1
    stack.start_worker()
    stack.runtime.publisher.wake(wake)
    wait_until(lambda: _booked(stack) == 1, message="booking after the route was added")


def test_an_event_that_breaks_normalisation_does_not_hold_up_its_batch(db_stack, caplog):
    from broker.models import InboundEvent, Source
    from broker.services.intake import MAX_NORMALISE_ATTEMPTS, normalise_pending

    stack = db_stack
    good, broken = stack.source("good"), stack.source("broken")
    stack.webhook("good", good, order("B1"))
    stack.webhook("broken", broken, order("B2"))
    with stack.runtime.db.begin() as session:  # a channel plugin uninstalled after the fact
        session.query(Source).filter_by(name="broken").update({"kind": "uninstalled-plugin"})
    results = normalise_pending(stack.runtime.db, limit=10)
    assert [r.status for r in results] == ["normalised"]
    assert stack.count(InboundEvent, InboundEvent.status == "received") == 1
    # From then on it is retried alone: it never rolls back a batch of new events again
    stack.webhook("good", good, order("B3"))
    stack.webhook("good", good, order("B4"))
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="broker.services.intake"):
        results = normalise_pending(stack.runtime.db, limit=10)
    assert sorted(r.status for r in results) == ["normalised", "normalised"]
    assert not [r for r in caplog.records if "batch of" in r.getMessage()], caplog.text
    for _ in range(MAX_NORMALISE_ATTEMPTS - 2):
        normalise_pending(stack.runtime.db, limit=10)
    with stack.runtime.db.begin() as session:
        stuck = session.query(InboundEvent).filter_by(status="rejected").one()
    assert "internal error" in stuck.error and stuck.attempts == MAX_NORMALISE_ATTEMPTS
