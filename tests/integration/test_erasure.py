"""Erasing a customer: after `erase`, no column of any table holds the customer's email, name,
phone or address in any form, while orders keep their totals, states and journeys and another
customer's data is untouched (issue 15, item 4)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.sink import Sink
from harness import Stack, newer, order
from sqlalchemy import JSON, LargeBinary, MetaData, String, Text, select, update
from sqlalchemy.types import NullType

from broker.db import utcnow
from broker.models import Connector, Delivery, InboundEvent, Order, OrderVersion, TimelineEntry
from broker.services import delivery
from broker.services.intake import normalise_pending

EMAIL = "Zoe.Quattlebaum+shop@Example.ORG"
CUSTOMER = {"external_id": "cus-zq-5521", "email": EMAIL, "email_verified": True,
            "first_name": "Zoë", "last_name": "Quattlebaum", "phone": "+44 20 7946 0958",
            "company": "Quattlebaum Kiteworks", "tax_id": "GB987654321"}
ADDRESS = {"name": "Zoë Quattlebaum", "company": "Quattlebaum Kiteworks",
           "line1": "17 Wisteria Crescent", "line2": "Flat 3b Ravensworth House",
           "city": "Dunsmoor-on-Wye", "region": "Herefordshire", "postal_code": "QX7 4ZR",
           "country": "GB", "phone": "+44 20 7946 0958"}
# What must not survive, in any case or JSON spelling.
PERSONAL = [EMAIL, "Zoë", "Quattlebaum", "+44 20 7946 0958", "Kiteworks", "GB987654321",
            "Wisteria Crescent", "Ravensworth", "Dunsmoor-on-Wye", "QX7 4ZR"]


@pytest.fixture(params=[("sqlite", "embedded"), ("postgresql", "redis")], ids=["embedded", "pg"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    database, queue = request.param
    built = Stack(tmp_path, database, queue)
    try:
        yield built
    finally:
        built.close()


def zoe(external_id: str, **changes: Any) -> dict[str, Any]:
    return order(external_id, customer=dict(CUSTOMER), billing_address=dict(ADDRESS),
                 shipping_address=dict(ADDRESS),
                 note="Ring Zoë on +44 20 7946 0958 if the gate at Wisteria Crescent is shut",
                 metadata={"gift_for": "Zoë Quattlebaum"}, **changes)


def settle(stack: Stack) -> None:
    """What the workers do, in this process: normalise what waits, push it to the sink."""
    normalise_pending(stack.runtime.db, limit=50)
    with stack.runtime.db.begin() as session:
        connector_id = session.execute(select(Connector.id).where(Connector.name == "erp")).scalar_one()
    delivery.run(stack.runtime, connector_id, budget_seconds=20)


def forms(values: list[str]) -> dict[str, str]:
    """Each value as it may be stored (UTF-8, JSON-escaped either way), case-folded."""
    found = {}
    for value in values:
        for form in (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
            found[form.casefold()] = value
    return found


def scan(stack: Stack, values: list[str]) -> dict[str, set[str]]:
    """Every text, JSON and blob column of every table (by reflection) → the values found."""
    metadata = MetaData()
    metadata.reflect(stack.runtime.db.engine)
    wanted = forms(values)
    found: dict[str, set[str]] = {}
    scanned = set()
    with stack.runtime.db.engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns
                       if isinstance(c.type, String | Text | JSON | LargeBinary | NullType)]
            scanned.update(f"{table.name}.{c.name}" for c in columns)
            for row in conn.execute(select(*columns)) if columns else ():
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, bytes | memoryview):
                        text = bytes(value).decode("utf-8", errors="replace")
                    elif isinstance(value, str):
                        text = value
                    else:
                        text = json.dumps(value) + json.dumps(value, ensure_ascii=False)
                    text = text.casefold()
                    for form, original in wanted.items():
                        if form in text:
                            found.setdefault(original, set()).add(f"{table.name}.{column.name}")
    assert {"inbound_events.body", "order_versions.data", "timeline.message", "orders.email",
            "audit_log.after", "identity_links.key", "deliveries.last_error"} <= scanned
    return found


def orders_of(stack: Stack) -> dict[str, dict[str, Any]]:
    """external id → what must survive an erasure: totals, state, references, journey steps."""
    with stack.runtime.db.begin() as session:
        rows = session.execute(select(Order)).scalars().all()
    result = {}
    for row in rows:
        detail = stack.cli("orders", "show", row.id, "--json")
        result[row.external_id] = {
            "id": row.id, "total": row.total, "currency": row.currency, "status": row.status,
            "number": row.number, "state": detail["state"],
            "references": sorted(d["reference"] or "" for d in detail["deliveries"]),
            "steps": [t["step"] for t in detail["timeline"]],
            "versions": [v["version"] for v in detail["versions"]]}
    return result


def rows_of(stack: Stack, external_id: str) -> dict[str, Any]:
    """Everything stored about one order, to prove it unchanged."""
    with stack.runtime.db.begin() as session:
        order_id = session.execute(select(Order.id).where(Order.external_id == external_id)).scalar_one()
        return {
            "order": session.execute(select(Order.email, Order.total)
                                     .where(Order.id == order_id)).one()._asdict(),
            "versions": session.execute(select(OrderVersion.data).where(
                OrderVersion.order_id == order_id).order_by(OrderVersion.version)).scalars().all(),
            "events": [bytes(b) for b in session.execute(select(InboundEvent.body).where(
                InboundEvent.order_id == order_id)).scalars()],
            "timeline": session.execute(select(TimelineEntry.message).where(
                TimelineEntry.order_id == order_id).order_by(TimelineEntry.at)).scalars().all(),
            "deliveries": session.execute(select(Delivery.serial_key, Delivery.reference).where(
                Delivery.order_id == order_id)).all(),
        }


def test_erase_removes_the_customer_everywhere_and_keeps_the_books(stack: Stack, sink: Sink):
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    token = stack.token("shopfront")
    admin = stack.token("dpo", scope="admin")
    stack.route("shop", "erp")
    stack.route("shopfront", "erp")

    # Zoë: a webhook order, updated once, and a REST order; Ana (the example customer): one order
    assert stack.webhook("shop", secret, zoe("ZQ-1"))[0] == 202
    rest = stack.client.post("/api/v1/orders", json=zoe("ZQ-2"), headers={
        "Authorization": f"Bearer {token}", "Idempotency-Key": "zq-2-first"})
    assert rest.status_code == 201, rest.get_data(as_text=True)
    assert stack.webhook("shop", secret, order("ANA-1"))[0] == 202
    normalise_pending(stack.runtime.db, limit=50)

    # while Zoë's orders still wait for the back office, erasing is refused and changes nothing
    before_refusal = rows_of(stack, "ZQ-1")
    refused = stack.client.post("/api/v1/customers/erase", json={"email": EMAIL},
                                headers={"Authorization": f"Bearer {admin}"})
    assert refused.status_code == 409, refused.get_data(as_text=True)
    assert "#ZQ-1" in refused.json["error"]["message"]
    assert rows_of(stack, "ZQ-1") == before_refusal

    # the back office's first answer echoes the customer: it lands in an attempt and the journey
    sink.script([(503, {"Content-Type": "application/json"}, json.dumps(
        {"error": f"customer Zoë Quattlebaum <{EMAIL.lower()}> is locked, try later"}).encode())])
    settle(stack)
    with stack.runtime.db.begin() as session:  # the retry is due now, not after its backoff
        session.execute(update(Delivery).where(Delivery.status == "pending")
                        .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    settle(stack)
    assert stack.webhook("shop", secret, zoe("ZQ-1", tags=["vip", "gift"],
                                             updated_at=newer(1)))[0] == 202
    settle(stack)
    stack.cli("mappings", "add", "erp", "customer", f"email:{EMAIL.lower()}", "C-ZQ-77", "--json")
    stack.cli("mappings", "add", "erp", "customer", "email:ana@example.com", "C-ANA-1", "--json")
    booked = orders_of(stack)
    assert {k: v["state"] for k, v in booked.items()} == {
        "ZQ-1": "booked", "ZQ-2": "booked", "ANA-1": "booked"}
    assert booked["ZQ-1"]["versions"] == [1, 2] and len(sink.records) == 3
    assert set(scan(stack, PERSONAL)) == set(PERSONAL)  # the scan sees every value beforehand
    ana = rows_of(stack, "ANA-1")

    answer = stack.client.post("/api/v1/customers/erase", json={"email": EMAIL.upper()},
                               headers={"Authorization": f"Bearer {admin}"})

    assert answer.status_code == 200, answer.get_data(as_text=True)
    erased = answer.json
    subject = "sha256:" + hashlib.sha256(EMAIL.casefold().encode()).hexdigest()
    assert erased["subject"] == subject
    assert erased["orders"] == 2 and erased["versions"] == 3 and erased["events"] == 2
    assert erased["links"] == 1 and erased["audit_entries"] == 1
    assert erased["attempts"] == 1 and erased["timeline"] >= 1
    assert scan(stack, PERSONAL) == {}
    after = orders_of(stack)
    for external_id, was in booked.items():  # totals, states, references and journeys remain
        now = after[external_id]
        assert {k: v for k, v in now.items() if k != "steps"} == {
            k: v for k, v in was.items() if k != "steps"}
        expected = was["steps"] + (["erased"] if external_id.startswith("ZQ") else [])
        assert now["steps"] == expected
    assert rows_of(stack, "ANA-1") == ana  # another customer's data untouched
    assert [m["key"] for m in stack.cli("mappings", "list", "--json")] == ["email:ana@example.com"]
    entries = stack.cli("audit", "list", "--action", "customer.erase", "--json")
    assert [(e["target_type"], e["target"], e["actor"]) for e in entries] == [
        ("customer", subject, admin_client_id(stack, "dpo"))]

    # idempotent: nothing left, and it says when it was erased; an unknown email is a clear 404
    again = stack.cli("customers", "erase", EMAIL, "--yes", "--json")
    assert again["already_erased_at"] and again["orders"] == 0
    assert len(stack.cli("audit", "list", "--action", "customer.erase", "--json")) == 1
    unknown = stack.client.post("/api/v1/customers/erase", json={"email": "nobody@example.net"},
                                headers={"Authorization": f"Bearer {admin}"})
    assert unknown.status_code == 404 and "holds no data" in unknown.json["error"]["message"]
    cli = stack.app.test_cli_runner().invoke(args=["broker", "customers", "erase",
                                                   "nobody@example.net", "--yes"])
    assert cli.exit_code == 1 and "holds no data for this email" in cli.output
    assert "Traceback" not in cli.output


def admin_client_id(stack: Stack, name: str) -> str:
    return next(c["client_id"] for c in stack.cli("clients", "list", "--json") if c["name"] == name)


def test_erase_needs_an_admin_and_a_valid_email(tmp_path: Path):
    stack = Stack(tmp_path, "sqlite", "embedded")
    try:
        _needs_an_admin_and_a_valid_email(stack)
    finally:
        stack.close()


def _needs_an_admin_and_a_valid_email(stack: Stack) -> None:
    reader = stack.token("reader", scope="orders:read")
    denied = stack.client.post("/api/v1/customers/erase", json={"email": EMAIL},
                               headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403
    admin = stack.token("dpo", scope="admin")
    invalid = stack.client.post("/api/v1/customers/erase", json={"email": "not an email"},
                                headers={"Authorization": f"Bearer {admin}"})
    assert invalid.status_code == 422 and "not an email address" in invalid.json["error"]["message"]
    spec = stack.client.get("/api/openapi.json").json
    operation = spec["paths"]["/api/v1/customers/erase"]["post"]
    assert operation["security"] == [{"oauth2": ["admin"]}]
    assert {"200", "404", "409", "422"} <= set(operation["responses"])
