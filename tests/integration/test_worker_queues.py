"""Dedicated workers: `--queues` is honoured, so a worker given only some queues never takes
another back office's deliveries (and a slow one cannot hold it)."""

from __future__ import annotations

import time

from harness import Stack, order, wait_until

from broker.models import Delivery, DeliveryStatus


def test_a_worker_given_queues_consumes_only_those(any_stack: Stack, sink) -> None:
    stack = any_stack
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    stack.start_worker(queues="broker")  # normalises and sweeps, books nothing
    assert stack.webhook("shop", secret, order("Q-1"))[0] == 202
    wait_until(lambda: stack.count(Delivery) == 1, message="normalised and routed")
    time.sleep(3)  # sweeps re-enqueue the delivery meanwhile: nobody here may take it
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.PENDING) == 1
    assert sink.creates == {}
    assert "connector.erp" not in stack.worker_logs()
    stack.start_worker(beat=False, queues="connector.erp")
    wait_until(lambda: sink.creates == {"Q-1": 1}, message="booked by the dedicated worker")
