"""What the tryton connector does beyond the contract, against a real trytond 8.

Invoices and their totals, customers (linked, found by email, created), parking on unknown
SKUs and taxes, cancellation before and after processing, paid and unpaid orders, exact money
(rounding gaps, taxes as charged, prices including tax), resuming a half-done booking, and
Tryton's warnings.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from backoffice.tryton import TrytonBackOffice, TrytonServer, shared_server
from marshmallow import ValidationError

from broker.schemas.order import load_order
from connectors.base import Links, PushContext
from connectors.errors import IdentityReview, MissingMapping, MissingSetting, PermanentError
from connectors.registry import connector_class
from connectors.testing import contract_order, later_version, push_context
from connectors.tryton import TrytonConnector

D = Decimal

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> TrytonServer:
    return shared_server(request)


@pytest.fixture
def office(server: TrytonServer) -> TrytonBackOffice:
    return TrytonBackOffice(server)


def make(server: TrytonServer, **extra: Any) -> TrytonConnector:
    cls = connector_class("tryton")
    return cls(cls.Config().load(server.connector_config(**extra)), name="tryton-test")


def quick(server: TrytonServer, **extra: Any) -> TrytonConnector:
    """Sales stop at quotation: enough where invoices do not matter, and 5x faster."""
    return make(server, workflow="quotation", **extra)


def ctx(order: dict[str, Any], *, links: Links | None = None, **kwargs: Any) -> PushContext:
    return dataclasses.replace(push_context(order, **kwargs), links=links or Links())


def order_of(lines: list[tuple[str, str, str, str, str]], *, shipping: tuple[str, str] | None = ("5.00", "0"),
             discount: str = "0", include: bool = False, payment: str | None = "paid",
             tax_name: str = "Sales Tax", verified: bool = True, token: str | None = None,
             **changes: Any) -> dict[str, Any]:
    """A loaded order from (sku, quantity, unit price, line discount, line tax) and totals to match."""
    token = token or uuid.uuid4().hex[:10]
    subtotal = sum((D(q) * D(p) - D(d) for _, q, p, d, _ in lines), D(0))
    tax = sum((D(t) for *_, t in lines), D(0)) + (D(shipping[1]) if shipping else D(0))
    ship = D(shipping[0]) if shipping else D(0)
    total = subtotal - D(discount) + ship + (D(0) if include else tax)
    doc: dict[str, Any] = {
        "external_id": f"TT-{token}", "number": f"#TT-{token}", "channel": "shopify",
        # Dated today: the Tryton database has fiscal years around the day it was built.
        "placed_at": (NOW - timedelta(minutes=2)).isoformat(), "updated_at": NOW.isoformat(),
        "currency": "USD", "prices_include_tax": include,
        "customer": {"external_id": f"c-{token}", "email": f"bo.{token}@example.com",
                     "email_verified": verified, "first_name": "Bo", "last_name": "Ng",
                     "phone": "+15550100"},
        "billing_address": {"name": "Bo Ng", "line1": "2 Elm St", "line2": "Apt 4", "city": "Springfield",
                            "region": "IL", "postal_code": "62704", "country": "US"},
        "shipping_address": {"name": "Bo Ng", "company": "Acme", "line1": "9 Dock Rd",
                             "city": "Peoria", "region": "IL", "postal_code": "61602", "country": "US"},
        "lines": [{"external_id": f"{token}-{n}", "sku": sku, "name": sku.title(), "quantity": q,
                   "unit_price": p, "discount": d,
                   "taxes": [{"name": tax_name, "rate": "0.0725", "amount": t}] if D(t) else []}
                  for n, (sku, q, p, d, t) in enumerate(lines)],
        "shipping": [{"method": "Standard", "amount": shipping[0],
                      "taxes": [{"name": tax_name, "rate": "0.0725", "amount": shipping[1]}]
                      if D(shipping[1]) else []}] if shipping else [],
        "discounts": [{"code": "SAVE", "amount": discount}] if D(discount) else [],
        "totals": {"subtotal": str(subtotal), "discount": discount, "shipping": str(ship),
                   "tax": str(tax), "total": str(total)},
        "payment": {"status": payment, "method": "card", "gateway": "shopify_payments",
                    "transaction_id": f"ch_{token}", "amount": str(total)} if payment else None,
    }
    doc.update(changes)
    return load_order(doc)


WIDGETS = [("CK-WIDGET", "3", "19.99", "0.01", "4.35"), ("CK-GADGET", "7", "0.07", "0", "0.04")]


def sale_of(server: TrytonServer, order: dict[str, Any]) -> dict[str, Any]:
    sales = server.sales(order["external_id"])
    assert len(sales) == 1, sales
    return sales[0]


def lines_of(server: TrytonServer, sale: dict[str, Any]) -> list[dict[str, Any]]:
    return server.read("sale.line", sale["lines"],
                       ["product.code", "quantity", "unit_price", "amount", "taxes", "description"])


def parties_with(server: TrytonServer, email: str) -> list[int]:
    return sorted({c["party"] for c in server.search_read(
        "party.contact_mechanism", [("value", "=", email)], ["party"])})


# --- invoices and money ---------------------------------------------------------------------------
def test_invoice_is_created_posted_and_paid_with_the_orders_totals(server: TrytonServer) -> None:
    order = contract_order()
    result = make(server).push(order, push_context(order))
    sale = sale_of(server, order)
    assert sale["state"] == "processing" and sale["invoice_state"] == "paid"
    assert (sale["total_amount"], sale["tax_amount"]) == (order["totals"]["total"], order["totals"]["tax"])
    invoice, = server.read("account.invoice", sale["invoices"],
                           ["number", "state", "total_amount", "tax_amount", "untaxed_amount"])
    assert invoice["state"] == "paid" and invoice["number"]
    assert invoice["total_amount"] == order["totals"]["total"]
    assert invoice["tax_amount"] == order["totals"]["tax"]
    assert result.reference == f"{sale['number']} / {invoice['number']}"
    assert sale["description"] == f"contract-kit order {order['number']}"
    # the line discount is folded into the price, split to the cent: 3 x 19.99 - 0.01
    widgets = [(line["quantity"], line["unit_price"]) for line in lines_of(server, sale)
               if line["product."]["code"] == "CK-WIDGET"]
    assert sorted(widgets) == [(1.0, D("19.98")), (2.0, D("19.99"))]


def test_rounding_gap_of_a_cent_is_booked_as_an_adjustment(server: TrytonServer) -> None:
    # the channel rounded 59.96 x 7.25 % = 4.3471 down to 4.34; Tryton rounds it to 4.35
    order = order_of([("CK-WIDGET", "3", "19.99", "0.01", "4.34")])
    result = make(server).push(order, push_context(order))
    sale = sale_of(server, order)
    assert sale["total_amount"] == order["totals"]["total"]
    adjustment = [line for line in lines_of(server, sale) if line["product."]["code"] == "FOBO-ADJ"]
    assert [a["amount"] for a in adjustment] == [D("-0.01")]
    assert result.details["invoices"][0]["total"] == str(order["totals"]["total"])


def test_a_wrong_tax_mapping_dead_letters_with_both_totals_and_leaves_nothing(
        server: TrytonServer) -> None:
    # a 20 % VAT mapped onto the 7.25 % tax: far beyond rounding
    order = order_of([("CK-WIDGET", "2", "50.00", "0", "20.00")], tax_name="VAT 20%")
    links = Links(tax={"VAT 20%": str(server.facts["tax"])})
    with pytest.raises(PermanentError) as caught:
        quick(server).push(order, ctx(order, links=links))
    message = str(caught.value)
    assert str(order["totals"]["total"]) in message and "112.25" in message and "tax mapping" in message
    assert server.sales(order["external_id"]) == []


def test_an_unmapped_tax_parks_naming_it_then_books_once_mapped(server: TrytonServer) -> None:
    order = order_of([("CK-WIDGET", "1", "10.00", "0", "0.73")], tax_name="City Tax")
    with pytest.raises(MissingMapping) as caught:
        quick(server).push(order, push_context(order))
    assert caught.value.kind == "tax" and caught.value.key == "City Tax"
    assert "City Tax" in str(caught.value)
    assert server.sales(order["external_id"]) == []
    quick(server).push(order, ctx(order, links=Links(tax={"City Tax": str(server.facts["tax"])})))
    assert sale_of(server, order)["total_amount"] == order["totals"]["total"]


def test_tax_mode_amounts_books_taxes_as_the_channel_charged_them(server: TrytonServer) -> None:
    order = order_of([("CK-WIDGET", "3", "19.99", "0.01", "4.34"), ("CK-GADGET", "7", "0.07", "0", "0.04")],
                     discount="1.03")
    # the products carry default taxes, so Tryton warns when posting lines without them
    make(server, tax_mode="amounts", tax_product="FOBO-TAX", taxes=[], accept_warnings=True).push(
        order, push_context(order))
    sale = sale_of(server, order)
    assert sale["total_amount"] == order["totals"]["total"] and sale["tax_amount"] == 0
    taxes = [line for line in lines_of(server, sale) if line["product."]["code"] == "FOBO-TAX"]
    assert [(t["description"], t["amount"]) for t in taxes] == [("Sales Tax", D("4.38"))]


def test_prices_including_tax_are_booked_net_and_exact(server: TrytonServer) -> None:
    # 3 x 10.75 gross with 2.18 tax included: 30.07 net, split 2 x 10.02 + 1 x 10.03
    order = order_of([("CK-WIDGET", "3", "10.75", "0", "2.18")], shipping=("5.00", "0"), include=True)
    quick(server).push(order, push_context(order))
    sale = sale_of(server, order)
    assert (sale["total_amount"], sale["tax_amount"]) == (D("37.25"), D("2.18"))
    assert sorted((line["quantity"], line["unit_price"]) for line in lines_of(server, sale)
                  if line["product."]["code"] == "CK-WIDGET") == [(1.0, D("10.03")), (2.0, D("10.02"))]


# --- customers -----------------------------------------------------------------------------------
def test_a_linked_customer_is_used_as_is(server: TrytonServer) -> None:
    party = server.rpc("model.party.party.create", [{"name": "Linked Customer Ltd"}])[0]
    order = order_of(WIDGETS)
    key = f"customer:shopify:{order['customer']['external_id']}"
    result = quick(server).push(order, ctx(order, links=Links(customer={key: str(party)})))
    assert sale_of(server, order)["party"] == party
    assert parties_with(server, order["customer"]["email"]) == []  # no duplicate party
    assert {(link.key, link.value) for link in result.links} >= {(key, str(party))}


def test_an_unknown_customer_is_created_with_addresses_and_linked(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    result = quick(server).push(order, push_context(order))
    sale = sale_of(server, order)
    party, = server.read("party.party", [sale["party"]], ["name", "email", "phone", "addresses"])
    assert (party["name"], party["email"], party["phone"]) == ("Bo Ng", order["customer"]["email"],
                                                               "+15550100")
    invoice_address, shipment_address = server.read(
        "party.address", [sale["invoice_address"], sale["shipment_address"]],
        ["street", "city", "postal_code", "subdivision.code", "country.code", "party_name"])
    assert invoice_address["street"] == "2 Elm St\nApt 4"
    assert invoice_address["subdivision."]["code"] == "US-IL"
    assert (shipment_address["city"], shipment_address["party_name"]) == ("Peoria", "Bo Ng, Acme")
    assert {(link.key, link.value) for link in result.links} == {
        (f"customer:shopify:{order['customer']['external_id']}", str(party["id"])),
        (f"email:{order['customer']['email']}", str(party["id"]))}
    # the next order of the same (verified) email, without links yet: the same party, no new address
    again = order_of(WIDGETS, customer={**order["customer"], "external_id": "other-id"})
    quick(server).push(again, push_context(again))
    assert sale_of(server, again)["party"] == party["id"]
    assert sale_of(server, again)["invoice_address"] == sale["invoice_address"]


def test_an_unverified_email_matching_a_party_parks_for_review(server: TrytonServer) -> None:
    first = order_of(WIDGETS)
    quick(server).push(first, push_context(first))
    token = uuid.uuid4().hex[:10]
    second = order_of(WIDGETS, token=token, verified=False,
                      customer={**first["customer"], "external_id": f"c-{token}", "email_verified": False})
    with pytest.raises(IdentityReview):
        quick(server).push(second, push_context(second))
    assert server.sales(second["external_id"]) == []


def test_a_retry_finds_the_party_its_first_attempt_created_even_with_an_unverified_email(
        server: TrytonServer) -> None:
    # the first attempt creates the party, then parks on the rounding gap (no adjustment_product)
    order = order_of([("CK-WIDGET", "3", "19.99", "0.01", "4.34")], verified=False)
    with pytest.raises(MissingSetting):
        quick(server, adjustment_product=None).push(order, push_context(order))
    created = parties_with(server, order["customer"]["email"])
    assert len(created) == 1
    quick(server).push(order, push_context(order, attempt=2))  # the setting was saved
    assert sale_of(server, order)["party"] == created[0]
    assert parties_with(server, order["customer"]["email"]) == created


def test_an_unknown_sku_parks_before_anything_is_written(server: TrytonServer) -> None:
    sku = f"NOPE-{uuid.uuid4().hex[:6]}"
    order = order_of([(sku, "1", "5.00", "0", "0.36")])
    with pytest.raises(MissingMapping) as caught:
        quick(server).push(order, push_context(order))
    assert (caught.value.kind, caught.value.key) == ("product", sku) and sku in str(caught.value)
    assert server.sales(order["external_id"]) == []
    assert parties_with(server, order["customer"]["email"]) == []
    # mapped to an existing product, it books
    links = Links(product={sku: str(server.facts["products"]["CK-GADGET"])})
    quick(server).push(order, ctx(order, links=links))
    assert sale_of(server, order)["total_amount"] == order["totals"]["total"]


def test_products_read_from_tryton_are_reused_until_reference_ttl_then_read_again(
        server: TrytonServer) -> None:
    sku = f"CK-TTL-{uuid.uuid4().hex[:6]}"
    product = server.ensure_product(sku, D("20.00"))
    connector, now, calls = quick(server), [0.0], []
    connector.clock = lambda: now[0]  # type: ignore[method-assign]
    real_call = connector.rpc.call

    def call(method: str, *params: Any, **kwargs: Any) -> Any:
        calls.append(method)
        return real_call(method, *params, **kwargs)

    connector.rpc.call = call  # type: ignore[method-assign]
    lines = [(sku, "1", "20.00", "0", "1.45")]
    connector.push(first := order_of(lines), push_context(first))
    assert "model.product.product.search_read" in calls
    calls.clear()
    connector.push(second := order_of(lines), push_context(second))
    assert not [c for c in calls if c.startswith("model.product.")], calls  # within the ttl
    template = server.read("product.product", [product], ["template"])[0]["template"]
    server.rpc("model.product.template.write", [template], {"salable": False})
    now[0] += connector.reference_ttl  # then an edit in Tryton counts
    with pytest.raises(PermanentError) as caught:
        connector.push(third := order_of(lines), push_context(third))
    assert "not salable" in str(caught.value) and server.sales(third["external_id"]) == []
    server.rpc("model.product.template.write", [template], {"salable": True})
    connector.push(third, push_context(third))  # a failed push forgot what it read: read afresh
    assert sale_of(server, third)["total_amount"] == third["totals"]["total"]


# --- cancellation --------------------------------------------------------------------------------
def test_cancel_an_open_sale(server: TrytonServer, office: TrytonBackOffice) -> None:
    connector = make(server, workflow="quotation")
    order = order_of(WIDGETS)
    booked = connector.push(order, push_context(order))
    result = connector.cancel({**order, "status": "cancelled"},
                              push_context(order, action="cancel", reference=booked.reference, version=2))
    assert office.records(order["external_id"])[0]["state"] == "cancelled"
    assert result.reference == booked.reference
    # a cancel delivered twice is fine
    connector.cancel(order, push_context(order, action="cancel", reference=booked.reference, version=2))


def test_cancel_a_processed_sale_says_what_to_do_by_hand(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    booked = make(server).push(order, push_context(order))
    with pytest.raises(PermanentError) as caught:
        make(server).cancel(order, push_context(order, action="cancel", reference=booked.reference))
    message = str(caught.value)
    assert booked.reference in message and "by hand" in message and "Handle Invoice Exception" in message
    assert sale_of(server, order)["state"] == "processing"


def test_a_cancelled_order_never_booked_is_booked_as_a_cancelled_sale(
        server: TrytonServer, office: TrytonBackOffice) -> None:
    order = order_of(WIDGETS, status="cancelled")
    result = make(server).push(order, push_context(order))
    record, = office.records(order["external_id"])
    assert record["status"] == "cancelled" and record["reference"] in result.reference


# --- payments and updates ------------------------------------------------------------------------
def test_an_unpaid_order_leaves_the_invoice_due_until_a_paid_version_arrives(
        server: TrytonServer) -> None:
    order = order_of(WIDGETS, payment="pending")
    booked = make(server).push(order, push_context(order))
    invoice_id = sale_of(server, order)["invoices"][0]
    invoice, = server.read("account.invoice", [invoice_id], ["state", "amount_to_pay"])
    assert (invoice["state"], invoice["amount_to_pay"]) == ("posted", order["totals"]["total"])
    paid = order_of(WIDGETS, token=order["external_id"][3:], payment="paid", note="paid now")
    result = make(server).push(paid, push_context(paid, action="update", reference=booked.reference,
                                                  version=2))
    assert result.reference == booked.reference and result.details["unchanged"]
    assert server.read("account.invoice", [invoice_id], ["state"])[0]["state"] == "paid"


def test_the_payment_method_can_be_mapped_by_gateway(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    links = Links(payment={"shopify_payments": str(server.facts["payment_method"])})
    make(server, payment_method=None).push(order, ctx(order, links=links))
    assert sale_of(server, order)["invoice_state"] == "paid"
    unmapped = order_of(WIDGETS)
    make(server, payment_method=None).push(unmapped, push_context(unmapped))
    assert sale_of(server, unmapped)["invoice_state"] == "awaiting payment"


def test_a_changed_processed_sale_dead_letters_with_instructions(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    booked = make(server).push(order, push_context(order))
    changed = order_of([("CK-WIDGET", "4", "19.99", "0", "5.80")], token=order["external_id"][3:])
    with pytest.raises(PermanentError) as caught:
        make(server).push(changed, push_context(changed, action="update", reference=booked.reference,
                                                version=2))
    assert "credit note" in str(caught.value) and booked.reference in str(caught.value)
    assert sale_of(server, order)["total_amount"] == order["totals"]["total"]


def test_an_update_of_an_open_sale_rewrites_it(server: TrytonServer) -> None:
    connector = make(server, workflow="quotation")
    order = order_of(WIDGETS)
    booked = connector.push(order, push_context(order))
    changed = order_of([("CK-GADGET", "10", "0.07", "0", "0.05")], token=order["external_id"][3:])
    result = connector.push(changed, push_context(changed, action="update", reference=booked.reference,
                                                  version=2))
    sale = sale_of(server, order)
    assert result.reference == booked.reference and sale["state"] == "quotation"
    assert sale["total_amount"] == changed["totals"]["total"]
    assert {line["product."]["code"] for line in lines_of(server, sale)} == {"CK-GADGET", "FOBO-SHIP"}


def test_a_create_finding_its_sale_applies_a_newer_version(server: TrytonServer) -> None:
    # the answer to the first push was lost, and the next version arrives as a create again
    order = order_of(WIDGETS)
    first = quick(server).push(order, push_context(order))
    changed = order_of([("CK-GADGET", "10", "0.07", "0", "0.05")], token=order["external_id"][3:])
    again = quick(server).push(changed, push_context(changed, version=2))
    assert again.reference == first.reference and again.details["updated"]
    assert sale_of(server, order)["total_amount"] == changed["totals"]["total"]


# --- resilience ----------------------------------------------------------------------------------
def test_a_draft_left_by_a_dead_attempt_is_completed_not_duplicated(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    party = server.rpc("model.party.party.create", [{"name": "Half done"}])[0]
    server.rpc("model.sale.sale.create", [{"party": party, "reference": order["external_id"]}])
    make(server).push(order, push_context(order))
    sale = sale_of(server, order)
    assert sale["state"] == "processing" and sale["total_amount"] == order["totals"]["total"]


def test_an_expired_session_logs_in_again(server: TrytonServer) -> None:
    connector = quick(server)
    connector.check()
    # end the session, as the session timeout or a server-side logout would
    connector.rpc._post("common.db.logout", [], connector.rpc._session())
    order = order_of(WIDGETS)
    connector.push(order, push_context(order))
    assert sale_of(server, order)["state"] == "quotation"


def test_a_wrong_database_is_permanent(server: TrytonServer) -> None:
    connector = quick(server, database="no_such_db")
    with pytest.raises(PermanentError) as caught:
        connector.check()
    assert "no_such_db" in str(caught.value)


def test_a_tryton_warning_stops_unless_accepted_and_the_booking_resumes(server: TrytonServer) -> None:
    # taxed shipping on a product whose default taxes are none: Tryton warns when posting
    order = order_of(WIDGETS, shipping=("5.00", "0.36"))
    with pytest.raises(PermanentError) as caught:
        make(server).push(order, push_context(order))
    assert "accept_warnings" in str(caught.value) and "default taxes" in str(caught.value)
    result = make(server, accept_warnings=True).push(order, push_context(order))
    sale = sale_of(server, order)
    assert sale["invoice_state"] == "paid" and sale["total_amount"] == order["totals"]["total"]
    assert " / " in result.reference


# --- settings park, whatever the line ---------------------------------------------------------------
@pytest.mark.parametrize(("setting", "order_kwargs"), [
    ("discount_product", {"discount": "1.00"}),
    ("shipping_product", {}),
])
def test_a_missing_product_setting_parks_on_that_setting_and_books_once_set(
        server: TrytonServer, setting: str, order_kwargs: dict[str, Any]) -> None:
    lines = [("CK-WIDGET", "1", "10.00", "0", "0.73")]
    order = order_of(lines, **order_kwargs)
    with pytest.raises(MissingSetting) as caught:
        quick(server, **{setting: None}).push(order, push_context(order))
    assert caught.value.key == setting and setting in str(caught.value)
    assert server.sales(order["external_id"]) == []
    quick(server).push(order, push_context(order))  # the configuration was saved with it
    assert sale_of(server, order)["total_amount"] == order["totals"]["total"]


def test_a_setting_naming_no_product_parks_too(server: TrytonServer) -> None:
    order = order_of(WIDGETS, discount="1.00")
    with pytest.raises(MissingSetting) as caught:
        quick(server, discount_product="NO-SUCH-PRODUCT").push(order, push_context(order))
    assert caught.value.key == "discount_product" and "NO-SUCH-PRODUCT" in str(caught.value)
    assert server.sales(order["external_id"]) == []


def test_a_rounding_gap_without_adjustment_product_parks_and_leaves_no_draft(
        server: TrytonServer) -> None:
    order = order_of([("CK-WIDGET", "3", "19.99", "0.01", "4.34")])  # Tryton rounds to 4.35
    with pytest.raises(MissingSetting) as caught:
        quick(server, adjustment_product=None).push(order, push_context(order))
    assert caught.value.key == "adjustment_product" and "-0.01" in str(caught.value)
    assert server.sales(order["external_id"]) == []


# --- notes ---------------------------------------------------------------------------------------
def test_a_note_change_on_a_processed_sale_reaches_its_comment(server: TrytonServer) -> None:
    order = order_of(WIDGETS, note="leave at the door")
    booked = make(server).push(order, push_context(order))
    changed = later_version(order, note="ring twice")
    result = make(server).push(changed, push_context(changed, action="update",
                                                      reference=booked.reference, version=2))
    sale = sale_of(server, order)
    assert sale["state"] == "processing" and sale["comment"] == "ring twice"
    assert result.not_applied == () and result.reference == booked.reference


def test_an_address_change_on_a_processed_sale_is_reported_not_applied(server: TrytonServer) -> None:
    order = order_of(WIDGETS)
    booked = make(server).push(order, push_context(order))
    moved = later_version(order, shipping_address={**order["shipping_address"], "line1": "1 New Rd"})
    result = make(server).push(moved, push_context(moved, action="update",
                                                  reference=booked.reference, version=2))
    assert len(result.not_applied) == 1
    assert result.not_applied[0].startswith("the shipping address: Tryton keeps the addresses")
    unchanged = later_version(moved, shipping_address=order["shipping_address"])
    assert make(server).push(unchanged, push_context(
        unchanged, action="update", reference=booked.reference, version=3)).not_applied == ()


def test_a_create_finding_its_open_sale_applies_a_note_only_change(server: TrytonServer) -> None:
    order = order_of(WIDGETS, note="first")
    quick(server).push(order, push_context(order))  # its answer was lost
    changed = later_version(order, note="second")
    result = quick(server).push(changed, push_context(changed, version=2))  # so v2 is a create
    assert sale_of(server, order)["comment"] == "second" and result.not_applied == ()


# --- races and Tryton's own errors ---------------------------------------------------------------
def test_a_party_code_taken_by_a_concurrent_worker_is_retried_not_dead_lettered(
        server: TrytonServer) -> None:
    """Two workers draw the same party code from trytond's sequence (SQLite takes no lock): the
    loser's create fails on the unique code, and the winner's code is committed by then."""
    sequence = server.rpc("model.party.configuration.read", [1], ["party_sequence"])[0]["party_sequence"]
    connector = quick(server)
    real_call, raced = connector.rpc.call, []

    def other_worker_first(method: str, *params: Any, context: Any = None) -> Any:
        if method != "model.party.party.create" or raced:
            return real_call(method, *params, context=context)
        raced.append(method)
        drawn = server.rpc("model.ir.sequence.read", [sequence], ["number_next"])[0]["number_next"]
        server.rpc("model.party.party.create", [{"name": "The other worker's customer"}])
        # this worker read the sequence before the other one committed its draw
        server.rpc("model.ir.sequence.write", [sequence], {"number_next": drawn})
        try:
            return real_call(method, *params, context=context)
        finally:  # this worker's transaction rolled back; the other one's draw stands
            server.rpc("model.ir.sequence.write", [sequence], {"number_next": drawn + 1})

    connector.rpc.call = other_worker_first  # type: ignore[method-assign]
    order = order_of(WIDGETS)
    connector.push(order, push_context(order))
    assert raced, "the race was not played"
    party, = server.read("party.party", [sale_of(server, order)["party"]], ["code", "name"])
    assert party["name"] == "Bo Ng"
    assert len(server.search_read("party.party", [("code", "=", party["code"])], ["id"])) == 1


def test_a_sale_tryton_fails_to_process_dead_letters_saying_where_to_look_then_resumes(
        server: TrytonServer) -> None:
    """A product without a revenue account: Tryton's processing task fails after confirmation
    (it only logs why), and the booking user may not press Process."""
    sku = f"NOACC-{uuid.uuid4().hex[:6]}"
    unit = server.read("product.product", [server.facts["products"]["CK-WIDGET"]], ["default_uom"])[0]
    template, = server.rpc("model.product.template.create", [{
        "name": sku, "code": sku, "type": "service", "salable": True, "list_price": D("5"),
        "default_uom": unit["default_uom"], "sale_uom": unit["default_uom"],
        "products": [("create", [{}])]}])
    order = order_of([(sku, "1", "5.00", "0", "0")], shipping=None)
    with pytest.raises(PermanentError) as caught:
        make(server).push(order, push_context(order))
    message = str(caught.value)
    assert "trytond log" in message and "Process" in message and "Sales Administrator" in message
    assert sale_of(server, order)["state"] == "confirmed"
    # the integrator gives the product its category (and so its accounts); the replay finishes
    category = server.read("product.template", [server.read(
        "product.product", [server.facts["products"]["FOBO-SHIP"]], ["template"])[0]["template"]],
        ["account_category"])[0]["account_category"]
    server.rpc("model.product.template.write", [template], {"account_category": category})
    make(server).push(order, push_context(order))
    sale = sale_of(server, order)
    assert sale["state"] in ("processing", "done") and sale["invoice_state"] == "paid"


@pytest.mark.parametrize("suffix", ["/fobo", "/fobo/rpc/", "/rpc", "/#fobo", "/sao/"])
def test_a_url_naming_the_database_or_an_endpoint_is_refused_saying_what_to_change(
        server: TrytonServer, suffix: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrytonConnector.Config().load(server.connector_config(url=server.url + suffix))
    message = str(caught.value.messages["url"])
    assert f"remove '{suffix}'" in message and server.url in message


def test_a_url_with_a_wrong_prefix_says_what_to_change_not_the_raw_page(server: TrytonServer) -> None:
    with pytest.raises(PermanentError) as caught:
        quick(server, url=f"{server.url}/erp").check()
    message = str(caught.value)
    assert "<html" not in message and "405" in message
    assert f"Set url to the server's address, e.g. {server.url}" in message


# --- the lease and scratch runs ------------------------------------------------------------------
def test_calls_per_push_covers_a_booking_through_to_a_paid_invoice(server: TrytonServer) -> None:
    def requests() -> int:  # trytond logs every request it serves
        return server.log.read_text(errors="replace").count('"POST /fobo/')

    before = requests()
    order = contract_order()
    make(server).push(order, push_context(order))
    made = requests() - before
    assert sale_of(server, order)["invoice_state"] == "paid"
    assert 0 < made <= TrytonConnector.calls_per_push, made


def test_discard_deletes_open_sales_and_says_what_a_processed_one_keeps(server: TrytonServer) -> None:
    quoted = order_of(WIDGETS)
    quick(server).push(quoted, push_context(quoted))
    quick(server).discard(quoted, push_context(quoted))
    assert server.sales(quoted["external_id"]) == []
    processed = order_of(WIDGETS)
    booked = make(server).push(processed, push_context(processed))
    with pytest.raises(PermanentError) as caught:
        make(server).discard(processed, push_context(processed))
    assert booked.reference in str(caught.value) and "invoice" in str(caught.value)
    assert sale_of(server, processed)["state"] == "processing"
