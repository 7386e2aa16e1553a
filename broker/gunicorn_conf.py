"""Gunicorn settings for the gateway (`broker serve`)."""

from __future__ import annotations

from typing import Any

timeout = 30
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
accesslog = None
worker_connections = 1000


def child_exit(server: Any, worker: Any) -> None:
    """Keep Prometheus multiprocess files of dead workers from skewing gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
