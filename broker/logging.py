"""One log format per process, with the order id as correlation id and secrets redacted by
name and by value: JSON lines for collectors, or readable lines when a person watches a
terminal (BROKER_LOG_JSON=auto, the default). Gunicorn's and Celery's own messages and Python
warnings go through the same handler, so `broker up` prints one format, not four."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pythonjsonlogger.json import JsonFormatter

_order_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("order_id", default=None)
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

SECRET_WORDS = re.compile(r"(secret|password|token|authorization|signature|api[_-]?key)", re.I)
_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value so it is redacted wherever it would appear in a log line."""
    if value and len(value) >= 6:
        _known_secrets.add(value)


def redact(text: str) -> str:
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "***")
    return text


@contextmanager
def order_context(order_id: str | None) -> Iterator[None]:
    token = _order_id.set(order_id)
    try:
        yield
    finally:
        _order_id.reset(token)


def set_request_id(request_id: str | None) -> None:
    _request_id.set(request_id)


class ContextFilter(logging.Filter):
    """Adds order_id / request_id and redacts secrets from the message and extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "order_id", None) is None:
            record.order_id = _order_id.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if SECRET_WORDS.search(key) and value:
                setattr(record, key, "***")
        return True


class ReadableFormatter(logging.Formatter):
    """`19:50:11 INFO  delivery  message  [order 0193ab…]` for a person at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = self.formatTime(record, "%H:%M:%S")
        name = ("gateway" if record.name.startswith("gunicorn") else
                "worker" if record.name.startswith(("celery", "multiprocessing")) else
                record.name.rsplit(".", 1)[-1])
        text = f"{when} {record.levelname:<7} {name:<12} {record.getMessage()}"
        if getattr(record, "order_id", None):
            text += f"  [order {record.order_id}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def wants_json(json_logs: bool | None, stream: Any) -> bool:
    """JSON unless asked otherwise, or unless `auto` (None) and a person reads the terminal."""
    if json_logs is not None:
        return json_logs
    isatty = getattr(stream, "isatty", None)
    return not (isatty and isatty())


def make_handler(json_logs: bool | None, stream: Any) -> logging.Handler:
    """The broker's log handler: its format, context fields and redaction."""
    handler = logging.StreamHandler(stream)
    if wants_json(json_logs, stream):
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}{order_id}{request_id}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False))
    else:
        handler.setFormatter(ReadableFormatter())
    handler.addFilter(ContextFilter())
    return handler


def setup_logging(level: str = "INFO", json_logs: bool | None = True, stream: Any = None) -> None:
    """Configure the root logger once per process (gateway, worker, CLI)."""
    handler = make_handler(json_logs, stream or sys.stderr)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # e.g. Celery's superuser warning, in the same format
    quiet = max(logging.WARNING, logging.getLevelName(level))
    for noisy in ("urllib3", "amqp", "kombu", "alembic.runtime.plugins",
                  # a line per task received and done (the sweep, every 15 s): the broker logs
                  # what its tasks did itself
                  "celery.worker.strategy", "celery.app.trace", "celery.beat"):
        logging.getLogger(noisy).setLevel(quiet)
    for own in ("gunicorn.error", "gunicorn.access", "celery", "multiprocessing", "py.warnings"):
        logger = logging.getLogger(own)  # their messages through our handler, not theirs
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True


ACCESS_LOGGER = "broker.access"
_access = logging.getLogger(ACCESS_LOGGER)


def log_access(response: Any) -> Any:
    """One line per request (a Flask after_request hook): method, path without the query string,
    status, duration, client address (the proxies' when BROKER_TRUSTED_PROXIES says so) and
    request id. Never headers, bodies or query strings, where secrets travel."""
    from flask import g, request

    started = g.get("started")
    duration = round((time.perf_counter() - started) * 1000, 1) if started else None
    path = request.path[:512]
    _access.info("%s %s %s %s ms %s", request.method, path, response.status_code, duration,
                 request.remote_addr, extra={
        "method": request.method, "path": path, "status": response.status_code,
        "duration_ms": duration, "remote_addr": request.remote_addr})
    return response

