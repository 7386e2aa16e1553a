"""Health, Prometheus metrics across gunicorn workers, and JSON logs with the order id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

from harness import TEST_KEY, Stack, free_port, order, wait_until

from broker.app import build_app
from broker.settings import load_settings


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_add_up_across_gunicorn_workers(tmp_path):
    port = free_port()
    env = {**os.environ, "BROKER_DATA_DIR": str(tmp_path), "BROKER_SECRET_KEYS": TEST_KEY,
           "BROKER_BIND": f"127.0.0.1:{port}", "BROKER_LOG_LEVEL": "WARNING"}
    broker = [sys.executable, "-m", "broker.cli"]
    subprocess.run([*broker, "db", "upgrade"], env=env, check=True, capture_output=True)
    secret = json.loads(subprocess.run([*broker, "sources", "add", "shop", "--kind",
                                        "standard-webhooks", "--json"], env=env, check=True,
                                       capture_output=True).stdout)["secret"]
    server = subprocess.Popen([*broker, "serve", "--workers", "2", "--worker-class", "sync"],
                              env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"

        def get(path: str) -> str:
            with urllib.request.urlopen(base + path, timeout=5) as response:
                return response.read().decode()

        def alive() -> bool:
            try:
                return '"ok"' in get("/healthz")
            except OSError:
                return False

        wait_until(alive, timeout=60, message="gunicorn")
        sender = Stack.__new__(Stack)
        sender.base_url = base
        for i in range(20):
            assert sender.webhook("shop", secret, order(f"M{i}"))[0] == 202
        scrapes = [get("/metrics") for _ in range(6)]
        for text in scrapes:
            assert _metric(text, "broker_orders_received_total",
                           source="shop", outcome="accepted") == 20
            assert "broker_oldest_due_delivery_age_seconds" in text
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_readyz_reports_a_queue_that_is_down(tmp_path):
    settings = load_settings({"BROKER_DATA_DIR": str(tmp_path), "BROKER_SECRET_KEYS": TEST_KEY,
                              "BROKER_QUEUE_URL": "redis://127.0.0.1:1/0"})
    from broker.cli import upgrade_database

    upgrade_database(settings)
    client = build_app(settings, configure_logging=False).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["database"] == "ok"
    assert response.json["checks"]["queue"].startswith("down")
    assert client.get("/healthz").status_code == 200


def test_worker_logs_are_json_with_the_order_id_as_correlation_id(stack, sink):
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.start_worker()
    stack.webhook("shop", secret, order("L1"))
    order_id = wait_until(lambda: (stack.cli("orders", "list", "--json") or [{}])[0].get("id"),
                          message="order")
    wait_until(lambda: "booked in erp" in stack.worker_logs(), message="booking log line")
    records = [json.loads(line) for line in stack.worker_logs().splitlines()
               if line.startswith("{")]
    booked = [r for r in records if r["message"].startswith("booked in erp")]
    assert booked and booked[0]["order_id"] == order_id
    assert {"time", "level", "logger", "message"} <= set(booked[0])
    assert secret not in stack.worker_logs()


def test_webhooks_are_acknowledged_while_the_queue_is_down(tmp_path):
    """T19: the database commit is the acknowledgement; a dead queue only delays the work."""
    from broker.models import InboundEvent

    stack = Stack(tmp_path, "sqlite", "embedded")
    try:
        stack.runtime.settings = stack.settings.replace(queue_url="redis://127.0.0.1:1/0")
        stack.runtime.__dict__.pop("publisher", None)
        celery = stack.runtime.publisher.celery
        attempts = []
        send_task = celery.send_task
        celery.send_task = lambda *a, **kw: attempts.append(a) or send_task(*a, **kw)
        secret = stack.source("shop")
        for i in range(10):
            assert stack.webhook("shop", secret, order(f"Q{i}"))[0] == 202
        assert stack.count(InboundEvent) == 10
        assert len(attempts) == 1, "after one failed publish the gateway must stop waiting on the queue"
    finally:
        stack.close()
