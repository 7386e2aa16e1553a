"""The erpnext connector's specifics, against the fake ERPNext on loopback (tests/fakes/erpnext.py).

The contract kit (tests/integration/test_contract_erpnext.py) proves the common promises; these
cases prove what is particular to ERPNext: exact totals however the channel rounds, customers
matched not duplicated, mappings, amendments, invoices that must not be cancelled, lost answers,
and that the fake itself behaves like Frappe where the connector relies on it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import urllib3
from fakes.erpnext import API_KEY, API_SECRET, FakeErpNext
from marshmallow import ValidationError

from broker.schemas.order import load_order
from connectors.base import Links, PushContext
from connectors.erpnext import ErpNextConfig, ErpNextConnector, _messages
from connectors.errors import (
    IdentityReview,
    MissingMapping,
    MissingSetting,
    PermanentError,
    TransientError,
)
from connectors.testing import contract_order

TAX, SHIP = "Sales Tax - FT", "Freight and Forwarding Charges - FT"
D = Decimal


@pytest.fixture
def erp() -> Iterator[FakeErpNext]:
    with FakeErpNext() as fake:
        for sku in ("SKU-A", "SKU-B", "CK-WIDGET", "CK-GADGET"):
            fake.put_item(sku)
        yield fake


@pytest.fixture
def connect(erp: FakeErpNext) -> Iterator[Callable[..., ErpNextConnector]]:
    made: list[ErpNextConnector] = []

    def make(**overrides: Any) -> ErpNextConnector:
        config = {"url": erp.url, "api_key": API_KEY, "api_secret": API_SECRET,
                  "tax_account": TAX, "shipping_account": SHIP, "timeout": 5, **overrides}
        connector = ErpNextConnector(ErpNextConfig().load({k: v for k, v in config.items()
                                                           if v is not None}), name="erp")
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def make_order(*, lines: list[tuple[str, str, str, str, str]] | None = None,
               shipping: str | None = "5.00", ship_tax: str = "0.00", discount: str = "0.00",
               email: str | None = "ana@example.com", verified: bool = True,
               inclusive: bool = False, number: str | None = None, currency: str = "USD",
               status: str = "open", external_id: str | None = None,
               customer_id: str | None = "c-1", extra_total: str = "0",
               updated_at: str = "2026-11-20T14:05:00Z") -> dict[str, Any]:
    """A loaded canonical order; lines are (sku, qty, unit price, line discount, tax amount)."""
    lines = lines or [("SKU-A", "2", "12.50", "0.00", "1.56")]
    external_id = external_id or f"E-{uuid.uuid4().hex[:8]}"
    subtotal = sum((D(q) * D(p) - D(d) for _, q, p, d, _ in lines), D(0))
    tax = sum((D(t) for *_, t in lines), D(0)) + D(ship_tax)
    ship = D(shipping or "0")
    total = subtotal - D(discount) + ship + (0 if inclusive else tax) + D(extra_total)
    total = total.quantize(D(1).scaleb(-{"JPY": 0, "KWD": 3}.get(currency, 2)), ROUND_HALF_UP)
    return load_order({
        "external_id": external_id, "number": number or f"#{external_id}", "channel": "shop",
        "placed_at": "2026-11-20T14:03:00Z", "updated_at": updated_at, "status": status,
        "currency": currency,
        "customer": {"external_id": customer_id, "email": email, "email_verified": verified,
                     "first_name": "Ana", "last_name": "Silva", "phone": "+15550100"},
        "billing_address": {"name": "Ana Silva", "line1": "1 Main St", "city": "Springfield",
                            "region": "IL", "postal_code": "62701", "country": "US"},
        "shipping_address": {"name": "Ana Silva", "line1": "9 Dock Rd", "city": "Chicago",
                             "region": "IL", "postal_code": "60601", "country": "US"},
        "lines": [{"sku": s, "name": s, "quantity": q, "unit_price": p, "discount": d,
                   "taxes": [{"name": "Sales Tax", "rate": "0.0625", "amount": t}] if D(t) else []}
                  for s, q, p, d, t in lines],
        "shipping": [{"method": "Standard", "amount": shipping,
                      "taxes": [{"name": "Sales Tax", "amount": ship_tax}] if D(ship_tax) else []}]
        if shipping else [],
        "discounts": [{"code": "X", "amount": discount}] if D(discount) else [],
        "prices_include_tax": inclusive,
        "totals": {"total": str(total)},
    })


def ctx(order: dict[str, Any], action: str = "create", reference: str | None = None,
        links: Links | None = None, version: int = 1) -> PushContext:
    return PushContext(delivery_id=f"d-{order['external_id']}",
                       idempotency_key=f"{order['external_id']}.v{version}", action=action,
                       attempt=1, reference=reference, links=links or Links())


def only_order(erp: FakeErpNext, order: dict[str, Any]) -> dict[str, Any]:
    found = erp.sales_orders(order["number"])
    assert len(found) == 1, found
    return found[0]


# --- configuration ------------------------------------------------------------------------------
def test_config_defaults_and_validation() -> None:
    loaded = ErpNextConfig().load({"url": "https://erp.example.com", "api_key": "k",
                                   "api_secret": "s"})
    assert loaded["shipping_as"] == "charge" and loaded["make_invoice"] is True
    assert loaded["customer_anchors"] == ["customer_id", "email"]
    for bad, field in (({"shipping_as": "item", "shipping_account": SHIP}, "shipping_account"),
                       ({"timezone": "Mars/Olympus"}, "timezone"),
                       ({"url": "https://k:s@erp.example.com"}, "url"),
                       ({"po_number": "sku"}, "po_number")):
        with pytest.raises(ValidationError) as caught:
            ErpNextConfig().load({"url": "https://erp.example.com", "api_key": "k",
                                  "api_secret": "s", **bad})
        assert field in caught.value.messages
    assert "api_secret" not in ErpNextConfig().dump(loaded)


def test_check_names_a_missing_company_or_account(connect: Callable[..., ErpNextConnector]) -> None:
    connect(company="FOBO Trading").check()
    with pytest.raises(PermanentError, match="company"):
        connect(company="Nope Inc").check()
    with pytest.raises(PermanentError, match="tax_account"):
        connect(tax_account="Sales Tax - XX").check()


# --- exact money ------------------------------------------------------------------------------
def test_an_even_line_discount_is_the_items_discount(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "4", "10.00", "2.00", "2.38")], shipping=None)
    connect().push(order, ctx(order))
    so = only_order(erp, order)
    item = so["items"][0]
    assert (item["price_list_rate"], item["discount_amount"], item["rate"]) == (D(10), D("0.5"),
                                                                              D("9.5"))
    assert not so.get("discount_amount") and so["grand_total"] == order["totals"]["total"]


def test_uneven_discounts_and_sub_cent_prices_land_in_the_additional_discount(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "3", "19.99", "0.01", "4.35"),
                              ("SKU-B", "7", "0.0125", "0.00", "0.01")], discount="1.03")
    result = connect().push(order, ctx(order))
    so = only_order(erp, order)
    assert so["apply_discount_on"] == "Net Total"
    assert so["discount_amount"] == D("1.04") + (D("0.02") * 7 - D("0.0875")).quantize(D("0.01"))
    assert so["grand_total"] == order["totals"]["total"] == D(result.details["grand_total"])
    invoice = erp.doc("Sales Invoice", result.details["sales_invoice"])
    assert invoice["grand_total"] == invoice["outstanding_amount"] == order["totals"]["total"]
    assert invoice["rounded_total"] == 0  # disable_rounded_total: no rounding to 0.05 or units


def test_tax_inclusive_prices_are_booked_net_with_the_channels_tax(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "3", "9.99", "0.00", "4.79")], shipping="5.95",
                       ship_tax="0.95", inclusive=True)
    connect().push(order, ctx(order))
    so = only_order(erp, order)
    assert so["items"][0]["rate"] == D("8.40")  # (29.97 - 4.79) / 3 rounded up
    assert [t["tax_amount"] for t in so["taxes"]] == [D(5), D("5.74")]
    assert so["grand_total"] == order["totals"]["total"] == D("35.92")


@pytest.mark.parametrize("currency", ["JPY", "KWD"])
def test_currencies_with_zero_or_three_decimals(currency: str,
                                                 connect: Callable[..., ErpNextConnector]) -> None:
    with FakeErpNext(currency=currency) as erp:
        for sku in ("CK-WIDGET", "CK-GADGET"):
            erp.put_item(sku)
        order = contract_order(currency=currency)
        connector = connect(url=erp.url)
        connector.push(order, ctx(order))
        assert only_order(erp, order)["grand_total"] == order["totals"]["total"]


def test_a_total_above_its_parts_needs_a_rounding_account(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "1", "10.00", "0.00", "0.00")], shipping=None,
                       extra_total="0.01")
    with pytest.raises(MissingSetting, match="rounding_account") as caught:
        connect().push(order, ctx(order))
    assert caught.value.key == "rounding_account"
    assert erp.sales_orders(order["number"]) == []
    connect(rounding_account="Round Off - FT").push(order, ctx(order))
    so = only_order(erp, order)
    assert so["taxes"][-1]["account_head"] == "Round Off - FT"
    assert so["grand_total"] == D("10.01")


def test_shipping_as_an_item(erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_item("SHIP", "Shipping")
    order = make_order()
    connect(shipping_as="item", shipping_account=None, shipping_item="SHIP").push(order, ctx(order))
    so = only_order(erp, order)
    assert [i["item_code"] for i in so["items"]] == ["SKU-A", "SHIP"]
    assert [t["account_head"] for t in so["taxes"]] == [TAX]
    assert so["grand_total"] == order["totals"]["total"]


def test_erpnext_computing_another_total_is_refused_and_leaves_nothing(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.store["Currency"]["USD"]["number_format"] = "#,###"  # a site that shows no cents
    order = make_order(lines=[("SKU-A", "1", "10.40", "0.00", "0.00")], shipping=None)
    with pytest.raises(PermanentError, match="grand total 10 ") as caught:
        connect().push(order, ctx(order))
    assert "10.40" in str(caught.value) and "was deleted" in str(caught.value)
    assert erp.sales_orders(order["number"]) == []


# --- mappings and customers ------------------------------------------------------------------
def test_tax_and_shipping_mappings(erp: FakeErpNext,
                                   connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(ship_tax="0.31")
    links = Links(tax={"Sales Tax": "VAT - FT"}, shipping={"Standard": TAX})
    connect().push(order, ctx(order, links=links))
    taxes = only_order(erp, order)["taxes"]
    assert [(t["account_head"], t["tax_amount"]) for t in taxes] == [(TAX, D(5)),
                                                                    ("VAT - FT", D("1.87"))]
    assert taxes[1]["description"] == "Sales Tax"  # rates differ (the shipping tax has none)


def test_unmapped_tax_or_shipping_parks_before_anything_is_created(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(email="new.person@example.com")
    customers = len(erp.docs("Customer"))
    with pytest.raises(MissingMapping, match="Sales Tax") as caught:
        connect(tax_account=None).push(order, ctx(order))
    assert (caught.value.kind, caught.value.key) == ("tax", "Sales Tax")
    with pytest.raises(MissingMapping, match="Standard"):
        connect(shipping_account=None).push(order, ctx(order))
    assert erp.sales_orders(order["number"]) == [] and len(erp.docs("Customer")) == customers


def test_new_customer_gets_contact_and_addresses(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(email="Ana.New@Example.com")
    result = connect().push(order, ctx(order))
    so = only_order(erp, order)
    customer = erp.doc("Customer", so["customer"])
    assert customer["email_id"] == "ana.new@example.com" and customer["mobile_no"] == "+15550100"
    contact = erp.doc("Contact", customer["customer_primary_contact"])
    assert contact["links"][0]["link_name"] == customer["name"]
    billing = erp.doc("Address", so["customer_address"])
    shipping = erp.doc("Address", so["shipping_address_name"])
    assert (billing["city"], billing["country"], shipping["city"]) == ("Springfield",
                                                                       "United States", "Chicago")
    assert shipping["address_type"] == "Shipping"
    assert {(link.kind, link.key) for link in result.links} == {
        ("customer", "customer:shop:c-1"), ("customer", "email:ana.new@example.com")}


def test_a_phone_erpnext_would_refuse_is_left_out(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(email="odd.phone@example.com")
    order["customer"]["phone"] = "call me after 5pm please"
    connect().push(order, ctx(order))
    assert not erp.doc("Customer", only_order(erp, order)["customer"]).get("mobile_no")


def test_existing_customer_is_matched_by_verified_email(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_customer("Ana Existing", email="ana.x@example.com")
    before = len(erp.docs("Customer"))
    order = make_order(email="ana.x@example.com")
    result = connect().push(order, ctx(order))
    assert only_order(erp, order)["customer"] == "Ana Existing"
    assert len(erp.docs("Customer")) == before
    assert result.details["customer"] == "Ana Existing"
    unverified = make_order(email="ana.x@example.com", verified=False)
    with pytest.raises(IdentityReview):
        connect().push(unverified, ctx(unverified))
    assert erp.sales_orders(unverified["number"]) == []


def test_a_linked_customer_wins(erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_customer("Linked Co", email="accounts@linked.example")
    order = make_order(email="someone.else@example.com")
    links = Links(customer={"customer:shop:c-1": "Linked Co"})
    connect().push(order, ctx(order, links=links))
    assert only_order(erp, order)["customer"] == "Linked Co"


def test_guest_customer_for_orders_without_identity(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_customer("Web Guest")
    order = make_order(email=None, customer_id=None)
    connect(guest_customer="Web Guest").push(order, ctx(order))
    assert only_order(erp, order)["customer"] == "Web Guest"


# --- idempotency ------------------------------------------------------------------------------
@pytest.mark.parametrize("lost", ["/api/resource/Sales Order", "frappe.client.submit",
                                  "/api/resource/Sales Invoice"])
def test_a_lost_answer_is_completed_not_repeated(
        lost: str, erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    erp.lose_answers(lost)
    with pytest.raises(TransientError, match="504"):
        connect().push(order, ctx(order))
    result = connect().push(order, ctx(order))
    so = only_order(erp, order)
    assert so["docstatus"] == 1 and so["per_billed"] == 100
    invoices = erp.invoices_of(so["name"])
    assert len(invoices) == 1 and invoices[0]["docstatus"] == 1
    assert result.reference == f"{so['name']} / {invoices[0]['name']}"
    assert connect().lookup(order) == result.reference


def test_two_shops_with_the_same_order_number_stay_apart(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    first = make_order(number="#1001", email="a@example.com", customer_id="a")
    second = make_order(number="#1001", email="b@example.com", customer_id="b")
    one = connect().push(first, ctx(first))
    two = connect().push(second, ctx(second))
    assert one.reference != two.reference and len(erp.sales_orders("#1001")) == 2
    assert connect().lookup(second) == two.reference


def test_po_number_can_be_the_channel_id(erp: FakeErpNext,
                                         connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(number="#7")
    result = connect(po_number="external_id").push(order, ctx(order))
    assert erp.sales_orders(order["external_id"])[0]["name"] in result.reference
    assert connect(po_number="external_id").lookup(order) == result.reference


def test_duplicates_made_by_hand_need_a_person(erp: FakeErpNext,
                                               connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    connect(make_invoice=False).push(order, ctx(order))
    so = only_order(erp, order)
    copy = {k: v for k, v in so.items() if k not in ("name", "docstatus", "modified", "creation")}
    copy["items"] = [{k: v for k, v in i.items() if k != "name"} for i in so["items"]]
    copy["taxes"] = [{k: v for k, v in t.items() if k != "name"} for t in so["taxes"]]
    refused = api(erp, "POST", "/api/resource/Sales Order", copy)  # validate_po refuses [4i]
    assert refused.status == 417 and "already exists" in json.loads(refused.data)["exception"]
    erp.settings["Selling Settings"]["allow_against_multiple_purchase_orders"] = 1
    answer = api(erp, "POST", "/api/resource/Sales Order", copy)
    assert answer.status == 200 and "already exists" in json.loads(answer.data)["_server_messages"]
    with pytest.raises(PermanentError, match="2 Sales Orders"):
        connect().lookup(order)


# --- update and cancel -----------------------------------------------------------------------
def test_an_unchanged_version_is_left_alone(erp: FakeErpNext,
                                            connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    first = connect().push(order, ctx(order))
    again = make_order(external_id=order["external_id"], updated_at="2026-11-21T09:00:00Z")
    second = connect().push(again, ctx(again, "update", first.reference, version=2))
    assert second.reference == first.reference and second.details["outcome"] == "unchanged"
    assert only_order(erp, order)["docstatus"] == 1


def test_changed_versions_are_amendments(erp: FakeErpNext,
                                         connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    first = connect().push(order, ctx(order))
    so, invoice = first.details["sales_order"], first.details["sales_invoice"]
    v2 = make_order(external_id=order["external_id"], lines=[("SKU-A", "3", "12.50", "0", "2.34")],
                    email="changed@example.com")  # the broker's reference still finds it
    second = connect().push(v2, ctx(v2, "update", first.reference, version=2))
    assert second.reference == f"{so}-1 / {invoice}-1"
    assert erp.doc("Sales Order", so)["docstatus"] == 2
    assert erp.doc("Sales Invoice", invoice)["docstatus"] == 2
    amended = erp.doc("Sales Order", f"{so}-1")
    assert amended["amended_from"] == so and amended["grand_total"] == v2["totals"]["total"]
    assert amended["customer"] == erp.doc("Sales Order", so)["customer"]
    v3 = make_order(external_id=order["external_id"], lines=[("SKU-B", "1", "1.00", "0", "0")])
    third = connect().push(v3, ctx(v3, "update", second.reference, version=3))
    assert third.reference == f"{so}-2 / {invoice}-2"
    assert connect().lookup(v3) == third.reference


def test_a_paid_invoice_stops_update_and_cancel(erp: FakeErpNext,
                                                connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    erp.pay(booked.details["sales_invoice"], "10.00")
    v2 = make_order(external_id=order["external_id"], lines=[("SKU-B", "1", "3.00", "0", "0")])
    with pytest.raises(PermanentError, match="Credit Note"):
        connect().push(v2, ctx(v2, "update", booked.reference, version=2))
    with pytest.raises(PermanentError, match="by hand"):
        connect().cancel(order, ctx(order, "cancel", booked.reference, version=2))
    assert only_order(erp, order)["docstatus"] == 1
    assert erp.doc("Sales Invoice", booked.details["sales_invoice"])["docstatus"] == 1


def test_a_delivered_order_is_not_unbooked_half_way(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    note = erp.deliver(booked.details["sales_order"])
    v2 = make_order(external_id=order["external_id"], lines=[("SKU-B", "1", "3.00", "0", "0")])
    with pytest.raises(PermanentError, match=f"Delivery Note {note}"):
        connect().push(v2, ctx(v2, "update", booked.reference, version=2))
    with pytest.raises(PermanentError, match="Sales Return"):
        connect().cancel(order, ctx(order, "cancel", booked.reference, version=2))
    assert erp.doc("Sales Invoice", booked.details["sales_invoice"])["docstatus"] == 1
    assert only_order(erp, order)["docstatus"] == 1


def test_cancel_invoices_off_asks_for_a_credit_note(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    with pytest.raises(PermanentError, match="cancel_invoices is off"):
        connect(cancel_invoices=False).cancel(order, ctx(order, "cancel", booked.reference))
    assert only_order(erp, order)["docstatus"] == 1


def test_cancel_cancels_invoice_then_order_and_is_idempotent(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    cancelled = {**order, "status": "cancelled"}
    first = connect().cancel(cancelled, ctx(cancelled, "cancel", booked.reference, version=2))
    again = connect().push(cancelled, ctx(cancelled, "cancel", booked.reference, version=2))
    assert first.reference == again.reference == booked.reference
    so = only_order(erp, order)
    assert so["docstatus"] == 2 and so["status"] == "Cancelled" and so["per_billed"] == 0
    assert erp.doc("Sales Invoice", booked.details["sales_invoice"])["status"] == "Cancelled"


def test_a_cancelled_order_never_booked_is_booked_cancelled(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(status="cancelled")
    result = connect().push(order, ctx(order))
    so = only_order(erp, order)
    assert so["docstatus"] == 2 and result.reference == so["name"]
    assert erp.invoices_of(so["name"]) == []


def test_cancel_of_nothing_says_so(connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    with pytest.raises(PermanentError, match="nothing was cancelled"):
        connect().cancel(order, ctx(order, "cancel", "SAL-ORD-2026-99999"))


def test_without_invoices_the_reference_is_the_order(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    result = connect(make_invoice=False).push(order, ctx(order))
    so = only_order(erp, order)
    assert result.reference == so["name"] and erp.invoices_of(so["name"]) == []


# --- errors -----------------------------------------------------------------------------------
def test_a_missing_role_is_permanent_and_resumes_after_the_fix(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    erp.deny("Sales Invoice", "submit")
    with pytest.raises(PermanentError, match="403") as caught:
        connect().push(order, ctx(order))
    assert "roles" in str(caught.value) and API_SECRET not in str(caught.value)
    assert "nothing stays half-booked" in str(caught.value)
    (first,) = erp.sales_orders(order["number"])  # taken back: no live order without invoice
    assert first["docstatus"] == 2 and erp.invoices_of(first["name"]) == []
    erp.denied.clear()
    result = connect().push(order, ctx(order))  # the replay books it whole, as an amendment
    live = [o for o in erp.sales_orders(order["number"]) if o["docstatus"] == 1]
    assert [o["name"] for o in live] == [f"{first['name']}-1"]
    (invoice,) = erp.invoices_of(live[0]["name"])
    assert invoice["docstatus"] == 1 and result.details["sales_invoice"] == invoice["name"]


def test_throttling_and_outages_are_transient(erp: FakeErpNext,
                                              connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    erp.throttle(1, retry_after="7")
    with pytest.raises(TransientError) as caught:
        connect().push(order, ctx(order))
    assert caught.value.retry_after == 7
    erp.fail(1, 502)
    with pytest.raises(TransientError, match="502"):
        connect().push(order, ctx(order))
    connect().push(order, ctx(order))
    only_order(erp, order)


def test_validation_errors_quote_erpnext(erp: FakeErpNext,
                                         connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    with pytest.raises(PermanentError, match=r"needs Account 'Nope - FT'.*Nothing was booked"):
        connect(shipping_account=None).push(
            order, ctx(order, links=Links(shipping={"Standard": TAX}, tax={"Sales Tax": "Nope - FT"})))
    assert erp.sales_orders(order["number"]) == []
    erp.put_item("OLD", disabled=1)
    old = make_order(lines=[("OLD", "1", "1.00", "0", "0")])
    with pytest.raises(PermanentError, match="Item OLD is disabled"):
        connect().push(old, ctx(old))


def test_server_messages_are_read_as_text() -> None:
    body = {"exc_type": "ValidationError",
            "_server_messages": json.dumps([json.dumps({"message": "Row <b>#1</b>: Rate &amp; more"})])}
    assert _messages(body) == "Row #1 : Rate & more"
    assert _messages({"exception": "frappe.exceptions.LinkExistsError: linked"}) == "linked"


# --- the fake behaves like Frappe where the connector relies on it ---------------------------------
def api(erp: FakeErpNext, method: str, path: str, body: Any = None,
        auth: str | None = f"token {API_KEY}:{API_SECRET}", **fields: Any) -> Any:
    headers = {"Authorization": auth} if auth else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
        return urllib3.request(method, erp.url + path, body=json.dumps(body, default=str),
                               headers=headers)
    return urllib3.request(method, erp.url + path, fields=fields or None, headers=headers)


def test_fake_authentication_and_list_semantics(erp: FakeErpNext) -> None:
    assert json.loads(api(erp, "GET", "/api/resource/Country", auth="token x:y").data)[
        "exc_type"] == "AuthenticationError"
    assert api(erp, "GET", "/api/resource/Country", auth=None).status == 403
    page = json.loads(api(erp, "GET", "/api/resource/Country").data)["data"]
    assert len(page) == len(erp.docs("Country")) and set(page[0]) == {"name"}
    for n in range(25):
        erp.put_item(f"BULK-{n:02d}")
    assert len(json.loads(api(erp, "GET", "/api/resource/Item").data)["data"]) == 20
    everything = api(erp, "GET", "/api/resource/Item", limit_page_length="0",
                     filters='[["item_code","like","bulk-%"]]', order_by="item_code asc")
    rows = json.loads(everything.data)["data"]
    assert [r["name"] for r in rows][:2] == ["BULK-00", "BULK-01"] and len(rows) == 25
    bad = api(erp, "GET", "/api/resource/Item", fields='["nope"]')
    assert bad.status == 417 and json.loads(bad.data)["exc_type"] == "DataError"
    again = api(erp, "POST", "/api/resource/Item", {"item_code": "BULK-00"})
    assert again.status == 409 and json.loads(again.data)["exc_type"] == "DuplicateEntryError"


def test_fake_document_rules(erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "1", "1.00", "0", "0"), ("SKU-B", "1", "2.00", "0", "0")])
    booked = connect().push(order, ctx(order))
    so_name, si_name = booked.details["sales_order"], booked.details["sales_invoice"]
    so = erp.doc("Sales Order", so_name)
    edit = api(erp, "PUT", f"/api/resource/Sales Order/{so_name}", {"customer_address": None,
                                                                    "items": so["items"][:1]})
    assert json.loads(edit.data)["exc_type"] == "UpdateAfterSubmitError"
    cancel = api(erp, "POST", "/api/method/frappe.client.cancel",
                 {"doctype": "Sales Order", "name": so_name})
    assert cancel.status == 417 and json.loads(cancel.data)["exc_type"] == "LinkExistsError"
    stale = api(erp, "POST", "/api/method/frappe.client.submit",
                {"doc": {**so, "modified": "2020-01-01 00:00:00.000000"}})
    assert json.loads(stale.data)["exc_type"] == "TimestampMismatchError"
    twice = api(erp, "POST", "/api/method/" + "erpnext.selling.doctype.sales_order.sales_order."
                "make_sales_invoice", {"source_name": so_name})
    mapped = json.loads(twice.data)["message"]
    assert mapped["items"] == []  # everything is billed already
    rows = api(erp, "GET", "/api/resource/Sales Invoice",
               filters=json.dumps([["Sales Invoice Item", "sales_order", "=", so_name]]))
    assert [r["name"] for r in json.loads(rows.data)["data"]] == [si_name, si_name]  # a join
    missing = api(erp, "GET", "/api/resource/Sales Order/SAL-ORD-1999-00001")
    assert missing.status == 404 and json.loads(missing.data)["exc_type"] == "DoesNotExistError"


def test_fake_rounds_totals_unless_disabled(erp: FakeErpNext) -> None:
    body = {"customer": erp.put_customer("Round Co")["name"], "currency": "USD",
            "delivery_date": "2026-11-20",
            "items": [{"item_code": "SKU-A", "qty": 1, "rate": "10.004"}],
            "taxes": [{"charge_type": "On Net Total", "account_head": TAX, "description": "T",
                       "rate": "7.3"}]}
    doc = json.loads(api(erp, "POST", "/api/resource/Sales Order", body).data,
                     parse_float=Decimal)["data"]
    assert (doc["net_total"], doc["grand_total"], doc["rounded_total"]) == (D(10), D("10.73"),
                                                                          D("10.73"))
    erp.store["Currency"]["USD"]["smallest_currency_fraction_value"] = D("0.05")
    doc = json.loads(api(erp, "POST", "/api/resource/Sales Order", body).data,
                     parse_float=Decimal)["data"]
    assert (doc["rounded_total"], doc["rounding_adjustment"]) == (D("10.75"), D("0.02"))
