"""The channel adapter contract and its registry (entry-point group broker.channels).

A channel kind turns one vendor's webhooks (and, for catch-up, its API) into canonical orders.
The gateway calls `verify` on the raw bytes; a worker calls `enrich` (outside any database
transaction: it may call the vendor's API), then `to_orders`; the scheduler calls `catch_up`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from broker.channels.api import ChannelApi

GROUP = "broker.channels"


class SignatureError(Exception):
    """The request is not authentic (forged, stale or unsigned): answer 401."""


class PayloadError(Exception):
    """The payload cannot be mapped; the event is kept as rejected with this reason."""


@dataclass(frozen=True)
class Envelope:
    """What the gateway reads from a verified request before storing it."""

    event_key: str          # the dedupe key: the vendor's event id, or what identifies one
    topic: str | None = None
    ping: bool = False      # a vendor's set-up ping: answer 200 and store nothing


@dataclass(frozen=True)
class Patch:
    """A thin event that changes an order the broker already holds (e.g. a deletion by id).

    `changes` replace top-level canonical fields of the latest version. If the order is not
    known yet, the event is parked until its create arrives.
    """

    external_id: str
    changes: dict[str, Any]
    updated_at: str | None = None


@dataclass(frozen=True)
class PolledEvent:
    """One order version found by a catch-up poll, stored like a webhook of `topic`.

    `event_key` must name the version (e.g. `poll:<id>:<updated_at>`) so repeated polls
    deduplicate; the payload must map to the same canonical order as the webhook would, so a
    version seen by both is a duplicate and is booked once.
    """

    event_key: str
    topic: str
    payload: Any


@dataclass
class CatchUpWindow:
    """Where a poll starts; `cursor` is the channel's own (optional) position."""

    since: datetime
    cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


COMMON_SETTINGS = {
    "api_url": "base URL of the channel's API (defaults to the vendor's; set for a sandbox)",
    "catchup_interval": "seconds between catch-up polls of the channel API (0 or unset: off)",
    "catchup_lookback": "seconds the first catch-up poll looks back (default 86400)",
}


class Channel:
    """Base class of a channel kind; one instance per source, built with its settings.

    `settings_fields` and `credential_fields` name (with a help text) what a source of this kind
    may configure besides COMMON_SETTINGS: settings in clear, credentials encrypted at rest.
    """

    kind: ClassVar[str]
    # Headers kept with the raw event (lower-case names); signatures are never stored.
    kept_headers: ClassVar[tuple[str, ...]] = ("content-type",)
    settings_fields: ClassVar[dict[str, str]] = {}
    credential_fields: ClassVar[dict[str, str]] = {}
    # The topics this channel maps; others are stored as ignored and answered 200 at once.
    # None: every topic goes to the worker.
    topics: ClassVar[frozenset[str] | None] = None

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings: dict[str, Any] = dict(settings or {})

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        """Authenticate the request over its raw bytes. Raises: SignatureError."""
        raise NotImplementedError

    def needs_api(self, topic: str | None, payload: Any) -> bool:
        """Whether `enrich` must call the channel's API for this event (a thin payload)."""
        return False

    def enrich(self, topic: str | None, payload: Any, api: ChannelApi) -> Any:
        """Fetch what a thin payload lacks. Raises: ChannelUnavailable (retried later)."""
        return payload

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any] | Patch]:
        """Canonical order documents (not yet validated) or patches; [] ignores the event."""
        raise NotImplementedError

    def api(self, credentials: Mapping[str, str]) -> ChannelApi:
        """An authenticated client of the channel's API. Raises: PayloadError if unconfigured."""
        raise PayloadError(f"{self.kind} sources have no channel API")

    def catch_up(self, api: ChannelApi, window: CatchUpWindow) -> Iterator[PolledEvent]:
        """Order versions changed since `window.since`, oldest first."""
        raise NotImplementedError(f"{self.kind} sources have no catch-up")

    def new_secret(self) -> str:
        """A fresh signing secret in the vendor's format."""
        raise NotImplementedError


@cache
def channel_kinds() -> dict[str, type[Channel]]:
    """Every installed channel kind by slug (entry-point group broker.channels)."""
    from connectors.registry import load_plugins

    return load_plugins(GROUP, Channel)


def channel_for(kind: str, settings: Mapping[str, Any] | None = None) -> Channel:
    try:
        cls = channel_kinds()[kind]
    except KeyError:
        raise LookupError(f"unknown source kind '{kind}' (installed: "
                          f"{', '.join(sorted(channel_kinds()))})") from None
    return cls(settings)
