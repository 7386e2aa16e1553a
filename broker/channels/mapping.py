"""Small helpers every channel mapping needs: exact money, UTC times, pruned documents."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from broker.schemas.order import minor_units


def from_minor(amount: int | str | Decimal, currency: str) -> str:
    """An integer amount in minor units as a decimal string: 1999 USD -> "19.99", 500 JPY -> "500",
    1250 KWD -> "1.250" (Stripe and Square send money this way)."""
    places = minor_units(currency)
    value = Decimal(int(amount)).scaleb(-places)
    return f"{value:.{places}f}"


def decimal(value: Any, default: str = "0") -> Decimal:
    """A vendor's decimal string or number (already a Decimal when parsed by the broker)."""
    if value is None or value == "":
        return Decimal(default)
    if isinstance(value, float):  # never expected from the broker's parser; be exact anyway
        value = repr(value)
    return Decimal(str(value))


def money(value: Any, currency: str) -> str:
    """A decimal amount rounded to the currency's minor units, as a string."""
    places = minor_units(currency)
    return f"{decimal(value).quantize(Decimal(1).scaleb(-places)):.{places}f}"


def utc_iso(value: int | str | datetime | None) -> str | None:
    """An epoch (seconds) or ISO 8601 time as ISO 8601 UTC; naive strings are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, Decimal)):
        moment = datetime.fromtimestamp(int(value), UTC)
    elif isinstance(value, datetime):
        moment = value
    else:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def pruned(doc: Any) -> Any:
    """The document without None values and empty containers (the canonical order omits them)."""
    if isinstance(doc, dict):
        kept = {k: pruned(v) for k, v in doc.items()}
        return {k: v for k, v in kept.items() if v is not None and v != {} and v != []}
    if isinstance(doc, list):
        return [pruned(v) for v in doc]
    return doc
