"""Through the whole pipeline into a real trytond: a known and an unknown customer, three
lines, a discount and shipping, booked with the invoice created and totals equal to the
order's; a missing SKU parks and resumes when mapped; a kill -9 between Tryton's write and its
answer still leaves one sale."""

from __future__ import annotations

import json
import signal
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from backoffice.tryton import TrytonServer, shared_server
from fakes.proxy import HoldingProxy
from harness import Stack, wait_until

from broker.models import Delivery, DeliveryStatus

RATE = Decimal("0.0725")
CENT = Decimal("0.01")

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def tryton(request: pytest.FixtureRequest) -> TrytonServer:
    server = shared_server(request)
    for code in ("CK-WIDGET", "CK-GADGET", "CK-THIRD"):
        server.ensure_product(code)
    return server


def sale_order(external_id: str, email: str, skus: tuple[str, ...] = ("CK-WIDGET", "CK-GADGET",
                                                                        "CK-THIRD")) -> dict[str, Any]:
    """Three taxed lines, an order discount and shipping; totals computed like a shop would."""
    prices = [Decimal("19.99"), Decimal("4.50"), Decimal("120.00")]
    quantities = [Decimal(3), Decimal(2), Decimal(1)]
    lines, subtotal, tax = [], Decimal(0), Decimal(0)
    for sku, price, qty in zip(skus, prices, quantities, strict=True):
        line_tax = (price * qty * RATE).quantize(CENT)
        subtotal, tax = subtotal + price * qty, tax + line_tax
        lines.append({"sku": sku, "name": sku.title(), "quantity": str(qty), "unit_price": str(price),
                      "taxes": [{"name": "Sales Tax", "rate": str(RATE), "amount": str(line_tax)}]})
    discount, shipping = Decimal("5.00"), Decimal("7.95")
    total = subtotal - discount + shipping + tax
    address = {"name": "Zoë Ångström", "line1": "1 Main St", "city": "Springfield", "region": "IL",
               "postal_code": "62701", "country": "US"}
    return {"external_id": external_id, "number": f"#{external_id}", "currency": "USD",
            # Dated today: the Tryton database has fiscal years around the day it was built.
            "placed_at": NOW.isoformat(), "updated_at": NOW.isoformat(),
            "customer": {"external_id": f"c-{external_id}", "email": email, "email_verified": True,
                         "first_name": "Zoë", "last_name": "Ångström"},
            "billing_address": address, "shipping_address": address, "lines": lines,
            "shipping": [{"method": "Standard", "amount": str(shipping)}],
            "discounts": [{"code": "TENOFF", "amount": str(discount)}],
            "totals": {"subtotal": str(subtotal), "discount": str(discount),
                       "shipping": str(shipping), "tax": str(tax), "total": str(total)},
            "payment": {"status": "paid", "method": "card", "amount": str(total)}}


def booked(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED)


def parked(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.PARKED)


def setup(stack: Stack, config: dict[str, Any]) -> str:
    secret = stack.source("shop")
    stack.cli("connectors", "add", "tryton", "--kind", "tryton", "--config", json.dumps(config), "--json")
    stack.route("shop", "tryton")
    return secret


def test_orders_are_booked_in_tryton_with_invoices_and_missing_skus_park_until_mapped(
        tryton: TrytonServer, stack: Stack):
    secret = setup(stack, tryton.connector_config())
    known_email = f"known.{uuid.uuid4().hex[:8]}@example.com"
    known_party = tryton.rpc("model.party.party.create", [{
        "name": "Known Buyer", "contact_mechanisms": [("create", [{"type": "email",
                                                                  "value": known_email}])]}])[0]
    stack.start_worker()
    run = uuid.uuid4().hex[:6]
    known, unknown = sale_order(f"K{run}", known_email), sale_order(f"U{run}", f"new.{run}@example.com")
    for order in (known, unknown):
        assert stack.webhook("shop", secret, order)[0] == 202
    wait_until(lambda: booked(stack) == 2, timeout=90, message="both orders booked in Tryton")

    for order in (known, unknown):
        [sale] = tryton.sales(order["external_id"])
        assert sale["state"] in ("processing", "done")
        assert sale["total_amount"] == Decimal(order["totals"]["total"])
        assert sale["invoices"], "the invoice was created"
        [invoice] = tryton.read("account.invoice", sale["invoices"], ["total_amount", "state"])
        assert invoice["total_amount"] == Decimal(order["totals"]["total"])
        assert invoice["state"] in ("posted", "paid")
    assert tryton.sales(known["external_id"])[0]["party"] == known_party
    new_party = tryton.sales(unknown["external_id"])[0]["party"]
    assert new_party != known_party
    links = {(m["key"], m["value"]) for m in stack.cli("mappings", "list", "--json")}
    assert (f"email:new.{run}@example.com", str(new_party)) in links

    # A SKU Tryton doesn't know parks the order, naming it; mapping it books the order.
    missing = sale_order(f"M{run}", known_email, ("CK-WIDGET", "CK-GADGET", f"CK-MISSING-{run}"))
    assert stack.webhook("shop", secret, missing)[0] == 202
    wait_until(lambda: parked(stack) == 1, timeout=60, message="parked on the missing SKU")
    [gap] = stack.cli("mappings", "gaps", "--json")
    assert (gap["kind"], gap["key"]) == ("product", f"CK-MISSING-{run}")
    assert tryton.sales(missing["external_id"]) == []
    stack.cli("mappings", "add", "tryton", "product", f"CK-MISSING-{run}", "CK-THIRD")
    wait_until(lambda: booked(stack) == 3, timeout=90, message="booked after the mapping")
    [sale] = tryton.sales(missing["external_id"])
    assert sale["total_amount"] == Decimal(missing["totals"]["total"]) and sale["invoices"]


def test_kill_9_between_trytons_write_and_its_answer_leaves_one_sale(tryton: TrytonServer,
                                                                      stack: Stack):
    with HoldingProxy("127.0.0.1", tryton.port) as proxy:
        secret = setup(stack, tryton.connector_config(url=proxy.url))
        order = sale_order(f"X{uuid.uuid4().hex[:6]}", f"crash.{uuid.uuid4().hex[:6]}@example.com")
        proxy.hold_after(b'"model.sale.sale.create"', seconds=8)
        stack.start_worker()
        assert stack.webhook("shop", secret, order)[0] == 202
        assert proxy.held.wait(60), "the worker never created the sale"
        stack.kill_workers(signal.SIGKILL)
        stack.start_worker()
        wait_until(lambda: booked(stack) == 1, timeout=90, message="booked by the retry")
    [sale] = tryton.sales(order["external_id"])
    assert sale["total_amount"] == Decimal(order["totals"]["total"]) and sale["invoices"]
