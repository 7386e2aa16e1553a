"""Gunicorn settings for the gateway (`broker serve`, `broker up`)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

timeout = 30
graceful_timeout = 30
keepalive = 5
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 100
accesslog = None
worker_connections = 1000
control_socket_disable = True  # gunicorn 27: no control socket under $HOME (the broker has no use for it)


class BrokerLogger(Logger):
    """Gunicorn's own messages (starting, listening, booting workers) in the broker's log
    format (broker.logging: JSON, or readable lines on a terminal), not in gunicorn's."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from broker.logging import setup_logging
        from broker.settings import ConfigError, load_settings

        try:
            settings = load_settings(create_key=False)
            level, json_logs = settings.log_level, settings.log_json
        except ConfigError:  # the app reports it when it loads; log as best we can meanwhile
            level, json_logs = "INFO", None
        setup_logging(level, json_logs)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True


logger_class = BrokerLogger


def child_exit(server: Any, worker: Any) -> None:
    """Keep Prometheus multiprocess files of dead workers from skewing gauges."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
