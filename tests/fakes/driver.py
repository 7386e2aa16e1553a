"""What the shared channel test matrix needs from each channel's fake (tests/fakes/<kind>.py).

Each fake module exposes a `Driver` class with this interface, so one matrix
(tests/integration/test_channel_matrix.py) proves every channel the same way: valid, tampered,
wrong secret, rotated secret, stale/future timestamps where signed, re-serialised JSON,
duplicate, out-of-order versions, and a webhook or catch-up poll becoming exactly one delivered
order with exact money.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol


class ChannelDriver(Protocol):
    kind: ClassVar[str]
    signs_timestamp: ClassVar[bool]   # stale/future timestamps are refused (Stripe, BigCommerce)
    reserialised_fails: ClassVar[bool]  # the signature covers the exact bytes (all but none)

    def __init__(self, fake: Any) -> None:
        """`fake` is the started FakeVendor of this channel."""

    def settings(self, webhook_url: str) -> dict[str, Any]:
        """Source settings pointing at the fake (`api_url`, and e.g. Square's notification URL)."""

    def credentials(self) -> dict[str, str]:
        """Channel API credentials the fake accepts."""

    def order_event(self, external_id: str, *, updated_at: str,
                    cancelled: bool = False) -> tuple[str, bytes, dict[str, str]]:
        """Seed the fake with this order version and return the webhook of it:
        (webhook path suffix or "" , body, unsigned headers incl. event id and topic).
        A fresh event id each call, like the vendor."""

    def sign(self, secret: str, body: bytes, headers: dict[str, str], *,
             timestamp: int | None = None) -> dict[str, str]:
        """The headers with the vendor's signature added (timestamp defaults to now)."""

    def expected(self, external_id: str) -> dict[str, str]:
        """Canonical values the delivered order must carry, e.g. {"currency": "USD",
        "totals.total": "29.06", "lines.0.unit_price": "12.50"} (dotted paths, exact strings)."""
