"""A fake Odoo server on loopback: the external API of Odoo 16-19 for what the odoo connector uses.

Ground truth: tests/fixtures/transcripts/odoo19/ (206 JSON-2 and 206 XML-RPC exchanges recorded
from a real Odoo 19.0 with sale_management + account and demo data; README there) is replayed
against this fake by tests/unit/test_odoo_fake_transcripts.py, which requires the same status,
fault code, error name, message and body for every exchange. Every Odoo 19 behaviour below that
the transcripts show is marked [T]; the rest follows Odoo's source (github.com/odoo/odoo, 19.0
unless said) or its documentation, cited, and was checked against a live Odoo 19 where marked [L].

Wire:
- JSON-2 (19+; https://www.odoo.com/documentation/19.0/developer/reference/external_api.html,
  addons/rpc/controllers/json2.py, odoo/http.py Json2Dispatcher): ``POST /json/2/<model>/<method>``
  with named arguments plus ``ids`` and ``context``. Before routing, as odoo/http.py does [T]: an
  unknown ``X-Odoo-Database`` (or several databases and no header) is the HTML page
  NOT_FOUND_NODB (404); a path under ``/odoo`` is the web client, whose CSRF check answers an HTML
  400 "Session expired (invalid CSRF token)" (XML-RPC too); a body that is not
  application/json is an HTML 415; other unknown paths (``/web/json/2/...``, ``/<db>/json/2/...``,
  ``/xmlrpc/2/json/2/...``) Odoo's HTML 404 page [L]. ``/json/2/<anything else>`` and GET answer
  JSON 404 "Did you mean POST /json/2/<model>/<method>?" [T]. Authentication (ir_http
  ``_auth_method_bearer``) [T]: ``bearer``/``Bearer`` API key, else 401 "Invalid apikey" / "User
  not authenticated, use an API Key with a Bearer Authorization header." with ``WWW-Authenticate:
  Bearer``; a web session cookie works only with browser Sec-Fetch headers, else 401 'Missing
  "Authorization" or Sec-headers for interactive usage.' The arguments are bound with
  inspect.signature: a bad argument is 422 UnprocessableEntity with inspect's words, ``ids`` on
  an @api.model method 422 [T]. ``create`` answers a list of ids whatever it was given [T].
- Errors (Json2Dispatcher.handle_error, odoo/exceptions.py) [T]: ``{name, message, arguments,
  context, debug}``; UserError and ValidationError 422, MissingError 404, AccessError 403,
  LockError 409, werkzeug errors with their code (arguments [message, code]), anything else
  (ValueError, TypeError, psycopg2 errors, ConcurrencyError) 500.
- XML-RPC (addons/rpc/controllers/xmlrpc.py) [T]: ``/xmlrpc/2/common`` (version, login,
  authenticate -> uid or False; password or API key) and ``/xmlrpc/2/object`` ``execute_kw``;
  always HTTP 200, faults 2 (UserError family incl. ValidationError, MissingError, LockError),
  3 (AccessDenied), 4 (AccessError), 1 (anything else, the traceback as faultString). Answers
  are marshalled with allow_none=False *after* the call committed, so action_lock/unlock,
  button_cancel and sale.advance.payment.inv.create_invoices (its action holds
  ``default_invoice_payment_term_id: None``) commit and then fault 1 "cannot marshal None unless
  allow_none is enabled" [T]. ``create`` of a dict answers an int, of a list a list [T].
- JSON-RPC ``/jsonrpc`` (service common/object as XML-RPC; errors ``{code: 200, message: "Odoo
  Server Error", data: {name, message, arguments, context, debug}}``, odoo/http.py
  JsonRPCDispatcher) and ``/web/session/authenticate`` (a session cookie, addons/web/
  controllers/session.py). NOT covered by the transcripts: the transcripts are JSON-2 and XML-RPC
  only; the JSON-RPC error shape follows the source.
- ``service/model.py retrying``: serialization failures are retried by Odoo itself and surface
  only after 5 tries, as 500 ``psycopg2.errors.SerializationFailure`` / fault 1 (source; not in
  the transcripts: inject them with ``fail_method``).

ORM [T]: search/search_read/search_count/read/create/write/unlink/fields_get/default_get with
domains, ``order`` and each model's default ``_order`` (x2many values come in the comodel's
order: res.partner "complete_name, id desc", account.move "date desc, name desc, id desc"); a
read of a missing id leaves it out, a write or a method on it is a MissingError "Record does not
exist or has been deleted.\\n(Record: model(id,), User: uid)"; a many2one to a missing record
is that MissingError; unknown fields are ValueErrors in Odoo's four wordings; a missing required
field is the ValidationError "The operation cannot be completed: Missing required value for the
field 'Label' (name).\\nModel: 'Description' (model)..."; a call is one transaction (rolled back
on error; ids not reused). Multi-company: ``allowed_company_ids`` outside the user's companies
is AccessError "Access to unauthorized or invalid companies."; reading another company's record
with ``allowed_company_ids`` set is the multi-company AccessError with ``suggested_company`` in
the context; without it every company of the user is readable [T]. A user without sales rights
gets AccessError on sale.order / account.move [T].

Business (Odoo 19 [T] unless said; 16-18 from their source):
- sale.order: names S00001..., ``note`` is HTML (plain text comes back wrapped in <p>, & escaped
  [L]) and writable in every state [L]; ``pricelist_id``/``currency_id``: the partner's pricelist
  or none (then the company currency; a fresh 19 has no pricelists [T]); line taxes default to
  the product's taxes of the order's company; a line without product is accepted, confirming it
  is not [T]; action_confirm (draft/sent only), action_cancel (locked -> UserError; 19 cancels
  at once, posted invoices stay posted; 16-18 answer the sale.order.cancel wizard unless
  ``disable_cancel_warning``, sale_order.py of those versions), action_draft, action_lock/unlock
  (17+; 16: action_done/action_unlock with state "done"), unlink only of draft/cancel.
- sale.order.line: ``tax_ids`` in 19 (``tax_id`` is then a ValueError) [T], ``tax_id`` up to 18;
  a tax of another company is refused ("Uh-oh! You've got some company inconsistencies") [L];
  writing the quantity without the price re-prices a line whose price was not set by hand since
  (technical_price_unit, sale_order_line.py ``_compute_price_unit``) [T]; confirmed product
  lines cannot be deleted (message with its newline and 16 spaces) [T]; a locked order's
  protected fields cannot be written ("...locked order:\\nQuantity", the field labels) [T].
- sale.advance.payment.inv ``delivered``: one invoice of what is to invoice (note lines copied,
  product line names "[CODE] Name\\nline name"); nothing to invoice -> UserError [T].
- account.move: draft ``name`` false (16: "/"), posted INV/YYYY/NNNNN / RINV/...; action_post ->
  false, posting twice -> "The entry X (id N) must be in draft."; button_cancel of a posted entry
  resets it to draft first (17+) and answers None; posted invoice lines are read-only,
  ``narration`` is not; ``payment_state``/``amount_residual``: a posted credit note reconciles
  with the invoice it reverses (reversed, or partial), payments make it partial/paid [T].
- account.move.reversal: 19 requires ``journal_id`` (ValidationError above) [T][L]; 16-18
  compute it from the reversed moves (account_move_reversal.py ``_compute_journal_id``, not
  recorded); refund_moves / reverse_moves(is_modify) / modify_moves (17+), 16 reverse_moves with
  ``refund_method``; the credit note is a draft whose ref is "Reversal of: INV, reason" [T].
- account.payment.register / account.payment: the wizard proposes the residual, pays, the
  invoice becomes partial then paid; nothing left to pay -> UserError [T].

Not covered by the transcripts (source or documentation only): JSON-RPC, Odoo 16-18, LockError,
serialization failures, down payments, stock/delivery flows, fiscal positions, unlink of a
missing id, writes on records of another company.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import threading
import traceback
import xmlrpc.client
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from http import HTTPStatus
from typing import Any

from fakes.vendor import FakeVendor, header
from flask import Response, request
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

API_KEY = "odoo-apikey-7f3c1e9a2b"
PASSWORD = "odoo-password-5d1"
LOGIN = "connector@example.com"
DATABASE = "fobo"

NOT_FOUND_NODB = """\
<!DOCTYPE html>
<title>404 Not Found</title>
<h1>Not Found</h1>
<p>No database is selected and the requested URL was not found in the server-wide controllers.</p>
<p>Please verify the hostname, <a href=/web/login>login</a> and try again.</p>

