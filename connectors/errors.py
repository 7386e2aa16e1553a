"""The two failures a connector may report: retry later, or stop and tell a person."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class; the message is shown to operators, so say what to fix."""


class TransientError(ConnectorError):
    """The back office may accept the same request later (timeouts, 5xx, 429...)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Retrying the same request cannot succeed; the delivery is dead-lettered."""
