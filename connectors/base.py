"""The connector contract v1: check, push, cancel, lookup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.config import ConfigSchema
from connectors.errors import PermanentError

if TYPE_CHECKING:
    from connectors.tokens import ConsentSpec, TokenSource

LINK_KINDS = ("customer", "product", "tax", "shipping", "payment")


@dataclass(frozen=True)
class Links:
    """Identity links the broker keeps for this connector: front-office key → back-office id.

    Only the keys this order needs are loaded: customer anchors (`customer:<channel>:<id>`,
    `email:<address>`), SKUs, tax names, shipping methods, payment methods/gateways.
    """

    customer: Mapping[str, str] = field(default_factory=dict)
    product: Mapping[str, str] = field(default_factory=dict)
    tax: Mapping[str, str] = field(default_factory=dict)
    shipping: Mapping[str, str] = field(default_factory=dict)
    payment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Link:
    """A link a connector learned (e.g. the party it created), kept by the broker."""

    kind: str   # one of LINK_KINDS
    key: str
    value: str


@dataclass(frozen=True)
class PushContext:
    """What a connector may know about the delivery besides the order."""

    delivery_id: str
    idempotency_key: str   # stable per order version and connector: send it to the back office
    action: str            # create | update | cancel
    attempt: int
    reference: str | None = None  # the back-office reference of an earlier booking, if any
    document: Mapping[str, Any] | None = None  # the order as canonical JSON (dump_order form)
    links: Links = field(default_factory=Links)


@dataclass(frozen=True)
class PushResult:
    """`reference` is what the operator searches for (e.g. "SO0042 / INV/2026/0007")."""

    reference: str
    details: dict[str, Any] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    # What this version changed that the back office did not take, each with the reason
    # ("the note: Tryton keeps no note on a processed sale"); the journey shows "not applied".
    not_applied: tuple[str, ...] = ()


class Connector:
    """Base class of a connector kind, registered under the entry-point group broker.connectors.

    `order` is the canonical order as loaded by broker.schemas.order (Decimal money,
    aware datetimes). Raise TransientError to retry, PermanentError to dead-letter with a
    message that tells the operator what to fix, MissingMapping / IdentityReview (see
    connectors.identity) to park the delivery until a person adds the mapping or link.
    """

    kind: ClassVar[str]
    title: ClassVar[str] = ""
    Config: ClassVar[type[ConfigSchema]] = ConfigSchema
    # Pushes in flight at once across all workers, unless the connector's config says otherwise
    # (`max_in_flight`): a back office that numbers documents without locking needs 1.
    max_in_flight: ClassVar[int] = 4
    # Requests one push may make in the worst case (lookups included): leases are sized from it
    # and the config's connect and read timeouts, and renewed while a push runs.
    calls_per_push: ClassVar[int] = 2
    tokens: TokenSource | None = None  # set by use_tokens() when consent() asks for one

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        self.config = config
        self.name = name or self.kind

    def consent(self) -> ConsentSpec | None:
        """The OAuth 2.0 consent this config needs (authorization code grant), else None.

        When it returns a spec, the broker hands the connector a TokenSource (`use_tokens`),
        which raises ConsentRequired (parks) until an admin has consented; see connectors.tokens.
        """
        return None

    def use_tokens(self, source: TokenSource) -> None:
        """Take the broker's access tokens for the consent of `consent()` (as `self.tokens`)."""
        self.tokens = source

    def check(self) -> None:
        """Test the connection and credentials. Raises: TransientError, PermanentError."""

    def warnings(self) -> list[str]:
        """What the admin must know about this configuration, read from the config alone: a
        guarantee it weakens (shown by `connectors add` and `check` and in the console)."""
        return []

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Create or update the order, idempotently (look it up by external key first).

        Raises: TransientError, PermanentError.
        """
        raise NotImplementedError

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Cancel the order in the back office. Raises: PermanentError if unsupported."""
        raise PermanentError(f"connector kind '{self.kind}' cannot cancel orders; cancel "
                             f"order {order.get('number') or order['external_id']} by hand")

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The back-office reference of this order if it was booked already, else None."""
        return None

    def can_look_up(self) -> bool:
        """Whether lookup() can find a record by external key (then push() looks up itself)."""
        return type(self).lookup is not Connector.lookup

    def discard(self, order: Mapping[str, Any], ctx: PushContext) -> None:
        """Remove what push() booked for this order, as far as the back office allows.

        Only the contract kit's scratch runs against a live system call it (`broker connectors
        kit`); the default cancels. Raises: TransientError, PermanentError.
        """
        self.cancel(order, ctx)

    def close(self) -> None:
        """Release connections."""
