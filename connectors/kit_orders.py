"""Orders and push contexts for the contract kit, without pytest (the live kit uses them too)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.base import Links, PushContext
from connectors.money import minor_units

SKUS = ("CK-WIDGET", "CK-GADGET")


def _places(currency: str) -> int:
    return minor_units(currency)


def contract_order(external_id: str | None = None, *, currency: str = "USD",
                   quantity: int = 3, skus: tuple[str, ...] = SKUS,
                   updated_at: datetime | None = None, status: str = "open") -> dict[str, Any]:
    """A loaded canonical order with money that rounding would get wrong: 2 lines, a line
    discount, an order discount, shipping and per-line tax, all in `currency`'s minor units."""
    from broker.schemas.order import load_order

    q = Decimal(1).scaleb(-_places(currency))

    def amount(value: str) -> Decimal:
        return (Decimal(value) * (Decimal(1000) if _places(currency) == 0 else 1)).quantize(q)

    prices = [amount("19.99"), amount("0.07")]
    quantities = [Decimal(quantity), Decimal(7)]
    line_discount = amount("0.01")
    taxes = [(p * n * Decimal("0.0725")).quantize(q) for p, n in zip(prices, quantities, strict=True)]
    subtotal = sum(((p * n).quantize(q) for p, n in zip(prices, quantities, strict=True)),
                   Decimal(0)) - line_discount
    discount, shipping = amount("1.03"), amount("4.95")
    tax = sum(taxes, Decimal(0))
    now = updated_at or datetime.now(UTC).replace(microsecond=0)
    token = external_id[-10:] if external_id else uuid.uuid4().hex[:10]
    external_id = external_id or f"CK-{token}"
    return load_order({
        "external_id": external_id, "number": f"#{external_id}", "channel": "contract-kit",
        "placed_at": (now - timedelta(minutes=5)).isoformat(), "updated_at": now.isoformat(),
        "status": status, "currency": currency,
        "customer": {"external_id": f"cust-{token}", "email": f"ana.{token}@example.com",
                     "email_verified": True, "first_name": "Ana", "last_name": "Šilva"},
        "billing_address": {"name": "Ana Šilva", "line1": "1 Main St", "city": "Springfield",
                            "region": "IL", "postal_code": "62701", "country": "US"},
        "shipping_address": {"name": "Ana Šilva", "line1": "1 Main St", "city": "Springfield",
                             "region": "IL", "postal_code": "62701", "country": "US"},
        "lines": [
            {"external_id": f"{external_id}-1", "sku": skus[0], "name": "Contract Widget",
             "quantity": str(quantities[0]), "unit_price": str(prices[0]),
             "discount": str(line_discount),
             "taxes": [{"name": "Sales Tax", "rate": "0.0725", "amount": str(taxes[0])}]},
            {"external_id": f"{external_id}-2", "sku": skus[1], "name": "Contract Gadget",
             "quantity": str(quantities[1]), "unit_price": str(prices[1]),
             "taxes": [{"name": "Sales Tax", "rate": "0.0725", "amount": str(taxes[1])}]},
        ],
        "shipping": [{"method": "Standard", "amount": str(shipping)}],
        "discounts": [{"code": "CONTRACT", "amount": str(discount)}],
        "prices_include_tax": False,
        "totals": {"subtotal": str(subtotal), "discount": str(discount),
                   "shipping": str(shipping), "tax": str(tax),
                   "total": str(subtotal - discount + shipping + tax)},
        "payment": {"status": "paid", "method": "card", "amount": str(subtotal - discount + shipping + tax)},
        "note": "contract kit",
    })


def push_context(order: Mapping[str, Any], *, action: str = "create", reference: str | None = None,
                 attempt: int = 1, version: int = 1, links: Links | None = None) -> PushContext:
    from broker.schemas.order import dump_order

    return PushContext(delivery_id=f"dlv-{order['external_id']}-{version}",
                       idempotency_key=f"{order['external_id']}.v{version}.contract",
                       action=action, attempt=attempt, reference=reference,
                       document=dump_order(dict(order)), links=links or Links())


def later_version(order: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """The same order three minutes later with `changes` (a new version of it)."""
    later = datetime.fromisoformat(str(order["updated_at"])) + timedelta(minutes=3)
    return {**order, "updated_at": later, **changes}


