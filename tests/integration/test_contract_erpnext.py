"""The contract kit on the erpnext connector, against the fake ERPNext (tests/fakes/erpnext.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import pytest
from fakes.erpnext import API_KEY, API_SECRET, FakeErpNext
from harness import Stack, free_port, order, wait_until

from broker.models import Delivery, DeliveryStatus
from connectors.testing import ConnectorContract


class ErpNextBackOffice:
    """What ERPNext holds for an order, read from the fake's own store.

    One record per amendment chain: an amended Sales Order (SAL-ORD-…-1) is the same booking
    in its next revision, so the chain's latest revision is the record.
    """

    def __init__(self, erp: FakeErpNext) -> None:
        self.erp = erp

    def prepare(self, order: Mapping[str, Any]) -> None:
        for line in order["lines"]:
            self.erp.put_item(line["sku"], line.get("name"))

    def records(self, external_id: str) -> list[dict[str, Any]]:
        orders = self.erp.sales_orders(f"#{external_id}")
        amended = {o.get("amended_from") for o in orders}
        return [{"reference": o["name"], "total": o["grand_total"], "customer": o["customer"],
                 "status": "cancelled" if o["docstatus"] == 2 else "open",
                 "invoiced": sum((i["grand_total"] for i in self.erp.invoices_of(o["name"])
                                  if i["docstatus"] == 1), Decimal(0))}
                for o in orders if o["name"] not in amended]


class TestErpNextConnectorContract(ConnectorContract):
    kind = "erpnext"

    @pytest.fixture(scope="class")
    def server(self) -> Iterator[FakeErpNext]:
        with FakeErpNext() as erp:
            yield erp

    @pytest.fixture
    def backoffice(self, server: FakeErpNext) -> ErpNextBackOffice:
        return ErpNextBackOffice(server)

    @pytest.fixture
    def config(self, server: FakeErpNext) -> dict[str, Any]:
        return {"url": server.url, "api_key": API_KEY, "api_secret": API_SECRET,
                "company": server.company, "tax_account": "Sales Tax - FT",
                "shipping_account": "Freight and Forwarding Charges - FT", "timeout": 10}

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "api_secret": "wrong-canary-secret-3f9a"}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "url": f"http://127.0.0.1:{free_port()}", "timeout": 2,
                "connect_timeout": 2}


def test_booked_and_cancelled_through_the_broker(stack: Stack) -> None:
    """A real worker: config through the CLI (secret encrypted), links learned, then a cancel."""
    with FakeErpNext() as erp:
        erp.put_item("SKU-001", "Blue Widget")
        secret = stack.source("shop")
        stack.cli("connectors", "add", "erp", "--kind", "erpnext", "--config", json.dumps({
            "url": erp.url, "api_key": API_KEY, "api_secret": API_SECRET, "timeout": 5,
            "tax_account": "Sales Tax - FT",
            "shipping_account": "Freight and Forwarding Charges - FT"}), "--json")
        stack.route("shop", "erp")
        stack.start_worker()
        assert stack.webhook("shop", secret, order("2001"))[0] == 202
        wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 1,
                   message="booking")
        (so,) = erp.sales_orders("#2001")
        assert so["docstatus"] == 1 and so["grand_total"] == Decimal("29.06")
        learned = stack.cli("mappings", "list", "--connector", "erp", "--json")
        assert {m["key"] for m in learned} >= {"email:ana@example.com"}
        cancelled = order("2001", status="cancelled", updated_at="2026-11-20T15:00:00Z")
        assert stack.webhook("shop", secret, cancelled)[0] == 202
        wait_until(lambda: erp.doc("Sales Order", so["name"])["docstatus"] == 2,
                   message="the cancellation")
        (invoice,) = erp.invoices_of(so["name"])
        assert invoice["docstatus"] == 2
