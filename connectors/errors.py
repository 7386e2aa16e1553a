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


class NeedsAttention(ConnectorError):
    """The order waits for a person (a mapping, an identity decision), not for a retry.

    The delivery is parked with `reason` and `key`; it resumes by itself when an admin adds
    the mapping or link (`broker mappings add`), and is never dead-lettered meanwhile.
    """

    reason = "needs attention"

    def __init__(self, message: str, *, kind: str, key: str) -> None:
        super().__init__(message)
        self.kind, self.key = kind, key


class MissingMapping(NeedsAttention):
    """A SKU, tax, shipping or payment method has no counterpart in the back office."""

    reason = "missing mapping"


class IdentityReview(NeedsAttention):
    """A customer matches ambiguously (several candidates, or only by an unverified email)."""

    reason = "identity review"


class MissingSetting(NeedsAttention):
    """The connector's configuration lacks a setting this order needs (e.g. a shipping product).

    Parked under kind "setting" and the setting's name; saving the connector's configuration
    resumes the deliveries. Say which setting, and what to put in it.
    """

    reason = "missing setting"
    KIND = "setting"

    def __init__(self, message: str, *, key: str, kind: str = KIND) -> None:
        super().__init__(message, kind=kind, key=key)


class ConsentRequired(NeedsAttention):
    """The back office needs an admin's OAuth 2.0 consent (none yet, or its refresh failed).

    Parked under kind "consent" and the connector's name; a new consent resumes the deliveries.
    """

    reason = "consent required"

    def __init__(self, message: str, *, key: str, kind: str = "consent") -> None:
        super().__init__(message, kind=kind, key=key)
