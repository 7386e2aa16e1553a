"""The Celery app, configured from BROKER_* settings.

Workers consume the `broker` queue and one queue per connector; a worker bootstep adds
the queue of every connector created after it started, so nobody has to restart workers.
Start a worker dedicated to one back office with `-Q connector.<name>`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import bootsteps, signals

from broker.queue import make_celery
from broker.runtime import process_runtime
from broker.settings import ConfigError, load_settings

log = logging.getLogger(__name__)
QUEUE_REFRESH_SECONDS = 2.0  # a new connector's queue is consumed within this delay
try:
    settings = load_settings()
except ConfigError as exc:  # `celery -A workers worker|beat`: one line, not a traceback
    print(f"configuration error: {exc}", file=sys.stderr)
    sys.exit(2)
app = make_celery(settings)
app.conf.include = ["workers.tasks"]
# Any number of beats may run; the one holding the sweeper lease publishes (workers/schedule.py).
app.conf.beat_scheduler = "workers.schedule:LeasedScheduler"


class ConnectorQueues(bootsteps.StartStopStep):
    """Consume connector.<name> for every enabled connector, refreshed periodically."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref = None

    def start(self, consumer: Any) -> None:
        # Queues known at start were added in celeryd_after_setup; later ones arrive here, from
        # the event loop's timer (adding a consumer before the loop runs loses AMQP deliveries).
        if getattr(consumer.app, "_explicit_queues", False):
            return
        self.timer_ref = consumer.timer.call_repeatedly(
            QUEUE_REFRESH_SECONDS, self.refresh, (consumer,), priority=10)

    def stop(self, consumer: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
            self.timer_ref = None

    def refresh(self, consumer: Any) -> None:
        active = {q.name for q in consumer.task_consumer.queues}
        for queue in connector_queues():
            if queue not in active:
                consumer.add_task_queue(queue)
                log.info("consuming queue %s", queue)


def connector_queues() -> list[str]:
    """The queue of every enabled connector (empty if the database is not reachable yet)."""
    from sqlalchemy import select

    from broker.models import Connector

    try:
        with process_runtime(settings).db.begin() as session:
            rows = session.execute(select(Connector).where(Connector.enabled.is_(True))).scalars()
            return [row.queue for row in rows]
    except Exception as exc:
        log.warning("could not list connectors for queue subscription: %s", exc)
        return []


app.steps["consumer"].add(ConnectorQueues)


@signals.celeryd_after_setup.connect
def _note_explicit_queues(sender: Any, instance: Any, conf: Any, **kwargs: Any) -> None:
    # `-Q connector.x` means a dedicated worker: do not add every other connector's queue.
    # Celery keeps what -Q selected as the queues' consume-from set (None without -Q); it does
    # not keep the option itself.
    app._explicit_queues = instance.app.amqp.queues._consume_from is not None
    if not app._explicit_queues:
        for queue in connector_queues():
            instance.app.amqp.queues.select_add(queue)
    # The pool and the embedded beat fork from here next: they must not inherit open database
    # connections (the beat closes the descriptors it inherits, which breaks SQLite's
    # per-process locks: "locking protocol" on its first lease check).
    process_runtime(settings).db.dispose()


@signals.setup_logging.connect
def _logging(**kwargs: Any) -> None:
    from broker.logging import setup_logging

    setup_logging(settings.log_level, settings.log_json)


@signals.worker_process_init.connect
def _fresh_runtime(**kwargs: Any) -> None:
    process_runtime(settings)


from workers import stopping  # noqa: E402,F401  (connects the graceful-stop signal handlers)
