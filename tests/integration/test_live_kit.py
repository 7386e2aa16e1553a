"""`broker connectors kit NAME`: the kit's live cases against a configured connector, with
scratch orders discarded afterwards; a back office that breaks a promise fails its case."""

from __future__ import annotations

import json
from typing import Any

from fakes.erpnext import API_KEY, API_SECRET, FakeErpNext
from harness import Stack


def kit(stack: Stack, name: str, *skus: str) -> tuple[int, list[dict[str, Any]]]:
    args = ["broker", "connectors", "kit", name, "--json"]
    for sku in skus:
        args += ["--sku", sku]
    result = stack.app.test_cli_runner().invoke(args=args)
    return result.exit_code, json.loads(result.output[result.output.index("["):])


def test_the_kit_proves_an_http_back_office_and_discards_its_scratch_orders(stack: Stack, sink) -> None:
    stack.http_connector("erp", sink.url + "/orders",
                         lookup_url=sink.url + "/orders/by-external/{external_id}")
    code, rows = kit(stack, "erp", "SKU-A", "SKU-B")
    assert code == 0, rows
    results = {r["case"]: r["result"] for r in rows}
    assert results["check_ok"] == "pass" and results["push_twice_keeps_one_record"] == "pass"
    assert all(r == "pass" for r in results.values())
    scratch = [k for k in sink.records if k.startswith("FOBO-KIT-")]
    assert scratch and all(sink.creates[k] == 1 for k in scratch)
    assert all(sink.records[k]["status"] == "cancelled" for k in scratch)  # discarded


def test_the_kit_fails_a_back_office_it_cannot_find_orders_in(stack: Stack, sink) -> None:
    sink.ignore_idempotency_keys()
    stack.http_connector("erp", sink.url + "/orders")  # no lookup_url: nothing finds a booking
    code, rows = kit(stack, "erp", "SKU-A", "SKU-B")
    assert code == 1
    failed = {r["case"]: r["detail"] for r in rows if r["result"] == "FAIL"}
    assert "lookup() does not find the order just booked" in failed[
        "push_creates_one_record_found_by_lookup"]
    assert "push_twice_keeps_one_record" in failed  # two records for one order


def test_the_kit_proves_erpnext_and_leaves_no_live_documents(stack: Stack) -> None:
    with FakeErpNext() as erp:
        for sku in ("SKU-A", "SKU-B"):
            erp.put_item(sku, sku)
        stack.cli("connectors", "add", "erp", "--kind", "erpnext", "--config", json.dumps({
            "url": erp.url, "api_key": API_KEY, "api_secret": API_SECRET, "company": erp.company,
            "tax_account": "Sales Tax - FT",
            "shipping_account": "Freight and Forwarding Charges - FT", "timeout": 10}), "--json")
        code, rows = kit(stack, "erp", "SKU-A", "SKU-B")
        assert code == 0, rows
        assert [r for r in rows if r["case"].startswith("discard")]
        live = [d["name"] for d in erp.docs("Sales Order") if d["docstatus"] == 1]
        assert live == [], f"submitted Sales Orders left behind: {live}"


def test_connectors_limit_caps_pushes_in_flight_and_is_audited(stack: Stack, sink) -> None:
    from broker.models import Connector
    from broker.services.delivery import lease_plan

    stack.http_connector("erp", sink.url + "/orders")
    assert "at most 1 push in flight" in stack.cli("connectors", "limit", "erp", "1")
    with stack.runtime.db.begin() as session:
        row = session.query(Connector).one()
        assert lease_plan(row, 120, 50).max_in_flight == 1
    shown = stack.cli("connectors", "limit", "erp", "0", "--json")
    assert shown == {"name": "erp", "max_in_flight": 4, "kind_default": 4}
    actions = [e["action"] for e in stack.cli("audit", "list", "--json")]
    assert actions.count("connector.limit") == 2
    result = stack.app.test_cli_runner().invoke(args=["broker", "connectors", "limit", "nope", "1"])
    assert result.exit_code == 1 and "no connector named 'nope'" in result.output
