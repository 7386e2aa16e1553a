"""A fake Odoo server on loopback: the external API of Odoo 16-19 for what the odoo connector uses.

It follows Odoo's documentation and source:
- JSON-2 (Odoo 19+, https://www.odoo.com/documentation/19.0/developer/reference/external_api.html,
  odoo/addons/rpc/controllers/json2.py, odoo/http.py Json2Dispatcher): ``POST /json/2/<model>/
  <method>``, ``Authorization: bearer <API key>`` (else 401 werkzeug.exceptions.Unauthorized
  "Invalid apikey"), ``X-Odoo-Database`` (required when the server lists several databases: else
  404 "Did you mean POST /json/2/<model>/<method>?"), a JSON object of named arguments with
  ``ids`` and ``context``; ``ids`` on an @api.model method is a 422; a returned recordset becomes
  its ids. Errors: ``{name, message, arguments, context, debug}`` with UserError's http_status
  (UserError/ValidationError 422, AccessDenied/AccessError 403, MissingError 404, LockError 409,
  odoo/exceptions.py), werkzeug errors with their code, anything else 500. Before 19.0 there is no
  /json/2: a 404 page.
- XML-RPC / JSON-RPC (https://www.odoo.com/documentation/17.0/developer/reference/external_api.html,
  odoo/addons/rpc/controllers/xmlrpc.py): ``/xmlrpc/2/common`` and ``/jsonrpc`` service "common"
  (``version``, ``login``, ``authenticate`` -> uid or False; password or API key), service
  "object" ``execute_kw(db, uid, password, model, method, args, kwargs)`` (ids are args[0] unless
  the method is @api.model; ``context`` comes from kwargs). XML-RPC faults carry faultCode 2
  (UserError and subclasses, RedirectWarning), 3 (AccessDenied), 4 (AccessError) or 1 with the
  traceback; answers are marshalled with allow_none=False, so a None result is a fault there as
  in Odoo — methods that return nothing (action_lock, button_cancel...) commit, then answer
  "cannot marshal None" (odoo#19889). JSON-RPC errors are ``{"code": 200, "message": "Odoo
  Server Error", "data": {name, message, arguments, context, debug}}``. An unknown database
  is psycopg2's OperationalError.
- ``GET /web/version``.

Models (fields are the ones Odoo has; ORM methods search, search_read, search_count, read, create,
write, unlink, fields_get with its domain operators, x2many commands 0-6 and active_test; each
call is one transaction, rolled back on error; integrity errors answer as Odoo's RPC layer
words them, a ValidationError "The operation cannot be completed: ..."):
res.partner (child contacts, type contact/invoice/delivery), product.product (default_code,
taxes_id — the default 15% sale tax as in a fresh database —, invoice_policy), account.tax,
res.country(.state), res.currency, product.pricelist, decimal.precision, res.users (context_get);
sale.order (name S00001..., states draft -> sale -> cancel, 16's "done" or 17+'s ``locked``
when auto-lock is on, action_confirm, action_cancel — which answers the sale.order.cancel wizard
unless ``disable_cancel_warning`` is in the context —, action_unlock/lock/done/draft, amounts
computed like Odoo: price_unit * qty * (1 - discount/100), percent taxes excluded or included
(fixed per unit), rounded per line or globally as the company says, prices rounded to the
'Product Price' accuracy); sale.order.line (``tax_id`` up to 18, ``tax_ids`` in 19; confirmed
lines cannot be deleted; a locked order's lines cannot be written; qty_invoiced from invoices
and credit notes); sale.advance.payment.inv (``delivered`` invoices qty_to_invoice, a negative
total becomes a credit note); account.move (draft -> posted with INV/2026/00001 or RINV/...,
button_cancel of drafts, amounts as on the order); account.move.reversal (16: ``reverse_moves``
with ``refund_method``; 17+: ``refund_moves`` / ``modify_moves``; credit notes keep the
sale_line_ids, as sale's ``_copy_data_extend_business_fields`` does).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import traceback
import xmlrpc.client
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fakes.vendor import FakeVendor, header
from flask import Response, request

API_KEY = "odoo-apikey-7f3c1e9a2b"
PASSWORD = "odoo-password-5d1"
LOGIN = "connector@example.com"
DATABASE = "fobo"


# --- Odoo's exceptions, as the RPC layers show them --------------------------------------
class OdooError(Exception):
    qualname = "odoo.exceptions.UserError"
    http_status = 422
    fault = 2


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


class ServerError(OdooError):
    """Any other exception: a 500 / faultCode 1 with the traceback."""

    http_status = 500
    fault = 1

    def __init__(self, qualname: str, message: str) -> None:
        super().__init__(message)
        self.qualname = qualname


class HttpError(OdooError):
    """A werkzeug HTTPException (JSON-2 only)."""

    fault = 1

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(message)
        self.http_status, self.qualname = status, f"werkzeug.exceptions.{name}"


# --- the schema ----------------------------------------------------------------------------
def _f(kind: str, comodel: str | None = None, inverse: str | None = None) -> tuple:
    return (kind, comodel, inverse)


CHAR, FLOAT, INT, BOOL, SEL = _f("char"), _f("float"), _f("integer"), _f("boolean"), _f("selection")
COMPUTED = {
    "res.partner": {"child_ids", "display_name"},
    "sale.order": {"amount_untaxed", "amount_tax", "amount_total", "currency_id", "invoice_ids",
                   "invoice_status", "order_line", "invoice_count", "display_name"},
    "sale.order.line": {"price_subtotal", "price_tax", "price_total", "qty_invoiced",
                        "qty_to_invoice", "state", "invoice_status", "display_name"},
    "account.move": {"amount_untaxed", "amount_tax", "amount_total", "invoice_line_ids",
                     "display_name"},
    "account.move.line": {"price_subtotal", "price_total", "display_name"},
}
API_MODEL = {"search", "search_read", "search_count", "create", "fields_get", "context_get",
             "default_get"}
SIGNATURES = {
    "search": ["domain", "offset", "limit", "order"],
    "search_read": ["domain", "fields", "offset", "limit", "order"],
    "search_count": ["domain", "limit"],
    "read": ["fields", "load"],
    "create": ["vals_list"],
    "write": ["vals"],
    "unlink": [],
    "fields_get": ["allfields", "attributes"],
    "default_get": ["fields_list"],
}


def _schema(version: int) -> dict[str, dict[str, tuple]]:
    taxfield = "tax_ids" if version >= 19 else "tax_id"
    schema: dict[str, dict[str, tuple]] = {
        "res.company": {"name": CHAR, "currency_id": _f("many2one", "res.currency"),
                        "tax_calculation_rounding_method": SEL},
        "res.currency": {"name": CHAR, "decimal_places": INT, "active": BOOL},
        "res.country": {"name": CHAR, "code": CHAR},
        "res.country.state": {"name": CHAR, "code": CHAR,
                              "country_id": _f("many2one", "res.country")},
        "res.users": {"name": CHAR, "login": CHAR, "company_id": _f("many2one", "res.company"),
                      "active": BOOL},
        "decimal.precision": {"name": CHAR, "digits": INT},
        "product.pricelist": {"name": CHAR, "currency_id": _f("many2one", "res.currency"),
                              "active": BOOL},
        "product.product": {"name": CHAR, "default_code": CHAR, "active": BOOL, "sale_ok": BOOL,
                            "type": SEL, "invoice_policy": SEL, "list_price": FLOAT,
                            "taxes_id": _f("many2many", "account.tax")},
        "account.tax": {"name": CHAR, "amount": FLOAT, "amount_type": SEL, "type_tax_use": SEL,
                        "price_include": BOOL, "active": BOOL,
                        "company_id": _f("many2one", "res.company")},
        "res.partner": {"name": CHAR, "email": CHAR, "phone": CHAR, "ref": CHAR, "vat": CHAR,
                        "company_name": CHAR, "type": SEL, "is_company": BOOL, "active": BOOL,
                        "parent_id": _f("many2one", "res.partner"),
                        "child_ids": _f("one2many", "res.partner", "parent_id"),
                        "street": CHAR, "street2": CHAR, "city": CHAR, "zip": CHAR,
                        "country_id": _f("many2one", "res.country"),
                        "state_id": _f("many2one", "res.country.state"),
                        "property_product_pricelist": _f("many2one", "product.pricelist")},
        "sale.order": {"name": CHAR, "state": SEL, "client_order_ref": CHAR, "origin": CHAR,
                       "date_order": _f("datetime"), "note": _f("html"),
                       "partner_id": _f("many2one", "res.partner"),
                       "partner_invoice_id": _f("many2one", "res.partner"),
                       "partner_shipping_id": _f("many2one", "res.partner"),
                       "pricelist_id": _f("many2one", "product.pricelist"),
                       "company_id": _f("many2one", "res.company"),
                       "currency_id": _f("many2one", "res.currency"),
                       "order_line": _f("one2many", "sale.order.line", "order_id"),
                       "amount_untaxed": FLOAT, "amount_tax": FLOAT, "amount_total": FLOAT,
                       "invoice_ids": _f("many2many", "account.move"), "invoice_count": INT,
                       "invoice_status": SEL},
        "sale.order.line": {"order_id": _f("many2one", "sale.order"), "sequence": INT,
                            "name": _f("text"), "product_id": _f("many2one", "product.product"),
                            "product_uom_qty": FLOAT, "price_unit": FLOAT, "discount": FLOAT,
                            taxfield: _f("many2many", "account.tax"), "display_type": SEL,
                            "price_subtotal": FLOAT, "price_tax": FLOAT, "price_total": FLOAT,
                            "qty_invoiced": FLOAT, "qty_to_invoice": FLOAT, "state": SEL,
                            "invoice_status": SEL},
        "sale.advance.payment.inv": {"advance_payment_method": SEL,
                                     "sale_order_ids": _f("many2many", "sale.order"),
                                     "deduct_down_payments": BOOL, "consolidated_billing": BOOL},
        "account.move": {"name": CHAR, "move_type": SEL, "state": SEL, "ref": CHAR,
                         "invoice_origin": CHAR, "invoice_date": _f("date"),
                         "partner_id": _f("many2one", "res.partner"),
                         "currency_id": _f("many2one", "res.currency"),
                         "reversed_entry_id": _f("many2one", "account.move"),
                         "invoice_line_ids": _f("one2many", "account.move.line", "move_id"),
                         "amount_untaxed": FLOAT, "amount_tax": FLOAT, "amount_total": FLOAT},
        "account.move.line": {"move_id": _f("many2one", "account.move"), "name": _f("text"),
                              "product_id": _f("many2one", "product.product"),
                              "quantity": FLOAT, "price_unit": FLOAT, "discount": FLOAT,
                              "tax_ids": _f("many2many", "account.tax"),
                              "sale_line_ids": _f("many2many", "sale.order.line"),
                              "price_subtotal": FLOAT, "price_total": FLOAT},
        "account.move.reversal": {"move_ids": _f("many2many", "account.move"), "reason": CHAR,
                                  "date": _f("date"),
                                  "new_move_ids": _f("many2many", "account.move")},
    }
    if version >= 17:
        schema["sale.order"]["locked"] = BOOL
    else:
        schema["account.move.reversal"]["refund_method"] = SEL
    return schema


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


class FakeOdoo(FakeVendor):
    """One Odoo server with one company; `version` picks the 16/17/18/19 behaviours."""

    name = "odoo"

    def __init__(self, *, version: int = 17, databases: Iterable[str] = (DATABASE,),
                 rounding: str = "round_per_line", price_digits: int = 2,
                 auto_lock: bool = False) -> None:
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
        self.orm = threading.RLock()
        super().__init__()
        self._seed(rounding, price_digits)

    # --- seed data ------------------------------------------------------------------------
    def _seed(self, rounding: str, price_digits: int) -> None:
        usd = self._insert("res.currency", {"name": "USD", "decimal_places": 2, "active": True})
        eur = self._insert("res.currency", {"name": "EUR", "decimal_places": 2, "active": True})
        jpy = self._insert("res.currency", {"name": "JPY", "decimal_places": 0, "active": True})
        self._insert("res.currency", {"name": "KWD", "decimal_places": 3, "active": True})
        self.company = self._insert("res.company", {
            "name": "FOBO Inc.", "currency_id": usd, "tax_calculation_rounding_method": rounding})
        self.uid = self._insert("res.users", {"name": "Connector Bot", "login": LOGIN,
                                              "company_id": self.company, "active": True})
        self._insert("res.users", {"name": "Administrator", "login": "admin", "active": True,
                                   "company_id": self.company})
        self.credentials = {self.uid: {PASSWORD, API_KEY}}
        self.api_keys = {API_KEY: self.uid}
        self._insert("decimal.precision", {"name": "Product Price", "digits": price_digits})
        self._insert("decimal.precision", {"name": "Product Unit of Measure", "digits": 2})
        self._insert("decimal.precision", {"name": "Discount", "digits": 2})
        self.pricelists = {
            "USD": self._insert("product.pricelist", {"name": "Public Pricelist", "active": True,
                                                      "currency_id": usd}),
            "EUR": self._insert("product.pricelist", {"name": "Euro", "active": True,
                                                      "currency_id": eur}),
            "JPY": self._insert("product.pricelist", {"name": "Yen", "active": True,
                                                      "currency_id": jpy})}
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

    def _insert(self, model: str, vals: dict[str, Any]) -> int:
        rid = next(self._next[model])
        self.records[model][rid] = {"id": rid, **vals}
        return rid

    # --- helpers for tests ----------------------------------------------------------------
    def add_tax(self, name: str, amount: str, *, price_include: bool = False,
                amount_type: str = "percent", type_tax_use: str = "sale") -> int:
        with self.orm:
            return self._insert("account.tax", {
                "name": name, "amount": Decimal(amount), "amount_type": amount_type,
                "type_tax_use": type_tax_use, "price_include": price_include, "active": True,
                "company_id": 1})

    def add_product(self, code: str, name: str | None = None, *, kind: str = "consu",
                    invoice_policy: str = "order", taxes: list[int] | None = None) -> int:
        with self.orm:
            return self._insert("product.product", {
                "name": name or code.title(), "default_code": code, "active": True,
                "sale_ok": True, "type": kind, "invoice_policy": invoice_policy,
                "list_price": Decimal("1.00"),
                "taxes_id": [self.default_tax] if taxes is None else list(taxes)})

    def ensure_product(self, code: str) -> int:
        with self.orm:
            for rid, rec in self.records["product.product"].items():
                if rec["default_code"] == code:
                    return rid
            return self.add_product(code)

    def add_partner(self, name: str, email: str | None = None, **vals: Any) -> int:
        with self.orm:
            return self._create("res.partner", {"name": name, "email": email or False, **vals},
                                {})[0]

    def orders(self, client_order_ref: str | None = None) -> list[dict[str, Any]]:
        """Sale orders (with their computed fields), optionally by customer reference."""
        with self.orm:
            found = [r for r in self.records["sale.order"].values()
                     if client_order_ref is None or r.get("client_order_ref") == client_order_ref]
            return [self._export("sale.order", r, None, raw=True) for r in found]

    def lines(self, so_id: int) -> list[dict[str, Any]]:
        with self.orm:
            return [self._export("sale.order.line", r, None, raw=True)
                    for r in self.records["sale.order.line"].values() if r["order_id"] == so_id]

    def moves(self, so_id: int | None = None) -> list[dict[str, Any]]:
        with self.orm:
            ids = (self._get("sale.order", self.records["sale.order"][so_id], "invoice_ids")
                   if so_id is not None else list(self.records["account.move"]))
            return [self._export("account.move", self.records["account.move"][i], None, raw=True)
                    for i in ids]

    def partners(self, **match: Any) -> list[dict[str, Any]]:
        with self.orm:
            return [dict(r) for r in self.records["res.partner"].values()
                    if all(r.get(k) == v for k, v in match.items())]

    def post(self, move_id: int) -> None:
        """Post an invoice as a user would in Odoo."""
        with self.orm:
            self._move_post([move_id], {})

    def fail_method(self, model: str, method: str, error: Exception) -> None:
        """The next call of model.method raises `error` (an Odoo exception) before acting."""
        self.method_faults.append((model, method, error))

    # --- HTTP -----------------------------------------------------------------------------
    def routes(self) -> None:
        self.app.add_url_rule("/json/2/<model>/<method>", "json2", self._json2, methods=["POST"])
        self.app.add_url_rule("/jsonrpc", "jsonrpc", self._jsonrpc, methods=["POST"])
        self.app.add_url_rule("/xmlrpc/2/<service>", "xmlrpc", self._xmlrpc, methods=["POST"])
        self.app.add_url_rule("/web/version", "version", self._web_version,
                              methods=["GET", "POST"])

    def error(self, status: int, message: str) -> Response:
        if request.path.startswith("/json/2") and self.version >= 19:
            return self._json2_error(HttpError(status, "HTTPException", message))
        return Response(f"<html><body><h1>{status}</h1><p>{message}</p></body></html>",
                        status=status, mimetype="text/html")

    def _web_version(self) -> Response:
        return Response(json.dumps({"version_info": self._version_info(),
                                    "version": f"{self.version}.0"}), mimetype="application/json")

    def _version_info(self) -> list[Any]:
        return [self.version, 0, 0, "final", 0, ""]

    def _json2(self, model: str, method: str) -> Response:
        if self.version < 19:
            return Response("<html><body><h1>Not Found</h1></body></html>", status=404,
                            mimetype="text/html")
        self.bodies.append(request.get_data())
        try:
            db = header(request.headers, "X-Odoo-Database")
            if db and db not in self.databases:
                raise HttpError(404, "NotFound", f"database {db!r} not found")
            if not db and len(self.databases) > 1:
                raise HttpError(404, "NotFound", "Did you mean POST /json/2/<model>/<method>?")
            scheme, _, key = header(request.headers, "Authorization").partition(" ")
            uid = self.api_keys.get(key.strip()) if scheme.lower() == "bearer" else None
            if uid is None:
                raise HttpError(401, "Unauthorized", "Invalid apikey")
            try:
                body = json.loads(request.get_data() or b"{}")
            except ValueError as exc:
                raise HttpError(400, "BadRequest", f"could not parse the body as json: {exc}"
                                ) from exc
            if not isinstance(body, dict):
                raise HttpError(400, "BadRequest", "the body must be a JSON object")
            ids = body.pop("ids", None) or []
            context = body.pop("context", None) or {}
            result = self._execute("json2", model, method, ids, [], body, context, uid)
            return Response(json.dumps(_wire(result)), mimetype="application/json")
        except Exception as exc:
            return self._json2_error(exc)

    def _json2_error(self, exc: Exception) -> Response:
        name, status = self._describe(exc)
        status = exc.http_status if isinstance(exc, OdooError) else 500
        body = {"name": name, "message": str(exc), "arguments": [str(exc)], "context": {},
                "debug": self._traceback(exc, name)}
        if isinstance(exc, HttpError):
            body["arguments"] = [str(exc), status]
        return Response(json.dumps(body), status=status, mimetype="application/json")

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
            name, _ = self._describe(exc)
            answer = {"jsonrpc": "2.0", "id": rid, "error": {
                "code": 200, "message": "Odoo Server Error",
                "data": {"name": name, "debug": self._traceback(exc, name), "message": str(exc),
                         "arguments": [str(exc)], "context": {}}}}
        return Response(json.dumps(answer), mimetype="application/json")

    def _xmlrpc(self, service: str) -> Response:
        self.bodies.append(request.get_data())
        try:
            params, method = xmlrpc.client.loads(request.get_data(), use_datetime=True)
            result = self._dispatch("xmlrpc", service, method, list(params))
            text = xmlrpc.client.dumps((_wire(result),), methodresponse=True, allow_none=False)
        except Exception as exc:
            name, _ = self._describe(exc)
            if isinstance(exc, OdooError) and exc.fault in (2, 3, 4):
                fault = xmlrpc.client.Fault(exc.fault, str(exc))
            else:
                fault = xmlrpc.client.Fault(1, self._traceback(exc, name))
            text = xmlrpc.client.dumps(fault, methodresponse=True, allow_none=False)
        return Response(text, mimetype="text/xml")

    @staticmethod
    def _describe(exc: Exception) -> tuple[str, int]:
        if isinstance(exc, OdooError):
            return exc.qualname, exc.http_status
        return f"builtins.{type(exc).__name__}", 500

    @staticmethod
    def _traceback(exc: Exception, name: str) -> str:
        frames = "".join(traceback.format_tb(exc.__traceback__)) if exc.__traceback__ else ""
        return f"Traceback (most recent call last):\n{frames}{name}: {exc}\n"

    # --- services ---------------------------------------------------------------------------
    def _dispatch(self, protocol: str, service: str | None, method: str | None,
                  args: list[Any]) -> Any:
        if service == "common":
            if method == "version":
                return {"server_version": f"{self.version}.0", "server_serie": f"{self.version}.0",
                        "server_version_info": self._version_info(), "protocol_version": 1}
            if method in ("login", "authenticate"):
                db, login, password = args[0], args[1], args[2]
                self._check_db(db)
                uid = next((u for u, r in self.records["res.users"].items()
                            if r["login"] == login and r.get("active")), None)
                return uid if uid is not None and password in self.credentials.get(uid, ()) \
                    else False
            raise ServerError("builtins.KeyError", f"'{method}'")
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
            if name in API_MODEL:
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
                'connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: '
                f'FATAL:  database "{db}" does not exist'))

    def _execute(self, protocol: str, model: str, method: str, ids: list[int], args: list[Any],
                 kwargs: dict[str, Any], context: Mapping[str, Any], uid: int) -> Any:
        with self.orm:
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
                if protocol == "json2":
                    raise HttpError(404, "NotFound",
                                    f"The method '{method}' does not exist on the model '{model}'")
                raise ServerError("builtins.AttributeError",
                                  f"The method '{method}' does not exist on the model '{model}'")
            if protocol == "json2" and method in API_MODEL and ids:
                raise HttpError(422, "UnprocessableEntity", f"cannot call {model}.{method} with ids")
            params = self._bind(protocol, method, args, kwargs)
            for i, (m, name, error) in enumerate(self.method_faults):
                if m == model and name == method:
                    del self.method_faults[i]
                    raise error
            for rid in ids:
                if rid not in self.records[model]:
                    raise MissingError(f"Record does not exist or has been deleted.\n(Record: "
                                       f"{model}({rid},), User: {uid})")
            # one call, one transaction: an error rolls back all it did (ids are not reused,
            # as PostgreSQL sequences are not rolled back either)
            snapshot = copy.deepcopy(dict(self.records))
            try:
                return handler(ids, dict(context), **params)
            except Exception:
                self.records = defaultdict(dict, snapshot)
                raise

    def _bind(self, protocol: str, method: str, args: list[Any], kwargs: dict[str, Any]
              ) -> dict[str, Any]:
        names = SIGNATURES.get(method, [])
        if method == "reverse_moves" and self.version >= 17:
            names = ["is_modify"]
        if len(args) > len(names):
            raise self._type_error(protocol, f"{method}() takes {len(names) + 1} positional "
                                             f"arguments but {len(args) + 1} were given")
        bound = dict(zip(names, args, strict=False))
        for key, value in kwargs.items():
            if key not in names:
                raise self._type_error(protocol, f"{method}() got an unexpected keyword argument "
                                                 f"'{key}'")
            if key in bound:
                raise self._type_error(protocol, f"{method}() got multiple values for argument "
                                                 f"'{key}'")
            bound[key] = value
        if method in ("create", "write") and not ({"vals_list", "vals"} & set(bound)):
            raise self._type_error(protocol, f"{method}() missing 1 required positional argument")
        return bound

    @staticmethod
    def _type_error(protocol: str, message: str) -> Exception:
        if protocol == "json2":
            return HttpError(422, "UnprocessableEntity", message)
        return ServerError("builtins.TypeError", message)

    def _method(self, model: str, method: str) -> Callable[..., Any] | None:
        generic = {"search": self._m_search, "search_read": self._m_search_read,
                   "search_count": self._m_search_count, "read": self._m_read,
                   "create": self._m_create, "write": self._m_write, "unlink": self._m_unlink,
                   "fields_get": self._m_fields_get}
        if method in generic:
            return lambda ids, ctx, **kw: generic[method](model, ids, ctx, **kw)
        special = {
            ("res.users", "context_get"): self._users_context_get,
            ("sale.order", "action_confirm"): self._so_confirm,
            ("sale.order", "action_cancel"): self._so_cancel,
            ("sale.order", "action_unlock"): self._so_unlock,
            ("sale.order", "action_draft"): self._so_draft,
            ("sale.advance.payment.inv", "create_invoices"): self._adv_create_invoices,
            ("account.move", "action_post"): self._move_post,
            ("account.move", "button_cancel"): self._move_cancel,
            ("account.move.reversal", "reverse_moves"): self._reversal_reverse,
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
    def _fields(self, model: str) -> dict[str, tuple]:
        return {"id": INT, "display_name": CHAR, **self.schema[model]}

    def _m_search(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                  offset: int = 0, limit: int | None = None, order: str | None = None
                  ) -> list[int]:
        domain = list(domain or [])
        self._check_domain(model, domain)
        fields = self.schema[model]
        if "active" in fields and ctx.get("active_test", True) and not any(
                isinstance(leaf, list | tuple) and leaf[0] == "active" for leaf in domain):
            domain = ["&", ["active", "=", True], *domain] if domain else [["active", "=", True]]
        found = [rid for rid, rec in self.records[model].items() if self._match(model, rec, domain)]
        descending = "desc" in (order or "").lower() or (order is None and model == "sale.order")
        found.sort(reverse=descending)
        found = found[offset or 0:]
        return found[:limit] if limit else found

    def _m_search_read(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                       fields: list[str] | None = None, offset: int = 0, limit: int | None = None,
                       order: str | None = None) -> list[dict[str, Any]]:
        found = self._m_search(model, ids, ctx, domain, offset, limit, order)
        return [self._export(model, self.records[model][rid], fields) for rid in found]

    def _m_search_count(self, model: str, ids: list[int], ctx: dict[str, Any], domain: Any = None,
                        limit: int | None = None) -> int:
        return len(self._m_search(model, ids, ctx, domain, 0, limit, None))

    def _m_read(self, model: str, ids: list[int], ctx: dict[str, Any],
                fields: list[str] | None = None, load: str = "_classic_read"
                ) -> list[dict[str, Any]]:
        return [self._export(model, self.records[model][rid], fields) for rid in ids]

    def _m_fields_get(self, model: str, ids: list[int], ctx: dict[str, Any],
                      allfields: list[str] | None = None, attributes: list[str] | None = None
                      ) -> dict[str, Any]:
        out = {}
        for name, (kind, comodel, _) in self._fields(model).items():
            if allfields and name not in allfields:
                continue
            info = {"type": kind, "string": name.replace("_", " ").title(),
                    "readonly": name in COMPUTED.get(model, ()), "relation": comodel or False}
            out[name] = {k: v for k, v in info.items() if not attributes or k in attributes}
        return out

    def _m_create(self, model: str, ids: list[int], ctx: dict[str, Any], vals_list: Any = None
                  ) -> Any:
        single = isinstance(vals_list, dict)
        created = self._create(model, [vals_list] if single else list(vals_list or []), ctx)
        return created[0] if single else created

    def _m_write(self, model: str, ids: list[int], ctx: dict[str, Any], vals: Any = None) -> bool:
        self._write(model, ids, dict(vals or {}), ctx)
        return True

    def _m_unlink(self, model: str, ids: list[int], ctx: dict[str, Any]) -> bool:
        self._unlink(model, ids)
        return True

    def _create(self, model: str, vals_list: Any, ctx: Mapping[str, Any]) -> list[int]:
        if isinstance(vals_list, dict):
            vals_list = [vals_list]
        out = []
        for vals in vals_list:
            vals = dict(vals)
            self._check_fields(model, vals)
            rid = next(self._next[model])
            rec: dict[str, Any] = {"id": rid}
            self.records[model][rid] = rec
            later = {k: vals.pop(k) for k in list(vals) if self._kind(model, k) == "one2many"}
            try:
                self._defaults(model, rec, vals, ctx)
                self._assign(model, rec, vals)
                self._on_create(model, rec, ctx)
                for key, commands in later.items():
                    self._x2many(model, rec, key, commands, ctx)
                self._after_create(model, rec)
            except Exception:
                self.records[model].pop(rid, None)  # (the call's rollback restores the rest)
                raise
            out.append(rid)
        return out

    def _write(self, model: str, ids: list[int], vals: dict[str, Any], ctx: Mapping[str, Any]
               ) -> None:
        self._check_fields(model, vals)
        for rid in ids:
            rec = self.records[model][rid]
            self._before_write(model, rec, vals)
            plain = {k: v for k, v in vals.items() if self._kind(model, k) != "one2many"}
            self._assign(model, rec, plain)
            if model == "sale.order.line" and {"product_uom_qty", "product_id"} & set(vals) \
                    and "price_unit" not in vals and self._sol_field(rec, "qty_invoiced") <= 0 \
                    and rec.get("product_id"):
                # _compute_price_unit depends on product and quantity: a price not written
                # with them comes back from the pricelist (the product's list price here)
                rec["price_unit"] = self.records["product.product"][rec["product_id"]]["list_price"]
            for key, commands in vals.items():
                if self._kind(model, key) == "one2many":
                    self._x2many(model, rec, key, commands, ctx)

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
                if order["state"] in ("sale", "done") and not rec.get("display_type"):
                    raise UserError(
                        "Once a sales order is confirmed, you can't remove one of its lines (we "
                        "need to track if something gets invoiced or delivered).\nSet the "
                        "quantity to 0 instead.")
            self.records[model].pop(rid, None)

    def _check_fields(self, model: str, vals: Mapping[str, Any]) -> None:
        for key in vals:
            if key not in self.schema[model]:
                raise ServerError("builtins.ValueError", f"Invalid field {key!r} on model {model!r}")

    def _kind(self, model: str, key: str) -> str:
        return self._fields(model).get(key, CHAR)[0]

    def _assign(self, model: str, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        for key, value in vals.items():
            kind, comodel, _ = self._fields(model)[key]
            if key in COMPUTED.get(model, ()):
                continue  # computed without an inverse: Odoo ignores the value
            if kind == "many2one":
                if value and int(value) not in self.records[comodel]:
                    raise self._integrity(model, f"{model.replace('.', '_')}_{key}_fkey")
                rec[key] = int(value) if value else False
            elif kind == "many2many":
                self._x2many(model, rec, key, value, {})
            elif kind == "float":
                rec[key] = self._float(model, key, value)
            elif kind == "integer":
                rec[key] = int(value or 0)
            elif kind == "boolean":
                rec[key] = bool(value)
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
        kind, comodel, inverse = self._fields(model)[key]
        assert comodel
        current = list(rec.get(key) or []) if kind == "many2many" else self._get(model, rec, key)
        for command in commands or []:
            if isinstance(command, int):  # a bare list of ids (accepted by Odoo for m2m)
                current.append(command)
                continue
            op = command[0]
            if op == 0:
                vals = dict(command[2])
                if kind == "one2many":
                    vals[inverse] = rec["id"]
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
                if kind == "one2many":
                    self._unlink(comodel, list(current))
                current = []
            elif op == 6:
                current = list(command[2] or [])
            else:
                raise ServerError("builtins.ValueError", f"invalid command {op}")
        for cid in current:
            if cid not in self.records[comodel]:
                raise self._integrity(model, f"{model.replace('.', '_')}_{key}_fkey")
        if kind == "many2many":
            rec[key] = list(dict.fromkeys(current))

    # --- model rules --------------------------------------------------------------------------
    def _defaults(self, model: str, rec: dict[str, Any], vals: dict[str, Any],
                  ctx: Mapping[str, Any]) -> None:
        fields = self.schema[model]
        for name, (kind, _, _) in fields.items():
            if name in COMPUTED.get(model, ()):
                continue
            rec.setdefault(name, [] if kind == "many2many" else Decimal(0) if kind == "float"
                           else 0 if kind == "integer" else False)
        if "active" in fields:
            rec["active"] = True
        if model == "res.partner":
            rec["type"] = "contact"
            rec["property_product_pricelist"] = self.pricelists["USD"]
        elif model == "sale.order":
            rec.update(state="draft", company_id=self.company, name="New",
                       date_order=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))
            if self.version >= 17:
                rec["locked"] = False
        elif model == "sale.order.line":
            rec["sequence"] = 10
            product = self.records["product.product"].get(vals.get("product_id") or 0)
            if product and self.taxfield not in vals:
                rec[self.taxfield] = list(product["taxes_id"])  # the product's default taxes
            if product and "price_unit" not in vals:
                rec["price_unit"] = product["list_price"]
            if product and "name" not in vals:
                rec["name"] = self._display("product.product", product)
        elif model == "sale.advance.payment.inv":
            rec.update(advance_payment_method="delivered", deduct_down_payments=True,
                       consolidated_billing=True, sale_order_ids=list(ctx.get("active_ids") or []))
        elif model == "account.move.reversal":
            moves = list(ctx.get("active_ids") or []) if ctx.get("active_model") == \
                "account.move" else []
            rec["move_ids"] = moves
            if self.version < 17:
                rec["refund_method"] = "cancel" if len(moves) > 1 else "refund"
        elif model == "account.move":
            rec.update(state="draft", name="/", move_type="entry")

    def _on_create(self, model: str, rec: dict[str, Any], ctx: Mapping[str, Any]) -> None:
        if model == "res.partner":
            if rec["type"] == "contact" and not rec.get("name"):
                raise ValidationError("Contacts require a name")
        elif model == "sale.order":
            if not rec.get("partner_id"):
                raise ValidationError("The field 'Customer' is required, please complete it to "
                                      "validate the Sales Order.")
            if rec["name"] in (False, "New"):
                rec["name"] = f"S{next(self._sequences['sale.order']):05d}"
            partner = self.records["res.partner"][rec["partner_id"]]
            children = [c for c in self.records["res.partner"].values()
                        if c.get("parent_id") == partner["id"]]
            for key, kind in (("partner_invoice_id", "invoice"), ("partner_shipping_id", "delivery")):
                if not rec.get(key):
                    rec[key] = next((c["id"] for c in children if c["type"] == kind), partner["id"])
            if not rec.get("pricelist_id"):
                rec["pricelist_id"] = partner.get("property_product_pricelist") or \
                    self.pricelists["USD"]
        elif model == "sale.order.line":
            if not rec.get("order_id"):
                raise ValidationError("The field 'Order Reference' is required")
            if rec.get("display_type"):
                if rec.get("product_id") or rec.get("product_uom_qty") or rec.get("price_unit"):
                    raise ValidationError("The operation cannot be completed: Forbidden values "
                                          "on non-accountable sale order line")
            elif not rec.get("product_id"):
                raise ValidationError("The operation cannot be completed: Missing required "
                                      "fields on accountable sale order line.")
            order = self.records["sale.order"][rec["order_id"]]
            if self._locked(order):
                raise UserError("It is forbidden to modify the following fields in a locked "
                                "order:\nProduct")

    def _after_create(self, model: str, rec: dict[str, Any]) -> None:
        moves = self.records["account.move"]
        if model == "account.move.reversal" and any(moves[m]["state"] != "posted"
                                                    for m in rec["move_ids"]):
            raise UserError("You can only reverse posted moves.")

    def _before_write(self, model: str, rec: dict[str, Any], vals: Mapping[str, Any]) -> None:
        if model == "sale.order" and self._locked(rec) and "order_line" in vals:
            raise UserError("It is forbidden to modify the following fields in a locked order:\n"
                            "Order Lines")
        if model == "sale.order.line":
            order = self.records["sale.order"][rec["order_id"]]
            protected = {"product_id", "name", "price_unit", "product_uom_qty", self.taxfield,
                         "discount"}
            if self._locked(order) and protected & set(vals):
                raise UserError("It is forbidden to modify the following fields in a locked "
                                f"order:\n{', '.join(sorted(protected & set(vals)))}")
        if model == "account.move" and rec["state"] == "posted" and "invoice_line_ids" in vals:
            raise UserError("You cannot modify a posted entry of this journal.")

    @staticmethod
    def _integrity(model: str, constraint: str) -> ValidationError:
        """An IntegrityError, as Odoo's RPC layer reports it (service/model.py)."""
        return ValidationError(
            "The operation cannot be completed:\n- Create/update: a mandatory field is not set."
            "\n- Delete: another model requires the record being deleted. If possible, archive "
            f"it instead.\n\nModel: {model} ({model})\nConstraint: {constraint}")

    def _locked(self, order: Mapping[str, Any]) -> bool:
        return bool(order.get("locked")) or order.get("state") == "done"

    # --- computed fields ------------------------------------------------------------------
    def _get(self, model: str, rec: dict[str, Any], name: str) -> Any:
        if name == "display_name":
            return self._display(model, rec)
        if name not in COMPUTED.get(model, ()):
            return rec.get(name, False)
        if model == "res.partner" and name == "child_ids":
            return sorted(r["id"] for r in self.records["res.partner"].values()
                          if r.get("parent_id") == rec["id"] and r.get("active"))
        if model == "sale.order":
            return self._so_field(rec, name)
        if model == "sale.order.line":
            return self._sol_field(rec, name)
        if model == "account.move":
            if name == "invoice_line_ids":
                return sorted(r["id"] for r in self.records["account.move.line"].values()
                              if r["move_id"] == rec["id"])
            lines = [self.records["account.move.line"][i]
                     for i in self._get(model, rec, "invoice_line_ids")]
            return self._totals(lines, "quantity", "tax_ids", rec["currency_id"])[name]
        if model == "account.move.line":
            move = self.records["account.move"][rec["move_id"]]
            amounts = self._totals([rec], "quantity", "tax_ids", move["currency_id"])
            key = {"price_subtotal": "amount_untaxed", "price_total": "amount_total"}[name]
            return amounts[key]
        raise KeyError(name)

    def _so_field(self, rec: dict[str, Any], name: str) -> Any:
        if name == "order_line":
            lines = [r for r in self.records["sale.order.line"].values() if r["order_id"] == rec["id"]]
            return [r["id"] for r in sorted(lines, key=lambda r: (r["sequence"], r["id"]))]
        if name == "currency_id":
            return self.records["product.pricelist"][rec["pricelist_id"]]["currency_id"]
        if name in ("invoice_ids", "invoice_count"):
            line_ids = set(self._so_field(rec, "order_line"))
            moves = sorted({r["move_id"] for r in self.records["account.move.line"].values()
                            if line_ids & set(r["sale_line_ids"])})
            return moves if name == "invoice_ids" else len(moves)
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
            if order["state"] not in ("sale", "done") or rec.get("display_type"):
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

    def _totals(self, lines: list[dict[str, Any]], qty_field: str, tax_field: str,
                currency_id: int) -> dict[str, Decimal]:
        """Odoo's tax engine for percent (excluded/included) and fixed taxes, in the currency."""
        places = int(self.records["res.currency"][currency_id]["decimal_places"])
        per_line = self.records["res.company"][self.company]["tax_calculation_rounding_method"] \
            != "round_globally"
        untaxed, tax_rounded = Decimal(0), Decimal(0)
        tax_raw: dict[int, Decimal] = defaultdict(Decimal)
        for line in lines:
            if line.get("display_type"):
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
            return f"{parent.get('name')}, {rec.get('name') or rec.get('type')}"
        return str(rec.get("name") or f"{model},{rec['id']}")

    def _export(self, model: str, rec: dict[str, Any], fields: list[str] | None, *,
                raw: bool = False) -> dict[str, Any]:
        known = self._fields(model)
        names = fields or [n for n in known if n != "display_name" or raw]
        out: dict[str, Any] = {"id": rec["id"]}
        for name in names:
            if name not in known:
                raise ServerError("builtins.ValueError", f"Invalid field {name!r} on model {model!r}")
            kind, comodel, _ = known[name]
            value = self._get(model, rec, name)
            if raw:
                out[name] = value
            elif kind == "many2one":
                target = self.records[comodel].get(value) if value else None
                out[name] = [value, self._display(comodel, target)] if target else False
            elif kind in ("one2many", "many2many"):
                out[name] = list(value or [])
            elif value is None:
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
                    raise ServerError("builtins.ValueError",
                                      f"Invalid field {model}.{leaf[0]} in leaf {tuple(leaf)!r}")
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
        actual = self._get(model, rec, field)
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
        return {"lang": "en_US", "tz": "Europe/Brussels", "uid": self.uid}

    def _orders(self, ids: list[int]) -> list[dict[str, Any]]:
        return [self.records["sale.order"][i] for i in ids]

    def _so_confirm(self, ids: list[int], ctx: dict[str, Any]) -> bool:
        for order in self._orders(ids):
            if order["state"] not in ("draft", "sent"):
                raise UserError("Some orders are not in a state requiring confirmation.")
            for line_id in self._so_field(order, "order_line"):
                line = self.records["sale.order.line"][line_id]
                if not line.get("display_type") and not line.get("product_id"):
                    raise UserError("A line on these orders missing a product, you cannot "
                                    "confirm it.")
        for order in self._orders(ids):
            order.update(state="sale", date_order=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"))
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
        if not ctx.get("disable_cancel_warning") and any(o["state"] != "draft" for o in orders):
            order = orders[0]
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

    # action_lock / action_unlock / action_done return nothing in Odoo: over XML-RPC the call
    # commits, then its answer fails to marshal (odoo#19889)
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
        for wizard in (self.records["sale.advance.payment.inv"][i] for i in ids):
            if wizard["advance_payment_method"] != "delivered":
                raise UserError("Down payments are not supported by this fake.")
            for order in self._orders(wizard["sale_order_ids"]):
                created += self._invoice_order(order, final=bool(wizard["deduct_down_payments"]))
        if not created:
            return {"type": "ir.actions.act_window_close"}
        return {"name": "Invoices", "type": "ir.actions.act_window", "res_model": "account.move",
                "res_id": created[0], "view_mode": "form",
                "context": {"default_move_type": "out_invoice"}}

    def _invoice_order(self, order: dict[str, Any], *, final: bool) -> list[int]:
        lines = []
        for line_id in self._so_field(order, "order_line"):
            line = self.records["sale.order.line"][line_id]
            qty = self._sol_field(line, "qty_to_invoice")
            if line.get("display_type") or qty == 0 or (qty < 0 and not final):
                continue
            lines.append((line, qty))
        if not lines:
            raise UserError(
                "Cannot create an invoice. No items are available to invoice.\n\nTo resolve this "
                "issue, please ensure that:\n   • The products have been delivered before "
                "attempting to invoice them.\n   • The invoicing policy of the product is "
                "configured correctly.")
        move_id = self._create("account.move", [{
            "move_type": "out_invoice", "partner_id": order["partner_invoice_id"],
            "invoice_origin": order["name"], "ref": order.get("client_order_ref") or "",
            "currency_id": self._so_field(order, "currency_id")}], {})[0]
        for line, qty in lines:
            self._create("account.move.line", [{
                "move_id": move_id, "product_id": line["product_id"], "name": line["name"],
                "quantity": qty, "price_unit": line["price_unit"], "discount": line["discount"],
                "tax_ids": [[6, 0, list(line[self.taxfield])]],
                "sale_line_ids": [[6, 0, [line["id"]]]]}], {})
        move = self.records["account.move"][move_id]
        if self._get("account.move", move, "amount_total") < 0:  # Odoo switches it to a refund
            move["move_type"] = "out_refund"
            for line_id in self._get("account.move", move, "invoice_line_ids"):
                aml = self.records["account.move.line"][line_id]
                aml["quantity"] = -aml["quantity"]
        return [move_id]

    def _move_post(self, ids: list[int], ctx: dict[str, Any]) -> bool:
        year = datetime.now(UTC).year
        for move_id in ids:
            move = self.records["account.move"][move_id]
            if move["state"] == "posted":
                raise UserError(f"The entry {move['name']} (id {move_id}) is already posted.")
            if move["state"] == "cancel":
                raise UserError("You can't post a cancelled entry.")
            if not self._get("account.move", move, "invoice_line_ids"):
                raise UserError("You need to add a line before posting.")
            prefix = "RINV" if move["move_type"] == "out_refund" else "INV"
            if move["name"] in ("/", False):
                move["name"] = f"{prefix}/{year}/{next(self._sequences[prefix]):05d}"
            move["state"] = "posted"
            move["invoice_date"] = move.get("invoice_date") or datetime.now(UTC).date().isoformat()
        return False  # account.move.action_post returns False (XML-RPC cannot send None)

    def _move_cancel(self, ids: list[int], ctx: dict[str, Any]) -> None:
        """button_cancel: 17+ resets a posted entry to draft first; returns nothing (odoo#86140)."""
        for move_id in ids:
            move = self.records["account.move"][move_id]
            if move["state"] == "posted" and self.version >= 17:
                move["state"] = "draft"
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
                    "currency_id": move["currency_id"], "reversed_entry_id": move_id}], {})[0]
                for line_id in self._get("account.move", move, "invoice_line_ids"):
                    line = self.records["account.move.line"][line_id]
                    self._create("account.move.line", [{
                        "move_id": refund, "product_id": line["product_id"], "name": line["name"],
                        "quantity": line["quantity"], "price_unit": line["price_unit"],
                        "discount": line["discount"], "tax_ids": [[6, 0, list(line["tax_ids"])]],
                        "sale_line_ids": [[6, 0, list(line["sale_line_ids"])]]}], {})
                if method in ("cancel", "modify"):
                    self._move_post([refund], {})
                new.append(refund)
            wizard["new_move_ids"] = list(new)
        action: dict[str, Any] = {"name": "Reverse Moves", "type": "ir.actions.act_window",
                                  "res_model": "account.move"}
        if len(new) == 1:
            action.update(view_mode="form", res_id=new[0])
        else:
            action.update(view_mode="tree,form", domain=[["id", "in", new]])
        return action