<!-- Alternatively, use the X-Odoo-Database header. -->
"""  # odoo/http.py NOT_FOUND_NODB
WEBSITE_404 = ("<!DOCTYPE html>\n<html>\n<head><meta charset=\"utf-8\"/><title>Odoo</title></head>\n"
               "<body><h1 class=\"visually-hidden\">Error 404</h1><p>Page not found</p></body>\n"
               "</html>\n")  # the shape of Odoo's (website) 404 page [L]
JSON2_NOT_FOUND = "Did you mean POST /json/2/<model>/<method>?"


# --- Odoo's exceptions, as the RPC layers show them --------------------------------------
class OdooError(Exception):
    qualname = "odoo.exceptions.UserError"
    http_status = 422
    fault = 2
    context: dict[str, Any] = {}


class UserError(OdooError):
    pass


class ValidationError(OdooError):
    qualname = "odoo.exceptions.ValidationError"


class MissingError(OdooError):
    qualname = "odoo.exceptions.MissingError"
    http_status = 404


class LockError(OdooError):
    qualname = "odoo.exceptions.LockError"
    http_status = 409


class AccessDenied(OdooError):
    qualname = "odoo.exceptions.AccessDenied"
    http_status = 403
    fault = 3


class AccessError(OdooError):
    qualname = "odoo.exceptions.AccessError"
    http_status = 403
    fault = 4

    def __init__(self, message: str, context: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.context = context or {}


class ServerError(OdooError):
    """Any other exception (ValueError, psycopg2 errors...): 500 / faultCode 1 with traceback."""

    http_status = 500
    fault = 1

    def __init__(self, qualname: str, message: str) -> None:
        super().__init__(message)
        self.qualname = qualname


class HttpError(OdooError):
    """A werkzeug HTTPException (JSON-2 only): its code, arguments [message, code]."""

    fault = 1

    def __init__(self, status: int, name: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.http_status, self.qualname = status, f"werkzeug.exceptions.{name}"
        self.headers = headers or {}


def concurrency_failure() -> ServerError:
    """What Odoo answers once its own 5 retries of a serialization failure are spent."""
    return ServerError("psycopg2.errors.SerializationFailure",
                       "could not serialize access due to concurrent update")


def _short(qualname: str) -> str:
    """How a traceback names the exception class (builtins without their module)."""
    return qualname.removeprefix("builtins.")


# --- the schema ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Fd:
    kind: str
    comodel: str | None = None
    inverse: str | None = None
    label: str = ""
    required: bool = False


CHAR, FLOAT, INT, BOOL, SEL = Fd("char"), Fd("float"), Fd("integer"), Fd("boolean"), Fd("selection")
DATE, DATETIME, HTML, TEXT = Fd("date"), Fd("datetime"), Fd("html"), Fd("text")


def m2o(comodel: str, label: str = "", required: bool = False) -> Fd:
    return Fd("many2one", comodel, label=label, required=required)


def o2m(comodel: str, inverse: str) -> Fd:
    return Fd("one2many", comodel, inverse)


def m2m(comodel: str, label: str = "") -> Fd:
    return Fd("many2many", comodel, label=label)


COMPUTED = {
    "res.partner": {"child_ids", "display_name", "complete_name"},
    "res.users": {"display_name"},
    "sale.order": {"amount_untaxed", "amount_tax", "amount_total", "currency_id", "invoice_ids",
                   "invoice_status", "order_line", "invoice_count", "display_name"},
    "sale.order.line": {"price_subtotal", "price_tax", "price_total", "qty_invoiced",
                        "qty_to_invoice", "state", "invoice_status", "display_name"},
    "account.move": {"amount_untaxed", "amount_tax", "amount_total", "invoice_line_ids",
                     "display_name", "amount_residual", "payment_state"},
    "account.move.line": {"price_subtotal", "price_total", "display_name"},
    "account.move.reversal": {"residual", "currency_id", "move_type"},
    "account.payment.register": {"payment_difference"},
}
MODEL_DESCRIPTIONS = {
    "sale.order": "Sales Order", "sale.order.line": "Sales Order Line", "account.move":
    "Journal Entry", "account.tax": "Tax", "account.move.reversal": "Account Move Reversal",
    "res.partner": "Contact", "account.payment.register": "Pay", "product.product": "Product",
}
# ir.model.access groups as Odoo 19 lists them in its AccessError [T]
ACCESS_GROUPS = {
    "sale.order": ["Accounting/Invoicing", "Sales/Administrator", "Sales/User: Own Documents Only",
                   "Role / Portal", "Show Accounting Features - Readonly",
                   "Show Full Accounting Features"],
    "account.move": ["Accounting/Administrator", "Accounting/Invoicing",
                     "Sales/User: Own Documents Only", "Role / Portal",
                     "Show Accounting Features - Readonly"],
}
DEFAULT_ORDER = {
    "res.partner": "complete_name asc, id desc", "sale.order": "date_order desc, id desc",
    "sale.order.line": "order_id, sequence, id", "account.move":
    "date desc, name desc, invoice_date desc, id desc", "account.move.line": "id",
    "account.tax": "sequence, id", "account.journal": "sequence, type, code",
    "product.product": "default_code, name, id", "account.payment": "date desc, name desc",
    "res.country": "name, id", "res.country.state": "country_id, code", "product.pricelist":
    "sequence, id, name",
}
# sale_order_line.py _get_protected_fields (19), labelled as ir.model.fields says [T]
PROTECTED_LINE_FIELDS = ("product_id", "name", "price_unit", "product_uom_id", "product_uom_qty",
                         "tax_ids", "analytic_distribution", "discount")
API_MODEL = {"search", "search_read", "search_count", "create", "fields_get", "context_get",
             "default_get"}
# (positional names, required names, takes **kwargs, defining class for Python's TypeError)
SIGNATURES: dict[str, tuple[list[str], list[str], bool, str]] = {
    "search": (["domain", "offset", "limit", "order"], ["domain"], False, "BaseModel"),
    "search_read": (["domain", "fields", "offset", "limit", "order"], [], True, "BaseModel"),
    "search_count": (["domain", "limit"], ["domain"], False, "BaseModel"),
    "read": (["fields", "load"], [], False, "BaseModel"),
    "create": (["vals_list"], ["vals_list"], False, "BaseModel"),
    "write": (["vals"], ["vals"], False, "BaseModel"),
    "unlink": ([], [], False, "BaseModel"),
    "fields_get": (["allfields", "attributes"], [], False, "BaseModel"),
}


def _schema(version: int) -> dict[str, dict[str, Fd]]:
    taxfield = "tax_ids" if version >= 19 else "tax_id"
    groupfield = "group_ids" if version >= 19 else "groups_id"
    return {
        "res.company": {"name": CHAR, "currency_id": m2o("res.currency"),
                        "tax_calculation_rounding_method": SEL},
        "res.currency": {"name": CHAR, "decimal_places": INT, "active": BOOL, "rounding": FLOAT},
        "res.country": {"name": CHAR, "code": CHAR},
        "res.country.state": {"name": CHAR, "code": CHAR, "country_id": m2o("res.country")},
        "res.groups": {"name": CHAR},
        "ir.model.data": {"module": CHAR, "name": CHAR, "model": CHAR, "res_id": INT},
        "res.users": {"name": CHAR, "login": CHAR, "company_id": m2o("res.company"),
                      "company_ids": m2m("res.company"), "active": BOOL, "share": BOOL,
                      groupfield: m2m("res.groups"), "tz": SEL, "lang": SEL, "password": CHAR,
                      "partner_id": m2o("res.partner")},
        "decimal.precision": {"name": CHAR, "digits": INT},
        "uom.uom": {"name": CHAR},
        "product.pricelist": {"name": CHAR, "currency_id": m2o("res.currency"), "active": BOOL,
                              "company_id": m2o("res.company"), "sequence": INT},
        "product.product": {"name": CHAR, "default_code": CHAR, "active": BOOL, "sale_ok": BOOL,
                            "type": SEL, "invoice_policy": SEL, "list_price": FLOAT,
                            "taxes_id": m2m("account.tax"), "uom_id": m2o("uom.uom")},
        "account.tax": {"name": CHAR, "amount": FLOAT, "amount_type": SEL, "type_tax_use": SEL,
                        "price_include": BOOL, "active": BOOL, "sequence": INT,
                        "company_id": m2o("res.company")},
        "account.journal": {"name": CHAR, "code": CHAR, "type": SEL, "active": BOOL,
                            "sequence": INT, "company_id": m2o("res.company")},
        "account.payment.method.line": {"name": CHAR, "journal_id": m2o("account.journal")},
        "res.partner": {"name": CHAR, "email": CHAR, "phone": CHAR, "ref": CHAR, "vat": CHAR,
                        "company_name": CHAR, "type": SEL, "is_company": BOOL, "active": BOOL,
                        "parent_id": m2o("res.partner"),
                        "child_ids": o2m("res.partner", "parent_id"),
                        "complete_name": CHAR, "street": CHAR, "street2": CHAR, "city": CHAR,
                        "zip": CHAR, "country_id": m2o("res.country"),
                        "state_id": m2o("res.country.state"), "lang": SEL,
                        "property_product_pricelist": m2o("product.pricelist"),
                        "company_id": m2o("res.company")},
        "sale.order": {"name": CHAR, "state": SEL, "client_order_ref": CHAR, "origin": CHAR,
                       "date_order": DATETIME, "note": HTML,
                       "partner_id": m2o("res.partner", "Customer", required=True),
                       "partner_invoice_id": m2o("res.partner", "Invoice Address"),
                       "partner_shipping_id": m2o("res.partner", "Delivery Address"),
                       "pricelist_id": m2o("product.pricelist"),
                       "company_id": m2o("res.company"), "user_id": m2o("res.users"),
                       "currency_id": m2o("res.currency"),
                       "order_line": o2m("sale.order.line", "order_id"),
                       "amount_untaxed": FLOAT, "amount_tax": FLOAT, "amount_total": FLOAT,
                       "invoice_ids": m2m("account.move"), "invoice_count": INT,
                       "invoice_status": SEL,
                       **({"locked": BOOL} if version >= 17 else {})},
        "sale.order.line": {"order_id": m2o("sale.order", "Order Reference", required=True),
                            "sequence": INT, "name": Fd("text", label="Description"),
                            "product_id": m2o("product.product", "Product"),
                            "product_uom_qty": Fd("float", label="Quantity"),
                            "price_unit": Fd("float", label="Unit Price"),
                            "technical_price_unit": FLOAT,
                            "discount": Fd("float", label="Discount (%)"),
                            taxfield: m2m("account.tax", "Taxes"), "display_type": SEL,
                            "price_subtotal": FLOAT, "price_tax": FLOAT, "price_total": FLOAT,
                            "qty_invoiced": FLOAT, "qty_to_invoice": FLOAT, "state": SEL,
                            "invoice_status": SEL},
        "sale.advance.payment.inv": {"advance_payment_method": SEL,
                                     "sale_order_ids": m2m("sale.order"),
                                     "deduct_down_payments": BOOL, "consolidated_billing": BOOL},
        "account.move": {"name": CHAR, "move_type": SEL, "state": SEL, "ref": CHAR,
                         "invoice_origin": CHAR, "invoice_date": DATE, "date": DATE,
                         "partner_id": m2o("res.partner"), "currency_id": m2o("res.currency"),
                         "journal_id": m2o("account.journal"), "company_id": m2o("res.company"),
                         "reversed_entry_id": m2o("account.move"), "narration": HTML,
                         "invoice_line_ids": o2m("account.move.line", "move_id"),
                         "amount_untaxed": FLOAT, "amount_tax": FLOAT, "amount_total": FLOAT,
                         "amount_residual": FLOAT, "payment_state": SEL},
        "account.move.line": {"move_id": m2o("account.move"), "name": TEXT,
                              "product_id": m2o("product.product"), "display_type": SEL,
                              "quantity": FLOAT, "price_unit": FLOAT, "discount": FLOAT,
                              "tax_ids": m2m("account.tax"),
                              "sale_line_ids": m2m("sale.order.line"),
                              "price_subtotal": FLOAT, "price_total": FLOAT},
        "account.move.reversal": {
            "move_ids": m2m("account.move"), "new_move_ids": m2m("account.move"), "reason": CHAR,
            "date": DATE, "company_id": m2o("res.company"), "residual": FLOAT,
            "currency_id": m2o("res.currency"), "move_type": CHAR,
            "journal_id": m2o("account.journal", "Journal", required=version >= 19),
            **({"refund_method": SEL} if version < 17 else {})},
        "account.payment.register": {
            "journal_id": m2o("account.journal"), "amount": FLOAT, "payment_date": DATE,
            "communication": CHAR, "payment_difference": FLOAT, "payment_difference_handling": SEL,
            "partner_id": m2o("res.partner"), "currency_id": m2o("res.currency"),
            "payment_method_line_id": m2o("account.payment.method.line"),
            "line_ids": m2m("account.move")},
        "account.payment": {"name": CHAR, "state": SEL, "amount": FLOAT, "date": DATE,
                            "journal_id": m2o("account.journal"), "memo": CHAR,
                            "partner_id": m2o("res.partner"), "is_reconciled": BOOL,
                            "is_matched": BOOL, "invoice_ids": m2m("account.move")},
    }


def _dec(value: Any) -> Decimal:
    if value is None or value is False:
        return Decimal(0)
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def _round(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _wire(value: Any) -> Any:
    """What Odoo sends: floats for numbers, no Decimal."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _html(value: Any) -> Any:
    """An Html field's sanitizer as seen from outside [L]: text is wrapped in <p>, & escaped."""
    if not isinstance(value, str) or not value:
        return value
    text = re.sub(r"&(?!#?\w+;)", "&amp;", value)
    return text if re.match(r"\s*<(p|div|ul|ol|table|h\d|blockquote|pre)\b", text) else \
        f"<p>{text}</p>"


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


