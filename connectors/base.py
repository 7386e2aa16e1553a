"""The connector contract v1: check, push, cancel, lookup."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.config import ConfigSchema
from connectors.errors import PermanentError


@dataclass(frozen=True)
class PushContext:
    """What a connector may know about the delivery besides the order."""

    delivery_id: str
    idempotency_key: str   # stable per order version and connector: send it to the back office
    action: str            # create | update | cancel
    attempt: int
    reference: str | None = None  # the back-office reference of an earlier booking, if any
    document: Mapping[str, Any] | None = None  # the order as canonical JSON (dump_order form)


@dataclass(frozen=True)
class PushResult:
    reference: str
    details: dict[str, Any] = field(default_factory=dict)


class Connector:
    """Base class of a connector kind, registered under the entry-point group broker.connectors.

    `order` is the canonical order as loaded by broker.schemas.order (Decimal money,
    aware datetimes). Raise TransientError to retry, PermanentError to dead-letter with a
    message that tells the operator what to fix.
    """

    kind: ClassVar[str]
    title: ClassVar[str] = ""
    Config: ClassVar[type[ConfigSchema]] = ConfigSchema

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        self.config = config
        self.name = name or self.kind

    def check(self) -> None:
        """Test the connection and credentials. Raises: TransientError, PermanentError."""

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

    def close(self) -> None:
        """Release connections."""
