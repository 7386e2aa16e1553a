"""The `erpnext` connector: book orders into ERPNext through the Frappe REST API.

Every order becomes a submitted Sales Order (and, by default, a submitted Sales Invoice made
from it), for a Customer found or created the way a clerk would.

Vendor documentation this follows:
- Frappe REST API (https://docs.frappe.io/framework/user/en/api/rest): `/api/resource/<DocType>`
  (GET list with JSON `fields`/`filters`, `limit_page_length` defaulting to 20; GET/PUT/DELETE
  one), `/api/method/<dotted.path>` answering `{"message": ...}`, and token authentication
  `Authorization: token <api_key>:<api_secret>`. Listing:
  https://docs.frappe.io/framework/user/en/guides/integration/rest_api/listing_documents
- Errors (frappe/exceptions.py, frappe/utils/response.py in https://github.com/frappe/frappe):
  the HTTP status comes from the exception (401 AuthenticationError, 403 PermissionError,
  404 DoesNotExistError, 409 DuplicateEntryError, 417 ValidationError and its subclasses);
  the body carries `exc_type`, `exception` and `_server_messages` (a JSON list of JSON message
  objects).
- ERPNext documents (https://github.com/frappe/erpnext): Customer quick entry creates the
  primary Contact (`email_id`, `mobile_no`) and Address (`address_line1`, `city`, `country`)
  itself (selling/doctype/customer/customer.py); Sales Order needs a `delivery_date` and only
  *warns* about a second order with the same `po_no` (sales_order.py `validate_po`), so the
  connector must look orders up itself; `make_sales_invoice(source_name)` maps a submitted order
  to an unsaved invoice; a Sales Order with a submitted invoice cannot be cancelled
  (LinkExistsError) and one with a draft invoice neither (`check_nextdoc_docstatus`).
- Totals (erpnext/controllers/taxes_and_totals.py): "Actual" tax rows keep their `tax_amount`
  exactly (the division loss goes to the last item); an additional `discount_amount` with
  `apply_discount_on = "Net Total"` reduces `net_total` by exactly that amount;
  `grand_total = net_total + Σ taxes`; `disable_rounded_total` stops rounding to the smallest
  currency fraction. Sales Taxes and Charges Template (types Actual / On Net Total..., and a
  default template "will apply ... by default for new Sales transactions"):
  https://docs.erpnext.com/docs/v13/user/manual/en/selling/sales-taxes-and-charges-template

Exact money. The connector does not let ERPNext compute taxes: every tax of the order (summed per
tax name, lines and shipping together) becomes one "Actual" row with the order's own amount on the
account mapped for that tax name (`broker mappings add CONNECTOR tax 'Sales Tax' 'VAT - ACME'`,
else `tax_account`; with neither the order parks until the mapping is added). Shipping is an
"Actual" row on the account mapped for the shipping method (else `shipping_account`), or a line of
the mapped item (else `shipping_item`) with `shipping_as: item`. Item rates are the channel's unit
prices (net of the line's tax when prices include tax, since ERPNext cannot include "Actual" rows
in rates); a line discount that divides evenly by the quantity becomes the item's per-unit
discount. Everything else (order discounts, uneven line discounts, unit prices finer than the
currency, rounded up) becomes the additional discount on Net Total, solved so that ERPNext's
`grand_total` equals the order total to the minor unit; if the channel's total is above the sum of
its parts (its rounding, within the canonical tolerance) the difference is an "Actual" row on
`rounding_account`. Pricing rules and rounded totals are switched off on the documents. The
connector then reads the saved grand total back and, if ERPNext disagrees (e.g. a default tax
template filled the tax table), deletes its draft and stops with a PermanentError saying what to
check.

Idempotency. ERPNext has no idempotency key, so every push first looks the order up: by the
broker's reference when it has one, else Sales Orders whose `po_no` is the channel order number
(or its id, `po_number: external_id`) and `po_date` its date, whose customer is the order's (a
known link, or the same email: two shops may both have an order #1001), followed along their
`amended_from` chain to the latest revision. A draft left by a crash is completed, a submitted
order gets its missing invoice, nothing is created twice. Customers: a known link, else one
Customer whose primary email is the order's verified email (identity.resolve_customer), else a
new Customer by quick entry; orders with no email or customer id use `guest_customer` if set.

Update. Submitted documents cannot be edited in ERPNext; they are amended: cancel, then a copy
with `amended_from`. A new version whose lines, taxes, discount, customer or total differ from
the booked Sales Order cancels its unpaid invoice and the order, books the amendment
(SAL-ORD-2026-00042-1) and invoices it again; an unchanged version changes nothing. If the invoice
has payments or credit notes allocated, or `cancel_invoices` is off, the update stops with a
PermanentError telling the operator to issue a Credit Note and amend by hand.

Cancel. The unpaid Sales Invoice is cancelled first (ERPNext reverses its ledger entries; a
draft invoice is deleted), then the Sales Order. A paid or partly paid invoice, or
`cancel_invoices: false`, stops with a PermanentError: create a Credit Note (Sales Invoice with
"Is Return") and cancel the order by hand. A cancelled order this connector never booked is
booked and cancelled at once, so ERPNext still shows it.
"""

from __future__ import annotations

import html
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import urllib3
from marshmallow import ValidationError, fields, validate, validates, validates_schema

from connectors.base import Connector, Link, Links, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import MissingMapping, MissingSetting, PermanentError, TransientError
from connectors.identity import (
    anchors_field,
    customer_keys,
    customer_links,
    mapped,
    resolve_customer,
    resolve_products,
)
from connectors.wire import exact_json, network_reason, pool, retry_after

USER_AGENT = "fobo-broker/0.1 (erpnext connector)"
SO, SI = "Sales Order", "Sales Invoice"
MAKE_INVOICE = "erpnext.selling.doctype.sales_order.sales_order.make_sales_invoice"
LINKED = "frappe.desk.form.linked_with.get_submitted_linked_docs"
# 500s that are a malformed request, not a busy server (the connector's bug: retrying cannot help)
BROKEN_QUERY = re.compile(r"\((1052|1054|1064|1146),")
RETRY_TYPES = frozenset({"TimestampMismatchError", "QueryDeadlockError", "QueryTimeoutError",
                         "DocumentLockedError", "TooManyRequestsError"})
PAGE = 100
_is_url = validate.URL(schemes={"http", "https"}, require_tld=False)
_TAGS = re.compile(r"<[^>]+>")
_PHONE = re.compile(r"[0-9 +_\-,.*#()]{1,20}")  # frappe.utils.validate_phone_number's pattern
log = logging.getLogger(__name__)


