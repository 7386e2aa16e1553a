"""Gunicorn settings for the gateway (`broker serve`, `broker up`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from gunicorn import util
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


# What gunicorn answers itself, before the app sees the request, in the broker's words: its
# own messages quote the request line, and its page is HTML.
_REFUSALS = {
    400: ("bad_request", "the HTTP request is malformed"),
    403: ("forbidden", "the request is forbidden"),
    414: ("uri_too_long", f"the request line (method, path and query string) is longer than "
                          f"{limit_request_line} bytes"),
    417: ("expectation_failed", "the Expect header cannot be met"),
    431: ("request_header_fields_too_large", f"more than {limit_request_fields} headers, or one "
                                             f"longer than {limit_request_field_size} bytes"),
    501: ("not_implemented", "the transfer coding is not supported"),
}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error in the broker's JSON error shape, with an access log line."""
    code, message = _REFUSALS.get(status_int, ("internal_error", "an unexpected error occurred"))
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    try:
        remote = sock.getpeername()[0]
    except (OSError, IndexError, TypeError):
        remote = None
    logging.getLogger("broker.access").info(
        "refused by the HTTP server: %s %s", status_int, code,
        extra={"status": status_int, "remote_addr": remote, "duration_ms": None})
    util.write_nonblock(sock, head.encode("latin1") + body)


def on_starting(server: Any) -> None:
    """Before workers fork: they answer refused requests with write_json_error."""
    util.write_error = write_json_error

