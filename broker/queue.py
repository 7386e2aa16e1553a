"""The queue only wakes workers up; the database says what is due.

One Celery configuration for the gateway (publisher) and the workers, following
RELIABILITY.md §4: late acks, reject on worker lost, prefetch 1, no result backend,
bounded publish retries so a broker outage never blocks a webhook answer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Celery
from kombu import Queue

from broker.settings import Settings

log = logging.getLogger(__name__)
BROKER_QUEUE = "broker"   # normalisation and sweeps
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def _embedded_transport(url: str) -> str:
    """Route sqla+ URLs to our tuned subclass of kombu's SQLAlchemy transport."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault("broker-sqla", "broker.embedded_queue:Transport")
    return "broker-sqla+" + url.removeprefix("sqla+")


def celery_config(settings: Settings) -> dict[str, Any]:
    url = settings.queue_url
    if url.startswith("sqla+"):
        url = _embedded_transport(url)
    conf: dict[str, Any] = {
        "broker_url": url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": 30.0,
        "worker_max_tasks_per_child": 10000,
        "task_time_limit": 300,
        "task_soft_time_limit": 270,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_publish_retry_policy": PUBLISH_RETRY,
        "task_default_queue": BROKER_QUEUE,
        "task_queues": [Queue(BROKER_QUEUE)],
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "beat_schedule": {
            "sweep": {"task": "broker.sweep", "schedule": settings.sweep_interval,
                      "options": {"queue": BROKER_QUEUE, "expires": settings.sweep_interval}},
            "retention": {"task": "broker.retention", "schedule": settings.retention_interval,
                          "options": {"queue": BROKER_QUEUE, "expires": settings.retention_interval}},
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
    }
    if url.startswith("redis"):
        conf["broker_transport_options"] = {
            "visibility_timeout": 3600, "socket_timeout": 10, "socket_connect_timeout": 5,
            "socket_keepalive": True, "health_check_interval": 25, "retry_on_timeout": True,
        }
    elif url.startswith(("amqp", "pyamqp")):
        conf["task_default_queue_type"] = "quorum"
        conf["task_queues"] = [Queue(BROKER_QUEUE, queue_arguments={"x-queue-type": "quorum"})]
        conf["broker_transport_options"] = {"confirm_publish": True}
    elif url.startswith("broker-sqla"):
        conf["broker_transport_options"] = {"connect_args": {"timeout": 30}}
    return conf


def make_celery(settings: Settings) -> Celery:
    app = Celery("broker", set_as_current=False)
    app.config_from_object(celery_config(settings))
    return app


class Publisher:
    """Sends wake-up messages after commit; a failure is logged, never raised.

    After a failed publish the queue is skipped for `pause` seconds, so an outage of Redis
    or RabbitMQ costs webhook answers no time at all: the sweeper enqueues the backlog.
    """

    def __init__(self, celery: Celery, pause: float = 5.0, coalesce: float = 0.02) -> None:
        self.celery = celery
        self.pause = pause
        self.coalesce = coalesce
        self._skip_until = 0.0
        self._last_wake = 0.0
        self._trailing: threading.Timer | None = None
        self._lock = threading.Lock()

    def _send(self, task: str, args: list[str], queue: str) -> bool:
        if time.monotonic() < self._skip_until:
            return False
        try:
            self.celery.send_task(task, args=args, queue=queue, retry=True,
                                  retry_policy=PUBLISH_RETRY)
            return True
        except Exception as exc:  # the sweeper re-enqueues from the database
            self._skip_until = time.monotonic() + self.pause
            log.warning("could not enqueue %s on %s (%s: %s); not trying again for %.0f s, the "
                        "sweeper will enqueue what is due", task, queue, type(exc).__name__, exc,
                        self.pause)
            return False

    def normalise(self, event_id: str) -> bool:
        return self._send("broker.normalise", [event_id], BROKER_QUEUE)

    def normalise_soon(self, event_id: str) -> None:
        """Wake a normaliser after a commit, at most once per `coalesce` seconds per process.

        A worker normalises every waiting event per wake-up, so under load one message can
        stand for many webhooks; a wake skipped now is sent by a trailing timer, so every
        commit is still followed by a wake-up.
        """
        with self._lock:
            now = time.monotonic()
            if now - self._last_wake >= self.coalesce:
                self._last_wake = now
                send = True
            else:
                send = False
                if self._trailing is None:
                    delay = self._last_wake + self.coalesce - now
                    self._trailing = threading.Timer(delay, self._trailing_wake, [event_id])
                    self._trailing.daemon = True
                    self._trailing.start()
        if send:
            self.normalise(event_id)

    def _trailing_wake(self, event_id: str) -> None:
        with self._lock:
            self._trailing = None
            self._last_wake = time.monotonic()
        self.normalise(event_id)

    def deliver(self, connector_id: str, queue: str) -> bool:
        return self._send("broker.deliver", [connector_id], queue)

    def catch_up(self, source_name: str) -> bool:
        return self._send("broker.catch_up", [source_name], BROKER_QUEUE)

    def wake(self, targets: list[tuple[str, str]]) -> None:
        for connector_id, queue in sorted(set(targets)):
            self.deliver(connector_id, queue)
