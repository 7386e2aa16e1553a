"""Back-office connectors and their contract.

A connector depends only on the canonical order and this contract, never on Flask, Celery or
the broker's models, so a third party can write and test one without reading the gateway.
The names below are imported on first use, so a light module of this package (the SSRF
allow-list the settings read) costs no marshmallow import.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Connector", "ConnectorError", "PermanentError", "PushContext", "PushResult",
    "TransientError",
]
_HOMES = {"Connector": "connectors.base", "PushContext": "connectors.base",
          "PushResult": "connectors.base", "ConnectorError": "connectors.errors",
          "PermanentError": "connectors.errors", "TransientError": "connectors.errors"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'connectors' has no attribute {name!r}")
