"""The channel adapter contract and its registry (entry-point group broker.channels)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, ClassVar

GROUP = "broker.channels"


class SignatureError(Exception):
    """The request is not authentic (forged, stale or unsigned): answer 401."""


class PayloadError(Exception):
    """The payload cannot be mapped; the event is kept as rejected with this reason."""


@dataclass(frozen=True)
class Envelope:
    """What the gateway reads from a verified request before storing it."""

    event_key: str          # the vendor's delivery/event id: the dedupe key
    topic: str | None = None


class Channel:
    """Base class of a channel kind.

    `verify` runs in the gateway on the raw bytes before anything is parsed or stored;
    `to_orders` runs in a worker and may be retried after a fix.
    """

    kind: ClassVar[str]
    # Headers kept with the raw event (lower-case names); signatures are never stored.
    kept_headers: ClassVar[tuple[str, ...]] = ("content-type",)

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        """Authenticate the request. Raises: SignatureError."""
        raise NotImplementedError

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any]]:
        """Canonical order documents (not yet validated) carried by the event."""
        raise NotImplementedError

    def new_secret(self) -> str:
        """A fresh signing secret in the vendor's format."""
        raise NotImplementedError


@cache
def channel_kinds() -> dict[str, type[Channel]]:
    """Every installed channel kind by slug (entry-point group broker.channels)."""
    from connectors.registry import load_plugins

    return load_plugins(GROUP, Channel)


def channel_for(kind: str) -> Channel:
    try:
        return channel_kinds()[kind]()
    except KeyError:
        raise LookupError(f"unknown source kind '{kind}' (installed: "
                          f"{', '.join(sorted(channel_kinds()))})") from None
