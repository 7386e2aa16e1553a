"""Graceful stop (T29): a worker told to stop mid-batch exits within its grace period, and
the deliveries it held but had not started are booked by another worker at once, each once."""

from __future__ import annotations

import signal
import time

from harness import Stack, order, wait_until

from broker.models import Delivery, DeliveryAttempt, DeliveryStatus

GRACE = 15
LEASE = 120  # waiting out a lease would blow every timeout below


def _count(stack: Stack, status: str) -> int:
    return stack.count(Delivery, Delivery.status == status)


def test_sigterm_mid_batch_exits_in_time_and_hands_the_batch_to_another_worker(tmp_path, sink):
    stack = Stack(tmp_path, "postgresql", "redis", lease_seconds=LEASE,
                  stop_grace_seconds=GRACE)
    try:
        secret = stack.source("shop")
        stack.http_connector("erp", sink.url + "/orders")
        stack.route("shop", "erp")
        total = 20
        sink.delay(0.2)
        for i in range(total):  # one customer: one batch at a time holds their orders
            assert stack.webhook("shop", secret, order(f"29{i:02d}"))[0] == 202
        first = stack.start_worker(beat=False, concurrency=1)
        wait_until(lambda: _count(stack, DeliveryStatus.LEASED) >= 8, timeout=60,
                   message="a batch in hand")
        sink.delay(1.0)  # slower pushes: the batch is still in hand when the second worker is up
        stack.start_worker(beat=False, concurrency=1)
        assert _count(stack, DeliveryStatus.LEASED) >= 2, "the first worker finished too soon"

        first.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        first.wait(timeout=GRACE + 30)
        took = time.monotonic() - stopped
        sink.delay(0.05)
        wait_until(lambda: _count(stack, DeliveryStatus.BOOKED) == total, timeout=LEASE / 2,
                   message="every order booked without waiting for a lease")
        print(f"SIGTERM -> worker exited in {took:.1f} s (grace {GRACE} s); all {total} booked "
              f"{time.monotonic() - stopped:.1f} s after the signal")
        assert took <= GRACE

        first_log = (tmp_path / "worker-0.log").read_text()
        assert "(stopping)" in first_log and "handed back" in first_log
        assert "still running" not in first_log  # the push in progress finished, nothing cut
        assert len(sink.records) == total and max(sink.creates.values()) == 1
        assert stack.count(DeliveryAttempt) == total  # no push repeated, none counted twice
        assert stack.count(Delivery, Delivery.attempts != 1) == 0
        assert '"level": "ERROR"' not in stack.worker_logs()
    finally:
        stack.close()
