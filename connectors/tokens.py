"""OAuth 2.0 tokens a connector gets through the broker from an admin's one-time consent.

A connector whose back office wants a user-delegated token (authorization code grant) says so
by returning a `ConsentSpec` from `Connector.consent()`. The broker runs the consent (started
from the console), keeps the refresh token encrypted, and hands the connector a `TokenSource`
through `Connector.use_tokens()`; the connector only ever asks it for an access token. Without
a consent the source (or the connector, when it has none) raises `ConsentRequired`, which
parks the delivery until an admin connects the back office.

This module imports nothing of broker.*, Flask or Celery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from connectors.errors import ConsentRequired

__all__ = ["ConsentRequired", "ConsentSpec", "StaticTokens", "TokenSource", "consent_needed"]


@dataclass(frozen=True)
class ConsentSpec:
    """Where and as whom the broker asks the back office's authorization server for consent.

    `extra` holds further authorization request parameters (e.g. `resource`, RFC 8707, or a
    vendor's `access_type=offline`); they never override the broker's own parameters.
    """

    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class TokenSource(Protocol):
    """Access tokens of one connector's consent, refreshed by the broker before they expire."""

    def access_token(self, refused: str | None = None) -> str:
        """A valid access token.

        Args:
            refused: the token the back office just answered 401 to; the source refreshes
                only if that is still its current token (another worker may have done it).

        Raises:
            ConsentRequired: no consent yet, or the refresh token was refused (parks).
            TransientError: the token endpoint is unreachable or failing (retries).
        """
        ...


class StaticTokens:
    """A TokenSource that always hands out the same token (tests, the contract kit)."""

    def __init__(self, token: str) -> None:
        self._value = token

    def access_token(self, refused: str | None = None) -> str:
        return self._value

    def __repr__(self) -> str:
        return "StaticTokens(***)"


def consent_needed(connector: str) -> ConsentRequired:
    """The error of a connector nobody has connected to its back office yet."""
    return ConsentRequired(f"an admin must connect connector '{connector}' to its back office: "
                           f"Console → Connectors → {connector} → Connect", key=connector)
