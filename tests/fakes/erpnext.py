"""A fake ERPNext on loopback: the Frappe REST API (v1) for the doctypes and methods a sales
connector uses, with ERPNext's document rules and arithmetic.

It follows the vendor's documentation and source:
- REST API (https://docs.frappe.io/framework/user/en/api/rest, listing:
  https://docs.frappe.io/framework/user/en/guides/integration/rest_api/listing_documents;
  frappe/api/v1.py, frappe/client.py): ``GET /api/resource/<DocType>`` with JSON ``fields``
  (default ``["name"]``, ``"*"`` for every column), ``filters``/``or_filters`` (lists of
  ``[field, op, value]`` or ``[doctype, field, op, value]`` — a child doctype filters through its
  table, one answer row per matching child row, as Frappe's join does — or a dict),
  ``order_by`` (default ``modified desc``), ``limit_start``, ``limit_page_length``/``limit``
  (default 20, 0 = all); ``POST`` creates, ``GET``/``PUT``/``DELETE`` ``/<name>``; answers
  ``{"data": ...}`` (DELETE: 202 ``{"data": "ok"}``). ``/api/method/<path>`` answers
  ``{"message": ...}``: ``frappe.auth.get_logged_user``, ``frappe.client.submit`` (``doc``),
  ``frappe.client.cancel`` (``doctype``, ``name``), ``frappe.client.delete``,
  ``frappe.desk.form.linked_with.get_submitted_linked_docs`` (the "Cancel All" tree),
  ``erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice`` (``source_name``).
- Authentication: ``Authorization: token <api_key>:<api_secret>`` (or Basic of the same pair);
  a wrong pair is 401 AuthenticationError (frappe/auth.py ``validate_api_key_secret``); no header
  is the Guest user, refused with 403 PermissionError.
- Errors (frappe/exceptions.py, frappe/utils/response.py): status from the exception class
  (401, 403, 404 DoesNotExistError, 409 DuplicateEntryError, 417 ValidationError and its
  subclasses MandatoryError, LinkValidationError, LinkExistsError, UpdateAfterSubmitError,
  DocstatusTransitionError, TimestampMismatchError...), body with ``exc_type``, ``exception``
  ("frappe.exceptions.X: text") and ``_server_messages`` (JSON list of JSON message objects);
  warnings (``msgprint``) ride along on successful answers in ``_server_messages``.
- Documents (frappe/model/document.py, naming.py): naming series ``SAL-ORD-.YYYY.-`` /
  ``ACC-SINV-.YYYY.-`` (five digits), amendments named ``<original>-1``, ``-2``...; docstatus
  0 → 1 → 2 only; a submitted document rejects edits (UpdateAfterSubmitError) and deletion; a
  stale ``modified`` is a TimestampMismatchError; unknown keys in a body are ignored as Frappe's
  ``get_valid_dict`` does. Stricter than Frappe (a guard for connector bugs): ``amended_from``
  must name a cancelled document.
- ERPNext (https://github.com/frappe/erpnext): Customer naming by customer name (" - 1" on a
  clash) and quick entry (``email_id``/``mobile_no`` make the primary Contact, ``address_line1``
  + ``city`` + ``country`` the primary Address; customer.py); Sales Order ``validate_delivery_date``
  and the duplicate ``po_no`` *warning* (sales_order.py); ``make_sales_invoice`` mapping unbilled
  items with ``sales_order``/``so_detail``; ``check_nextdoc_docstatus`` and linked-document checks
  on cancel; over-billing refused on submit; ``per_billed``/status updates; totals as
  erpnext/controllers/taxes_and_totals.py computes them (item ``amount = flt(rate*qty)``, discount
  on Net Total distributed over items with the loss on the last, "Actual" rows distributed
  proportionally with the loss on the last item, cumulative ``total``, ``grand_total``,
  ``total_taxes_and_charges``, ``rounded_total`` by the currency's smallest fraction unless
  ``disable_rounded_total``); a default Sales Taxes and Charges Template fills an empty tax
  table of a new document (``default_taxes``; "Selecting default will apply this template by
  default for new Sales transactions",
  https://docs.erpnext.com/docs/v13/user/manual/en/selling/sales-taxes-and-charges-template).

Seed with ``put_item``/``put_customer``/``put_account``; read back with ``docs``/``doc``/
``sales_orders``; simulate a payment with ``pay``, a delivery with ``deliver``, a missing role
with ``deny``, an answer lost
after the work was done with ``lose_answers``. Faults come from FakeVendor (``throttle``,
``fail``).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from fakes.vendor import FakeVendor
from flask import Request, Response, g, request

API_KEY = "5e1f0a7c3b2d4e6"
API_SECRET = "9c8b7a6f5e4d3c2b1a0f-secret"
MAKE_INVOICE = "erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice"
LINKED = "frappe.desk.form.linked_with.get_submitted_linked_docs"
STATUS = {"AuthenticationError": 401, "PermissionError": 403, "DoesNotExistError": 404,
          "DuplicateEntryError": 409, "TooManyRequestsError": 429, "SessionStopped": 503}
EXC_FOR_STATUS = {401: "AuthenticationError", 403: "PermissionError", 404: "DoesNotExistError",
                  409: "DuplicateEntryError", 429: "TooManyRequestsError", 503: "SessionStopped"}
STANDARD = ("name", "owner", "creation", "modified", "modified_by", "docstatus", "idx")
CHILD_STANDARD = (*STANDARD, "parent", "parentfield", "parenttype")
INTS = {"docstatus", "idx", "disabled", "is_group", "is_stock_item", "is_sales_item",
        "ignore_pricing_rule", "disable_rounded_total", "included_in_print_rate", "is_primary",
        "is_primary_contact", "is_primary_address", "is_shipping_address", "set_posting_time",
        "is_return", "skip_delivery_note", "enabled", "is_primary_phone", "is_primary_mobile_no",
        "update_stock", "is_pos"}
MONEY = {"qty", "stock_qty", "conversion_factor", "price_list_rate", "discount_percentage",
         "discount_amount", "rate", "amount", "net_rate", "net_amount", "base_rate", "base_amount",
         "base_net_rate", "base_net_amount", "base_price_list_rate", "billed_amt", "delivered_qty",
         "returned_qty", "margin_rate_or_amount", "tax_amount", "total",
         "tax_amount_after_discount_amount", "base_tax_amount", "base_total", "conversion_rate",
         "plc_conversion_rate", "additional_discount_percentage", "base_discount_amount",
         "total_qty", "net_total", "base_net_total", "total_taxes_and_charges",
         "base_total_taxes_and_charges", "grand_total", "base_grand_total", "rounding_adjustment",
         "rounded_total", "base_rounded_total", "per_billed", "per_delivered",
         "outstanding_amount", "paid_amount", "standard_rate", "smallest_currency_fraction_value"}
_ITEM = ["item_code", "item_name", "description", "qty", "stock_uom", "uom", "conversion_factor",
         "stock_qty", "price_list_rate", "base_price_list_rate", "discount_percentage",
         "discount_amount", "rate", "amount", "net_rate", "net_amount", "base_rate",
         "base_amount", "base_net_rate", "base_net_amount", "warehouse", "margin_type",
         "margin_rate_or_amount", "pricing_rules", "item_tax_template"]
_SELLING = ["naming_series", "customer", "customer_name", "company", "currency",
            "conversion_rate", "selling_price_list", "plc_conversion_rate", "ignore_pricing_rule",
            "po_no", "po_date", "customer_address", "shipping_address_name", "contact_person",
            "taxes_and_charges", "apply_discount_on", "additional_discount_percentage",
            "discount_amount", "base_discount_amount", "total_qty", "total", "base_total",
            "net_total", "base_net_total", "total_taxes_and_charges",
            "base_total_taxes_and_charges", "grand_total", "base_grand_total",
            "rounding_adjustment", "rounded_total", "base_rounded_total", "disable_rounded_total",
            "status", "amended_from"]
META: dict[str, dict[str, Any]] = {
    "Company": {"fields": ["company_name", "abbr", "default_currency", "country",
                           "round_off_account"]},
    "Country": {"fields": ["country_name", "code"]},
    "Currency": {"fields": ["currency_name", "number_format", "smallest_currency_fraction_value",
                            "enabled"]},
    "Account": {"fields": ["account_name", "company", "account_type", "root_type", "is_group"]},
    "Customer Group": {"fields": ["customer_group_name", "is_group"]},
    "Territory": {"fields": ["territory_name", "is_group"]},
    "Price List": {"fields": ["price_list_name", "currency", "selling", "enabled"]},
    "Warehouse": {"fields": ["warehouse_name", "company", "is_group"]},
    "Item": {"fields": ["item_code", "item_name", "item_group", "description", "stock_uom",
                        "is_stock_item", "is_sales_item", "disabled", "standard_rate"]},
    "Customer": {"fields": ["naming_series", "customer_name", "customer_type", "customer_group",
                            "territory", "email_id", "mobile_no", "customer_primary_contact",
                            "customer_primary_address", "primary_address", "tax_id", "disabled",
                            "default_currency", "customer_details"]},
    "Contact": {"fields": ["first_name", "middle_name", "last_name", "full_name", "company_name",
                           "email_id", "phone", "mobile_no", "is_primary_contact"],
                "tables": {"email_ids": "Contact Email", "phone_nos": "Contact Phone",
                           "links": "Dynamic Link"}},
    "Address": {"fields": ["address_title", "address_type", "address_line1", "address_line2",
                           "city", "county", "state", "country", "pincode", "email_id", "phone",
                           "is_primary_address", "is_shipping_address", "disabled"],
                "tables": {"links": "Dynamic Link"}},
    "Sales Order": {"fields": [*_SELLING, "order_type", "transaction_date", "delivery_date",
                               "set_warehouse", "skip_delivery_note", "billing_status",
                               "delivery_status", "per_billed", "per_delivered"],
                    "tables": {"items": "Sales Order Item", "taxes": "Sales Taxes and Charges"},
                    "submittable": True, "series": "SAL-ORD-.YYYY.-"},
    "Sales Invoice": {"fields": [*_SELLING, "posting_date", "due_date", "set_posting_time",
                                 "debit_to", "outstanding_amount", "paid_amount", "is_return",
                                 "return_against", "is_pos", "update_stock"],
                      "tables": {"items": "Sales Invoice Item", "taxes": "Sales Taxes and Charges"},
                      "submittable": True, "series": "ACC-SINV-.YYYY.-"},
}
CHILD_META: dict[str, list[str]] = {
    "Contact Email": ["email_id", "is_primary"],
    "Contact Phone": ["phone", "is_primary_phone", "is_primary_mobile_no"],
    "Dynamic Link": ["link_doctype", "link_name", "link_title"],
    "Sales Order Item": [*_ITEM, "delivery_date", "billed_amt", "delivered_qty", "returned_qty"],
    "Sales Invoice Item": [*_ITEM, "sales_order", "so_detail", "income_account", "cost_center"],
    "Sales Taxes and Charges": ["charge_type", "row_id", "account_head", "description",
                                "included_in_print_rate", "cost_center", "rate", "tax_amount",
                                "total", "tax_amount_after_discount_amount", "base_tax_amount",
                                "base_total", "item_wise_tax_detail"],
}
LINKS = {  # (doctype, field) -> linked doctype
    ("Customer", "customer_group"): "Customer Group", ("Customer", "territory"): "Territory",
    ("Address", "country"): "Country",
    ("Sales Order", "customer"): "Customer", ("Sales Order", "company"): "Company",
    ("Sales Order", "selling_price_list"): "Price List", ("Sales Order", "currency"): "Currency",
    ("Sales Order", "set_warehouse"): "Warehouse", ("Sales Order", "customer_address"): "Address",
    ("Sales Order", "shipping_address_name"): "Address",
    ("Sales Invoice", "customer"): "Customer", ("Sales Invoice", "company"): "Company",
    ("Sales Invoice", "currency"): "Currency", ("Sales Invoice", "debit_to"): "Account",
    ("Sales Invoice", "customer_address"): "Address",
    ("Sales Invoice", "shipping_address_name"): "Address",
    ("Sales Invoice", "selling_price_list"): "Price List",
    ("Sales Order Item", "item_code"): "Item", ("Sales Order Item", "warehouse"): "Warehouse",
    ("Sales Invoice Item", "item_code"): "Item", ("Sales Invoice Item", "sales_order"): "Sales Order",
    ("Sales Invoice Item", "income_account"): "Account",
    ("Sales Taxes and Charges", "account_head"): "Account",
}
MANDATORY = {
    "Customer": [("customer_name", "Customer Name")],
    "Item": [("item_code", "Item Code"), ("item_group", "Item Group"),
             ("stock_uom", "Default Unit of Measure")],
    "Address": [("address_type", "Address Type"), ("address_line1", "Address Line 1"),
                ("city", "City/Town"), ("country", "Country")],
    "Sales Order": [("customer", "Customer"), ("transaction_date", "Date"),
                    ("company", "Company"), ("currency", "Currency"), ("items", "Items")],
    "Sales Invoice": [("customer", "Customer"), ("posting_date", "Date"),
                      ("company", "Company"), ("currency", "Currency"), ("items", "Items")],
    "Sales Order Item": [("item_code", "Item Code"), ("qty", "Quantity"), ("rate", "Rate")],
    "Sales Invoice Item": [("item_code", "Item"), ("qty", "Quantity"), ("rate", "Rate")],
    "Sales Taxes and Charges": [("charge_type", "Type"), ("account_head", "Account Head"),
                                ("description", "Description")],
}
ALLOW_ON_SUBMIT = {"po_no", "po_date", "delivery_date", "status", "billing_status",
                   "per_billed", "modified", "modified_by", "docstatus"}
CHARGE_TYPES = ("Actual", "On Net Total", "On Previous Row Amount", "On Previous Row Total",
                "On Item Quantity")
COUNTRIES = {"us": "United States", "de": "Germany", "fr": "France", "gb": "United Kingdom",
             "jp": "Japan", "kw": "Kuwait", "ch": "Switzerland", "ca": "Canada", "br": "Brazil"}
CURRENCIES = {"USD": ("#,###.##", "0.01"), "EUR": ("#.###,##", "0.01"), "JPY": ("#,###", "1"),
              "KWD": ("#,###.###", "0.001"), "CHF": ("#'###.##", "0.05"), "GBP": ("#,###.##", "0.01")}
NUMBER_FORMATS = {"#,###.##": 2, "#.###,##": 2, "# ###.##": 2, "# ###,##": 2, "#'###.##": 2,
                  "#, ###.##": 2, "#,##,###.##": 2, "#,###.###": 3, "#.###": 0, "#,###": 0}
_OPS = ("=", "!=", "<", ">", "<=", ">=", "like", "not like", "in", "not in", "is", "between")


class FrappeError(Exception):
    """An exception as Frappe raises it: class name, message (msgprint'ed), HTTP status."""

    def __init__(self, exc_type: str, message: str = "", *, status: int | None = None,
                 title: str | None = None) -> None:
        super().__init__(message)
        self.exc_type, self.message, self.title = exc_type, message, title
        self.status = status or STATUS.get(exc_type, 417)


def _dec(value: Any) -> Decimal:
    if value in (None, ""):
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise FrappeError("ValidationError", f"{value!r} is not a number") from None


def _round(value: Decimal, places: int) -> Decimal:
    """frappe.utils.flt(value, precision) with the default banker's rounding."""
    return value.quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)


