# ruff: noqa: F811  (pytest fixtures erp/connect come from test_erpnext_connector)
"""The erpnext connector against what a real ERPNext does (tests/fixtures/transcripts/erpnext,
replayed by test_erpnext_transcripts.py into the fake): each case failed before its fix."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from fakes.erpnext import FakeErpNext
from marshmallow import ValidationError
from test_erpnext_connector import api, connect, ctx, erp, make_order, only_order  # noqa: F401

from connectors.base import Links
from connectors.erpnext import ErpNextConfig, ErpNextConnector
from connectors.errors import IdentityReview, MissingSetting, PermanentError, TransientError

D = Decimal


def test_lookups_through_child_tables_order_by_a_qualified_column(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()  # billing and shipping addresses: the Address lookup joins Dynamic Link
    result = connect().push(order, ctx(order))
    assert only_order(erp, order)["docstatus"] == 1 and result.details["sales_invoice"]
    joined = [r["query"]["order_by"][0] for r in erp.requests
              if r["path"] in ("/api/resource/Address", "/api/resource/Sales Invoice")
              and "order_by" in r["query"]]
    assert joined and all(o.startswith("`tab") for o in joined), joined


def test_a_fractional_quantity_in_a_whole_number_uom_books_nothing(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(lines=[("SKU-A", "1.5", "10.00", "0", "0")], email="frac@example.com")
    customers = len(erp.docs("Customer"))
    with pytest.raises(PermanentError, match="UOM 'Nos', which must be a whole number"):
        connect().push(order, ctx(order))
    assert erp.sales_orders(order["number"]) == [] and len(erp.docs("Customer")) == customers


def test_a_foreign_currency_order_of_a_new_customer_books_nothing(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_exchange_rate("JPY", "USD", D("0.0067"))
    order = make_order(currency="JPY", lines=[("SKU-A", "2", "1875", "0", "0")], shipping=None,
                       email="yen@example.com")
    customers = len(erp.docs("Customer"))
    with pytest.raises(PermanentError, match=r"receivable account Debtors - FT in USD") as caught:
        connect().push(order, ctx(order))
    assert "Nothing was booked" in str(caught.value)
    assert erp.sales_orders(order["number"]) == [] and len(erp.docs("Customer")) == customers


def test_a_foreign_currency_order_of_a_customer_with_ledger_books_and_cancels(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    erp.put_exchange_rate("JPY", "USD", D("0.0067"))
    connect().push(first := make_order(email="ledger@example.com"), ctx(first))
    order = make_order(currency="JPY", lines=[("SKU-A", "2", "1875", "0", "0")], shipping=None,
                       email="ledger@example.com")
    booked = connect().push(order, ctx(order))
    invoice = erp.doc("Sales Invoice", booked.details["sales_invoice"])
    assert invoice["grand_total"] == D(3750) and invoice["outstanding_amount"] == D("25.12")
    connect().cancel(order, ctx(order, "cancel", booked.reference, version=2))  # not "paid"
    assert only_order(erp, order)["docstatus"] == 2


def test_a_deadlocked_submit_is_retried_and_books_once(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    erp.deadlock(1)
    with pytest.raises(TransientError, match="QueryDeadlockError"):
        connect().push(order, ctx(order))
    result = connect().push(order, ctx(order))
    so = only_order(erp, order)
    assert so["docstatus"] == 1 and [i["name"] for i in erp.invoices_of(so["name"])] == [
        result.details["sales_invoice"]]


def test_concurrent_first_orders_of_a_new_customer_share_one_customer(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    orders = [make_order(email="race@example.com", customer_id="r-1") for _ in range(2)]
    erp.hold_commits("Customer", 2)  # both name the customer before either commits: one 409
    results: dict[int, Any] = {}

    def push(n: int) -> None:
        results[n] = connect().push(orders[n], ctx(orders[n]))

    threads = [threading.Thread(target=push, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    customers = {only_order(erp, o)["customer"] for o in orders}
    assert len(results) == 2 and len(customers) == 1
    assert [c["name"] for c in erp.docs("Customer") if c.get("email_id") == "race@example.com"] \
        == list(customers)


def test_an_unverified_email_never_follows_a_learned_link(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    known = connect().push(first := make_order(email="known@example.com"), ctx(first))
    learned = Links(customer={link.key: link.value for link in known.links})
    stranger = make_order(email="known@example.com", verified=False, customer_id="other")
    with pytest.raises(IdentityReview, match=r"known@example\.com"):
        connect().push(stranger, ctx(stranger, links=learned))
    assert erp.sales_orders(stranger["number"]) == []


def test_a_note_only_change_is_reported_not_applied(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    noted = {**order, "note": "ring twice"}
    result = connect().push(noted, ctx(noted, "update", booked.reference, version=2))
    assert result.reference == booked.reference and any("note" in w for w in result.not_applied)


def test_shipping_without_a_method_or_default_parks_on_the_setting(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    order["shipping"][0]["method"] = None
    with pytest.raises(MissingSetting) as caught:
        connect(shipping_account=None).push(order, ctx(order))
    assert caught.value.key == "shipping_account" and erp.sales_orders(order["number"]) == []


@pytest.mark.parametrize("url", ["https://erp.example.com/app", "https://erp.example.com/api/",
                                 "https://erp.example.com/app/sales-order",
                                 "https://erp.example.com/desk#List"])
def test_a_desk_url_is_refused_saying_what_to_change(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ErpNextConfig().load({"url": url, "api_key": "k", "api_secret": "s"})
    assert "https://erp.example.com" in json.dumps(caught.value.messages["url"])


def test_check_names_every_missing_setting(connect: Callable[..., ErpNextConnector]) -> None:
    for key in ("customer_group", "territory", "price_list", "warehouse"):
        with pytest.raises(PermanentError, match=key):
            connect(**{key: "Nope"}).check()


def test_a_credit_note_stops_the_update_and_never_becomes_the_reference(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    invoice = booked.details["sales_invoice"]
    mapped = json.loads(api(erp, "POST", "/api/method/erpnext.accounts.doctype.sales_invoice."
                                        "sales_invoice.make_sales_return",
                            {"source_name": invoice}).data)["message"]
    from connectors.erpnext import _unsaved
    note = json.loads(api(erp, "POST", "/api/resource/Sales Invoice", _unsaved(mapped)).data)["data"]
    assert api(erp, "POST", "/api/method/frappe.client.submit", {"doc": note}).status == 200
    assert connect().lookup(order) == booked.reference
    v2 = make_order(external_id=order["external_id"], lines=[("SKU-B", "1", "3.00", "0", "0")])
    with pytest.raises(PermanentError, match="credit notes"):
        connect().push(v2, ctx(v2, "update", booked.reference, version=2))
    assert only_order(erp, order)["docstatus"] == 1


def test_discard_removes_what_push_booked(erp: FakeErpNext,
                                          connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order()
    booked = connect().push(order, ctx(order))
    connect().discard(order, ctx(order, reference=booked.reference))
    assert erp.sales_orders(order["number"]) == [] and erp.invoices_of(
        booked.details["sales_order"]) == []


def test_calls_per_push_covers_an_amendment_with_a_new_customer(
        erp: FakeErpNext, connect: Callable[..., ErpNextConnector]) -> None:
    order = make_order(email="count@example.com")
    booked = connect().push(order, ctx(order))
    v2 = make_order(external_id=order["external_id"], email="count2@example.com", customer_id="c-9",
                    lines=[("SKU-B", "3", "4.00", "0", "0")])
    before = len(erp.requests)
    connect().push(v2, ctx(v2, "update", booked.reference, version=2))
    assert len(erp.requests) - before <= ErpNextConnector.calls_per_push