class ErpNextConfig(ConfigSchema):
    """Where ERPNext is, who the API user is, and which ERPNext records the order's parts map to."""

    url = fields.String(required=True, validate=_is_url)
    api_key = fields.String(required=True, validate=validate.Length(min=1))
    api_secret = Secret(required=True, validate=validate.Length(min=1))
    company = fields.String(load_default=None, allow_none=True)
    customer_group = fields.String(load_default=None, allow_none=True)
    territory = fields.String(load_default=None, allow_none=True)
    guest_customer = fields.String(load_default=None, allow_none=True)
    price_list = fields.String(load_default=None, allow_none=True)
    warehouse = fields.String(load_default=None, allow_none=True)
    tax_account = fields.String(load_default=None, allow_none=True)
    shipping_as = fields.String(load_default="charge", validate=validate.OneOf(["charge", "item"]))
    shipping_account = fields.String(load_default=None, allow_none=True)
    shipping_item = fields.String(load_default=None, allow_none=True)
    rounding_account = fields.String(load_default=None, allow_none=True)
    po_number = fields.String(load_default="number",
                              validate=validate.OneOf(["number", "external_id"]))
    make_invoice = fields.Boolean(load_default=True)
    cancel_invoices = fields.Boolean(load_default=True)
    timezone = fields.String(load_default="UTC")
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0, min_inclusive=False))
    connect_timeout = fields.Float(load_default=5.0,
                                   validate=validate.Range(min=0, min_inclusive=False))
    verify_tls = fields.Boolean(load_default=True)
    customer_anchors = anchors_field()

    @validates("url")
    def _no_credentials_in_url(self, value: str, **kwargs: Any) -> None:
        parts = urlsplit(value)
        if "@" in parts.netloc:
            raise ValidationError("put the API key and secret in api_key/api_secret, not the URL")
        path = parts.path.rstrip("/")
        suffix = next((s for s in ("/app", "/api", "/desk", "/login", "/#login")
                       if path == s or path.startswith(s + "/") or path.endswith(s)), None)
        if suffix or parts.fragment or parts.query:
            base = f"{parts.scheme}://{parts.netloc}"
            raise ValidationError(f"use the site's base address {base} (without "
                                  f"{suffix or 'the query or #fragment'}): the connector adds "
                                  "/api/... itself")

    @validates("timezone")
    def _known_zone(self, value: str, **kwargs: Any) -> None:
        try:
            _zone(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValidationError(f"unknown IANA time zone {value!r}") from exc

    @validates_schema
    def _shipping_fields_match(self, data: dict[str, Any], **kwargs: Any) -> None:
        unused = "shipping_item" if data.get("shipping_as", "charge") == "charge" else "shipping_account"
        if data.get(unused):
            raise ValidationError({unused: [f"not used with shipping_as "
                                            f"'{data.get('shipping_as', 'charge')}'"]})


@dataclass
class _Head:
    """The latest revision of an order's Sales Order (after following `amended_from`)."""

    name: str
    docstatus: int
    customer: str
    chain: list[str] = field(default_factory=list)  # earlier revisions, oldest first


@dataclass
class _Plan:
    """The Sales Order the order should be, and the grand total ERPNext must compute for it."""

    body: dict[str, Any]
    total: Decimal
    customer: str
    links: tuple[Link, ...] = ()


class ErpNextConnector(Connector):
    """Sales Order + Sales Invoice per order in ERPNext (v14/v15), over the Frappe REST API.

    Update: amend (cancel the unpaid invoice and the order, book an amended copy, invoice it);
    unchanged versions are left alone; paid invoices stop with a PermanentError asking for a
    Credit Note. Cancel: cancel the unpaid invoice, then the order; paid invoices stop with a
    PermanentError asking to cancel by hand. Details in the module docstring.
    """

    kind = "erpnext"
    title = "ERPNext"
    Config = ErpNextConfig
    # Concurrent submits of orders that share items deadlock in MariaDB (2 of 6 in a recorded
    # burst), and concurrent first orders of one new customer race for its name: two pushes at
    # once keep both rare while still overlapping one push's network waits with another's.
    max_in_flight = 2
    # Worst case of one push (an amendment of an order with a new customer in a foreign currency):
    # lookup 2, items+UOMs+accounts 3, currency 5, customer 3, country 2, addresses 4, the order
    # 2, unbooking the old revision 6 (its invoices, links, cancels, a draft's delete), the
    # invoice 5 (list, map, insert, read, submit) = 32.
    calls_per_push = 32

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:  # validating again is idempotent and fills defaults when given a raw config
            self.settings: dict[str, Any] = ErpNextConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages}; "
                                 "fix it under Connectors") from exc
        self._base = self.settings["url"].rstrip("/")
        self._origin = _origin(self._base)
        self._anchors = tuple(self.settings["customer_anchors"])
        self._zone = _zone(self.settings["timezone"])
        self._pool: urllib3.PoolManager | None = None
        self._countries: dict[str, str | None] = {}
        self._company: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ErpNextConnector {self.name} {self._origin}>"

    # --- the contract ------------------------------------------------------------------
    def check(self) -> None:
        """Log in with the token and make sure the configured company and accounts exist.

        Raises: TransientError if ERPNext is unreachable, PermanentError if it refuses.
        """
        user = self._call("GET", "/api/method/frappe.auth.get_logged_user", subject="the login check")
        if not (isinstance(user, dict) and user.get("message")) or user["message"] == "Guest":
            raise PermanentError(f"ERPNext at {self._origin} did not accept the API token of "
                                 f"connector '{self.name}'; check api_key and api_secret")
        wanted = [("Company", self.settings["company"], "company")]
        wanted += [("Account", self.settings[k], k)
                   for k in ("tax_account", "shipping_account", "rounding_account")]
        wanted += [("Item", self.settings["shipping_item"], "shipping_item"),
                   ("Customer", self.settings["guest_customer"], "guest_customer"),
                   ("Customer Group", self.settings["customer_group"], "customer_group"),
                   ("Territory", self.settings["territory"], "territory"),
                   ("Price List", self.settings["price_list"], "price_list"),
                   ("Warehouse", self.settings["warehouse"], "warehouse")]
        for doctype, value, key in wanted:
            if value and self._get(doctype, value, subject=f"the check of {key}") is None:
                raise PermanentError(f"{doctype} {value!r} (setting {key} of connector "
                                     f"'{self.name}') does not exist in ERPNext at {self._origin}; "
                                     "fix the setting")

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Book the order version: create, complete, amend or leave it, whatever ERPNext holds.

        Raises: TransientError, PermanentError, MissingMapping, IdentityReview.
        """
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        head = self._locate(order, ctx)
        if order.get("status") == "cancelled":
            return self._book_cancelled(order, ctx, head)
        result = self._book(order, ctx, head)
        if (order.get("note") or "").strip():
            result = replace(result, not_applied=(
                "the note: ERPNext's Sales Order has no note field that may change after "
                "submission, so the connector does not carry notes; add it in ERPNext by hand",))
        return result

    def _book(self, order: Mapping[str, Any], ctx: PushContext, head: _Head | None) -> PushResult:
        plan = self._plan(order, ctx, head)
        if head is None:
            doc = self._insert_order(order, plan, amended_from=None)
            return self._finish(order, plan, doc, "created", previous_invoice=None)
        if head.docstatus == 0:  # a draft left by an attempt that died: make it this version
            doc = self._update_draft(order, head, plan)
            previous = self._last_invoice(head.chain[-1]) if head.chain else None
            return self._finish(order, plan, doc, "completed", previous_invoice=previous)
        if head.docstatus == 1:
            current = self._get(SO, head.name, subject=f"Sales Order {head.name}")
            if current is not None and _fingerprint(current) == _fingerprint(plan.body, plan.total):
                return self._finish(order, plan, current, "unchanged", previous_invoice=None)
            invoice = self._unbook(order, head, why="to book the new version of")
        else:
            invoice = self._last_invoice(head.name)
        doc = self._insert_order(order, plan, amended_from=head.name)
        return self._finish(order, plan, doc, "amended", previous_invoice=invoice)

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Cancel the order's unpaid Sales Invoice, then its Sales Order.

        Raises: PermanentError when it is paid or the connector may not cancel invoices (the
        message says what to do by hand), TransientError.
        """
        head = self._locate(order, ctx)
        if head is None:
            raise PermanentError(
                f"no Sales Order of {_label(order)} found in ERPNext at {self._origin} (reference "
                f"{ctx.reference or 'none'}); nothing was cancelled: check ERPNext and cancel it "
                "by hand if it exists")
        invoice = self._unbook(order, head, why="to cancel")
        return PushResult(_reference(head.name, invoice),
                          details={"sales_order": head.name, "sales_invoice": invoice,
                                   "outcome": "cancelled"})

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The reference of the order's latest Sales Order revision (and its invoice), or None.

        Raises: TransientError, PermanentError (several candidates: a person must choose).
        """
        head = self._find(order, Links())
        if head is None:
            return None
        return _reference(head.name, self._last_invoice(head.name))

    def discard(self, order: Mapping[str, Any], ctx: PushContext) -> None:
        """Remove the order's documents as far as ERPNext allows: drafts deleted, submitted ones
        cancelled (invoices first), then the cancelled ones deleted too (ERPNext allows deleting a
        cancelled document that nothing else links to). Raises: TransientError, PermanentError."""
        head = self._locate(order, ctx)
        if head is None:
            return
        if head.docstatus == 1:
            self._unbook(order, head, why="to discard")
        for name in [*head.chain, head.name]:
            for inv in self._invoices(name):
                self._call("DELETE", f"/api/resource/{quote(SI)}/{quote(inv['name'], safe='')}",
                           subject=f"the discarded Sales Invoice {inv['name']}", missing_ok=True)
        for name in reversed([*head.chain, head.name]):
            self._call("DELETE", f"/api/resource/{quote(SO)}/{quote(name, safe='')}",
                       subject=f"the discarded Sales Order {name}", missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None

    # --- finding what ERPNext holds ---------------------------------------------------------
    def _locate(self, order: Mapping[str, Any], ctx: PushContext) -> _Head | None:
        """The booked Sales Order: by the reference the broker holds, else by lookup.

        The reference survives a changed email between versions; the lookup covers a booking
        whose acknowledgement was lost.
        """
        known = (ctx.reference or "").split(" / ")[0].strip()
        if known:
            doc = self._get(SO, known, subject=f"Sales Order {known}",
                            fields=("name", "docstatus", "customer", "amended_from"))
            if doc is not None:
                return self._follow(doc)
        return self._find(order, ctx.links)

    def _po_no(self, order: Mapping[str, Any]) -> str:
        return _po_no(order, self.settings["po_number"])

    def _follow(self, doc: Mapping[str, Any]) -> _Head:
        """Walk `amended_from` forward to the latest revision (ERPNext may name it anyhow)."""
        head = _Head(doc["name"], int(doc["docstatus"]), doc.get("customer") or "")
        for _ in range(50):
            newer = self._list(SO, [["amended_from", "=", head.name]],
                               ["name", "docstatus", "customer"], order_by="creation desc",
                               limit=1, subject=f"the amendments of Sales Order {head.name}")
            if not newer:
                return head
            head = _Head(newer[0]["name"], int(newer[0]["docstatus"]),
                         newer[0].get("customer") or "", [*head.chain, head.name])
        raise PermanentError(f"Sales Order {head.name} has more than 50 amendments; check it by hand")

    def _find(self, order: Mapping[str, Any], links: Links) -> _Head | None:
        """Sales Orders with the order's po_no (and po_date) that belong to its customer."""
        filters: list[list[Any]] = [["po_no", "=", self._po_no(order)]]
        placed = self._date(order, default=False)
        if placed is not None:
            filters.append(["po_date", "=", placed.isoformat()])
        rows = self._list(SO, filters, ["name", "docstatus", "customer", "amended_from"],
                          order_by="creation asc", limit=PAGE,
                          subject=f"the lookup of {_label(order)}")
        amended = {r.get("amended_from") for r in rows if r.get("amended_from")}
        heads = [r for r in rows if r["name"] not in amended]
        heads = self._owned(order, links, heads)
        if not heads:
            return None
        if len(heads) > 1:
            names = ", ".join(h["name"] for h in heads[:5])
            raise PermanentError(
                f"{len(heads)} Sales Orders in ERPNext match {_label(order)} (po_no "
                f"{self._po_no(order)!r}): {names}; cancel the duplicates in ERPNext, then replay")
        by_name = {r["name"]: r for r in rows}
        chain: list[str] = []
        back = heads[0].get("amended_from")
        while back in by_name and back not in chain:
            chain.insert(0, back)
            back = by_name[back].get("amended_from")
        return _Head(heads[0]["name"], int(heads[0]["docstatus"]), heads[0].get("customer") or "",
                     chain)

    def _owned(self, order: Mapping[str, Any], links: Links,
               heads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep the candidates whose customer is the order's: a known link, else the same email.

        Two shops may both have an order #1001; without an email or link to tell them apart the
        order number and date are all there is.
        """
        if not heads:
            return heads
        linked = set(_trusted_links(order, links, self._anchors))
        email = _verified_email(order)
        if linked and not email:
            return [h for h in heads if h.get("customer") in linked]
        if not email:
            return heads
        mine = [h for h in heads if h.get("customer") in linked]
        others = sorted({h.get("customer") for h in heads if h.get("customer") not in linked})
        if others:
            rows = self._list("Customer", [["name", "in", others]], ["name", "email_id"],
                              limit=len(others), subject="the customers of matching Sales Orders")
            same = {r["name"] for r in rows if (r.get("email_id") or "").strip().lower() == email}
            mine += [h for h in heads if h.get("customer") in same]
        return mine

    def _invoices(self, sales_order: str, *, returns: bool = False) -> list[dict[str, Any]]:
        """Invoices billing the order; a child-table filter repeats an invoice per matching row,
        and lists credit notes too (their rows keep `sales_order`): left out unless `returns`."""
        rows = self._list(SI, [["Sales Invoice Item", "sales_order", "=", sales_order]],
                          ["name", "docstatus", "grand_total", "base_grand_total",
                           "outstanding_amount", "status", "is_return", "return_against",
                           "currency", "party_account_currency"],
                          order_by="`tabSales Invoice`.creation asc", limit=PAGE,
                          subject=f"the invoices of Sales Order {sales_order}")
        unique = list({r["name"]: r for r in rows}.values())
        return unique if returns else [r for r in unique if not int(r.get("is_return") or 0)]

    def _last_invoice(self, sales_order: str) -> str | None:
        """The invoice to name in the reference: the submitted one, else the latest."""
        found = self._invoices(sales_order)
        submitted = [i["name"] for i in found if int(i["docstatus"]) == 1]
        return submitted[-1] if submitted else (found[-1]["name"] if found else None)

    # --- planning the Sales Order ------------------------------------------------------------
    def _plan(self, order: Mapping[str, Any], ctx: PushContext, head: _Head | None) -> _Plan:
        """Resolve products and mappings first (they park without side effects), then the customer."""
        lines = order["lines"]
        items, items_uom = self._items(lines, ctx)
        places = _places(order)
        quantum = Decimal(1).scaleb(-places)
        when = self._date(order)
        body: dict[str, Any] = {
            "order_type": "Sales", "transaction_date": when.isoformat(),
            "delivery_date": when.isoformat(), "po_no": self._po_no(order),
            "currency": order["currency"],
            "ignore_pricing_rule": 1, "disable_rounded_total": 1, "items": [], "taxes": []}
        if self._date(order, default=False) is not None:
            body["po_date"] = when.isoformat()
        for key, setting in (("company", "company"), ("selling_price_list", "price_list"),
                             ("set_warehouse", "warehouse")):
            if self.settings[setting]:
                body[key] = self.settings[setting]
        inclusive = bool(order.get("prices_include_tax"))
        net = Decimal(0)
        for line in lines:
            row, amount = self._item_row(line, items[line.get("sku") or line.get("name")],
                                         inclusive, quantum, when)
            body["items"].append(row)
            net += amount
        charges = Decimal(0)
        for ship in order.get("shipping") or []:
            amount = ship["amount"] - (_sum(t["amount"] for t in ship.get("taxes") or [])
                                       if inclusive else 0)
            if not amount:
                continue
            target = self._shipping_target(ship, ctx)
            if self.settings["shipping_as"] == "item":
                body["items"].append({"item_code": target, "qty": Decimal(1), "rate": amount,
                                      "price_list_rate": amount, "delivery_date": when.isoformat()})
                net += amount
            else:
                body["taxes"].append(_actual(target, f"Shipping: {ship.get('method') or 'shipping'}",
                                             amount))
                charges += amount
        taxes = _taxes_by_name(order)
        for tax_name, (rate, amount) in taxes.items():
            account = mapped(ctx, "tax", tax_name, connector=self.name,
                             default=self.settings["tax_account"])
            if account is None:
                raise MissingSetting(f"missing setting: {_label(order)} has a tax without a name "
                                     f"and connector '{self.name}' has no tax_account; set "
                                     "tax_account (e.g. the company's Sales Tax account)",
                                     key="tax_account")
            body["taxes"].append(_actual(account, _tax_text(tax_name, rate), amount))
        total = order["totals"]["total"]
        tax_total = _sum(amount for _, amount in taxes.values())
        # ERPNext: grand_total = (Σ item amounts - discount) + Σ Actual rows; solve for discount.
        discount = net - (total - tax_total - charges)
        if discount > 0:
            body["apply_discount_on"], body["discount_amount"] = "Net Total", discount
        elif discount < 0:
            if not self.settings["rounding_account"]:
                raise MissingSetting(
                    f"missing setting: {_label(order)}: its total {total} is {-discount} above the "
                    f"sum of its parts (the channel's rounding); set rounding_account of connector "
                    f"'{self.name}' (e.g. the company's Round Off account) so the difference can "
                    "be booked", key="rounding_account")
            body["taxes"].append(_actual(self.settings["rounding_account"],
                                         "Rounding difference to the channel total", -discount))
        customer = self._customer(order, ctx, head)
        self._prechecks(order, body, items, items_uom, customer)  # before anything is written
        if customer is None:
            customer = self._create_customer(order)
        body["customer"] = customer
        body.update(self._addresses(order, customer))
        return _Plan(body, total, customer, customer_links(order, customer, self._anchors))

    def _items(self, lines: Iterable[Mapping[str, Any]],
               ctx: PushContext) -> tuple[dict[str, str], dict[str, str]]:
        """SKU → Item name (a link, else the Item whose item_code is the SKU), and Item → its
        stock UOM; one query per hundred items."""
        lines = list(lines)
        resolved = resolve_products(lines, ctx, connector=self.name, find=self._item_lookup(
            sorted({ln.get("sku") or ln.get("name") for ln in lines} - set(ctx.links.product))))
        names = sorted(set(resolved.values()))
        uoms: dict[str, str] = {}
        for start in range(0, len(names), PAGE):
            part = names[start:start + PAGE]
            rows = self._list("Item", [["name", "in", part]], ["name", "stock_uom"],
                              limit=len(part), subject="the units of the order's items")
            uoms.update({r["name"]: r.get("stock_uom") or "" for r in rows})
        missing = [n for n in names if n not in uoms]
        if missing:
            raise MissingMapping(
                f"missing mapping: Item {missing[0]!r} (mapped for this order's SKU) does not exist "
                f"in ERPNext; map the SKU to an existing Item with `broker mappings add "
                f"{self.name} product SKU ITEM` or create the Item", kind="product", key=missing[0])
        return resolved, uoms

    def _item_lookup(self, skus: list[str]) -> Any:
        found: dict[str, str] = {}
        for start in range(0, len(skus), PAGE):
            part = skus[start:start + PAGE]
            rows = self._list("Item", [["item_code", "in", part]], ["name", "item_code"],
                              limit=len(part) * 2, subject="the item lookup")
            found.update({r["item_code"]: r["name"] for r in rows})
        return found.get

    def _prechecks(self, order: Mapping[str, Any], body: Mapping[str, Any],
                   items: Mapping[str, str], uoms: Mapping[str, str], customer: str | None) -> None:
        """What ERPNext would refuse once the Sales Order is in, checked before anything is
        written: so an order books completely or leaves nothing behind.

        Accounts of the tax, shipping and rounding rows exist; quantities are whole where the
        Item's UOM must be (UOMMustBeIntegerError); a foreign-currency invoice can be booked on
        the customer's receivable account (validate_party_account_currency).
        """
        accounts = sorted({t["account_head"] for t in body["taxes"]})
        if accounts:
            rows = self._list("Account", [["name", "in", accounts]], ["name"], limit=len(accounts),
                              subject="the accounts of the order's taxes and charges")
            missing = sorted(set(accounts) - {r["name"] for r in rows})
            if missing:
                raise PermanentError(
                    f"{_label(order)} needs Account {missing[0]!r} ({self._account_origin(missing[0])}"
                    f") but ERPNext at {self._origin} has no such account; create it or fix the "
                    "setting or mapping, then replay. Nothing was booked")
        extra = sorted({r["item_code"] for r in body["items"]} - set(uoms))
        if extra:  # the shipping item
            rows = self._list("Item", [["name", "in", extra]], ["name", "stock_uom"],
                              limit=len(extra), subject="the shipping item")
            if len(rows) < len(extra):
                raise MissingSetting(f"missing setting: Item {extra[0]!r} (shipping_item of "
                                     f"connector '{self.name}') does not exist in ERPNext; create "
                                     "it or change shipping_item", key="shipping_item")
        fractional = [ln for ln in order["lines"]
                      if Decimal(ln["quantity"]) != Decimal(ln["quantity"]).to_integral_value()]
        if fractional:
            names = sorted({uoms[items[ln.get("sku") or ln.get("name")]] for ln in fractional})
            rows = self._list("UOM", [["name", "in", names]], ["name", "must_be_whole_number"],
                              limit=len(names), subject="the units of measure of the order")
            whole = {r["name"] for r in rows if int(r.get("must_be_whole_number") or 0)}
            for line in fractional:
                sku = line.get("sku") or line.get("name")
                uom = uoms[items[sku]]
                if uom in whole:
                    raise PermanentError(
                        f"{_label(order)}: SKU {sku} has quantity {line['quantity']} but ERPNext "
                        f"sells Item {items[sku]} in UOM {uom!r}, which must be a whole number; "
                        f"untick 'Must be Whole Number' in UOM {uom} (or give the Item a "
                        "fractional UOM and map the SKU to it), then replay. Nothing was booked")
        if self.settings["make_invoice"] and order["currency"] != self._company_currency():
            self._invoice_currency(order, customer)

    def _account_origin(self, account: str) -> str:
        for key in ("tax_account", "shipping_account", "rounding_account"):
            if self.settings[key] == account:
                return f"setting {key} of connector '{self.name}'"
        return f"a tax or shipping mapping of connector '{self.name}'"

    def _company_currency(self) -> str:
        with self._lock:
            if self._company is not None:
                return self._company["default_currency"]
        if self.settings["company"]:
            company = self._get("Company", self.settings["company"], subject="the company",
                                fields=("name", "default_currency", "default_receivable_account"))
        else:
            rows = self._list("Company", [], ["name", "default_currency",
                                              "default_receivable_account"], limit=2,
                              subject="the companies")
            company = rows[0] if len(rows) == 1 else None
        if company is None:
            raise MissingSetting(f"missing setting: ERPNext at {self._origin} has several companies "
                                 f"(or the configured one does not exist); set company of connector "
                                 f"'{self.name}'", key="company")
        with self._lock:
            self._company = company
        return company["default_currency"]

    def _invoice_currency(self, order: Mapping[str, Any], customer: str | None) -> None:
        """ERPNext books an invoice in another currency than its receivable account's only for a
        customer who already has ledger entries, or when Accounts Settings allow it [7c, 7j]."""
        assert self._company is not None
        account = self._company.get("default_receivable_account")
        if customer is not None:
            doc = self._get("Customer", customer, subject=f"customer {customer}") or {}
            if self._ledger_currency(customer):
                return
            account = next((a.get("account") for a in doc.get("accounts") or []
                            if a.get("company") == self._company["name"] and a.get("account")),
                           account)
        rows = self._list("Account", [["name", "=", account]], ["name", "account_currency"],
                          limit=1, subject=f"the receivable account {account}") if account else []
        currency = rows[0].get("account_currency") if rows else self._company["default_currency"]
        if currency == order["currency"]:
            return
        settings = self._get("Accounts Settings", "Accounts Settings",
                             subject="the Accounts Settings") or {}
        if int(settings.get("allow_multi_currency_invoices_against_single_party_account") or 0):
            return
        who = f"customer {customer}" if customer else "a new customer"
        raise PermanentError(
            f"{_label(order)} is in {order['currency']} but ERPNext would invoice {who} on "
            f"receivable account {account} in {currency} and refuse it (\"Party Account "
            f"{account} currency ({currency}) and document currency ({order['currency']}) should "
            f"be same\"); give the customer a {order['currency']} receivable account (Customer → "
            "Accounting), or enable 'Allow multi-currency invoices against single party account' "
            "in Accounts Settings, or route this shop's orders to a company in "
            f"{order['currency']}; then replay. Nothing was booked")

    def _ledger_currency(self, customer: str) -> str | None:
        rows = self._list("GL Entry", [["party_type", "=", "Customer"], ["party", "=", customer],
                                       ["is_cancelled", "=", 0]], ["account_currency"], limit=1,
                          subject=f"the ledger of customer {customer}")
        return rows[0].get("account_currency") if rows else None

    @staticmethod
    def _item_row(line: Mapping[str, Any], item: str, inclusive: bool, quantum: Decimal,
                  when: date) -> tuple[dict[str, Any], Decimal]:
        """One Sales Order Item and the `amount` ERPNext will compute for it (flt(rate*qty))."""
        qty, price = line["quantity"], line["unit_price"]
        discount = line.get("discount") or Decimal(0)
        per_unit = Decimal(0)
        # Rates not exact in the currency round up: the additional discount takes the difference
        # (a negative one would need rounding_account).
        if inclusive:  # ERPNext cannot include "Actual" taxes in rates: book the net price
            tax = _sum(t["amount"] for t in line.get("taxes") or [])
            listed = rate = ((qty * price - tax) / qty).quantize(quantum, ROUND_CEILING)
        else:
            listed = price.quantize(quantum, ROUND_CEILING)
            candidate = discount / qty
            if discount and listed == price and candidate == candidate.quantize(quantum):
                per_unit = candidate
            rate = listed - per_unit
        row: dict[str, Any] = {"item_code": item, "qty": qty, "price_list_rate": listed,
                               "rate": rate, "delivery_date": when.isoformat()}
        if per_unit:
            row["discount_amount"] = per_unit
        return row, (rate * qty).quantize(quantum, ROUND_HALF_EVEN)

    def _shipping_target(self, ship: Mapping[str, Any], ctx: PushContext) -> str:
        default = self.settings["shipping_item" if self.settings["shipping_as"] == "item"
                                else "shipping_account"]
        target = mapped(ctx, "shipping", ship.get("method"), connector=self.name, default=default)
        if target is None:
            key = "shipping_item" if self.settings["shipping_as"] == "item" else "shipping_account"
            raise MissingSetting(f"missing setting: a shipping line without a method and no "
                                 f"{key} on connector '{self.name}'; set {key}", key=key)
        return target

    def _date(self, order: Mapping[str, Any], *, default: bool = True) -> date | None:
        placed = order.get("placed_at")
        if isinstance(placed, str):
            placed = datetime.fromisoformat(placed.replace("Z", "+00:00"))
        if isinstance(placed, datetime):
            placed = placed if placed.tzinfo else placed.replace(tzinfo=UTC)
            return placed.astimezone(self._zone).date()
        return datetime.now(self._zone).date() if default else None

    # --- customers and addresses -------------------------------------------------------------
    def _customer(self, order: Mapping[str, Any], ctx: PushContext,
                  head: _Head | None) -> str | None:
        """A linked customer, the booked order's customer, a match by email; None: a new one.

        A link learned for an email proves nothing when this order's email is unverified: only
        links on a verified email or the channel's customer id count (identity.resolve_customer).
        """
        keys = customer_keys(order, self._anchors)
        if not keys and self.settings["guest_customer"]:
            return self.settings["guest_customer"]
        linked = next(iter(_trusted_links(order, ctx.links, self._anchors)), None)
        found = linked or (head.customer if head is not None and head.customer else None)
        if found is None:
            found = resolve_customer(order, ctx, anchors=self._anchors,
                                     search_by_email=self._customers_by_email)
        return found

    def _customers_by_email(self, email: str) -> list[str]:
        rows = self._list("Customer", [["email_id", "=", email], ["disabled", "=", 0]], ["name"],
                          limit=PAGE, subject="the customer search by email")
        return [r["name"] for r in rows]

    def _create_customer(self, order: Mapping[str, Any]) -> str:
        """Customer quick entry: ERPNext makes the primary Contact and Address from it."""
        who = order.get("customer") or {}
        billing = order.get("billing_address") or order.get("shipping_address") or {}
        person = " ".join(p for p in (who.get("first_name"), who.get("last_name")) if p).strip()
        company = who.get("company") or billing.get("company")
        name = (company or person or billing.get("name") or who.get("email")
                or f"Guest {order.get('number') or order['external_id']}")
        body: dict[str, Any] = {"customer_name": name[:140],
                                "customer_type": "Company" if company else "Individual"}
        for key, setting in (("customer_group", "customer_group"), ("territory", "territory")):
            if self.settings[setting]:
                body[key] = self.settings[setting]
        if who.get("email"):
            body["email_id"] = who["email"].strip().lower()
        phone = (who.get("phone") or billing.get("phone") or "").strip()
        if _PHONE.fullmatch(phone):  # Frappe refuses other Phone values; better no phone than no order
            body["mobile_no"] = phone
        if who.get("tax_id"):
            body["tax_id"] = who["tax_id"]
        body.update(self._address_fields(billing))
        email = _verified_email(order)
        try:
            doc = self._call("POST", "/api/resource/Customer", body=body,
                             subject=f"the new customer {name!r} of {_label(order)}")["data"]
        except TransientError as exc:
            # Another worker created this customer at the same moment: ERPNext refuses the
            # second insert of one name (409 DuplicateEntryError); it is the same person.
            found = self._customers_by_email(email) if email else []
            if getattr(exc, "exc_type", "") == "DuplicateEntryError" and len(found) == 1:
                return found[0]
            raise
        if email and doc["name"] != body["customer_name"]:
            # ERPNext renamed ours ("X - 1") because X was committed meanwhile: if X has this
            # verified email it is the same customer, and ours is a duplicate nothing uses yet.
            others = [c for c in self._customers_by_email(email) if c != doc["name"]]
            if len(others) == 1:
                self._call("DELETE", f"/api/resource/Customer/{quote(doc['name'], safe='')}",
                           subject=f"the duplicate customer {doc['name']}", missing_ok=True)
                return others[0]
        log.info("created ERPNext customer %s for order %s", doc["name"], order["external_id"])
        return doc["name"]

    def _addresses(self, order: Mapping[str, Any], customer: str) -> dict[str, str]:
        """customer_address / shipping_address_name: the customer's matching Address, or a new one."""
        out: dict[str, str] = {}
        billing = order.get("billing_address") or {}
        shipping = order.get("shipping_address") or {}
        bill = self._address_fields(billing)
        if bill:
            out["customer_address"] = self._address(customer, bill, "Billing", billing.get("name"))
        ship = self._address_fields(shipping)
        if ship:
            out["shipping_address_name"] = (out["customer_address"] if ship == bill else
                                            self._address(customer, ship, "Shipping",
                                                          shipping.get("name")))
        return out

    def _address_fields(self, address: Mapping[str, Any]) -> dict[str, Any]:
        """ERPNext needs address_line1, city and a Country (by name); else no address at all."""
        if not (address.get("line1") and address.get("city") and address.get("country")):
            return {}
        country = self._country(address["country"])
        if country is None:
            return {}
        out = {"address_line1": address["line1"], "city": address["city"], "country": country}
        for key, source in (("address_line2", "line2"), ("state", "region"),
                            ("pincode", "postal_code")):
            if address.get(source):
                out[key] = address[source]
        return out

    def _address(self, customer: str, values: Mapping[str, Any], kind: str,
                 title: str | None) -> str:
        filters: list[list[Any]] = [["Dynamic Link", "link_doctype", "=", "Customer"],
                                    ["Dynamic Link", "link_name", "=", customer]]
        filters += [[k, "=", values[k]] for k in ("address_line1", "city", "pincode") if values.get(k)]
        # Dynamic Link is a child table: an unqualified column in order_by is ambiguous (1052)
        rows = self._list("Address", filters, ["name"], order_by="`tabAddress`.creation asc",
                          limit=1, subject=f"the addresses of customer {customer}")
        if rows:
            return rows[0]["name"]
        body = {**values, "address_title": (title or customer)[:140], "address_type": kind,
                "links": [{"link_doctype": "Customer", "link_name": customer}]}
        return self._call("POST", "/api/resource/Address", body=body,
                          subject=f"a {kind.lower()} address of customer {customer}")["data"]["name"]

    def _country(self, code: str) -> str | None:
        """ERPNext's Country name (e.g. "United States") for an ISO code, from its `code` field."""
        code = code.lower()
        with self._lock:
            if code in self._countries:
                return self._countries[code]
        rows = self._list("Country", [["code", "=", code]], ["name"], limit=1,
                          subject=f"the country {code.upper()}")
        name = rows[0]["name"] if rows else None
        with self._lock:
            self._countries[code] = name
        return name

    # --- booking -----------------------------------------------------------------------------
    def _insert_order(self, order: Mapping[str, Any], plan: _Plan,
                      amended_from: str | None) -> dict[str, Any]:
        body = dict(plan.body)
        if amended_from:
            body["amended_from"] = amended_from
        doc = self._call("POST", f"/api/resource/{quote(SO)}", body=body,
                         subject=f"the Sales Order of {_label(order)}")["data"]
        self._verify(order, SO, doc, plan.total)
        return doc

    def _update_draft(self, order: Mapping[str, Any], head: _Head, plan: _Plan) -> dict[str, Any]:
        doc = self._call("PUT", f"/api/resource/{quote(SO)}/{quote(head.name, safe='')}",
                         body=plan.body, subject=f"the draft Sales Order {head.name}")["data"]
        self._verify(order, SO, doc, plan.total)
        return doc

    def _verify(self, order: Mapping[str, Any], doctype: str, doc: Mapping[str, Any],
                total: Decimal) -> None:
        """ERPNext's grand total must be the order total; else delete the draft and stop."""
        booked = _dec(doc.get("grand_total"))
        if booked == total:
            return
        self._call("DELETE", f"/api/resource/{quote(doctype)}/{quote(doc['name'], safe='')}",
                   subject=f"the draft {doctype} {doc['name']}", missing_ok=True)
        raise PermanentError(
            f"ERPNext computed grand total {booked} for {_label(order)} but the order total is "
            f"{total} (net_total {doc.get('net_total')}, taxes {doc.get('total_taxes_and_charges')}"
            f", discount {doc.get('discount_amount')}); the draft {doctype} {doc['name']} was "
            "deleted. Check for a default Sales Taxes and Charges Template, pricing rules, or a "
            f"currency precision below {order['currency']}'s minor units, then replay")

    def _finish(self, order: Mapping[str, Any], plan: _Plan, doc: Mapping[str, Any],
                outcome: str, previous_invoice: str | None) -> PushResult:
        """Submit the order if it is a draft and make sure it has its submitted invoice."""
        if int(doc.get("docstatus") or 0) == 0:
            doc = self._submit(SO, doc)
        try:
            invoice = self._ensure_invoice(order, doc, previous_invoice)
        except PermanentError as exc:
            if outcome == "unchanged":
                raise
            raise PermanentError(f"{exc}; {self._revert(doc['name'])}") from exc
        return PushResult(_reference(doc["name"], invoice),
                          details={"sales_order": doc["name"], "sales_invoice": invoice,
                                   "customer": plan.customer, "outcome": outcome,
                                   "grand_total": str(_dec(doc.get("grand_total")))},
                          links=plan.links)

    def _revert(self, sales_order: str) -> str:
        """Take back the Sales Order this push booked when its invoice cannot be made."""
        try:
            for inv in self._invoices(sales_order):
                if int(inv["docstatus"]) == 0:
                    self._call("DELETE", f"/api/resource/{quote(SI)}/{quote(inv['name'], safe='')}",
                               subject=f"the draft Sales Invoice {inv['name']}", missing_ok=True)
            self._call("POST", "/api/method/frappe.client.cancel",
                       body={"doctype": SO, "name": sales_order},
                       subject=f"the cancellation of Sales Order {sales_order}")
        except (PermanentError, TransientError) as exc:
            return (f"Sales Order {sales_order} stays submitted without its invoice ({exc}); "
                    "cancel it in ERPNext if the order should not be booked")
        return (f"Sales Order {sales_order} was cancelled so nothing stays half-booked; the replay "
                "books an amendment")

    def _ensure_invoice(self, order: Mapping[str, Any], so: Mapping[str, Any],
                        previous: str | None) -> str | None:
        if not self.settings["make_invoice"]:
            return None
        found = self._invoices(so["name"])
        submitted = [i["name"] for i in found if int(i["docstatus"]) == 1]
        if submitted:
            return submitted[-1]
        total = _dec(so.get("grand_total"))
        drafts = [i for i in found if int(i["docstatus"]) == 0]
        if drafts:  # left by an attempt that died between insert and submit
            draft = self._get(SI, drafts[-1]["name"], subject=f"Sales Invoice {drafts[-1]['name']}")
            if draft is not None:
                self._verify(order, SI, draft, total)
                return self._submit(SI, draft)["name"]
        mapped_doc = self._call("POST", f"/api/method/{MAKE_INVOICE}",
                                body={"source_name": so["name"]},
                                subject=f"the invoice of Sales Order {so['name']}")["message"]
        body = _unsaved(mapped_doc)
        body["disable_rounded_total"] = 1
        if previous:
            body["amended_from"] = previous
        doc = self._call("POST", f"/api/resource/{quote(SI)}", body=body,
                         subject=f"the Sales Invoice of Sales Order {so['name']}")["data"]
        self._verify(order, SI, doc, total)
        return self._submit(SI, doc)["name"]

    def _book_cancelled(self, order: Mapping[str, Any], ctx: PushContext,
                        head: _Head | None) -> PushResult:
        """A cancelled order: cancel what is booked, or book it cancelled so ERPNext knows it."""
        if head is None:
            plan = self._plan(order, ctx, None)
            doc = self._submit(SO, self._insert_order(order, plan, amended_from=None))
            self._call("POST", "/api/method/frappe.client.cancel", body={"doctype": SO,
                       "name": doc["name"]}, subject=f"the cancellation of Sales Order {doc['name']}")
            return PushResult(doc["name"], details={"sales_order": doc["name"],
                                                    "outcome": "booked cancelled"},
                              links=plan.links)
        invoice = self._unbook(order, head, why="to cancel")
        return PushResult(_reference(head.name, invoice),
                          details={"sales_order": head.name, "sales_invoice": invoice,
                                   "outcome": "cancelled"})

    def _unbook(self, order: Mapping[str, Any], head: _Head, *, why: str) -> str | None:
        """Cancel (or delete, for drafts) the invoices and the Sales Order; the invoice's name."""
        everything = self._invoices(head.name, returns=True)
        invoices = [i for i in everything if not int(i.get("is_return") or 0)]
        credited = {i.get("return_against") for i in everything
                    if int(i.get("is_return") or 0) and int(i["docstatus"]) == 1}
        keep = None
        for inv in invoices:
            if int(inv["docstatus"]) == 1:
                self._may_cancel_invoice(order, head, inv, why, credited=inv["name"] in credited)
        if head.docstatus == 1:
            self._nothing_else_linked(order, head, invoices, why)
        for inv in invoices:
            state = int(inv["docstatus"])
            if state == 0:
                self._call("DELETE", f"/api/resource/{quote(SI)}/{quote(inv['name'], safe='')}",
                           subject=f"the draft Sales Invoice {inv['name']}", missing_ok=True)
            elif state == 1:
                self._call("POST", "/api/method/frappe.client.cancel",
                           body={"doctype": SI, "name": inv["name"]},
                           subject=f"the cancellation of Sales Invoice {inv['name']}")
                keep = inv["name"]
            else:
                keep = keep or inv["name"]
        if head.docstatus == 0 and head.chain:  # an amendment that never got submitted
            self._call("DELETE", f"/api/resource/{quote(SO)}/{quote(head.name, safe='')}",
                       subject=f"the draft Sales Order {head.name}", missing_ok=True)
            head.name, head.docstatus = head.chain[-1], 2
            return keep
        if head.docstatus == 0:  # left by an attempt that died: submit it so the record shows
            draft = self._get(SO, head.name, subject=f"the draft Sales Order {head.name}")
            if draft is not None:
                self._submit(SO, draft)
                head.docstatus = 1
        if head.docstatus == 1:
            self._call("POST", "/api/method/frappe.client.cancel",
                       body={"doctype": SO, "name": head.name},
                       subject=f"the cancellation of Sales Order {head.name}")
            head.docstatus = 2
        return keep

    def _nothing_else_linked(self, order: Mapping[str, Any], head: _Head,
                             invoices: list[dict[str, Any]], why: str) -> None:
        """Stop before cancelling anything when more than our invoices hang on the order.

        Frappe's "Cancel All" tree (get_submitted_linked_docs) lists every submitted document
        that would block the cancellation: a Delivery Note, a Payment Entry, a Pick List...
        Cancelling the invoice and then failing on the order would leave the books half-done.
        """
        answer = self._call("POST", f"/api/method/{LINKED}", body={"doctype": SO, "name": head.name},
                            subject=f"the documents linked to Sales Order {head.name}",
                            missing_ok=True)
        found = (answer or {}).get("message") or {}
        docs = found.get("docs") if isinstance(found, dict) else found
        ours = {i["name"] for i in invoices if int(i["docstatus"]) == 1}
        others = [f"{d.get('doctype')} {d.get('name')}" for d in docs or []
                  if isinstance(d, dict) and not (d.get("doctype") == SI and d.get("name") in ours)]
        if others:
            raise PermanentError(
                f"Sales Order {head.name} of {_label(order)} has submitted documents linked to it "
                f"({', '.join(others[:5])}); {why} the order, return or cancel them in ERPNext by "
                "hand (goods delivered need a Sales Return, payments a refund), then replay")

    def _may_cancel_invoice(self, order: Mapping[str, Any], head: _Head,
                            inv: Mapping[str, Any], why: str, *, credited: bool = False) -> None:
        # outstanding_amount is in the party account's currency: the company's for a foreign
        # currency invoice (4050 JPY invoiced, 27.14 USD outstanding)
        same = (inv.get("party_account_currency") or inv.get("currency")) == inv.get("currency")
        due = _dec(inv.get("grand_total") if same else inv.get("base_grand_total"))
        paid = credited or _dec(inv.get("outstanding_amount")) != due
        if paid or not self.settings["cancel_invoices"]:
            reason = ("has payments or credit notes allocated" if paid else
                      f"may not be cancelled by connector '{self.name}' (cancel_invoices is off)")
            raise PermanentError(
                f"Sales Invoice {inv['name']} of {_label(order)} {reason}; {why} the order, create "
                f"a Credit Note (Sales Invoice return) against {inv['name']} in ERPNext, then "
                f"cancel or amend Sales Order {head.name} by hand")

    def _submit(self, doctype: str, doc: Mapping[str, Any]) -> dict[str, Any]:
        """frappe.client.submit with the document as saved (its `modified` guards against races)."""
        return self._call("POST", "/api/method/frappe.client.submit", body={"doc": dict(doc)},
                          subject=f"the submission of {doctype} {doc['name']}")["message"]

    # --- HTTP ---------------------------------------------------------------------------------
    def _get(self, doctype: str, name: str, *, subject: str,
             fields: Iterable[str] | None = None) -> dict[str, Any] | None:
        if fields is not None:  # a list read is lighter than the whole document
            rows = self._list(doctype, [["name", "=", name]], list(fields), limit=1, subject=subject)
            return rows[0] if rows else None
        answer = self._call("GET", f"/api/resource/{quote(doctype)}/{quote(name, safe='')}",
                            subject=subject, missing_ok=True)
        return None if answer is None else answer["data"]

    def _list(self, doctype: str, filters: list[list[Any]], fields_: list[str], *, subject: str,
              limit: int = PAGE, order_by: str | None = None) -> list[dict[str, Any]]:
        params = {"fields": exact_json(fields_), "filters": exact_json(filters),
                  "limit_page_length": str(limit)}
        if order_by:
            params["order_by"] = order_by
        answer = self._call("GET", f"/api/resource/{quote(doctype)}?{urlencode(params)}",
                            subject=subject)
        return list(answer.get("data") or [])

    def _call(self, method: str, path: str, *, subject: str, body: Any = None,
              missing_ok: bool = False) -> Any:
        """One request; the JSON answer (Decimal numbers), None for a tolerated 404."""
        headers = {"Authorization": f"token {self.settings['api_key']}:{self.settings['api_secret']}",
                   "Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = exact_json(body).encode()
        try:
            resp = self._http().request(method, self._base + path, body=data, headers=headers,
                                        redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(self._redact(f"ERPNext at {self._origin} unreachable during "
                                              f"{subject}: {network_reason(exc)}")) from exc
        try:
            answer = json.loads(resp.data, parse_float=Decimal) if resp.data else {}
        except ValueError:
            answer = {"_raw": resp.data[:300].decode("utf-8", "replace")}
        if 200 <= resp.status < 300:
            if not isinstance(answer, dict) or "_raw" in answer:
                raise PermanentError(f"{self._origin} answered {resp.status} to {subject} but not "
                                     f"with Frappe's JSON; check url of connector '{self.name}' "
                                     "(the site's base address, without /app or /api)")
            return answer
        if resp.status == 404 and missing_ok:
            return None
        raise self._failure(resp.status, answer if isinstance(answer, dict) else {}, subject,
                            resp.headers)

    def _failure(self, status: int, answer: dict[str, Any], subject: str,
                 headers: Any) -> Exception:
        """The one status table: what ERPNext said, and what the operator should do."""
        exc_type = str(answer.get("exc_type") or "")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        said = (f"ERPNext at {self._origin} answered {status} {phrase}"
                f"{f' ({exc_type})' if exc_type else ''} to {subject}: "
                f"{_messages(answer) or '(no message)'}")
        broken = exc_type in ("JSONDecodeError", "ImportError", "DataError") or (
            exc_type == "OperationalError" and BROKEN_QUERY.search(str(answer.get("exception"))))
        if broken:
            error: Exception = PermanentError(self._redact(
                f"{said}; the connector's request is malformed for this ERPNext version: report "
                "it (with this message) to the connector's maintainers"))
        elif status in (408, 409, 425, 429) or status >= 500 or exc_type in RETRY_TYPES:
            error = TransientError(self._redact(f"{said}; will retry"),
                                   retry_after=retry_after(headers.get("Retry-After")))
        else:
            error = self._refusal(status, said, headers)
        error.exc_type = exc_type  # type: ignore[attr-defined]
        return error

    def _refusal(self, status: int, said: str, headers: Any) -> PermanentError:
        if status == 401:
            hint = (f"check api_key and api_secret of connector '{self.name}' (generating new keys "
                    "in ERPNext replaces the secret)")
        elif status == 403:
            hint = ("give the API user the roles it needs (e.g. Sales User, Sales Manager, Accounts "
                    f"User: create/submit/cancel Sales Order and Sales Invoice) or check api_key "
                    f"and api_secret of connector '{self.name}'")
        elif 300 <= status < 400:
            hint = (f"redirects are not followed; set url of connector '{self.name}' to "
                    f"{headers.get('Location', 'the final address')}")
        else:
            hint = "fix it in ERPNext (or the connector's settings and mappings), then replay"
        return PermanentError(self._redact(f"{said}; {hint}"))

    def _http(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                self._pool = pool(connect_timeout=self.settings["connect_timeout"],
                                  timeout=self.settings["timeout"], verify_tls=self.settings["verify_tls"])
            return self._pool

    def _redact(self, text: str) -> str:
        secret = self.settings["api_secret"]
        for variant in sorted({secret, quote(secret, safe="")}, key=len, reverse=True):
            text = text.replace(variant, "***")
        return text


# --- helpers ---------------------------------------------------------------------------------


def _zone(name: str) -> tzinfo:
    """UTC without a time zone database (none on some minimal images); others via zoneinfo."""
    return UTC if name == "UTC" else ZoneInfo(name)


def _dec(value: Any) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def _sum(values: Iterable[Decimal]) -> Decimal:
    return sum(values, Decimal(0))


def _places(order: Mapping[str, Any]) -> int:
    """The currency's minor units: the loaded total carries exactly that many places."""
    return max(0, -int(Decimal(order["totals"]["total"]).as_tuple().exponent))


def _po_no(order: Mapping[str, Any], source: str = "number") -> str:
    """Customer's Purchase Order number: the number the customer knows (Data field, 140 chars),
    or the channel's order id when several shops share number ranges (`po_number: external_id`)."""
    value = order.get("number") if source == "number" else None
    return str(value or order["external_id"])[:140]


def _label(order: Mapping[str, Any]) -> str:
    return f"order {order.get('number') or order.get('external_id')}"


def _reference(sales_order: str, invoice: str | None) -> str:
    return f"{sales_order} / {invoice}" if invoice else sales_order


def _actual(account: str, description: str, amount: Decimal) -> dict[str, Any]:
    return {"charge_type": "Actual", "account_head": account, "description": description,
            "tax_amount": amount}


def _taxes_by_name(order: Mapping[str, Any]) -> dict[str | None, tuple[Decimal | None, Decimal]]:
    """Σ tax amount per tax name over lines and shipping, in order of appearance."""
    out: dict[str | None, tuple[Decimal | None, Decimal]] = {}
    for holder in [*order["lines"], *(order.get("shipping") or [])]:
        for tax in holder.get("taxes") or []:
            rate, amount = out.get(tax.get("name"), (tax.get("rate"), Decimal(0)))
            out[tax.get("name")] = (rate if rate == tax.get("rate") else None, amount + tax["amount"])
    return {k: v for k, v in out.items() if v[1]}


def _tax_text(name: str | None, rate: Decimal | None) -> str:
    text = name or "Tax"
    if rate is not None:
        percent = (rate * 100).normalize()
        text += f" {percent:f}%"
    return text


def _fingerprint(doc: Mapping[str, Any], total: Any = None) -> tuple[Any, ...]:
    """What makes two Sales Orders the same booking (ERPNext-computed fields left out)."""
    items = tuple((i.get("item_code"), _dec(i.get("qty")), _dec(i.get("rate")))
                  for i in doc.get("items") or [])
    taxes = tuple((t.get("charge_type"), t.get("account_head"), _dec(t.get("tax_amount")))
                  for t in doc.get("taxes") or [])
    return (doc.get("customer"), doc.get("currency"), items, taxes,
            _dec(doc.get("discount_amount")), _dec(doc.get("grand_total") if total is None else total))


def _unsaved(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A mapped document as a POST body: no local names or `__` keys, children included."""
    def clean(row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: ([clean(c) for c in v] if isinstance(v, list) and v and isinstance(v[0], dict)
                    else v)
                for k, v in row.items()
                if not k.startswith("__") and k not in ("name", "parent", "creation", "modified")}
    return clean(doc)


def _messages(answer: Mapping[str, Any]) -> str:
    """The human text of a Frappe error: _server_messages, else `exception`, plain text."""
    texts: list[str] = []
    raw = answer.get("_server_messages")
    if isinstance(raw, str):
        try:
            for item in json.loads(raw):
                message = json.loads(item) if isinstance(item, str) else item
                texts.append(str(message.get("message", "")) if isinstance(message, dict)
                             else str(message))
        except (ValueError, AttributeError):
            texts.append(raw)
    if not texts and answer.get("exception"):
        texts.append(str(answer["exception"]).split(": ", 1)[-1])
    if not texts and answer.get("_error_message"):
        texts.append(str(answer["_error_message"]))
    if not texts and answer.get("_raw"):
        texts.append(str(answer["_raw"]))
    text = " ".join(html.unescape(_TAGS.sub(" ", t)) for t in texts if t)
    return " ".join(text.split())[:500]


def _verified_email(order: Mapping[str, Any]) -> str:
    """The order's email when the channel verified it, else "" (it proves nothing)."""
    customer = order.get("customer") or {}
    email = (customer.get("email") or "").strip().lower()
    return email if email and customer.get("email_verified") else ""


def _trusted_links(order: Mapping[str, Any], links: Links, anchors: Iterable[str]) -> list[str]:
    """Customers linked to this order's anchors, an email's link only if the email is verified."""
    verified = bool(_verified_email(order))
    return [links.customer[k] for k in customer_keys(order, tuple(anchors))
            if k in links.customer and (verified or not k.startswith("email:"))]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"