def _dumps(value: Any) -> str:
    """Frappe's JSON: numbers as numbers (Decimals exactly), dates as strings."""
    if isinstance(value, Decimal):
        return format(value.normalize() if value == value.to_integral() else value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    if isinstance(value, datetime | date):
        return json.dumps(str(value))
    return json.dumps(value)


class FakeErpNext(FakeVendor):
    name = "erpnext"

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET, *,
                 user: str = "fobo-api@example.com", company: str = "FOBO Trading",
                 abbr: str = "FT", currency: str = "USD") -> None:
        self.api_key, self.api_secret, self.user = api_key, api_secret, user
        self.company, self.abbr, self.currency = company, abbr, currency
        self.store: dict[str, dict[str, dict[str, Any]]] = {dt: {} for dt in META}
        self.series: dict[str, int] = {}
        self.denied: set[tuple[str, str]] = set()
        self.default_taxes: list[tuple[str, Decimal]] = []  # a default tax template's rows
        self.exchange_rates: dict[str, Decimal] = {}
        self.payments: dict[str, list[str]] = {}
        self.deliveries: dict[str, list[str]] = {}
        self._lost: list[tuple[str, str]] = []
        self._clock = datetime(2026, 1, 1)
        self._db = threading.RLock()
        super().__init__()
        self.app.after_request(self._lose_answer)
        self._seed()

    # --- seeding and reading back (tests) -------------------------------------------------
    def _seed(self) -> None:
        for code, name in COUNTRIES.items():
            self._raw("Country", name, country_name=name, code=code)
        for code, (number_format, fraction) in CURRENCIES.items():
            self._raw("Currency", code, currency_name=code, number_format=number_format,
                      smallest_currency_fraction_value=Decimal(fraction), enabled=1)
        for name in ("All Customer Groups", "Individual", "Commercial"):
            self._raw("Customer Group", name, customer_group_name=name, is_group=0)
        self._raw("Territory", "All Territories", territory_name="All Territories", is_group=0)
        self._raw("Company", self.company, company_name=self.company, abbr=self.abbr,
                  default_currency=self.currency, country="United States",
                  round_off_account=f"Round Off - {self.abbr}")
        self._raw("Price List", "Standard Selling", price_list_name="Standard Selling",
                  currency=self.currency, selling=1, enabled=1)
        self._raw("Warehouse", f"Stores - {self.abbr}", warehouse_name="Stores",
                  company=self.company, is_group=0)
        for account, kind in (("Debtors", "Receivable"), ("Sales", "Income Account"),
                              ("Sales Tax", "Tax"), ("VAT", "Tax"),
                              ("Freight and Forwarding Charges", "Chargeable"),
                              ("Round Off", "Round Off")):
            self.put_account(f"{account} - {self.abbr}", account_type=kind)

    def _raw(self, doctype: str, name: str, **values: Any) -> dict[str, Any]:
        doc = {"name": name, "owner": "Administrator", "creation": self._now(),
               "modified": self._now(), "modified_by": "Administrator", "docstatus": 0, "idx": 0,
               "doctype": doctype, **values}
        self.store[doctype][name] = doc
        return doc

    def put_account(self, name: str, **values: Any) -> dict[str, Any]:
        return self._raw("Account", name, account_name=name.rsplit(" - ", 1)[0],
                         company=self.company, is_group=0, **values)

    def put_item(self, item_code: str, item_name: str | None = None, **values: Any) -> dict[str, Any]:
        """An Item named by its code (ERPNext's default "Item Naming By: Item Code")."""
        with self._db:
            if item_code in self.store["Item"]:
                return self.store["Item"][item_code]
            fields_ = {"item_code": item_code, "item_name": item_name or item_code,
                       "description": item_name or item_code, "item_group": "Products",
                       "stock_uom": "Nos", "is_stock_item": 0, "is_sales_item": 1, "disabled": 0,
                       **values}
            return self._raw("Item", fields_.pop("name", item_code), **fields_)

    def put_customer(self, customer_name: str, email: str | None = None,
                     **values: Any) -> dict[str, Any]:
        """A customer entered by hand (quick entry: the email makes the primary Contact)."""
        body = {"customer_name": customer_name, "customer_type": "Individual", **values}
        if email:
            body["email_id"] = email
        with self._db, self.app.test_request_context():
            g.user, g.messages = "Administrator", []
            return self._insert("Customer", body)

    def docs(self, doctype: str) -> list[dict[str, Any]]:
        with self._db:
            return [json.loads(_dumps(d), parse_float=Decimal) for d in self.store[doctype].values()]

    def doc(self, doctype: str, name: str) -> dict[str, Any]:
        with self._db:
            return json.loads(_dumps(self.store[doctype][name]), parse_float=Decimal)

    def sales_orders(self, po_no: str) -> list[dict[str, Any]]:
        return [d for d in self.docs("Sales Order") if d.get("po_no") == po_no]

    def invoices_of(self, sales_order: str) -> list[dict[str, Any]]:
        return [d for d in self.docs("Sales Invoice")
                if any(i.get("sales_order") == sales_order for i in d["items"])]

    def pay(self, invoice: str, amount: Decimal | str) -> str:
        """A Payment Entry against the invoice: lowers outstanding_amount, blocks cancelling."""
        with self._db:
            doc = self.store["Sales Invoice"][invoice]
            doc["outstanding_amount"] = _dec(doc["outstanding_amount"]) - _dec(amount)
            doc["status"] = "Paid" if doc["outstanding_amount"] <= 0 else "Partly Paid"
            name = f"ACC-PAY-{date.today().year}-{len(self.payments) + 1:05d}"
            self.payments.setdefault(invoice, []).append(name)
            return name

    def deliver(self, sales_order: str) -> str:
        """A submitted Delivery Note against the order: it can no longer be cancelled as is."""
        with self._db:
            name = f"MAT-DN-{date.today().year}-{sum(map(len, self.deliveries.values())) + 1:05d}"
            self.deliveries.setdefault(sales_order, []).append(name)
            return name

    def deny(self, doctype: str, ptype: str) -> None:
        """The API user lacks a permission (read, create, write, submit, cancel, delete)."""
        self.denied.add((doctype, ptype))

    def lose_answers(self, path_part: str, method: str = "POST", times: int = 1) -> None:
        """Do the work, then answer 504 as a proxy whose upstream was too slow."""
        with self._lock:
            self._lost += [(method, path_part)] * times

    # --- FakeVendor hooks -------------------------------------------------------------------
    def routes(self) -> None:
        app = self.app
        app.add_url_rule("/api/method/<path:method>", "method", self._method,
                         methods=["GET", "POST"])
        app.add_url_rule("/api/resource/<doctype>", "list", self._list, methods=["GET"])
        app.add_url_rule("/api/resource/<doctype>", "create", self._create, methods=["POST"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "read", self._read,
                         methods=["GET"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "update", self._update,
                         methods=["PUT"])
        app.add_url_rule("/api/resource/<doctype>/<path:name>", "delete", self._delete,
                         methods=["DELETE"])
        app.register_error_handler(FrappeError, self._frappe_error)

    def authorized(self, req: Request) -> bool:
        header = req.headers.get("Authorization", "")
        g.user, g.messages = "Guest", []
        if not header:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token).decode()
            except ValueError:
                return False
        elif scheme.lower() != "token":
            return False
        key, _, secret = token.partition(":")
        if key == self.api_key and secrets.compare_digest(secret, self.api_secret):
            g.user = self.user
            return True
        return False

    def error(self, status: int, message: str) -> Response:
        exc_type = EXC_FOR_STATUS.get(status, "ValidationError" if status == 417 else "Exception")
        if status == 401:  # validate_api_key_secret raises the bare class: no message
            message = ""
        return self._frappe_error(FrappeError(exc_type, message, status=status))

    def _frappe_error(self, exc: FrappeError) -> Response:
        body: dict[str, Any] = {"exc_type": exc.exc_type,
                                "exception": f"frappe.exceptions.{exc.exc_type}"
                                             + (f": {exc.message}" if exc.message else "")}
        messages = list(getattr(g, "messages", []))
        if exc.message:
            messages.append({"message": exc.message, "title": exc.title or "Message",
                             "indicator": "red", "raise_exception": 1,
                             "__frappe_exc_id": secrets.token_hex(8)})
        if messages:
            body["_server_messages"] = json.dumps([json.dumps(m) for m in messages])
        return Response(_dumps(body), status=exc.status, mimetype="application/json")

    def _answer(self, key: str, value: Any, status: int = 200) -> Response:
        body: dict[str, Any] = {key: value}
        if getattr(g, "messages", None):
            body["_server_messages"] = json.dumps([json.dumps(m) for m in g.messages])
        return Response(_dumps(body), status=status, mimetype="application/json")

    def _lose_answer(self, response: Response) -> Response:
        with self._lock:
            match = next((f for f in self._lost if f[0] == request.method and f[1] in request.path),
                         None)
            if match is None or response.status_code >= 400:
                return response
            self._lost.remove(match)
        return Response("<html><body><h1>504 Gateway Time-out</h1></body></html>", status=504,
                        mimetype="text/html")

    # --- routes -------------------------------------------------------------------------------
    def _user(self, doctype: str | None = None, ptype: str = "read") -> None:
        if g.user == "Guest":
            raise FrappeError("PermissionError", "You are not permitted to access this resource.",
                              title="Not Permitted")
        if doctype and (doctype, ptype) in self.denied:
            raise FrappeError("PermissionError", f"No permission for {doctype}",
                              title="Insufficient Permission")

    def _meta(self, doctype: str) -> dict[str, Any]:
        if doctype not in META:
            raise FrappeError("DoesNotExistError", f"DocType {doctype} not found")
        return META[doctype]

    def _list(self, doctype: str) -> Response:
        self._user(doctype, "read")
        meta = self._meta(doctype)
        args = request.args
        fields_ = _json_arg(args.get("fields"), ["name"])
        filters = _json_arg(args.get("filters"), [])
        or_filters = _json_arg(args.get("or_filters"), [])
        limit = int(args.get("limit_page_length") or args.get("limit") or 20)
        start = int(args.get("limit_start") or 0)
        columns = [*STANDARD, *meta["fields"]]
        wanted = columns if fields_ in (["*"], "*") else fields_
        for name in wanted:
            if name not in columns:
                raise FrappeError("DataError", f"Field not permitted in query: {name}")
        with self._db:
            rows = []
            for doc in self.store[doctype].values():
                for _ in range(self._matches(doctype, doc, filters, or_filters)):
                    rows.append({**{k: doc.get(k) for k in wanted}, "__sort": doc})
        rows = _sorted(rows, args.get("order_by") or "modified desc")
        for row in rows:
            row.pop("__sort", None)
        rows = rows[start:start + limit] if limit else rows[start:]
        return self._answer("data", rows)

    def _create(self, doctype: str) -> Response:
        self._user(doctype, "create")
        self._meta(doctype)
        body = _body()
        body.pop("doctype", None)
        with self._db:
            return self._answer("data", self._insert(doctype, body))

    def _read(self, doctype: str, name: str) -> Response:
        self._user(doctype, "read")
        with self._db:
            return self._answer("data", self._get(doctype, name))

    def _update(self, doctype: str, name: str) -> Response:
        self._user(doctype, "write")
        body = _body()
        body.pop("flags", None)
        with self._db:
            doc = self._get(doctype, name)
            merged = {**doc, **body}
            return self._answer("data", self._save(doctype, merged, stored=doc))

    def _delete(self, doctype: str, name: str) -> Response:
        self._user(doctype, "delete")
        with self._db:
            doc = self._get(doctype, name)
            if doc["docstatus"] == 1:
                raise FrappeError("ValidationError", f"{doctype} {name}: Submitted Record cannot be "
                                  "deleted. You must Cancel it first.")
            if doctype == "Sales Order":
                linked = [i["name"] for i in self.store["Sales Invoice"].values()
                          if i["docstatus"] < 2
                          and any(r.get("sales_order") == name for r in i["items"])]
                if linked:
                    raise FrappeError("LinkExistsError", f"Cannot delete or cancel because Sales "
                                      f"Order {name} is linked with Sales Invoice {linked[0]}")
            del self.store[doctype][name]
        return self._answer("data", "ok", status=202)

    def _method(self, method: str) -> Response:
        params = {**request.args.to_dict(), **request.form.to_dict()}
        if request.is_json or (request.data and request.data.strip()[:1] == b"{"):
            params.update(_body())
        if method == "frappe.auth.get_logged_user":
            self._user()
            return self._answer("message", g.user)
        self._user()
        with self._db:
            if method == "frappe.client.submit":
                doc = _json_arg(params.get("doc"), None)
                if not isinstance(doc, dict) or not doc.get("doctype") or not doc.get("name"):
                    raise FrappeError("ValidationError", "doc with doctype and name required")
                return self._answer("message", self._submit(doc["doctype"], doc))
            if method == "frappe.client.cancel":
                return self._answer("message", self._cancel(str(params.get("doctype")),
                                                            str(params.get("name"))))
            if method == "frappe.client.delete":
                return self._delete(str(params.get("doctype")), str(params.get("name")))
            if method == LINKED:
                return self._answer("message", self._linked(str(params.get("doctype")),
                                                            str(params.get("name"))))
            if method == MAKE_INVOICE:
                self._user("Sales Invoice", "create")
                return self._answer("message", self._make_invoice(str(params.get("source_name"))))
        raise FrappeError("DoesNotExistError", f"Failed to get method for command {method} with "
                          f"No module named '{method.rsplit('.', 1)[0]}'")

    # --- the document model ---------------------------------------------------------------------
    def _now(self) -> str:
        self._clock = max(self._clock + timedelta(microseconds=1), datetime.now())
        return self._clock.strftime("%Y-%m-%d %H:%M:%S.%f")

    def _get(self, doctype: str, name: str) -> dict[str, Any]:
        self._meta(doctype)
        doc = self.store[doctype].get(name)
        if doc is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        return json.loads(_dumps(doc), parse_float=Decimal)

    def _coerce(self, doctype: str, values: Mapping[str, Any], *, child: bool = False) -> dict:
        """Keep known columns only (Frappe's get_valid_dict), with numbers as numbers."""
        known = CHILD_META[doctype] if child else META[doctype]["fields"]
        out: dict[str, Any] = {}
        for key in (*(CHILD_STANDARD if child else STANDARD), *known):
            if key not in values:
                continue
            value = values[key]
            if key in INTS:
                value = int(_dec(value))
            elif key in MONEY:
                value = _dec(value)
            out[key] = value
        for table, child_type in ({} if child else META[doctype].get("tables", {})).items():
            rows = values.get(table) or []
            if not isinstance(rows, list):
                raise FrappeError("ValidationError", f"{table} must be a list")
            out[table] = [self._coerce(child_type, r, child=True) for r in rows]
        return out

    def _insert(self, doctype: str, body: Mapping[str, Any]) -> dict[str, Any]:
        doc = self._coerce(doctype, body)
        doc.update({"doctype": doctype, "docstatus": int(body.get("docstatus") or 0),
                    "owner": g.get("user", "Administrator"), "idx": 0})
        if doc["docstatus"] != 0:
            raise FrappeError("DocstatusTransitionError",
                              "Cannot change docstatus from 0 (Draft) to 1 (Submitted) on insert")
        self._defaults(doctype, doc, new=True)
        self._validate(doctype, doc, body)
        doc["name"] = self._autoname(doctype, doc)
        if doc["name"] in self.store[doctype]:
            raise FrappeError("DuplicateEntryError", f"{doctype} {doc['name']} already exists",
                              title="Duplicate Name")
        doc["creation"] = doc["modified"] = self._now()
        doc["modified_by"] = g.get("user", "Administrator")
        self._children(doc)
        self.store[doctype][doc["name"]] = doc
        self._after_insert(doctype, doc, body)
        return self._get(doctype, doc["name"])

    def _save(self, doctype: str, doc: dict[str, Any], *, stored: dict[str, Any]) -> dict:
        """doc.save(): docstatus transitions, update-after-submit rules, validation."""
        new = self._coerce(doctype, doc)
        new.update({k: stored[k] for k in ("name", "owner", "creation", "doctype")})
        before, after = stored["docstatus"], int(new.get("docstatus") or 0)
        if str(doc.get("modified") or stored["modified"]) != str(stored["modified"]):
            raise FrappeError("TimestampMismatchError", "Document has been modified after you have "
                              "opened it ({}, {}). Please refresh to get the latest document."
                              .format(doc.get("modified"), stored["modified"]),
                              title="Document Modified")
        if before == 2:
            raise FrappeError("ValidationError", "Cannot edit cancelled document")
        if before == 1 and after == 0:
            raise FrappeError("DocstatusTransitionError",
                              "Cannot change docstatus from 1 (Submitted) to 0 (Draft)")
        if before == 0 and after == 2:
            raise FrappeError("DocstatusTransitionError",
                              "Cannot change docstatus from 0 (Draft) to 2 (Cancelled)")
        if before == 1 and after == 1:
            changed = [k for k in new if k not in ALLOW_ON_SUBMIT and k not in ("items", "taxes")
                       and new.get(k) != stored.get(k) and k in META[doctype]["fields"]]
            for table in META[doctype].get("tables", {}):
                if _rows_key(new.get(table)) != _rows_key(stored.get(table)):
                    changed.append(table)
            if changed:
                raise FrappeError("UpdateAfterSubmitError",
                                  f"Not allowed to change {changed[0]} after submission")
            return self._get(doctype, stored["name"])
        if after == 1 and before == 0:
            self._user(doctype, "submit")
        self._defaults(doctype, new, new=False)
        self._validate(doctype, new, doc)
        new["modified"] = self._now()
        new["modified_by"] = g.get("user", "Administrator")
        self._children(new)
        if after == 1 and before == 0:
            self._on_submit(doctype, new)  # may refuse (over-billing) before anything is stored
        self.store[doctype][new["name"]] = new
        return self._get(doctype, new["name"])

    def _submit(self, doctype: str, doc: dict[str, Any]) -> dict[str, Any]:
        self._meta(doctype)
        if not META[doctype].get("submittable"):
            raise FrappeError("ValidationError", f"Cannot submit {doctype}: not submittable")
        stored = self.store[doctype].get(doc["name"])
        if stored is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {doc['name']} not found")
        return self._save(doctype, {**doc, "docstatus": 1}, stored=stored)

    def _cancel(self, doctype: str, name: str) -> dict[str, Any]:
        self._user(doctype, "cancel")
        stored = self.store.get(doctype, {}).get(name)
        if stored is None:
            raise FrappeError("DoesNotExistError", f"{doctype} {name} not found")
        if stored["docstatus"] == 2:
            raise FrappeError("ValidationError", "Cannot edit cancelled document")
        if stored["docstatus"] == 0:
            raise FrappeError("DocstatusTransitionError",
                              "Cannot change docstatus from 0 (Draft) to 2 (Cancelled)")
        if doctype == "Sales Order":
            invoices = [i for i in self.store["Sales Invoice"].values()
                        if any(r.get("sales_order") == name for r in i["items"])]
            if drafts := [i["name"] for i in invoices if i["docstatus"] == 0]:
                raise FrappeError("ValidationError", f"Sales Invoice {', '.join(drafts)} must be "
                                  "deleted before cancelling this Sales Order")
            if live := [i["name"] for i in invoices if i["docstatus"] == 1]:
                raise FrappeError("LinkExistsError", f"Cannot delete or cancel because Sales Order "
                                  f"{name} is linked with Sales Invoice {live[0]}",
                                  title="Cannot delete or cancel")
            if notes := self.deliveries.get(name):
                raise FrappeError("LinkExistsError", f"Cannot delete or cancel because Sales Order "
                                  f"{name} is linked with Delivery Note {notes[0]}",
                                  title="Cannot delete or cancel")
            stored["status"] = "Cancelled"
        if doctype == "Sales Invoice":
            if payments := self.payments.get(name):
                raise FrappeError("LinkExistsError", f"Cannot delete or cancel because Sales "
                                  f"Invoice {name} is linked with Payment Entry {payments[0]}",
                                  title="Cannot delete or cancel")
            self._bill(stored, -1)
            stored["status"] = "Cancelled"
        stored["docstatus"] = 2
        stored["modified"] = self._now()
        return self._get(doctype, name)

    def _autoname(self, doctype: str, doc: dict[str, Any]) -> str:
        if doc.get("amended_from"):
            original = doc["amended_from"]
            if self.store[doctype].get(original, {}).get("amended_from"):
                prefix, _, counter = original.rpartition("-")
                return f"{prefix}-{int(counter) + 1}"
            return f"{original}-1"
        series = META[doctype].get("series")
        if series:
            prefix = series.replace(".YYYY.", str(date.today().year)).rstrip(".")
            self.series[prefix] = self.series.get(prefix, 0) + 1
            return f"{prefix}{self.series[prefix]:05d}"
        if doctype == "Item":
            return doc["item_code"]
        if doctype == "Customer":
            base = doc["customer_name"].strip()
            if base not in self.store["Customer"]:
                return base
            taken = [n for n in self.store["Customer"] if n.startswith(f"{base} - ")]
            return f"{base} - {len(taken) + 1}"
        if doctype == "Contact":
            base = " ".join(p for p in (doc.get("first_name"), doc.get("last_name")) if p) \
                or doc.get("company_name") or "Contact"
            if doc.get("links"):
                base += f"-{doc['links'][0]['link_name'].strip()}"
            return _append_number(base, self.store["Contact"])
        if doctype == "Address":
            return _append_number(f"{doc['address_title'].strip()}-{doc['address_type']}",
                                  self.store["Address"])
        return secrets.token_hex(5)

    def _children(self, doc: dict[str, Any]) -> None:
        for table, child_type in META[doc["doctype"]].get("tables", {}).items():
            for idx, row in enumerate(doc.get(table) or [], start=1):
                row.update({"parent": doc["name"], "parentfield": table,
                            "parenttype": doc["doctype"], "doctype": child_type, "idx": idx,
                            "docstatus": doc["docstatus"]})
                row.setdefault("name", secrets.token_hex(5))

    # --- controllers --------------------------------------------------------------------------
    def _defaults(self, doctype: str, doc: dict[str, Any], *, new: bool) -> None:
        today = date.today().isoformat()
        if doctype == "Customer":
            doc.setdefault("customer_type", "Company")
            doc.setdefault("customer_group", "All Customer Groups")
            doc.setdefault("territory", "All Territories")
            doc.setdefault("disabled", 0)
        elif doctype == "Item":
            doc.setdefault("item_name", doc.get("item_code"))
            doc.setdefault("description", doc.get("item_name"))
            doc.setdefault("item_group", "All Item Groups")
            doc.setdefault("stock_uom", "Nos")
            doc.setdefault("is_stock_item", 1)
            doc.setdefault("is_sales_item", 1)
            doc.setdefault("disabled", 0)
        elif doctype == "Address":
            doc.setdefault("address_type", "Billing")
            if not doc.get("address_title") and doc.get("links"):
                doc["address_title"] = doc["links"][0].get("link_name")
        elif doctype in ("Sales Order", "Sales Invoice"):
            doc.setdefault("company", self.company)
            doc.setdefault("currency", self.currency)
            doc.setdefault("selling_price_list", "Standard Selling")
            doc.setdefault("naming_series", META[doctype]["series"])
            doc.setdefault("apply_discount_on", "Grand Total")
            doc.setdefault("disable_rounded_total", 0)
            doc.setdefault("ignore_pricing_rule", 0)
            if doctype == "Sales Order":
                doc.setdefault("order_type", "Sales")
                doc.setdefault("transaction_date", today)
            else:
                if not doc.get("set_posting_time"):
                    doc["posting_date"] = today
                doc.setdefault("due_date", doc["posting_date"])
                doc.setdefault("debit_to", f"Debtors - {self.abbr}")
            customer = self.store["Customer"].get(doc.get("customer") or "")
            if customer:
                doc["customer_name"] = customer["customer_name"]
                doc.setdefault("customer_address", customer.get("customer_primary_address"))
                doc.setdefault("contact_person", customer.get("customer_primary_contact"))
            for row in doc.get("items") or []:
                item = self.store["Item"].get(row.get("item_code") or "")
                if item:
                    row.setdefault("item_name", item["item_name"])
                    row.setdefault("description", item["description"])
                    row.setdefault("stock_uom", item["stock_uom"])
                    row.setdefault("uom", item["stock_uom"])
                row.setdefault("conversion_factor", Decimal(1))
                row["stock_qty"] = _dec(row.get("qty")) * _dec(row["conversion_factor"])
                if doc.get("set_warehouse") and not row.get("warehouse"):
                    row["warehouse"] = doc["set_warehouse"]
                if doctype == "Sales Invoice":
                    row.setdefault("income_account", f"Sales - {self.abbr}")
                    row.pop("delivery_date", None)
            if new and not doc.get("taxes") and self.default_taxes:
                doc["taxes"] = [{"charge_type": "On Net Total", "account_head": account,
                                 "description": account.rsplit(" - ", 1)[0], "rate": rate}
                                for account, rate in self.default_taxes]

    def _validate(self, doctype: str, doc: dict[str, Any], body: Mapping[str, Any]) -> None:
        self._mandatory(doctype, doc)
        for (owner, key), target in LINKS.items():
            if owner == doctype and doc.get(key):
                self._link(target, doc[key], key.replace("_", " ").title())
        for table, child_type in META[doctype].get("tables", {}).items():
            for idx, row in enumerate(doc.get(table) or [], start=1):
                self._mandatory(child_type, row, idx=idx)
                for (owner, key), target in LINKS.items():
                    if owner == child_type and row.get(key):
                        self._link(target, row[key], f"Row #{idx}: {key.replace('_', ' ').title()}")
                if child_type == "Dynamic Link":
                    self._link(row.get("link_doctype") or "", row.get("link_name") or "",
                               f"Row #{idx}: Link Name")
        if doc.get("amended_from"):
            original = self.store[doctype].get(doc["amended_from"])
            if original is None or original["docstatus"] != 2:
                raise FrappeError("ValidationError", f"Cannot amend {doctype} "
                                  f"{doc['amended_from']}: only a cancelled document can be amended")
        if doctype == "Customer" and "address_line1" in body:
            missing = [f for f in ("city", "country") if not body.get(f)]
            if missing:
                raise FrappeError("ValidationError", "Following fields are mandatory to create "
                                  "address: " + ", ".join(m.title() for m in missing),
                                  title="Missing Values Required")
            self._link("Country", body["country"], "Country")
        if doctype in ("Sales Order", "Sales Invoice"):
            self._validate_selling(doctype, doc)

    def _mandatory(self, doctype: str, doc: Mapping[str, Any], idx: int | None = None) -> None:
        missing = [(k, label) for k, label in MANDATORY.get(doctype, [])
                   if doc.get(k) in (None, "", [])]
        if not missing:
            return
        _key, label = missing[0]
        if idx is None:
            text = f"Error: Value missing for {doctype}: {label}"
        else:
            text = f"Error: {doctype} Row #{idx}: Value missing for: {label}"
        g.messages.append({"message": text, "title": "Missing Fields", "indicator": "red"})
        raise FrappeError("MandatoryError", f"[{doctype}, new]: {', '.join(k for k, _ in missing)}")

    def _link(self, doctype: str, name: str, label: str) -> None:
        target = self.store.get(doctype, {}).get(name)
        if target is None:
            raise FrappeError("LinkValidationError", f"Could not find {label}: {name}",
                              title="Link Validation")
        if META.get(doctype, {}).get("submittable") and target["docstatus"] == 2:
            raise FrappeError("CancelledLinkError", f"Cannot link cancelled document: {name}")

    def _validate_selling(self, doctype: str, doc: dict[str, Any]) -> None:
        customer = self.store["Customer"][doc["customer"]]
        if customer.get("disabled"):
            raise FrappeError("ValidationError", f"Customer {doc['customer']} is disabled")
        for idx, row in enumerate(doc["items"], start=1):
            item = self.store["Item"][row["item_code"]]
            if item.get("disabled"):
                raise FrappeError("ValidationError", f"Item {row['item_code']} is disabled")
            if item.get("is_stock_item") and not row.get("warehouse"):
                raise FrappeError("WarehouseRequired", f"Delivery warehouse required for stock "
                                  f"item {row['item_code']}")
            if _dec(row["qty"]) <= 0 and not doc.get("is_return"):
                raise FrappeError("ValidationError", f"Row #{idx}: Quantity must be greater than 0")
            if doctype == "Sales Invoice" and row.get("sales_order"):
                so = self.store["Sales Order"][row["sales_order"]]
                if so["docstatus"] != 1:
                    raise FrappeError("ValidationError",
                                      f"Sales Order {row['sales_order']} is not submitted")
        for idx, tax in enumerate(doc.get("taxes") or [], start=1):
            if tax["charge_type"] not in CHARGE_TYPES:
                raise FrappeError("ValidationError", f"Row {idx}: invalid Type {tax['charge_type']}")
            if tax["charge_type"] in ("Actual", "On Net Total") and tax.get("row_id"):
                raise FrappeError("ValidationError", "Can refer row only if the charge type is "
                                  "'On Previous Row Amount' or 'Previous Row Total'")
            if tax["charge_type"] == "Actual" and tax.get("included_in_print_rate"):
                raise FrappeError("ValidationError", f"Charge of type 'Actual' in row {idx} cannot "
                                  "be included in Item Rate or Paid Amount")
            if tax["charge_type"] not in ("Actual", "On Net Total"):
                raise FrappeError("ValidationError", f"the fake supports Actual and On Net Total "
                                  f"rows only (row {idx})")
        if doctype == "Sales Order" and doc.get("order_type") == "Sales" \
                and not doc.get("skip_delivery_note"):
            dates = [r["delivery_date"] for r in doc["items"] if r.get("delivery_date")]
            if dates:
                doc["delivery_date"] = max(dates)
            if not doc.get("delivery_date"):
                raise FrappeError("ValidationError", "Please enter Delivery Date")
            for idx, row in enumerate(doc["items"], start=1):
                row.setdefault("delivery_date", doc["delivery_date"])
                if doc.get("po_date") and doc["po_date"] > row["delivery_date"]:
                    raise FrappeError("ValidationError", f"Row #{idx}: Expected Delivery Date "
                                      "cannot be before Purchase Order Date")
            if doc.get("po_no"):
                dup = [o["name"] for o in self.store["Sales Order"].values()
                       if o.get("po_no") == doc["po_no"] and o["docstatus"] < 2
                       and o["customer"] == doc["customer"] and o["name"] != doc.get("name")]
                if dup:  # validate_po: a warning only, the order is saved anyway
                    g.messages.append({"message": f"Warning: Sales Order {dup[0]} already exists "
                                                  f"against Customer's Purchase Order {doc['po_no']}"})
        self._calculate(doctype, doc)
        if doc.get("docstatus", 0) == 0:
            doc["status"] = "Draft"

    def _precision(self, currency: str) -> int:
        """Currency fields' precision from the currency's number format (get_number_format_info)."""
        number_format = self.store["Currency"].get(currency, {}).get("number_format", "#,###.##")
        return NUMBER_FORMATS.get(number_format, 2)

    def _calculate(self, doctype: str, doc: dict[str, Any]) -> None:
        """erpnext.controllers.taxes_and_totals.calculate_taxes_and_totals, Decimal-exact."""
        p = self._precision(doc["currency"])
        rate = Decimal(1)
        if doc["currency"] != self.currency:
            rate = _dec(doc.get("conversion_rate")) or self.exchange_rates.get(doc["currency"], 0)
            if not rate:
                raise FrappeError("ValidationError", f"Unable to find exchange rate for "
                                  f"{doc['currency']} to {self.currency}")
        doc["conversion_rate"] = rate
        items, taxes = doc["items"], doc.get("taxes") or []
        for item in items:
            for key in ("price_list_rate", "rate", "discount_amount"):
                item[key] = _round(_dec(item.get(key)), p)
            item["qty"] = _dec(item["qty"])
            pct = _dec(item.get("discount_percentage"))
            if pct == 100:
                item["rate"] = Decimal(0)
            elif item["price_list_rate"] and not item["rate"]:
                item["rate"] = _round(item["price_list_rate"] * (1 - pct / 100), p)
            if item["price_list_rate"] > 0:
                item["discount_amount"] = item["price_list_rate"] - item["rate"]
            item["amount"] = _round(item["rate"] * item["qty"], p)
            item["net_rate"], item["net_amount"] = item["rate"], item["amount"]
        discount = _round(_dec(doc.get("discount_amount")), p)
        doc["discount_amount"] = discount
        if discount and not doc.get("apply_discount_on"):
            raise FrappeError("ValidationError", "Please select Apply Discount On")
        grand = self._totals(doc, p)
        if discount:
            if doc["apply_discount_on"] == "Net Total":
                base = doc["net_total"]
            else:
                base = grand - sum((_round(_dec(t["tax_amount"]), p) for t in taxes
                                    if t["charge_type"] == "Actual"), Decimal(0))
            net_total, before = Decimal(0), doc["net_total"]
            for i, item in enumerate(items):
                share = discount * item["net_amount"] / base if base else Decimal(0)
                item["net_amount"] = _round(item["net_amount"] - share, p)
                net_total += item["net_amount"]
                if i == len(items) - 1 and (doc["apply_discount_on"] == "Net Total" or not taxes
                                            or base == before):
                    item["net_amount"] = _round(item["net_amount"]
                                                + _round(before - net_total - discount, p), p)
                item["net_rate"] = _round(item["net_amount"] / item["qty"], p) if item["qty"] else 0
            grand_before = grand
            grand = self._totals(doc, p)
            if doc["apply_discount_on"] == "Grand Total" and taxes:
                doc["rounding_adjustment"] = _round(grand_before - discount - grand, p)
                grand += doc["rounding_adjustment"]
        doc["grand_total"] = grand
        doc["total_taxes_and_charges"] = _round(grand - doc["net_total"]
                                                - _dec(doc.get("rounding_adjustment")), p)
        doc["base_grand_total"] = _round(grand * rate, p)
        doc["base_net_total"] = _round(doc["net_total"] * rate, p)
        if doc.get("disable_rounded_total"):
            doc["rounded_total"] = doc["base_rounded_total"] = Decimal(0)
        else:
            fraction = _dec(self.store["Currency"].get(doc["currency"], {})
                            .get("smallest_currency_fraction_value")) or Decimal(1)
            rounded = (grand / fraction).quantize(Decimal(1), ROUND_HALF_EVEN) * fraction
            doc["rounded_total"] = _round(rounded, p)
            doc["rounding_adjustment"] = _round(_dec(doc.get("rounding_adjustment"))
                                                + rounded - grand, p)
            doc["base_rounded_total"] = _round(doc["rounded_total"] * rate, p)
        if doctype == "Sales Invoice":
            due = doc["rounded_total"] or doc["grand_total"]
            doc["outstanding_amount"] = due
            doc["paid_amount"] = Decimal(0)

    def _totals(self, doc: dict[str, Any], p: int) -> Decimal:
        """calculate_net_total + calculate_taxes + calculate_totals; the grand total."""
        items, taxes = doc["items"], doc.get("taxes") or []
        doc["total_qty"] = sum((i["qty"] for i in items), Decimal(0))
        doc["total"] = _round(sum((i["amount"] for i in items), Decimal(0)), p)
        doc["net_total"] = _round(sum((i["net_amount"] for i in items), Decimal(0)), p)
        doc["rounding_adjustment"] = Decimal(0)
        actual = {n: _round(_dec(t.get("tax_amount")), p) for n, t in enumerate(taxes)
                  if t["charge_type"] == "Actual"}
        for t in taxes:
            t["tax_amount_after_discount_amount"] = Decimal(0)
            if t["charge_type"] != "Actual":
                t["tax_amount"] = Decimal(0)
        for n, item in enumerate(items):
            for i, t in enumerate(taxes):
                if t["charge_type"] == "Actual":
                    share = (item["net_amount"] * _round(_dec(t["tax_amount"]), p) / doc["net_total"]
                             if doc["net_total"] else Decimal(0))
                    actual[i] -= share
                    if n == len(items) - 1:
                        share += actual[i]
                else:
                    share = _dec(t.get("rate")) / 100 * item["net_amount"]
                    t["tax_amount"] += share
                t["tax_amount_after_discount_amount"] += share
        running = doc["net_total"]
        for t in taxes:
            t["tax_amount"] = _round(_dec(t["tax_amount"]), p)
            t["tax_amount_after_discount_amount"] = _round(t["tax_amount_after_discount_amount"], p)
            running = _round(running + t["tax_amount_after_discount_amount"], p)
            t["total"] = running
            t["base_tax_amount"], t["base_total"] = t["tax_amount"], t["total"]
        return taxes[-1]["total"] if taxes else doc["net_total"]

    def _after_insert(self, doctype: str, doc: dict[str, Any], body: Mapping[str, Any]) -> None:
        if doctype == "Customer":  # on_update: create_primary_contact / create_primary_address
            if doc.get("email_id") or doc.get("mobile_no"):
                contact: dict[str, Any] = {"is_primary_contact": 1,
                                           "links": [{"link_doctype": "Customer",
                                                      "link_name": doc["name"]}]}
                if doc.get("customer_type") == "Individual":
                    parts = doc["customer_name"].split()
                    contact.update(first_name=parts[0],
                                   middle_name=" ".join(parts[1:-1]) or None,
                                   last_name=parts[-1] if len(parts) > 1 else None)
                else:
                    contact["company_name"] = doc["customer_name"]
                if doc.get("email_id"):
                    contact["email_id"] = doc["email_id"]
                    contact["email_ids"] = [{"email_id": doc["email_id"], "is_primary": 1}]
                if doc.get("mobile_no"):
                    contact["mobile_no"] = doc["mobile_no"]
                    contact["phone_nos"] = [{"phone": doc["mobile_no"], "is_primary_mobile_no": 1}]
                doc["customer_primary_contact"] = self._insert("Contact", contact)["name"]
            if body.get("address_line1"):
                address = {"address_title": doc["customer_name"], "address_type": "Billing",
                           "is_primary_address": 1, "is_shipping_address": 1,
                           "links": [{"link_doctype": "Customer", "link_name": doc["name"]}]}
                address.update({k: body.get(k) for k in ("address_line1", "address_line2", "city",
                                                         "state", "pincode", "country")})
                doc["customer_primary_address"] = self._insert("Address", address)["name"]
                doc["primary_address"] = f"{body['address_line1']}\n{body['city']}"

    def _on_submit(self, doctype: str, doc: dict[str, Any]) -> None:
        for table in META[doctype].get("tables", {}):
            for row in doc.get(table) or []:
                row["docstatus"] = 1
        if doctype == "Sales Order":
            doc.update(status="To Deliver and Bill", billing_status="Not Billed",
                       delivery_status="Not Delivered", per_billed=Decimal(0))
        elif doctype == "Sales Invoice":
            self._bill(doc, +1)
            doc["status"] = "Unpaid"

    def _bill(self, invoice: dict[str, Any], sign: int) -> None:
        """status_updater: billed_amt / per_billed of the Sales Orders an invoice bills.

        Checked in full before anything changes, so a refused submission leaves no trace.
        """
        updates = []
        for row in invoice["items"]:
            so = self.store["Sales Order"].get(row.get("sales_order") or "")
            line = next((r for r in (so or {}).get("items", []) if r["name"] == row.get("so_detail")),
                        None)
            if line is None:
                continue
            billed = _dec(line.get("billed_amt")) + sign * _dec(row["amount"])
            if sign > 0 and billed > line["amount"] + Decimal("0.01"):
                raise FrappeError("ValidationError", f"Cannot overbill for Item {row['item_code']} "
                                  f"in row {row['idx']} more than {line['amount']}. To allow "
                                  "over-billing, please set allowance in Accounts Settings",
                                  title="Limit Crossed")
            updates.append((line, billed))
        for line, billed in updates:
            line["billed_amt"] = billed
        for so in {r.get("sales_order") for r in invoice["items"] if r.get("sales_order")}:
            order = self.store["Sales Order"][so]
            total = sum((r["amount"] for r in order["items"]), Decimal(0))
            billed = sum((_dec(r.get("billed_amt")) for r in order["items"]), Decimal(0))
            order["per_billed"] = _round(billed / total * 100, 2) if total else Decimal(0)
            if order["docstatus"] == 1:
                order["billing_status"] = "Fully Billed" if order["per_billed"] >= 100 else \
                    ("Partly Billed" if billed else "Not Billed")
                order["status"] = "To Deliver" if order["per_billed"] >= 100 else \
                    "To Deliver and Bill"
            order["modified"] = self._now()

    def _linked(self, doctype: str, name: str) -> dict[str, Any]:
        """get_submitted_linked_docs: the submitted documents a cancellation would have to take."""
        self._get(doctype, name)
        docs: list[dict[str, Any]] = []
        invoices = [i["name"] for i in self.store["Sales Invoice"].values() if i["docstatus"] == 1
                    and any(r.get("sales_order") == name for r in i["items"])] \
            if doctype == "Sales Order" else [name] if doctype == "Sales Invoice" else []
        for invoice in invoices:
            if doctype == "Sales Order":
                docs.append({"doctype": "Sales Invoice", "name": invoice, "docstatus": 1})
            docs += [{"doctype": "Payment Entry", "name": p, "docstatus": 1}
                     for p in self.payments.get(invoice, [])]
        docs += [{"doctype": "Delivery Note", "name": n, "docstatus": 1}
                 for n in self.deliveries.get(name, [])]
        return {"docs": docs, "count": len(docs)}

    def _make_invoice(self, source_name: str) -> dict[str, Any]:
        """make_sales_invoice: the unsaved invoice for what is not billed yet."""
        so = self.store["Sales Order"].get(source_name)
        if so is None:
            raise FrappeError("DoesNotExistError", f"Sales Order {source_name} not found")
        if so["docstatus"] != 1:
            raise FrappeError("ValidationError",
                              "Cannot map because following condition fails: docstatus=1")
        copy = {k: so.get(k) for k in META["Sales Invoice"]["fields"] if k in so}
        for key in ("naming_series", "status", "amended_from", "name"):
            copy.pop(key, None)
        items = []
        for row in so["items"]:
            billed = _dec(row.get("billed_amt"))
            if not row["qty"] or abs(billed) >= abs(row["amount"]):
                continue
            mapped = {k: row.get(k) for k in CHILD_META["Sales Invoice Item"] if k in row}
            mapped.update(sales_order=so["name"], so_detail=row["name"],
                          amount=row["amount"] - billed,
                          qty=(row["amount"] - billed) / row["rate"] if billed and row["rate"]
                          else row["qty"],
                          name=f"new-sales-invoice-item-{secrets.token_hex(4)}",
                          doctype="Sales Invoice Item", __islocal=1)
            items.append(mapped)
        taxes = [{**{k: t.get(k) for k in CHILD_META["Sales Taxes and Charges"] if k in t},
                  "doctype": "Sales Taxes and Charges",
                  "name": f"new-sales-taxes-and-charges-{secrets.token_hex(4)}", "__islocal": 1}
                 for t in so.get("taxes") or []]
        doc = {**copy, "doctype": "Sales Invoice", "name": f"new-sales-invoice-{secrets.token_hex(4)}",
               "__islocal": 1, "__unsaved": 1, "docstatus": 0, "items": items, "taxes": taxes,
               "posting_date": date.today().isoformat(), "due_date": date.today().isoformat(),
               "debit_to": f"Debtors - {self.abbr}", "is_return": 0}
        if items:
            self._calculate("Sales Invoice", doc)
        return json.loads(_dumps(doc), parse_float=Decimal)

    def _matches(self, doctype: str, doc: Mapping[str, Any], filters: Any, or_filters: Any) -> int:
        """How many rows Frappe's query returns for the document: 0, 1, or one per child match."""
        conditions = _conditions(doctype, filters)
        parent = [c for c in conditions if c[0] == doctype]
        if not all(_test(doctype, doc.get(f), op, v) for _, f, op, v in parent):
            return 0
        ors = _conditions(doctype, or_filters)
        if ors and not any(_test(doctype, doc.get(f), op, v) for dt, f, op, v in ors
                           if dt == doctype):
            return 0
        children = [c for c in conditions if c[0] != doctype]
        if not children:
            return 1
        count = 0
        for child_type in {c[0] for c in children}:
            tables = [t for t, ct in META[doctype].get("tables", {}).items() if ct == child_type]
            if not tables:
                raise FrappeError("DataError", f"{child_type} is not a child table of {doctype}")
            rows = [r for t in tables for r in doc.get(t) or []]
            wanted = [c for c in children if c[0] == child_type]
            hits = sum(1 for r in rows if all(_test(child_type, r.get(f), op, v)
                                              for _, f, op, v in wanted))
            if not hits:
                return 0
            count = max(count, hits)
        return count


# --- query helpers ----------------------------------------------------------------------------
def _body() -> dict[str, Any]:
    raw = request.get_data()
    if not raw:
        return request.form.to_dict()
    try:
        value = json.loads(raw, parse_float=Decimal)
    except ValueError:
        return request.form.to_dict()
    if not isinstance(value, dict):
        raise FrappeError("ValidationError", "a JSON object is expected")
    return value


def _json_arg(value: Any, default: Any) -> Any:
    if value in (None, ""):
        return default
    if isinstance(value, str):
        try:
            return json.loads(value, parse_float=Decimal)
        except ValueError:
            raise FrappeError("ValidationError", f"invalid JSON: {value[:80]}") from None
    return value


def _conditions(doctype: str, filters: Any) -> list[tuple[str, str, str, Any]]:
    """Frappe's filter shapes as (doctype, field, operator, value)."""
    out: list[tuple[str, str, str, Any]] = []
    if isinstance(filters, dict):
        for key, value in filters.items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]).lower() in _OPS:
                out.append((doctype, key, str(value[0]).lower(), value[1]))
            else:
                out.append((doctype, key, "=", value))
    elif isinstance(filters, list):
        for item in filters:
            if not isinstance(item, list) or len(item) not in (3, 4):
                raise FrappeError("ValidationError", f"invalid filter: {item!r}")
            dt, f, op, v = item if len(item) == 4 else (doctype, *item)
            op = str(op).lower()
            if op not in _OPS:
                raise FrappeError("ValidationError", f"Operator must be one of {', '.join(_OPS)}")
            known = CHILD_META.get(dt) or (META.get(dt, {}).get("fields"))
            if known is None or f not in (*CHILD_STANDARD, *known):
                raise FrappeError("DataError", f"Field not permitted in query: {f}")
            out.append((dt, f, op, v))
    return out


