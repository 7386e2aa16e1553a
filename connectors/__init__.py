"""Back-office connectors and their contract.

A connector depends only on the canonical order and this contract, never on Flask, Celery or
the broker's models, so a third party can write and test one without reading the gateway.
"""

from connectors.base import Connector, PushContext, PushResult
from connectors.errors import ConnectorError, PermanentError, TransientError

__all__ = [
    "Connector", "ConnectorError", "PermanentError", "PushContext", "PushResult",
    "TransientError",
]
