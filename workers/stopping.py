"""Graceful stop of a worker within BROKER_STOP_GRACE_SECONDS.

Celery's warm shutdown (SIGTERM) stops consuming and waits for running tasks, however long
they take; our tasks loop over batches for up to half a lease, so a stop used to take tens of
seconds and orchestrators killed workers mid-batch. Here the worker's main process, on
`worker_shutting_down`, raises a flag shared with its pool processes (a multiprocessing event
made before they fork); each pool process sets its runtime's `stopping` event, and the delivery
and normalise loops stop claiming, hand back what they hold but have not started, and finish
the push in progress. If a push is still running TEARDOWN_SECONDS before the grace period ends
(the time Celery and billiard take to close the pool and the connections, measured at 2-6 s),
its task is cut (SIGKILL of that pool process): its delivery is retried after its lease, and
booked-once look-ups keep that retry from booking twice. A worker still not gone when the grace
period ends exits at once: all that is left then is closing connections, and the database, not
the queue, says what is due.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from typing import Any

from celery import signals

from broker.runtime import process_runtime, stop_requested

log = logging.getLogger(__name__)
TEARDOWN_SECONDS = 6.0  # of the grace period, kept for closing the pool and the connections

_flag: Any = None     # multiprocessing.Event shared with the pool processes
_worker: Any = None   # the WorkController, to reach its pool when the grace period is over


@signals.worker_init.connect
def _make_flag(sender: Any = None, **kwargs: Any) -> None:
    # Made in the main process before the pool forks, so every pool process shares it.
    global _flag, _worker
    _flag, _worker = multiprocessing.get_context("fork").Event(), sender


@signals.worker_process_init.connect
def _watch_flag(**kwargs: Any) -> None:
    from workers.celery import settings

    runtime, flag = process_runtime(settings), _flag
    if flag is None:
        return

    def watch() -> None:
        flag.wait()
        runtime.stopping.set()

    threading.Thread(target=watch, name="stop-watch", daemon=True).start()


@signals.worker_shutting_down.connect
def _stop_gracefully(sig: str = "", how: str = "", **kwargs: Any) -> None:
    """Runs in the main process's signal handler: set flags and arm a timer, nothing more."""
    from workers.celery import settings

    if _flag is not None:
        _flag.set()
    stop_requested()  # tasks that run in this process (solo pool)
    if how == "Warm":
        grace = settings.stop_grace_seconds
        budget = max(1.0, grace - TEARDOWN_SECONDS)
        for delay, action in ((budget, _cut_running_tasks), (max(budget + 1.0, grace), _exit)):
            timer = threading.Timer(delay, action, [delay])
            timer.daemon = True
            timer.start()


def _cut_running_tasks(budget: float) -> None:
    from celery.worker import state

    if _worker is None:
        return
    for request in list(state.active_requests):
        log.warning("task %s[%s] still running %.0f s after the stop signal: cutting it (its "
                    "delivery is retried after its lease; raise BROKER_STOP_GRACE_SECONDS above "
                    "the slowest push to avoid this)", request.name, request.id, budget)
        try:  # as on a lost connection: the message goes back to the queue
            request.cancel(_worker.pool, signal="SIGKILL")
        except Exception as exc:
            log.warning("could not cut task %s: %s", request.id, exc)


def _exit(grace: float) -> None:
    log.warning("the worker did not finish stopping within %.0f s (BROKER_STOP_GRACE_SECONDS): "
                "exiting now", grace)
    logging.shutdown()
    os._exit(1)