def _test(doctype: str, actual: Any, op: str, expected: Any) -> bool:
    def norm(value: Any) -> Any:
        if isinstance(value, int | Decimal) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, str):
            try:
                if isinstance(actual, int | Decimal):
                    return Decimal(value)
            except InvalidOperation:
                pass
            return value.casefold()  # MariaDB utf8mb4_unicode_ci compares case-insensitively
        return "" if value is None else value

    a = norm(actual)
    if op == "is":
        is_set = actual not in (None, "")
        return is_set if str(expected).lower() == "set" else not is_set
    if op in ("in", "not in"):
        values = expected if isinstance(expected, list) else str(expected).split(",")
        found = a in [norm(v.strip() if isinstance(v, str) else v) for v in values]
        return found if op == "in" else not found
    if op in ("like", "not like"):
        pattern = "^" + ".*".join(re.escape(p) for p in str(expected).casefold().split("%")) + "$"
        hit = re.match(pattern.replace("_", "."), str(a)) is not None
        return hit if op == "like" else not hit
    if op == "between":
        low, high = (norm(v) for v in expected)
        return low <= a <= high
    b = norm(expected)
    try:
        return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b,
                ">=": a >= b}[op]
    except TypeError:
        return False


def _sorted(rows: list[dict[str, Any]], order_by: str) -> list[dict[str, Any]]:
    for part in reversed([p.strip() for p in order_by.split(",") if p.strip()]):
        field, _, direction = part.replace("`", "").partition(" ")
        field = field.rsplit(".", 1)[-1]

        def key(row: dict[str, Any], field: str = field) -> Any:
            value = row["__sort"].get(field)
            return (value is not None, str(value) if not isinstance(value, Decimal) else value)

        rows = sorted(rows, key=key, reverse=direction.strip().lower() == "desc")
    return rows


def _rows_key(rows: Iterable[Mapping[str, Any]] | None) -> list[tuple[Any, ...]]:
    return [(r.get("item_code"), r.get("account_head"), _dec(r.get("qty")), _dec(r.get("rate")),
             _dec(r.get("tax_amount"))) for r in rows or []]


def _append_number(base: str, existing: Mapping[str, Any]) -> str:
    """frappe.model.naming.append_number_if_name_exists."""
    if base not in existing:
        return base
    numbers = [int(n.rsplit("-", 1)[1]) for n in existing
               if n.startswith(f"{base}-") and n.rsplit("-", 1)[1].isdigit()]
    return f"{base}-{max(numbers, default=0) + 1}"
