"""JSON logs with the order id as correlation id, and secrets redacted by name and by value."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
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


def setup_logging(level: str = "INFO", json_logs: bool = True, stream: Any = None) -> None:
    """Configure the root logger once per process (gateway, worker, CLI)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter(
            "{asctime}{levelname}{name}{message}{order_id}{request_id}", style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            timestamp=False))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(order_id)s] %(message)s"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "amqp", "kombu", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