class FakeOdoo(FakeVendor):
    """One Odoo server; `version` picks the 16/17/18/19 behaviours, `data` the seed.

    data="default": one company, pricelists, SHIPPING/DISCOUNT products, handy taxes.
    data="recorded": like the database the transcripts were recorded from (see its README):
    companies 1 and 2, USD, tax "15%" and company 2's "5.75%", products SKU-001..003, no
    pricelists, inactive JPY, journals Sales/Bank, Mitchell Admin; `refs` names them.
    """

    name = "odoo"

    def __init__(self, *, version: int = 17, databases: Iterable[str] = (DATABASE,),
                 rounding: str = "round_per_line", price_digits: int = 2,
                 auto_lock: bool = False, data: str = "default") -> None:
        self.version = version
        self.databases = list(databases)
        self.database = self.databases[0]
        self.auto_lock = auto_lock
        self.schema = _schema(version)
        self.taxfield = "tax_ids" if version >= 19 else "tax_id"
        self.records: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        self._next: dict[str, itertools.count] = defaultdict(lambda: itertools.count(1))
        self._sequences: dict[str, itertools.count] = defaultdict(lambda: itertools.count(1))
        self.calls: list[tuple[str, str, str]] = []   # (protocol, model, method)
        self.bodies: list[bytes] = []
        self.method_faults: list[tuple[str, str, Exception]] = []
        self.credentials: dict[int, set[str]] = {}
        self.api_keys: dict[str, int] = {}
        self.sessions: dict[str, int] = {}
        self.rights: dict[int, set[str]] = {}        # uid -> {"sale", "account"}
        self.reconciled: dict[int, list[tuple[int, Decimal]]] = defaultdict(list)
        self.refs: dict[str, int] = {}
        self.pricelists: dict[str, int] = {}
        self.orm = threading.RLock()
        self._uid, self._protocol = 0, ""
        super().__init__()
        with self.orm:
            if data == "recorded":
                self._seed_recorded()
            else:
                self._seed_default(rounding, price_digits)

    # --- seed data ------------------------------------------------------------------------
    def _insert(self, model: str, vals: dict[str, Any]) -> int:
        rid = next(self._next[model])
        self.records[model][rid] = {"id": rid, **vals}
        return rid

    def _user(self, name: str, login: str, secrets_: Iterable[str], *, companies: list[int],
              rights: set[str], tz: str | bool = "Europe/Brussels", groups: list[int] | None = None
              ) -> int:
        partner = self._insert("res.partner", {"name": name, "type": "contact", "active": True,
                                               "email": login if "@" in login else False})
        groupfield = "group_ids" if self.version >= 19 else "groups_id"
        uid = self._insert("res.users", {
            "name": name, "login": login, "company_id": companies[0], "company_ids": companies,
            "active": True, "share": False, groupfield: list(groups or []), "tz": tz,
            "lang": "en_US", "partner_id": partner})
        self.credentials[uid] = set(secrets_)
        self.rights[uid] = set(rights)
        return uid

    def _seed_default(self, rounding: str, price_digits: int) -> None:
        usd = self._insert("res.currency", {"name": "USD", "decimal_places": 2, "active": True,
                                            "rounding": Decimal("0.01")})
        eur = self._insert("res.currency", {"name": "EUR", "decimal_places": 2, "active": True,
                                            "rounding": Decimal("0.01")})
        jpy = self._insert("res.currency", {"name": "JPY", "decimal_places": 0, "active": True,
                                            "rounding": Decimal(1)})
        self._insert("res.currency", {"name": "KWD", "decimal_places": 3, "active": True,
                                      "rounding": Decimal("0.001")})
        self.company = self._insert("res.company", {
            "name": "FOBO Inc.", "currency_id": usd, "tax_calculation_rounding_method": rounding})
        self._insert("res.groups", {"name": "Role / User"})
        self.uid = self._user("Connector Bot", LOGIN, {PASSWORD, API_KEY}, companies=[1],
                              rights={"sale", "account"})
        self.api_keys = {API_KEY: self.uid}
        self._user("Administrator", "admin", set(), companies=[1], rights={"sale", "account"})
        self._insert("decimal.precision", {"name": "Product Price", "digits": price_digits})
        self._insert("decimal.precision", {"name": "Product Unit of Measure", "digits": 2})
        self._insert("decimal.precision", {"name": "Discount", "digits": 2})
        self._insert("uom.uom", {"name": "Units"})
        self.pricelists = {
            "USD": self._insert("product.pricelist", {"name": "Public Pricelist", "active": True,
                                                      "currency_id": usd, "sequence": 16}),
            "EUR": self._insert("product.pricelist", {"name": "Euro", "active": True,
                                                      "currency_id": eur, "sequence": 16}),
            "JPY": self._insert("product.pricelist", {"name": "Yen", "active": True,
                                                      "currency_id": jpy, "sequence": 16})}
        self._seed_journals(usd)
        countries = {}
        for code, name in (("US", "United States"), ("DE", "Germany"), ("FR", "France"),
                           ("GB", "United Kingdom"), ("JP", "Japan"), ("CA", "Canada"),
                           ("KW", "Kuwait")):
            countries[code] = self._insert("res.country", {"name": name, "code": code})
        for code, name in (("IL", "Illinois"), ("NY", "New York"), ("CA", "California")):
            self._insert("res.country.state", {"name": name, "code": code,
                                               "country_id": countries["US"]})
        self.default_tax = self.add_tax("15%", "15")
        self.add_tax("Sales Tax 7.25%", "7.25")
        self.add_tax("7.25% incl.", "7.25", price_include=True)
        self.add_tax("20% incl.", "20", price_include=True)
        self.add_tax("19%", "19")
        self.add_tax("0% Exempt", "0")
        self.add_tax("15% (purchase)", "15", type_tax_use="purchase")
        self.add_product("SHIPPING", "Shipping", kind="service", taxes=[])
        self.add_product("DISCOUNT", "Discount", kind="service", taxes=[])

    def _seed_journals(self, currency: int) -> None:
        sales = self._insert("account.journal", {"name": "Sales", "code": "INV", "type": "sale",
                                                 "active": True, "sequence": 5, "company_id": 1})
        bank = self._insert("account.journal", {"name": "Bank", "code": "BNK1", "type": "bank",
                                                "active": True, "sequence": 10, "company_id": 1})
        self._insert("account.payment.method.line", {"name": "Manual Payment",
                                                     "journal_id": bank})
        self.refs.update({"journal.sales": sales, "journal.bank": bank})

    def _seed_recorded(self) -> None:
        """The recorded database as far as the transcripts see it (README "Odoo 19.0...")."""
        usd = self._insert("res.currency", {"name": "USD", "decimal_places": 2, "active": True,
                                            "rounding": Decimal("0.01")})
        jpy = self._insert("res.currency", {"name": "JPY", "decimal_places": 0, "active": False,
                                            "rounding": Decimal(1)})
        self.company = self._insert("res.company", {
            "name": "YourCompany", "currency_id": usd,
            "tax_calculation_rounding_method": "round_per_line"})
        company2 = self._insert("res.company", {
            "name": "My US Company", "currency_id": usd,
            "tax_calculation_rounding_method": "round_per_line"})
        group_user = self._insert("res.groups", {"name": "Role / User"})
        xmlid = self._insert("ir.model.data", {"module": "base", "name": "group_user",
                                               "model": "res.groups", "res_id": group_user})
        self._insert("res.partner", {"name": "YourCompany", "email": "info@yourcompany.com",
                                     "type": "contact", "is_company": True, "active": True,
                                     "company_id": False})
        self.uid = self._user("Mitchell Admin", "admin", {PASSWORD, API_KEY},
                              companies=[self.company, company2], rights={"sale", "account"},
                              groups=[group_user])
        self.api_keys = {API_KEY: self.uid}
        price = self._insert("decimal.precision", {"name": "Product Price", "digits": 2})
        self._insert("decimal.precision", {"name": "Product Unit of Measure", "digits": 2})
        self._insert("decimal.precision", {"name": "Discount", "digits": 2})
        units = self._insert("uom.uom", {"name": "Units"})
        self._seed_journals(usd)
        sales2 = self._insert("account.journal", {"name": "Sales", "code": "INV", "type": "sale",
                                                  "active": True, "sequence": 5,
                                                  "company_id": company2})
        us = self._insert("res.country", {"name": "United States", "code": "US"})
        self._insert("res.country", {"name": "Belgium", "code": "BE"})
        ny = self._insert("res.country.state", {"name": "New York", "code": "NY",
                                                "country_id": us})
        self._insert("res.country.state", {"name": "Illinois", "code": "IL", "country_id": us})
        tax = self.add_tax("15%", "15")
        tax2 = self._insert("account.tax", {
            "name": "5.75%", "amount": Decimal("5.75"), "amount_type": "percent",
            "type_tax_use": "sale", "price_include": False, "active": True, "sequence": 1,
            "company_id": company2})
        self.default_tax = tax
        products = {code: self._insert("product.product", {
            "name": name, "default_code": code, "active": True, "sale_ok": True, "type": kind,
            "invoice_policy": "order", "list_price": Decimal(price_), "uom_id": units,
            "taxes_id": [tax, tax2]})
            for code, name, price_, kind in (("SKU-001", "Blue Widget", "12.50", "consu"),
                                            ("SKU-002", "Red Gadget", "30.00", "consu"),
                                            ("SKU-003", "Installation", "80.00", "service"))}
        self.refs.update({
            "company": self.company, "company2": company2, "currency.USD": usd,
            "currency.JPY": jpy, "user.admin": self.uid, "partner.company": 1, "tax.15": tax,
            "tax.5.75": tax2, "country.US": us, "state.NY": ny, "uom.units": units,
            "precision.price": price, "group.user": group_user, "xmlid.group_user": xmlid,
            "journal.sales2": sales2, "payment_method_line.manual": 1,
            **{f"product.{code}": pid for code, pid in products.items()}})

    # --- helpers for tests ----------------------------------------------------------------
    def add_tax(self, name: str, amount: str, *, price_include: bool = False,
                amount_type: str = "percent", type_tax_use: str = "sale") -> int:
        with self.orm:
            return self._insert("account.tax", {
                "name": name, "amount": Decimal(amount), "amount_type": amount_type,
                "type_tax_use": type_tax_use, "price_include": price_include, "active": True,
                "sequence": 1, "company_id": 1})

    def add_product(self, code: str, name: str | None = None, *, kind: str = "consu",
                    invoice_policy: str = "order", taxes: list[int] | None = None,
                    list_price: str = "1.00") -> int:
        with self.orm:
            return self._insert("product.product", {
                "name": name or code.title(), "default_code": code, "active": True,
                "sale_ok": True, "type": kind, "invoice_policy": invoice_policy,
                "list_price": Decimal(list_price), "uom_id": 1,
                "taxes_id": [self.default_tax] if taxes is None else list(taxes)})

    def ensure_product(self, code: str) -> int:
        with self.orm:
            for rid, rec in self.records["product.product"].items():
                if rec["default_code"] == code:
                    return rid
            return self.add_product(code)

    def remove_product(self, code: str) -> None:
        """Archive a product, as a user would (it is then not found by code)."""
        with self.orm:
            for rec in self.records["product.product"].values():
                if rec["default_code"] == code:
                    rec["active"] = False

    def add_partner(self, name: str, email: str | None = None, **vals: Any) -> int:
        with self.orm:
            self._uid = self.uid
            return self._create("res.partner", [{"name": name, "email": email or False, **vals}],
                                {}, top=True)[0]

    def add_user(self, login: str, password: str, *, name: str = "Some User",
                 rights: Iterable[str] = ()) -> int:
        with self.orm:
            return self._user(name, login, {password}, companies=[self.company],
                              rights=set(rights), tz=False)

    def orders(self, client_order_ref: str | None = None) -> list[dict[str, Any]]:
        """Sale orders (with their computed fields), optionally by customer reference."""
        with self.orm:
            found = [r for r in self.records["sale.order"].values()
                     if client_order_ref is None or r.get("client_order_ref") == client_order_ref]
            return [self._export("sale.order", r, None, raw=True) for r in found]

    def lines(self, so_id: int) -> list[dict[str, Any]]:
        with self.orm:
            rows = [r for r in self.records["sale.order.line"].values() if r["order_id"] == so_id]
            return [self._export("sale.order.line", r, None, raw=True)
                    for r in sorted(rows, key=lambda r: (r["sequence"], r["id"]))]

    def moves(self, so_id: int | None = None) -> list[dict[str, Any]]:
        with self.orm:
            ids = (self._get("sale.order", self.records["sale.order"][so_id], "invoice_ids")
                   if so_id is not None else list(self.records["account.move"]))
            return [self._export("account.move", self.records["account.move"][i], None, raw=True)
                    for i in sorted(ids)]

    def partners(self, **match: Any) -> list[dict[str, Any]]:
        with self.orm:
            return [dict(r) for r in self.records["res.partner"].values()
                    if all(r.get(k) == v for k, v in match.items())]

    def post(self, move_id: int) -> None:
        """Post an invoice as a user would in Odoo."""
        with self.orm:
            self._move_post([move_id], {})

    def pay(self, move_id: int, amount: Decimal | None = None) -> None:
        """Register a payment on a posted invoice, as a user would in Odoo."""
        with self.orm:
            move = self.records["account.move"][move_id]
            due = self._get("account.move", move, "amount_residual")
            self.reconciled[move_id].append((0, due if amount is None else amount))

    def fail_method(self, model: str, method: str, error: Exception) -> None:
        """The next call of model.method raises `error` (an Odoo exception) before acting."""
        self.method_faults.append((model, method, error))

    def session_for(self, login: str, password: str) -> str:
        """A web session id, as /web/session/authenticate would set in its cookie."""
        with self.orm:
            uid = self._login(self.database, login, password)
            if not uid:
                raise AccessDenied("Access Denied")
            sid = secrets.token_urlsafe(24)
            self.sessions[sid] = uid
            return sid

    # --- HTTP -----------------------------------------------------------------------------
    def routes(self) -> None:
        self.app.add_url_rule("/json/2/<model>/<method>", "json2", self._json2, methods=["POST"])
        self.app.add_url_rule("/json/2/<model>/<method>/", "json2s", self._json2,
                              methods=["POST"])
        for rule in ("/json/2", "/json/2/<path:subpath>"):
            self.app.add_url_rule(rule, f"json2-404-{rule}", self._json2_not_found,
                                  methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
        self.app.add_url_rule("/jsonrpc", "jsonrpc", self._jsonrpc, methods=["POST"])
        self.app.add_url_rule("/xmlrpc/2/<service>", "xmlrpc", self._xmlrpc, methods=["POST"])
        self.app.add_url_rule("/xmlrpc/2/<service>/", "xmlrpcs", self._xmlrpc, methods=["POST"])
        for rule in ("/web/version", "/json/version"):
            self.app.add_url_rule(rule, f"version-{rule}", self._web_version,
                                  methods=["GET", "POST"])
        self.app.add_url_rule("/web/session/authenticate", "session", self._session_authenticate,
                              methods=["POST"])
        for rule in ("/odoo", "/odoo/<path:subpath>"):
            self.app.add_url_rule(rule, f"webclient-{rule}", self._web_client,
                                  methods=["GET", "POST"])
        self.app.register_error_handler(404, lambda exc: Response(
            WEBSITE_404, status=404, mimetype="text/html"))
        self.app.register_error_handler(405, lambda exc: Response(
            WEBSITE_404, status=404, mimetype="text/html"))

    def error(self, status: int, message: str) -> Response:
        if request.path.startswith("/json/2") and self.version >= 19:
            return self._json2_error(HttpError(status, "HTTPException", message))
        return Response(f"<html><body><h1>{status}</h1><p>{message}</p></body></html>",
                        status=status, mimetype="text/html")

    def _web_version(self) -> Response:
        return Response(json.dumps({"version_info": self._version_info(),
                                    "version": f"{self.version}.0"}),
                        mimetype="application/json")

    def _version_info(self) -> list[Any]:
        return [self.version, 0, 0, "final", 0, ""]

    def _web_client(self, subpath: str = "") -> Response:
        """/odoo/... is the web client (type http, csrf=True): a POST fails its CSRF check."""
        if request.method == "POST":
            return BadRequest("Session expired (invalid CSRF token)").get_response()
        return Response(WEBSITE_404, status=404, mimetype="text/html")

    def _nodb(self) -> Response | None:
        """The database of a db-bound route, as odoo/http.py picks it (header, else the only one)."""
        db = header(request.headers, "X-Odoo-Database")
        if (db and db not in self.databases) or (not db and len(self.databases) > 1):
            return Response(NOT_FOUND_NODB, status=404, mimetype="text/html")
        return None

    def _json2_not_found(self, subpath: str = "") -> Response:
        if self.version < 19:
            return Response(WEBSITE_404, status=404, mimetype="text/html")
        return self._nodb() or self._json2_error(HttpError(404, "NotFound", JSON2_NOT_FOUND))

    def _json2(self, model: str, method: str) -> Response:
        if self.version < 19:
            return Response(WEBSITE_404, status=404, mimetype="text/html")
        nodb = self._nodb()
        if nodb is not None:
            return nodb
        data = request.get_data()
        if data and request.mimetype != "application/json":
            return UnsupportedMediaType(
                "Request inferred type is compatible with ['http'] but "
                "'/json/2/<__model__>/<__method__>' is type='json2'.\n\nPlease verify the "
                "Content-Type request header and try again.").get_response()
        self.bodies.append(data)
        try:
            uid = self._json2_user()
            try:
                body = json.loads(data) if data else {}
            except ValueError as exc:
                raise HttpError(400, "BadRequest", f"could not parse the body as json: {exc}"
                                ) from exc
            if not isinstance(body, dict):
                body = {}
            ids = body.pop("ids", None) or []
            context = body.pop("context", None) or {}
            result = self._execute("json2", model, method, list(ids), [], body, context, uid)
            return Response(json.dumps(_wire(result)), mimetype="application/json")
        except Exception as exc:
            return self._json2_error(exc)

    def _json2_user(self) -> int:
        """ir_http._auth_method_bearer [T]."""
        auth = header(request.headers, "Authorization")
        scheme, _, token = auth.partition(" ")
        challenge = {"WWW-Authenticate": "Bearer "}
        if auth and scheme.lower() == "bearer":
            uid = self.api_keys.get(token.strip())
            if uid is None:
                raise HttpError(401, "Unauthorized", "Invalid apikey", challenge)
            return uid
        session = self.sessions.get(request.cookies.get("session_id", ""))
        if session is None:
            raise HttpError(401, "Unauthorized", "User not authenticated, use an API Key with a "
                            "Bearer Authorization header.", challenge)
        h = request.headers
        if not (h.get("Sec-Fetch-Dest") == "document" and h.get("Sec-Fetch-Mode") == "navigate"
                and h.get("Sec-Fetch-Site") in ("none", "same-origin")
                and h.get("Sec-Fetch-User") == "?1"):
            raise HttpError(401, "Unauthorized", 'Missing "Authorization" or Sec-headers for '
                            "interactive usage.", challenge)
        return session

    def _json2_error(self, exc: Exception) -> Response:
        name = self._describe(exc)
        status = exc.http_status if isinstance(exc, OdooError) else 500
        body = {"name": name, "message": str(exc), "arguments": [str(exc)],
                "context": dict(getattr(exc, "context", {}) or {}),
                "debug": self._traceback(exc, name)}
        headers: dict[str, str] = {}
        if isinstance(exc, HttpError):
            body["arguments"] = [str(exc), status]
            headers = exc.headers
        response = Response(json.dumps(body), status=status, mimetype="application/json")
        response.headers.update(headers)
        return response

    def _session_authenticate(self) -> Response:
        payload = json.loads(request.get_data() or b"{}")
        params = payload.get("params") or {}
        try:
            sid = self.session_for(params.get("login", ""), params.get("password", ""))
        except AccessDenied as exc:
            name = self._describe(exc)
            return Response(json.dumps({"jsonrpc": "2.0", "id": payload.get("id"), "error": {
                "code": 200, "message": "Odoo Server Error", "data": {
                    "name": name, "message": str(exc), "arguments": [str(exc)], "context": {},
                    "debug": self._traceback(exc, name)}}}), mimetype="application/json")
        response = Response(json.dumps({"jsonrpc": "2.0", "id": payload.get("id"),
                                        "result": {"uid": self.sessions[sid]}}),
                            mimetype="application/json")
        response.set_cookie("session_id", sid, httponly=True)
        return response

    def _jsonrpc(self) -> Response:
        self.bodies.append(request.get_data())
        payload = json.loads(request.get_data() or b"{}")
        rid = payload.get("id")
        params = payload.get("params") or {}
        try:
            result = self._dispatch("jsonrpc", params.get("service"), params.get("method"),
                                    list(params.get("args") or []))
            answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "result": _wire(result)}
        except Exception as exc:
            name = self._describe(exc)
            answer = {"jsonrpc": "2.0", "id": rid, "error": {
                "code": 200, "message": "Odoo Server Error",
                "data": {"name": name, "debug": self._traceback(exc, name), "message": str(exc),
                         "arguments": [str(exc)], "context": dict(getattr(exc, "context", {}))}}}
        return Response(json.dumps(answer), mimetype="application/json")

    def _xmlrpc(self, service: str) -> Response:
        self.bodies.append(request.get_data())
        try:
            params, method = xmlrpc.client.loads(request.get_data(), use_datetime=True)
            result = self._dispatch("xmlrpc", service, method, list(params))
            # marshalled after the call committed, with allow_none=False, as Odoo does
            text = xmlrpc.client.dumps((_wire(result),), methodresponse=True, allow_none=False)
        except Exception as exc:
            name = self._describe(exc)
            if isinstance(exc, OdooError) and exc.fault in (2, 3, 4):
                fault = xmlrpc.client.Fault(exc.fault, str(exc))
            else:
                fault = xmlrpc.client.Fault(1, self._traceback(exc, name))
            text = xmlrpc.client.dumps(fault, methodresponse=True, allow_none=False)
        return Response(text, mimetype="text/xml")

    @staticmethod
    def _describe(exc: Exception) -> str:
        if isinstance(exc, OdooError):
            return exc.qualname
        return f"builtins.{type(exc).__name__}"

    @staticmethod
    def _traceback(exc: Exception, name: str) -> str:
        if not isinstance(exc, OdooError):
            return "".join(traceback.format_exception(exc))
        frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
        text = str(exc)
        if isinstance(exc, HttpError):  # str() of a werkzeug HTTPException
            text = f"{exc.http_status} {HTTPStatus(exc.http_status).phrase}: {text}"
        return f"Traceback (most recent call last):\n{frames}{_short(name)}: {text}\n"

    # --- services ---------------------------------------------------------------------------
    def _login(self, db: str, login: str, password: str) -> int | bool:
        self._check_db(db)
        uid = next((u for u, r in self.records["res.users"].items()
                    if r["login"] == login and r.get("active")), None)
        return uid if uid is not None and password in self.credentials.get(uid, ()) else False

    def _dispatch(self, protocol: str, service: str | None, method: str | None,
                  args: list[Any]) -> Any:
        if service == "common":
            if method == "version":
                return {"server_version": f"{self.version}.0",
                        "server_version_info": self._version_info(),
                        "server_serie": f"{self.version}.0", "protocol_version": 1}
            if method in ("login", "authenticate"):
                with self.orm:
                    return self._login(args[0], args[1], args[2])
            raise ServerError("Exception", f"Method not found: {method}")
        if service == "object" and method in ("execute_kw", "execute"):
            db, uid, password, model, name = args[:5]
            self._check_db(db)
            if password not in self.credentials.get(uid, ()):
                raise AccessDenied("Access Denied")
            if method == "execute_kw":
                rest = list(args[5]) if len(args) > 5 else []
                kwargs = dict(args[6]) if len(args) > 6 and args[6] else {}
            else:
                rest, kwargs = list(args[5:]), {}
            context = kwargs.pop("context", None) or {}
            if name in API_MODEL or (model, name) == ("res.users", "context_get"):
                ids: list[int] = []
            else:
                if not rest:
                    raise ServerError("builtins.IndexError", "list index out of range")
                first = rest.pop(0)
                ids = [first] if isinstance(first, int) else list(first or [])
            return self._execute(protocol, model, name, ids, rest, kwargs, context, uid)
        raise ServerError("builtins.KeyError", f"'{service}'")

    def _check_db(self, db: str) -> None:
        if db not in self.databases:
            raise ServerError("psycopg2.OperationalError", (
                'connection to server at "127.0.0.1", port 5432 failed: FATAL:  database '
                f'"{db}" does not exist'))

    def _execute(self, protocol: str, model: str, method: str, ids: list[int], args: list[Any],
                 kwargs: dict[str, Any], context: Mapping[str, Any], uid: int) -> Any:
        with self.orm:
            self._uid, self._protocol = uid, protocol
            self.calls.append((protocol, model, method))
            if model not in self.schema:
                if protocol == "json2":
                    raise HttpError(404, "NotFound", f"the model {model!r} does not exist")
                raise UserError(f"Object {model} doesn't exist")
            if method.startswith("_"):
                raise AccessError(f"Private methods (such as '{model}.{method}') cannot be called "
                                  "remotely.")
            handler = self._method(model, method)
            if handler is None:
                text = f"The method '{model}.{method}' does not exist"
                if protocol == "json2":
                    raise HttpError(404, "NotFound", text)
                raise ServerError("builtins.AttributeError", text)
            is_api_model = method in API_MODEL or (model, method) == ("res.users", "context_get")
            if protocol == "json2" and is_api_model and ids:
                raise HttpError(422, "UnprocessableEntity", f"cannot call {model}.{method} with ids")
            params = self._bind(protocol, model, method, args, kwargs)
            self._check_companies(context, uid)
            self._check_rights(model, uid)
            for i, (m, name, error) in enumerate(self.method_faults):
                if m == model and name == method:
                    del self.method_faults[i]
                    raise error
            if method not in ("read",) and not is_api_model:
                missing = [rid for rid in ids if rid not in self.records[model]]
                if missing:
                    raise self._missing(model, missing)
            # one call, one transaction: an error rolls back all it did (ids are not reused,
            # as PostgreSQL sequences are not rolled back either)
            snapshot = copy.deepcopy((dict(self.records), dict(self.reconciled)))
            try:
                return handler(ids, dict(context), **params)
            except Exception:
                records, reconciled = snapshot
                self.records = defaultdict(dict, records)
                self.reconciled = defaultdict(list, reconciled)
                raise

    def _missing(self, model: str, ids: list[int]) -> MissingError:
        return MissingError("Record does not exist or has been deleted.\n(Record: "
                            f"{model}({', '.join(map(str, ids))},), User: {self._uid})")

    def _check_companies(self, context: Mapping[str, Any], uid: int) -> None:
        allowed = context.get("allowed_company_ids")
        mine = set(self.records["res.users"][uid].get("company_ids") or [])
        if allowed is not None and not set(allowed) <= mine:
            raise AccessError("Access to unauthorized or invalid companies.")

    def _check_rights(self, model: str, uid: int) -> None:
        need = {"sale.order": "sale", "sale.order.line": "sale",
                "sale.advance.payment.inv": "sale", "account.move": "account",
                "account.move.line": "account", "account.move.reversal": "account",
                "account.payment.register": "account"}.get(model)
        if need and need not in self.rights.get(uid, set()):
            groups = ACCESS_GROUPS.get(model, ["Accounting/Invoicing"])
            raise AccessError(
                f"You are not allowed to access '{MODEL_DESCRIPTIONS.get(model, model)}' ({model})"
                " records.\n\nThis operation is allowed for the following groups:\n" +
                "".join(f"\t- {g}\n" for g in groups) +
                "\nContact your administrator to request access if necessary.")

    def _companies(self, context: Mapping[str, Any]) -> set[int]:
        allowed = context.get("allowed_company_ids")
        if allowed is not None:
            return set(allowed)
        return set(self.records["res.users"][self._uid].get("company_ids") or [self.company])

    def _signature(self, model: str, method: str) -> tuple[list[str], list[str], bool, str]:
        if method == "default_get":
            name = "fields" if self.version >= 19 else "fields_list"
            owner = "AccountMoveReversal" if model == "account.move.reversal" else "BaseModel"
            return [name], [name], False, owner
        if method == "reverse_moves" and self.version >= 17:
            return ["is_modify"], [], False, "AccountMoveReversal"
        return SIGNATURES.get(method, ([], [], False, "BaseModel"))

    def _bind(self, protocol: str, model: str, method: str, args: list[Any],
              kwargs: dict[str, Any]) -> dict[str, Any]:
        """inspect.signature().bind for JSON-2 (422: a missing argument is named before an
        unexpected one), Python's own TypeError for RPC (fault 1: the other way round) [T]."""
        names, required, var_kw, owner = self._signature(model, method)
        qual = f"{owner}.{method}()"
        if len(args) > len(names):
            raise self._type_error(protocol, "too many positional arguments",
                                   f"{qual} takes {len(names) + 1} positional arguments but "
                                   f"{len(args) + 1} were given")
        bound = dict(zip(names, args, strict=False))
        unexpected = [k for k in kwargs if k not in names and not var_kw]
        doubled = [k for k in kwargs if k in bound]
        missing = [n for n in required if n not in bound and n not in kwargs]
        problems = [
            ("unexpected", unexpected, "got an unexpected keyword argument '{}'",
             f"{qual} got an unexpected keyword argument '{{}}'"),
            ("doubled", doubled, "multiple values for argument '{}'",
             f"{qual} got multiple values for argument '{{}}'"),
            ("missing", missing, "missing a required argument: '{}'",
             f"{qual} missing 1 required positional argument: '{{}}'")]
        if protocol == "json2":
            problems.reverse()
        for _, found, json2_text, python_text in problems:
            if found:
                raise self._type_error(protocol, json2_text.format(found[0]),
                                       python_text.format(found[0]))
        bound.update({k: v for k, v in kwargs.items() if k in names})
        extra = [k for k in kwargs if k not in names]
        if extra:  # search_read(**read_kwargs) hands them on to _read_format
            raise ServerError("builtins.TypeError", "BaseModel._read_format() got an unexpected "
                              f"keyword argument '{extra[0]}'")
        return bound

    @staticmethod
    def _type_error(protocol: str, json2_message: str, python_message: str) -> Exception:
        if protocol == "json2":
            return HttpError(422, "UnprocessableEntity", json2_message)
        return ServerError("builtins.TypeError", python_message)

    def _method(self, model: str, method: str) -> Callable[..., Any] | None:
        generic = {"search": self._m_search, "search_read": self._m_search_read,
                   "search_count": self._m_search_count, "read": self._m_read,
                   "create": self._m_create, "write": self._m_write, "unlink": self._m_unlink,
                   "fields_get": self._m_fields_get, "default_get": self._m_default_get}
        if method in generic:
            return lambda ids, ctx, **kw: generic[method](model, ids, ctx, **kw)
        special: dict[tuple[str, str], Callable[..., Any]] = {
            ("res.users", "context_get"): self._users_context_get,
            ("sale.order", "action_confirm"): self._so_confirm,
            ("sale.order", "action_cancel"): self._so_cancel,
            ("sale.order", "action_unlock"): self._so_unlock,
            ("sale.order", "action_draft"): self._so_draft,
            ("sale.advance.payment.inv", "create_invoices"): self._adv_create_invoices,
            ("account.move", "action_post"): self._move_post,
            ("account.move", "button_cancel"): self._move_cancel,
            ("account.move.reversal", "reverse_moves"): self._reversal_reverse,
            ("account.payment.register", "action_create_payments"): self._register_pay,
        }
        if self.version >= 17:
            special[("sale.order", "action_lock")] = self._so_lock
            special[("account.move.reversal", "refund_moves")] = \
                lambda ids, ctx: self._reversal_reverse(ids, ctx, is_modify=False)
            special[("account.move.reversal", "modify_moves")] = \
                lambda ids, ctx: self._reversal_reverse(ids, ctx, is_modify=True)
        else:
            special[("sale.order", "action_done")] = self._so_done
        return special.get((model, method))

    # --- generic ORM ------------------------------------------------------------------------
    def _fields(self, model: str) -> dict[str, Fd]:
        return {"id": INT, "display_name": CHAR, **self.schema[model]}

    def _m_search(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                  offset: int = 0, limit: int | None = None, order: str | None = None
                  ) -> list[int]:
        domain = list(domain or [])
        self._check_domain(model, domain)
        keys = self._order_keys(model, order)
        fields = self.schema[model]
        if "active" in fields and ctx.get("active_test", True) and not any(
                isinstance(leaf, list | tuple) and leaf[0] == "active" for leaf in domain):
            domain = ["&", ["active", "=", True], *domain] if domain else [["active", "=", True]]
        companies = self._companies(ctx)
        found = [rid for rid, rec in self.records[model].items()
                 if self._match(model, rec, domain) and self._visible(model, rec, companies)]
        found = self._sorted(model, found, keys)
        found = found[offset or 0:]
        return found[:limit] if limit else found

    def _visible(self, model: str, rec: dict[str, Any], companies: set[int]) -> bool:
        company = rec.get("company_id") if "company_id" in self.schema[model] else False
        return not company or company in companies

    def _order_keys(self, model: str, order: str | None) -> list[tuple[str, bool]]:
        spec = order or DEFAULT_ORDER.get(model, "id")
        keys = []
        for part in spec.split(","):
            words = part.split()
            if not words:
                continue
            if words[0] not in self._fields(model):
                raise ServerError("builtins.ValueError",
                                  f"Invalid field {words[0]!r} on model {model!r}")
            keys.append((words[0], len(words) > 1 and words[1].lower() == "desc"))
        return keys

    def _sorted(self, model: str, ids: list[int], keys: list[tuple[str, bool]]) -> list[int]:
        """ORDER BY as PostgreSQL: NULLs last ascending, first descending; m2o by id."""
        out = list(ids)
        for name, desc in reversed(keys):
            def key(rid: int, name: str = name) -> tuple[int, Any]:
                value = self._get(model, self.records[model][rid], name)
                if value in (False, None, ""):
                    return (1, "")
                if isinstance(value, str):
                    value = value.casefold()
                return (0, value)
            present = [i for i in out if key(i)[0] == 0]
            absent = [i for i in out if key(i)[0] == 1]
            present.sort(key=key, reverse=desc)
            out = (absent + present) if desc else (present + absent)
        return out

    def _m_search_read(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                       fields: list[str] | None = None, offset: int = 0, limit: int | None = None,
                       order: str | None = None) -> list[dict[str, Any]]:
        self._check_read_fields(model, fields)
        found = self._m_search(model, ids, ctx, domain, offset, limit, order)
        return [self._export(model, self.records[model][rid], fields) for rid in found]

    def _m_search_count(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                        limit: int | None = None) -> int:
        return len(self._m_search(model, ids, ctx, domain, 0, limit, None))

    def _m_read(self, model: str, ids: list[int], ctx: dict[str, Any],
                fields: list[str] | None = None, load: str = "_classic_read"
                ) -> list[dict[str, Any]]:
        self._check_read_fields(model, fields)
        present = [rid for rid in ids if rid in self.records[model]]
        if ctx.get("allowed_company_ids") is not None:
            companies = self._companies(ctx)
            for rid in present:
                rec = self.records[model][rid]
                if not self._visible(model, rec, companies):
                    raise self._company_error(model, rec)
        return [self._export(model, self.records[model][rid], fields) for rid in present]

    def _company_error(self, model: str, rec: dict[str, Any]) -> AccessError:
        user = self.records["res.users"][self._uid]
        company = self.records["res.company"][rec["company_id"]]
        return AccessError(
            "Uh-oh! Looks like you have stumbled upon some top-secret records.\n\nSorry, "
            f"{user['name']} (id={self._uid}) doesn't have 'read' access to:\n- "
            f"{MODEL_DESCRIPTIONS.get(model, model)} ({model})\n\nIf you really, really need "
            "access, perhaps you can win over your friendly administrator with a batch of freshly "
            "baked cookies.\n\nThis seems to be a multi-company issue, you might be able to "
            f"access the record by switching to the company: {company['name']}.",
            {"suggested_company": {"id": company["id"], "display_name": company["name"]}})

    def _check_read_fields(self, model: str, fields: list[str] | None) -> None:
        for name in fields or []:
            if name not in self._fields(model):
                raise ServerError("builtins.ValueError", f"Invalid field {name!r} on {model!r}")

    def _m_fields_get(self, model: str, ids: list[int], ctx: dict[str, Any],
                      allfields: list[str] | None = None, attributes: list[str] | None = None
                      ) -> dict[str, Any]:
        out = {}
        for name, fd in self._fields(model).items():
            if allfields and name not in allfields:
                continue
            computed = name in COMPUTED.get(model, ()) or name == "display_name"
            info: dict[str, Any] = {"type": fd.kind, "string": fd.label or
                                    name.replace("_", " ").title(), "readonly": computed,
                                    "required": fd.required, "store": not computed}
            if fd.comodel:
                info["relation"] = fd.comodel
            out[name] = {k: v for k, v in info.items() if not attributes or k in attributes}
        return out

    def _m_default_get(self, model: str, ids: list[int], ctx: dict[str, Any], **kwargs: Any
                       ) -> dict[str, Any]:
        fields = next(iter(kwargs.values()), None) or []
        if model != "account.move.reversal":
            return {}
        moves = self._active_moves(ctx)
        values = {"date": _today(), "move_ids": [[6, 0, moves]],
                  "company_id": self._reversal_company(moves)}
        return {k: v for k, v in values.items() if k in fields}

    def _m_create(self, model: str, ids: list[int], ctx: dict[str, Any], vals_list: Any = None
                  ) -> Any:
        """JSON-2 answers the recordset's ids; RPC answers an int for a dict [T]."""
        single = isinstance(vals_list, dict)
        created = self._create(model, [vals_list] if single else list(vals_list or []), ctx,
                               top=True)
        return created[0] if single and self._protocol != "json2" else created

    def _m_write(self, model: str, ids: list[int], ctx: dict[str, Any], vals: Any = None) -> bool:
        vals = dict(vals or {})
        for key in vals:
            if key not in self.schema[model]:
                raise ServerError("builtins.ValueError", f"Invalid field {key!r} in {model!r}")
        self._write(model, ids, vals, ctx)
        return True

    def _m_unlink(self, model: str, ids: list[int], ctx: dict[str, Any]) -> bool:
        self._unlink(model, ids)
        return True

    def _create(self, model: str, vals_list: Any, ctx: Mapping[str, Any], *, top: bool = False
                ) -> list[int]:
        if isinstance(vals_list, dict):
            vals_list = [vals_list]
        out = []
        for vals in vals_list:
            vals = dict(vals)
            for key in vals:
                if key not in self.schema[model]:
                    raise ServerError("builtins.ValueError", (
                        f"Invalid field {key!r} in {model!r}" if top else
                        f"Invalid field {key!r} on model {model!r}"))
            rid = next(self._next[model])
            rec: dict[str, Any] = {"id": rid}
            self.records[model][rid] = rec
            later = {k: vals.pop(k) for k in list(vals) if self._kind(model, k) == "one2many"}
            try:
                self._defaults(model, rec, vals, ctx)
                self._assign(model, rec, vals)
                self._on_create(model, rec, vals, ctx)
                self._check_required(model, rec)
                for key, commands in later.items():
                    self._x2many(model, rec, key, commands, ctx)
                self._after_create(model, rec, ctx)
            except Exception:
                self.records[model].pop(rid, None)  # (the call's rollback restores the rest)
                raise
            out.append(rid)
        return out

    def _check_required(self, model: str, rec: dict[str, Any]) -> None:
        for name, fd in self.schema[model].items():
            if fd.required and not rec.get(name):
                desc = MODEL_DESCRIPTIONS.get(model, model)
                raise ValidationError(
                    f"The operation cannot be completed: Missing required value for the field "
                    f"'{fd.label}' ({name}).\nModel: '{desc}' ({model})\n- create/update: a "
                    "mandatory field is not set\n- delete: another model requires the record "
                    "being deleted, you can archive it instead\n")

    def _write(self, model: str, ids: list[int], vals: dict[str, Any], ctx: Mapping[str, Any]
               ) -> None:
        for key in vals:
            if key not in self.schema[model]:
                raise ServerError("builtins.ValueError", f"Invalid field {key!r} on model {model!r}")
        for rid in ids:
            if rid not in self.records[model]:
                raise self._missing(model, [rid])
            rec = self.records[model][rid]
            self._before_write(model, rec, vals)
            plain = {k: v for k, v in vals.items() if self._kind(model, k) != "one2many"}
            self._assign(model, rec, plain)
            if model == "sale.order.line":
                self._reprice(rec, vals)
                if self.taxfield in vals:
                    self._check_line_company(rec)
            for key, commands in vals.items():
                if self._kind(model, key) == "one2many":
                    self._x2many(model, rec, key, commands, ctx)

    def _reprice(self, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        """_compute_price_unit: a quantity or product change re-prices a line whose price was not
        changed by hand since it was computed or created, and that is not invoiced yet [T]."""
        if "price_unit" in vals:
            return
        if not ({"product_uom_qty", "product_id"} & set(vals)) or not rec.get("product_id"):
            return
        if rec.get("technical_price_unit") != rec.get("price_unit"):
            return
        if self._sol_field(rec, "qty_invoiced") > 0:
            return
        price = self.records["product.product"][rec["product_id"]]["list_price"]
        rec["price_unit"] = rec["technical_price_unit"] = _round(price, self._digits(
            "Product Price"))

    def _unlink(self, model: str, ids: list[int]) -> None:
        for rid in ids:
            rec = self.records[model].get(rid)
            if rec is None:
                continue
            if model == "sale.order":
                if rec["state"] not in ("draft", "cancel"):
                    raise UserError("You can not delete a sent quotation or a confirmed sales "
                                    "order. You must first cancel it.")
                for line_id in self._get(model, rec, "order_line"):
                    self.records["sale.order.line"].pop(line_id, None)
            if model == "sale.order.line":
                order = self.records["sale.order"][rec["order_id"]]
                if order["state"] == "sale" and not rec.get("display_type"):
                    raise UserError(
                        "Once a sales order is confirmed, you can't remove one of its lines (we "
                        "need to track if something gets invoiced or delivered).\n"
                        "                Set the quantity to 0 instead.")
            if model == "account.move.line":
                move = self.records["account.move"][rec["move_id"]]
                if move["state"] != "draft":
                    raise UserError("You cannot modify the following readonly fields on a "
                                    "posted move: invoice_line_ids")
            self.records[model].pop(rid, None)

    def _kind(self, model: str, key: str) -> str:
        return self._fields(model).get(key, CHAR).kind

    def _assign(self, model: str, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        for key, value in vals.items():
            fd = self._fields(model)[key]
            if key in COMPUTED.get(model, ()):
                continue  # computed without an inverse: Odoo ignores the value
            if fd.kind == "many2one":
                if value and int(value) not in self.records[fd.comodel or ""]:
                    raise self._missing(fd.comodel or "", [int(value)])
                rec[key] = int(value) if value else False
            elif fd.kind == "many2many":
                self._x2many(model, rec, key, value, {})
            elif fd.kind == "float":
                rec[key] = self._float(model, key, value)
            elif fd.kind == "integer":
                rec[key] = int(value or 0)
            elif fd.kind == "boolean":
                rec[key] = bool(value)
            elif fd.kind == "html":
                rec[key] = _html(value) if value is not None else False
            else:
                rec[key] = value if value is not None else False

    def _float(self, model: str, key: str, value: Any) -> Decimal:
        number = _dec(value)
        digits = {"price_unit": "Product Price", "product_uom_qty": "Product Unit of Measure",
                  "quantity": "Product Unit of Measure", "discount": "Discount"}.get(key)
        if digits and model in ("sale.order.line", "account.move.line"):
            return _round(number, self._digits(digits))
        return number

    def _digits(self, name: str) -> int:
        return next((int(r["digits"]) for r in self.records["decimal.precision"].values()
                     if r["name"] == name), 2)

    def _x2many(self, model: str, rec: dict[str, Any], key: str, commands: Any,
                ctx: Mapping[str, Any]) -> None:
        fd = self._fields(model)[key]
        comodel = fd.comodel or ""
        current = list(rec.get(key) or []) if fd.kind == "many2many" else self._get(model, rec, key)
        for command in commands or []:
            if isinstance(command, int):  # a bare list of ids (accepted by Odoo for m2m)
                current.append(command)
                continue
            op = command[0]
            if op == 0:
                vals = dict(command[2])
                if fd.kind == "one2many":
                    vals[fd.inverse or ""] = rec["id"]
                current += self._create(comodel, [vals], ctx)
            elif op == 1:
                self._write(comodel, [command[1]], dict(command[2]), ctx)
            elif op == 2:
                self._unlink(comodel, [command[1]])
                current = [i for i in current if i != command[1]]
            elif op == 3:
                current = [i for i in current if i != command[1]]
            elif op == 4:
                current.append(command[1])
            elif op == 5:
                if fd.kind == "one2many":
                    self._unlink(comodel, list(current))
                current = []
            elif op == 6:
                current = list(command[2] or [])
            else:
                raise ServerError("builtins.ValueError", f"invalid command {op}")
        missing = [cid for cid in current if cid not in self.records[comodel]]
        if missing:
            raise self._missing(comodel, missing)
        if fd.kind == "many2many":
            rec[key] = list(dict.fromkeys(current))

    # --- model rules --------------------------------------------------------------------------
    def _defaults(self, model: str, rec: dict[str, Any], vals: dict[str, Any],
                  ctx: Mapping[str, Any]) -> None:
        fields = self.schema[model]
        for name, fd in fields.items():
            if name in COMPUTED.get(model, ()):
                continue
            rec.setdefault(name, [] if fd.kind == "many2many" else Decimal(0)
                           if fd.kind == "float" else 0 if fd.kind == "integer" else False)
        if "active" in fields:
            rec["active"] = True
        if "company_id" in fields and model not in ("res.partner", "product.product"):
            rec["company_id"] = self.company
        if model == "res.partner":
            rec["type"] = "contact"
            rec["property_product_pricelist"] = self.pricelists.get("USD") or False
        elif model == "res.users":
            rec.update(company_id=self.company, company_ids=[self.company], tz=False,
                       lang="en_US")
        elif model == "sale.order":
            rec.update(state="draft", name="New", date_order=_now(), user_id=self._uid)
            if self.version >= 17:
                rec["locked"] = False
        elif model == "sale.order.line":
            rec["sequence"] = 10
            product = self.records["product.product"].get(vals.get("product_id") or 0)
            order = self.records["sale.order"].get(vals.get("order_id") or 0) or {}
            if product and self.taxfield not in vals:  # the product's taxes of the company
                rec[self.taxfield] = [
                    t for t in product["taxes_id"]
                    if self.records["account.tax"][t].get("company_id") in (
                        False, order.get("company_id") or self.company)]
            if product and "price_unit" not in vals:
                rec["price_unit"] = product["list_price"]
            if product and "name" not in vals:
                rec["name"] = self._display("product.product", product)
        elif model == "sale.advance.payment.inv":
            rec.update(advance_payment_method="delivered", deduct_down_payments=True,
                       consolidated_billing=True, sale_order_ids=list(ctx.get("active_ids") or []))
        elif model == "account.move.reversal":
            moves = self._active_moves(ctx)
            rec.update(move_ids=moves, date=_today(), company_id=self._reversal_company(moves))
            if self.version < 17:
                rec["refund_method"] = "cancel" if len(moves) > 1 else "refund"
        elif model == "account.move":
            rec.update(state="draft", name=False if self.version >= 19 else "/",
                       move_type="entry", date=_today())
        elif model == "account.payment.register":
            rec.update(payment_date=_today(), payment_difference_handling="open",
                       line_ids=self._active_moves(ctx, posted=False))

    def _active_moves(self, ctx: Mapping[str, Any], *, posted: bool = True) -> list[int]:
        if ctx.get("active_model") != "account.move":
            return []
        moves = [int(i) for i in ctx.get("active_ids") or []]
        if posted and any(self.records["account.move"].get(m, {}).get("state") != "posted"
                          for m in moves):
            raise UserError("To reverse a journal entry, it has to be posted first.")
        return moves

    def _reversal_company(self, moves: list[int]) -> int:
        companies = {self.records["account.move"][m]["company_id"] for m in moves}
        return next(iter(companies)) if len(companies) == 1 else self.company

    def _on_create(self, model: str, rec: dict[str, Any], vals: Mapping[str, Any],
                   ctx: Mapping[str, Any]) -> None:
        if model == "res.partner":
            if rec["type"] == "contact" and not rec.get("name"):
                raise ValidationError("Contacts require a name")
        elif model == "res.users":
            self.credentials[rec["id"]] = {vals["password"]} if vals.get("password") else set()
            self.rights[rec["id"]] = set()
            rec["password"] = ""
        elif model == "sale.order":
            if rec["name"] in (False, "New") and rec.get("partner_id"):
                rec["name"] = f"S{next(self._sequences['sale.order']):05d}"
            if not rec.get("partner_id"):
                return  # the required check words it
            partner = self.records["res.partner"][rec["partner_id"]]
            children = [c for c in self.records["res.partner"].values()
                        if c.get("parent_id") == partner["id"]]
            for key, kind in (("partner_invoice_id", "invoice"),
                              ("partner_shipping_id", "delivery")):
                if not rec.get(key):
                    rec[key] = next((c["id"] for c in sorted(children, key=lambda c: c["id"])
                                     if c["type"] == kind), partner["id"])
            if not rec.get("pricelist_id"):
                rec["pricelist_id"] = partner.get("property_product_pricelist") or False
        elif model == "sale.order.line":
            rec["technical_price_unit"] = rec.get("price_unit") or Decimal(0)
            self._check_line_company(rec)
            if rec.get("display_type"):
                rec["product_uom_qty"] = Decimal(0)
                if rec.get("product_id") or rec.get("price_unit"):
                    raise ValidationError(
                        "The operation cannot be completed: Forbidden values on non-accountable "
                        "sale order line\nModel: 'Sales Order Line' (sale.order.line)\n"
                        "Constraint: sale_order_line_non_accountable_null_fields")
        elif model == "account.move.reversal":
            journal = rec.get("journal_id")
            moves = [self.records["account.move"][m] for m in rec["move_ids"]]
            if not journal and self.version < 19:  # 16-18: _compute_journal_id
                rec["journal_id"] = journal = next((m["journal_id"] for m in moves), False)
            if journal and moves:
                types = {self.records["account.journal"][m["journal_id"]]["type"]
                         for m in moves if m.get("journal_id")}
                if self.records["account.journal"][journal]["type"] not in types:
                    raise UserError("Journal should be the same type as the reversed entry.")
        elif model == "account.payment.register":
            self._register_defaults(rec, vals)

    def _check_line_company(self, rec: dict[str, Any]) -> None:
        """check_company: a tax of another company on the line is refused [L]."""
        order = self.records["sale.order"].get(rec.get("order_id") or 0)
        if not order:
            return
        foreign = [self.records["account.tax"][t] for t in rec.get(self.taxfield) or []
                   if self.records["account.tax"][t].get("company_id") not in (
                       False, order.get("company_id"))]
        if foreign:
            company = self.records["res.company"][order["company_id"]]["name"]
            partner = self.records["res.partner"][order["partner_id"]]["name"]
            names = ", ".join(t["name"] for t in foreign)
            raise UserError(
                "Uh-oh! You\u2019ve got some company inconsistencies here:\n- \u201c"
                f"{order['name']} - {rec.get('name')} ({partner})\u201d belongs to company "
                f"\u201c{company}\u201d while \u201cTaxes\u201d ({self.taxfield}: '{names}') "
                "belongs to another company.\nTo avoid a mess, no company crossover is allowed!")

    def _after_create(self, model: str, rec: dict[str, Any], ctx: Mapping[str, Any]) -> None:
        pass

    def _before_write(self, model: str, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        if model == "sale.order.line":
            order = self.records["sale.order"][rec["order_id"]]
            protected = [f for f in sorted(set(PROTECTED_LINE_FIELDS) & set(vals))
                         if f in self.schema[model] or f == "tax_ids"]
            if self._locked(order) and protected:
                labels = [self.schema[model][f].label if f in self.schema[model] else f
                          for f in protected]
                raise UserError("It is forbidden to modify the following fields in a locked "
                                "order:\n" + "\n".join(labels))
        if model == "account.move" and rec["state"] == "posted" and "invoice_line_ids" in vals:
            raise UserError("You cannot modify the following readonly fields on a posted move: "
                            "invoice_line_ids")

    def _locked(self, order: Mapping[str, Any]) -> bool:
        return bool(order.get("locked")) or order.get("state") == "done"

    # --- computed fields ------------------------------------------------------------------
    def _get(self, model: str, rec: dict[str, Any], name: str) -> Any:
        if name == "display_name":
            return self._display(model, rec)
        if model == "res.partner" and name == "complete_name":
            return self._display(model, rec)
        if name not in COMPUTED.get(model, ()):
            return rec.get(name, False)
        if model == "res.partner" and name == "child_ids":
            kids = [r["id"] for r in self.records["res.partner"].values()
                    if r.get("parent_id") == rec["id"] and r.get("active")]
            return self._sorted("res.partner", kids, self._order_keys("res.partner", None))
        if model == "sale.order":
            return self._so_field(rec, name)
        if model == "sale.order.line":
            return self._sol_field(rec, name)
        if model == "account.move":
            return self._move_field(rec, name)
        if model == "account.move.line":
            move = self.records["account.move"][rec["move_id"]]
            amounts = self._totals([rec], "quantity", "tax_ids", move["currency_id"])
            key = {"price_subtotal": "amount_untaxed", "price_total": "amount_total"}[name]
            return amounts[key]
        if model == "account.move.reversal":
            moves = [self.records["account.move"][m] for m in rec["move_ids"]
                     if m in self.records["account.move"]]
            if name == "residual":
                return self._move_field(moves[0], "amount_residual") if len(moves) == 1 \
                    else Decimal(0)
            if name == "currency_id":
                currencies = {m["currency_id"] for m in moves}
                return next(iter(currencies)) if len(currencies) == 1 else False
            return moves[0]["move_type"] if len(moves) == 1 else False
        if model == "account.payment.register":
            due = sum((self._move_field(self.records["account.move"][m], "amount_residual")
                       for m in rec["line_ids"]), Decimal(0))
            return due - rec["amount"]
        raise KeyError(name)

    def _so_field(self, rec: dict[str, Any], name: str) -> Any:
        if name == "order_line":
            lines = [r["id"] for r in self.records["sale.order.line"].values()
                     if r["order_id"] == rec["id"]]
            return sorted(lines, key=lambda i: (self.records["sale.order.line"][i]["sequence"], i))
        if name == "currency_id":
            pricelist = self.records["product.pricelist"].get(rec.get("pricelist_id") or 0)
            if pricelist:
                return pricelist["currency_id"]
            return self.records["res.company"][rec.get("company_id") or self.company][
                "currency_id"]
        if name in ("invoice_ids", "invoice_count"):
            line_ids = set(self._so_field(rec, "order_line"))
            moves = {r["move_id"] for r in self.records["account.move.line"].values()
                     if line_ids & set(r["sale_line_ids"])}
            ordered = self._sorted("account.move", list(moves),
                                   self._order_keys("account.move", None))
            return ordered if name == "invoice_ids" else len(ordered)
        if name == "invoice_status":
            if rec["state"] not in ("sale", "done"):
                return "no"
            states = [self._sol_field(self.records["sale.order.line"][i], "invoice_status")
                      for i in self._so_field(rec, "order_line")
                      if not self.records["sale.order.line"][i].get("display_type")]
            if "to invoice" in states:
                return "to invoice"
            return "invoiced" if states and all(s == "invoiced" for s in states) else "no"
        lines = [self.records["sale.order.line"][i] for i in self._so_field(rec, "order_line")]
        return self._totals(lines, "product_uom_qty", self.taxfield,
                            self._so_field(rec, "currency_id"))[name]

    def _sol_field(self, rec: dict[str, Any], name: str) -> Any:
        order = self.records["sale.order"][rec["order_id"]]
        if name == "state":
            return order["state"]
        if name == "qty_invoiced":
            qty = Decimal(0)
            for line in self.records["account.move.line"].values():
                if rec["id"] in line["sale_line_ids"]:
                    move = self.records["account.move"][line["move_id"]]
                    if move["state"] != "cancel":
                        sign = -1 if move["move_type"] == "out_refund" else 1
                        qty += sign * line["quantity"]
            return qty
        if name == "qty_to_invoice":
            if order["state"] not in ("sale", "done") or rec.get("display_type") or \
                    not rec.get("product_id"):
                return Decimal(0)
            product = self.records["product.product"][rec["product_id"]]
            base = rec["product_uom_qty"] if product["invoice_policy"] == "order" else Decimal(0)
            return base - self._sol_field(rec, "qty_invoiced")
        if name == "invoice_status":
            if order["state"] not in ("sale", "done") or rec.get("display_type"):
                return "no"
            if self._sol_field(rec, "qty_to_invoice") != 0:
                return "to invoice"
            return "invoiced" if self._sol_field(rec, "qty_invoiced") >= rec["product_uom_qty"] \
                else "no"
        amounts = self._totals([rec], "product_uom_qty", self.taxfield,
                               self._so_field(order, "currency_id"))
        key = {"price_subtotal": "amount_untaxed", "price_tax": "amount_tax",
               "price_total": "amount_total"}[name]
        return amounts[key]

    def _move_field(self, rec: dict[str, Any], name: str) -> Any:
        if name == "invoice_line_ids":
            return sorted(r["id"] for r in self.records["account.move.line"].values()
                          if r["move_id"] == rec["id"])
        if name in ("amount_residual", "payment_state"):
            total = self._move_field(rec, "amount_total")
            settled = sum((amount for _, amount in self.reconciled.get(rec["id"], [])),
                          Decimal(0))
            residual = total - settled
            if name == "amount_residual":
                return residual
            if rec["state"] != "posted" or not settled:
                return "not_paid"
            if residual > 0:
                return "partial"
            sources = [src for src, _ in self.reconciled.get(rec["id"], [])]
            reversal = all(src and self.records["account.move"][src].get("reversed_entry_id") ==
                           rec["id"] for src in sources)
            return "reversed" if reversal and rec["move_type"] == "out_invoice" else "paid"
        lines = [self.records["account.move.line"][i]
                 for i in self._move_field(rec, "invoice_line_ids")]
        return self._totals(lines, "quantity", "tax_ids", rec["currency_id"])[name]

    def _totals(self, lines: list[dict[str, Any]], qty_field: str, tax_field: str,
                currency_id: int) -> dict[str, Decimal]:
        """Odoo's tax engine for percent (excluded/included) and fixed taxes, in the currency."""
        places = int(self.records["res.currency"][currency_id]["decimal_places"])
        per_line = self.records["res.company"][self.company]["tax_calculation_rounding_method"] \
            != "round_globally"
        untaxed, tax_rounded = Decimal(0), Decimal(0)
        tax_raw: dict[int, Decimal] = defaultdict(Decimal)
        for line in lines:
            if line.get("display_type") not in (None, False, "product"):
                continue
            qty = line[qty_field]
            base = line["price_unit"] * (1 - line["discount"] / 100) * qty
            taxes = [self.records["account.tax"][t] for t in line.get(tax_field) or []]
            included = sum((t["amount"] for t in taxes
                            if t["price_include"] and t["amount_type"] == "percent"), Decimal(0))
            excluded_base = base / (1 + included / 100)
            if included:
                gross = _round(base, places)
                subtotal = gross - _round(base - excluded_base, places)
            else:
                subtotal = _round(base, places)
            untaxed += subtotal
            for tax in taxes:
                if tax["amount_type"] == "fixed":
                    amount = tax["amount"] * qty
                else:
                    amount = excluded_base * tax["amount"] / 100
                tax_raw[tax["id"]] += amount
                tax_rounded += _round(amount, places)
        tax = tax_rounded if per_line else sum(
            (_round(v, places) for v in tax_raw.values()), Decimal(0))
        return {"amount_untaxed": untaxed, "amount_tax": tax, "amount_total": untaxed + tax}

    def _display(self, model: str, rec: Mapping[str, Any]) -> str:
        if model == "product.product":
            code = rec.get("default_code")
            return f"[{code}] {rec['name']}" if code else str(rec["name"])
        if model == "res.partner" and rec.get("parent_id"):
            parent = self.records["res.partner"].get(rec["parent_id"], {})
            label = {"invoice": "Invoice", "delivery": "Delivery", "other": "Other"}.get(
                rec.get("type"), "")
            return f"{parent.get('name')}, {rec.get('name') or label}"
        if model == "product.pricelist":
            currency = self.records["res.currency"].get(rec.get("currency_id") or 0, {})
            return f"{rec['name']} ({currency.get('name')})"
        if model == "account.payment.method.line":
            journal = self.records["account.journal"].get(rec.get("journal_id") or 0, {})
            return f"{rec['name']} ({journal.get('name')})"
        if model == "account.move":
            return self._move_display(rec)
        return str(rec.get("name") or f"{model},{rec['id']}")

    def _move_display(self, rec: Mapping[str, Any]) -> str:
        """account.move._get_move_display_name(show_ref=True)."""
        name = ""
        if rec.get("state") == "draft":
            name = {"out_invoice": "Draft Invoice", "out_refund": "Draft Credit Note"}.get(
                rec.get("move_type"), "Draft Entry") + " "
        if not rec.get("name") or rec.get("name") == "/":
            name += f"(* {rec['id']})"
        else:
            name += rec["name"]
        if rec.get("ref"):
            name += f" ({rec['ref'][:50]})"
        return name

    def _export(self, model: str, rec: dict[str, Any], fields: list[str] | None, *,
                raw: bool = False) -> dict[str, Any]:
        known = self._fields(model)
        names = fields or [n for n in known if (n != "display_name" or raw) and n != "password"]
        out: dict[str, Any] = {"id": rec["id"]}
        for name in names:
            if name == "id":
                continue
            fd = known[name]
            value = self._get(model, rec, name)
            if raw:
                out[name] = value
            elif fd.kind == "many2one":
                target = self.records[fd.comodel or ""].get(value) if value else None
                out[name] = [value, self._display(fd.comodel or "", target)] if target else False
            elif fd.kind in ("one2many", "many2many"):
                out[name] = list(value or [])
            elif value is None or (fd.kind in ("date", "datetime") and not value):
                out[name] = False
            else:
                out[name] = value
        return out

    # --- the domain language -----------------------------------------------------------------
    def _check_domain(self, model: str, domain: list[Any]) -> None:
        for leaf in domain:
            if isinstance(leaf, list | tuple):
                if len(leaf) != 3:
                    raise ServerError("builtins.ValueError", f"Invalid leaf {leaf!r}")
                if leaf[0].split(".")[0] not in self._fields(model):
                    raise ServerError("builtins.ValueError", (
                        f"Invalid field {model}.{leaf[0]} in condition "
                        f"({leaf[0]!r}, {leaf[1]!r}, {leaf[2]!r})"))
            elif leaf not in ("&", "|", "!"):
                raise ServerError("builtins.ValueError", f"Invalid domain term {leaf!r}")

    def _match(self, model: str, rec: dict[str, Any], domain: list[Any]) -> bool:
        stack: list[bool] = []
        for leaf in reversed(domain):
            if leaf == "!":
                stack.append(not stack.pop())
            elif leaf in ("&", "|"):
                a, b = stack.pop(), stack.pop()
                stack.append(a and b if leaf == "&" else a or b)
            else:
                stack.append(self._leaf(model, rec, leaf))
        return all(stack)

    def _leaf(self, model: str, rec: dict[str, Any], leaf: Any) -> bool:
        field, op, value = leaf
        kind = self._kind(model, field)
        actual = rec["id"] if field == "id" else self._get(model, rec, field)
        if kind in ("one2many", "many2many"):
            values = set(actual or [])
            wanted = set(value if isinstance(value, list | tuple) else [value] if value else [])
            hit = bool(values & wanted) if wanted else not values
            return not hit if op in ("!=", "not in") else hit
        if op in ("in", "not in"):
            hit = any(self._equal(actual, v) for v in value)
            return hit if op == "in" else not hit
        if op in ("=", "!="):
            hit = self._equal(actual, value)
            return hit if op == "=" else not hit
        if op in ("ilike", "not ilike", "like", "=like", "=ilike"):
            if actual in (False, None):
                return op == "not ilike"
            text, pattern = str(actual), str(value)
            if op in ("ilike", "like", "not ilike"):
                pattern = f"%{pattern}%"
            regex = "^" + "".join(  # SQL LIKE: % and _ are wildcards unless backslash-escaped
                re.escape(c[1]) if len(c) == 2 else ".*" if c == "%" else "." if c == "_"
                else re.escape(c) for c in re.findall(r"\\.|.", pattern, re.DOTALL)) + "$"
            flags = re.IGNORECASE if "ilike" in op else 0
            hit = re.match(regex, text, flags | re.DOTALL) is not None
            return not hit if op == "not ilike" else hit
        if op in ("<", ">", "<=", ">="):
            if actual in (False, None):
                return False
            left, right = (_dec(actual), _dec(value)) if kind in ("float", "integer") \
                else (actual, value)
            return {"<": left < right, ">": left > right, "<=": left <= right,
                    ">=": left >= right}[op]
        raise ServerError("builtins.ValueError", f"Invalid operator {op!r}")

    @staticmethod
    def _equal(actual: Any, value: Any) -> bool:
        if value is False or value is None:
            return actual in (False, None, "")
        if isinstance(actual, Decimal) or isinstance(value, float | Decimal):
            try:
                return _dec(actual) == _dec(value)
            except ArithmeticError:
                return False
        if isinstance(actual, bool) or isinstance(value, bool):
            return bool(actual) == bool(value)
        return actual == value

    # --- business methods -----------------------------------------------------------------
    def _users_context_get(self, ids: list[int], ctx: dict[str, Any]) -> dict[str, Any]:
        user = self.records["res.users"][self._uid]
        return {"lang": user.get("lang") or "en_US", "tz": user.get("tz") or False,
                "uid": self._uid}

    def _orders(self, ids: list[int]) -> list[dict[str, Any]]:
        return [self.records["sale.order"][i] for i in ids]

    def _so_confirm(self, ids: list[int], ctx: dict[str, Any]) -> bool:
        for order in self._orders(ids):
            if order["state"] not in ("draft", "sent"):
                raise UserError("Some orders are not in a state requiring confirmation.")
            for line_id in self._so_field(order, "order_line"):
                line = self.records["sale.order.line"][line_id]
                if not line.get("display_type") and not line.get("product_id"):
                    raise UserError("Some order lines are missing a product, you need to correct "
                                    "them before going further.")
        for order in self._orders(ids):
            order.update(state="sale", date_order=_now())
            if self.auto_lock:
                if self.version >= 17:
                    order["locked"] = True
                else:
                    order["state"] = "done"
        return True

    def _so_cancel(self, ids: list[int], ctx: dict[str, Any]) -> Any:
        orders = self._orders(ids)
        if any(self._locked(o) for o in orders):
            raise UserError("You cannot cancel a locked order. Please unlock it first.")
        if self.version < 19 and not ctx.get("disable_cancel_warning") and \
                any(o["state"] != "draft" for o in orders):
            order = orders[0]  # 16-18: sale.order.cancel wizard (sale_order.py action_cancel)
            return {"name": f"Cancel {order['name']}", "view_mode": "form",
                    "res_model": "sale.order.cancel", "type": "ir.actions.act_window",
                    "context": {"default_order_id": order["id"], "mark_so_as_canceled": True},
                    "target": "new"}
        for order in orders:
            for move_id in self._so_field(order, "invoice_ids"):
                move = self.records["account.move"][move_id]
                if move["state"] == "draft":
                    move["state"] = "cancel"
            order["state"] = "cancel"
        return True

    # action_lock / action_unlock / action_done return nothing: over XML-RPC the call commits,
    # then its answer fails to marshal [T]
    def _so_unlock(self, ids: list[int], ctx: dict[str, Any]) -> None:
        for order in self._orders(ids):
            if self.version >= 17:
                order["locked"] = False
            elif order["state"] == "done":
                order["state"] = "sale"

    def _so_lock(self, ids: list[int], ctx: dict[str, Any]) -> None:
        for order in self._orders(ids):
            order["locked"] = True

    def _so_done(self, ids: list[int], ctx: dict[str, Any]) -> None:
        for order in self._orders(ids):
            order["state"] = "done"

    def _so_draft(self, ids: list[int], ctx: dict[str, Any]) -> bool:
        for order in self._orders(ids):
            if order["state"] in ("cancel", "sent"):
                order["state"] = "draft"
        return True

    def _adv_create_invoices(self, ids: list[int], ctx: dict[str, Any]) -> dict[str, Any]:
        created: list[int] = []
        orders: list[dict[str, Any]] = []
        for wizard in (self.records["sale.advance.payment.inv"][i] for i in ids):
            if wizard["advance_payment_method"] != "delivered":
                raise UserError("Down payments are not supported by this fake.")
            for order in self._orders(wizard["sale_order_ids"]):
                orders.append(order)
                created += self._invoice_order(order, final=bool(wizard["deduct_down_payments"]))
        order = orders[0] if len(orders) == 1 else {}
        # sale.order.action_view_invoice: the whole window action [T]; its None is what XML-RPC
        # cannot marshal
        return {
            "id": 260, "display_name": "Invoices", "name": "Invoices",
            "type": "ir.actions.act_window", "xml_id": "account.action_move_out_invoice_type",
            "path": "invoicing", "help": (
                "<p class=\"o_view_nocontent_smiling_face\">\n                Create a customer "
                "invoice\n              </p><p>\n                Create invoices, register "
                "payments and keep track of the discussions with your customers.\n"
                "              </p>\n            "),
            "binding_model_id": False, "binding_type": "action",
            "binding_view_types": "list,form", "view_id": [731, "account.out.invoice.list"],
            "domain": "[('move_type', 'in', ['out_invoice', 'out_refund', 'out_receipt'])]",
            "context": {"default_move_type": "out_invoice",
                        "default_partner_id": order.get("partner_id"),
                        "default_partner_shipping_id": order.get("partner_shipping_id"),
                        "default_invoice_payment_term_id": None},
            "res_id": created[0] if len(created) == 1 else False, "res_model": "account.move",
            "target": "current", "view_mode": "list,kanban,form,activity",
            "mobile_view_mode": "kanban",
            "views": [[737, "form"], [731, "list"], [False, "kanban"], [False, "activity"]],
            "limit": 80, "group_ids": [], "search_view_id": [740, "account.invoice.select"],
            "embedded_action_ids": [], "filter": False, "cache": True}

    def _invoice_order(self, order: dict[str, Any], *, final: bool) -> list[int]:
        lines, notes = [], []
        for line_id in self._so_field(order, "order_line"):
            line = self.records["sale.order.line"][line_id]
            if line.get("display_type"):
                notes.append((line, Decimal(0)))
                continue
            qty = self._sol_field(line, "qty_to_invoice")
            if qty == 0 or (qty < 0 and not final):
                continue
            lines.append((line, qty))
        if not lines:
            raise UserError(
                "Cannot create an invoice. No items are available to invoice.\n\nTo resolve this "
                "issue, please ensure that:\n   \u2022 The products have been delivered before "
                "attempting to invoice them.\n   \u2022 The invoicing policy of the product is "
                "configured correctly.\n\nIf you want to invoice based on ordered quantities "
                "instead:\n   \u2022 For consumable or storable products, open the product, go to "
                "the 'General Information' tab and change the 'Invoicing Policy' from 'Delivered "
                "Quantities' to 'Ordered Quantities'.\n   \u2022 For services (and other "
                "products), change the 'Invoicing Policy' to 'Prepaid/Fixed Price'.\n")
        journal = next((j["id"] for j in self.records["account.journal"].values()
                        if j["type"] == "sale" and j["company_id"] == order["company_id"]), False)
        move_id = self._create("account.move", [{
            "move_type": "out_invoice", "partner_id": order["partner_invoice_id"],
            "invoice_origin": order["name"], "ref": order.get("client_order_ref") or False,
            "currency_id": self._so_field(order, "currency_id"), "journal_id": journal,
            "narration": order.get("note") or False}], {})[0]
        ordered = sorted(lines + notes, key=lambda pair: (pair[0]["sequence"], pair[0]["id"]))
        for line, qty in ordered:
            product = self.records["product.product"].get(line.get("product_id") or 0)
            display = self._display("product.product", product) if product else ""
            name = line["name"] or ""
            self._create("account.move.line", [{
                "move_id": move_id, "product_id": line.get("product_id") or False,
                "name": name if not display or display in name else f"{display}\n{name}",
                "display_type": line.get("display_type") or "product",
                "quantity": qty, "price_unit": line["price_unit"], "discount": line["discount"],
                "tax_ids": [[6, 0, list(line[self.taxfield])]],
                "sale_line_ids": [[6, 0, [line["id"]]]]}], {})
        move = self.records["account.move"][move_id]
        if self._move_field(move, "amount_total") < 0:  # Odoo switches it to a refund
            move["move_type"] = "out_refund"
            for line_id in self._move_field(move, "invoice_line_ids"):
                aml = self.records["account.move.line"][line_id]
                aml["quantity"] = -aml["quantity"]
        return [move_id]

    def _move_post(self, ids: list[int], ctx: dict[str, Any]) -> bool:
        year = datetime.now(UTC).year
        for move_id in ids:
            move = self.records["account.move"][move_id]
            if move["state"] != "draft":
                raise UserError(f"The entry {move['name'] or '/'} (id {move_id}) must be in "
                                "draft.")
            if not self._move_field(move, "invoice_line_ids"):
                raise UserError("You need to add a line before posting.")
            prefix = "RINV" if move["move_type"] == "out_refund" else "INV"
            if move["name"] in ("/", False):
                move["name"] = f"{prefix}/{year}/{next(self._sequences[prefix]):05d}"
            move["state"] = "posted"
            move["invoice_date"] = move.get("invoice_date") or _today()
            reversed_id = move.get("reversed_entry_id")
            if reversed_id and self.records["account.move"][reversed_id]["state"] == "posted":
                # the credit note reconciles with the invoice it reverses [T]
                target = self.records["account.move"][reversed_id]
                amount = min(self._move_field(move, "amount_total"),
                             self._move_field(target, "amount_residual"))
                if amount > 0:
                    self.reconciled[reversed_id].append((move_id, amount))
                    self.reconciled[move_id].append((reversed_id, amount))
        return False  # account.move.action_post returns False [T]

    def _move_cancel(self, ids: list[int], ctx: dict[str, Any]) -> None:
        """button_cancel: 17+ resets a posted entry to draft first; returns nothing [T]."""
        for move_id in ids:
            move = self.records["account.move"][move_id]
            if move["state"] == "posted" and self.version >= 17:
                move["state"] = "draft"
                for other, _ in self.reconciled.pop(move_id, []):
                    self.reconciled[other] = [(s, a) for s, a in self.reconciled[other]
                                              if s != move_id]
            if move["state"] != "draft":
                raise UserError("Only draft journal entries can be cancelled.")
            move["state"] = "cancel"

    def _reversal_reverse(self, ids: list[int], ctx: dict[str, Any], is_modify: bool = False
                          ) -> dict[str, Any]:
        new: list[int] = []
        for wizard in (self.records["account.move.reversal"][i] for i in ids):
            method = wizard.get("refund_method") if self.version < 17 else (
                "modify" if is_modify else "refund")
            for move_id in wizard["move_ids"]:
                move = self.records["account.move"][move_id]
                reason = f", {wizard['reason']}" if wizard.get("reason") else ""
                refund = self._create("account.move", [{
                    "move_type": "out_refund" if move["move_type"] == "out_invoice" else "entry",
                    "partner_id": move["partner_id"], "invoice_origin": move["invoice_origin"],
                    "ref": f"Reversal of: {move['name']}{reason}",
                    "journal_id": wizard["journal_id"], "currency_id": move["currency_id"],
                    "reversed_entry_id": move_id}], {})[0]
                for line_id in self._move_field(move, "invoice_line_ids"):
                    line = self.records["account.move.line"][line_id]
                    if line.get("display_type") not in (False, None, "product"):
                        continue
                    self._create("account.move.line", [{
                        "move_id": refund, "product_id": line["product_id"], "name": line["name"],
                        "display_type": "product", "quantity": line["quantity"],
                        "price_unit": line["price_unit"], "discount": line["discount"],
                        "tax_ids": [[6, 0, list(line["tax_ids"])]],
                        "sale_line_ids": [[6, 0, list(line["sale_line_ids"])]]}], {})
                if method in ("cancel", "modify"):
                    self._move_post([refund], {})
                new.append(refund)
            wizard["new_move_ids"] = list(new)
        action: dict[str, Any] = {"name": "Reverse Moves", "type": "ir.actions.act_window",
                                  "res_model": "account.move"}
        if len(new) == 1:
            action.update(view_mode="form", res_id=new[0],
                          context={"default_move_type": "out_refund"})
        else:
            action.update(view_mode="list,form", domain=[["id", "in", new]],
                          context={"default_move_type": "out_refund"})
        return action

    def _register_defaults(self, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        """account.payment.register default_get: the residual of the invoices in the context."""
        moves = [self.records["account.move"][m] for m in rec["line_ids"]]
        due = sum((self._move_field(m, "amount_residual") for m in moves), Decimal(0))
        if not moves or due <= 0:
            raise UserError("There's nothing left to pay for the selected journal items, so no "
                            "payment registration is necessary. You've got your finances under "
                            "control like a boss!")
        if "amount" not in vals:
            rec["amount"] = due
        partner = self.records["res.partner"][moves[0]["partner_id"]]
        rec["partner_id"] = partner.get("parent_id") or partner["id"]
        rec["currency_id"] = moves[0]["currency_id"]
        rec["communication"] = " ".join(m["name"] for m in moves if m.get("name"))
        if not rec.get("journal_id"):
            rec["journal_id"] = next(j["id"] for j in self.records["account.journal"].values()
                                     if j["type"] == "bank")
        rec["payment_method_line_id"] = next(
            (m["id"] for m in self.records["account.payment.method.line"].values()
             if m["journal_id"] == rec["journal_id"]), False)

    def _register_pay(self, ids: list[int], ctx: dict[str, Any]) -> dict[str, Any]:
        year = datetime.now(UTC).year
        payment = 0
        for wizard in (self.records["account.payment.register"][i] for i in ids):
            journal = self.records["account.journal"][wizard["journal_id"]]
            seq = f"P{journal['code']}"
            payment = self._create("account.payment", [{
                "name": f"{seq}/{year}/{next(self._sequences[seq]):05d}", "state": "paid",
                "amount": wizard["amount"], "date": wizard["payment_date"],
                "journal_id": journal["id"], "memo": wizard["communication"],
                "partner_id": wizard["partner_id"], "is_reconciled": True, "is_matched": False,
                "invoice_ids": [[6, 0, list(wizard["line_ids"])]]}], {})[0]
            left = wizard["amount"]
            for move_id in wizard["line_ids"]:
                move = self.records["account.move"][move_id]
                part = min(left, self._move_field(move, "amount_residual"))
                if part > 0:
                    self.reconciled[move_id].append((0, part))
                    left -= part
        return {"name": "Payments", "type": "ir.actions.act_window",
                "res_model": "account.payment", "context": {"create": False},
                "view_mode": "form", "res_id": payment}
