"""The `odoo` connector: every order becomes a confirmed, invoiced sale order in Odoo 16-19.

Protocols (config `protocol`), all documented by Odoo:

- ``json2`` (default; Odoo 19+): ``POST {url}/json/2/<model>/<method>`` with
  ``Authorization: bearer <api_key>``, ``X-Odoo-Database: <database>`` (needed when the server
  hosts several databases) and a JSON object of *named* arguments plus ``ids`` and ``context``;
  200 with the JSON result, or 4xx/5xx with ``{name, message, arguments, context, debug}``
  (UserError 422, AccessError/AccessDenied 403, MissingError 404, LockError 409, a bad API key
  401 ``werkzeug.exceptions.Unauthorized``). Each call is its own transaction.
  https://www.odoo.com/documentation/19.0/developer/reference/external_api.html
- ``jsonrpc`` / ``xmlrpc`` (Odoo 16-18; deprecated in 19): ``common.authenticate(db, login,
  password-or-API-key, {})`` returns the uid (False when refused), then ``object.execute_kw(db,
  uid, password, model, method, args, kwargs)`` at ``/jsonrpc`` or ``/xmlrpc/2/{common,object}``.
  Errors: a JSON-RPC ``error`` object ``{code, message, data: {name, message, arguments, debug}}``
  or an XML-RPC Fault (faultCode 1 application error with the traceback, 2 UserError, 3
  AccessDenied, 4 AccessError — odoo/addons/rpc/controllers/xmlrpc.py).
  https://www.odoo.com/documentation/17.0/developer/reference/external_api.html

What is booked (one ``sale.order`` per order, found again by ``client_order_ref``):
- the customer: a broker link, else the partner this connector created for the same channel
  customer (``ref``), else ``res.partner`` by email (identity.resolve_customer: verified emails
  only, ambiguity parks), else a new partner with an invoice and a delivery child contact;
- one line per order line (``product.product`` by ``default_code``, price_unit, quantity,
  ``discount`` 0 and the taxes set explicitly), a line of the `discount_product` per line
  discount and per order discount (a percentage discount cannot hit an amount to the cent), a
  line of the `shipping_product` (or the product a shipping mapping names) per shipping line,
  the order note as a note line;
- ``action_confirm``; then the invoice through the ``sale.advance.payment.inv`` wizard
  (advance_payment_method "delivered") and ``action_post`` on the ``account.move`` (config
  ``invoice``: post | draft | none; products invoiced on delivered quantities are left to Odoo's
  delivery flow, as Odoo itself does).
The customer and addresses are chosen when the sale order is created; later versions change its
lines, not its customer.
The reference is "S00042 / INV/2026/00007" (the sale order and its open posted invoices).

Exact totals: Odoo computes taxes itself, so each channel tax maps to an ``account.tax``
(``mapped(ctx, "tax", name)``, else the one active sale tax of that percentage and price
inclusion) and the connector checks the mapped tax's rate and price inclusion before booking.
What remains is rounding (per line vs. globally, tax on a discount line): the connector
compares Odoo's ``amount_total`` with the order's and books the difference on one untaxed
"rounding difference" line, refusing (PermanentError, order left as a quotation) when it is
larger than one minor unit per taxed line — that means a wrong tax mapping, not rounding.

Update (a later version, or a retry): the order's lines are written in place (lines paired by
product; draft lines deleted, confirmed ones set to quantity 0, as Odoo requires). An unchanged
order changes nothing. A confirmed order is unlocked for the change and locked again. Posted
invoices cannot be edited in Odoo: with ``invoiced_changes: credit_note`` (default) they are
reversed by a posted credit note (``account.move.reversal``) and the new version invoiced
again; with ``refuse`` the update dead-letters, telling the operator what to do by hand.

Cancel: ``action_cancel`` with ``disable_cancel_warning`` (else Odoo answers with the e-mail
wizard instead of cancelling); Odoo cancels draft invoices itself, but a posted invoice needs a
credit note: issued as above with ``credit_note``, otherwise a PermanentError says to credit and
cancel by hand.

Resuming: every call is its own transaction, so a booking can stop half-way (a quotation, a
confirmed order without its invoice, a draft invoice or credit note). Each step first looks at
what Odoo holds and only does what is missing; ``lookup`` answers None until the booking is
complete, so the broker pushes again rather than recording a half booking. Odoo has no
idempotency key: ``client_order_ref`` (``reference_format``, default the channel's order id;
add {channel} when channels' ids can collide) is the key, and a partner this connector creates
carries the customer's link key in ``ref`` so a lost answer never duplicates it.

Wire details: money goes out as the exact decimal text (JSON numbers, XML-RPC <double>) and
comes back parsed as Decimal, never through float. Odoo marshals XML-RPC answers with
allow_none=False, so a method that returns nothing (``action_lock``, ``button_cancel``) has
committed when its answer fails with "cannot marshal None" (odoo#19889): that is success.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import xmlrpc.client
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

import urllib3
from marshmallow import ValidationError, fields, validate, validates_schema

from connectors.base import Connector, Link, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import (
    ConnectorError,
    IdentityReview,
    MissingMapping,
    PermanentError,
    TransientError,
)
from connectors.identity import (
    anchors_field,
    customer_keys,
    customer_links,
    mapped,
    resolve_customer,
    resolve_products,
)
from connectors.wire import exact_json, network_reason, pool, retry_after

USER_AGENT = "fobo-broker/0.1 (odoo connector)"
PROTOCOLS = ("json2", "jsonrpc", "xmlrpc")
ADJUSTMENT = "Rounding difference (channel vs. Odoo tax computation)"
REFERENCE_FIELDS = ("external_id", "channel", "number")
_ORDER_FIELDS = ["name", "state", "client_order_ref", "amount_total", "amount_tax",
                 "currency_id", "invoice_ids", "invoice_status", "order_line"]
_LINE_FIELDS = ["product_id", "name", "product_uom_qty", "price_unit", "discount",
                "display_type", "price_subtotal", "sequence"]
_MOVE_FIELDS = ["name", "state", "move_type", "reversed_entry_id", "amount_total"]
_TRANSIENT = {"LockError", "ConcurrencyError", "SerializationFailure", "TransactionRollbackError",
              "LockNotAvailable", "InterfaceError", "PoolError", "ServiceUnavailable",
              "TooManyRequests", "BadGateway", "GatewayTimeout", "RequestTimeout"}
_PERMANENT = {"UserError", "ValidationError", "MissingError", "RedirectWarning", "ValueError",
              "KeyError", "TypeError", "AttributeError", "UnprocessableEntity", "BadRequest"}
_DATA_METHODS = {"search", "search_read", "search_count", "read", "create", "fields_get",
                 "context_get"}
_RETRY_STATUS = frozenset({408, 409, 425, 429, 502, 503, 504})
_FAULT_NAMES = {2: "odoo.exceptions.UserError", 3: "odoo.exceptions.AccessDenied",
                4: "odoo.exceptions.AccessError"}
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Denied|Warning|Failure)\w*): ?(.*)$")
log = logging.getLogger(__name__)


def _is_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("give the Odoo server's http(s) address, e.g. https://acme.odoo.com")
    if "@" in parts.netloc:
        raise ValidationError("put credentials in username / api_key, not in the URL")
    if parts.query or parts.fragment:
        raise ValidationError("give the server address only, without query or fragment")


def _reference_format(value: str) -> None:
    try:
        value.format(**dict.fromkeys(REFERENCE_FIELDS, "x"))
    except (KeyError, IndexError, ValueError) as exc:
        raise ValidationError(f"allowed placeholders: {', '.join(REFERENCE_FIELDS)}") from exc
    if "{external_id}" not in value:
        raise ValidationError("needs the {external_id} placeholder")


class OdooConfig(ConfigSchema):
    """Where Odoo is, how to sign in, and how orders become sale orders and invoices."""

    url = fields.String(required=True, validate=_is_url)
    protocol = fields.String(load_default="json2", validate=validate.OneOf(PROTOCOLS))
    database = fields.String(load_default=None, allow_none=True)
    username = fields.String(load_default=None, allow_none=True)
    api_key = Secret(required=True, validate=validate.Length(min=1))  # or the password (RPC)
    company_id = fields.Integer(load_default=None, allow_none=True, strict=True,
                                validate=validate.Range(min=1))
    lang = fields.String(load_default=None, allow_none=True)
    timeout = fields.Float(load_default=30.0, validate=validate.Range(min=0, min_inclusive=False))
    verify_tls = fields.Boolean(load_default=True)
    customer_anchors = anchors_field()
    reference_format = fields.String(load_default="{external_id}", validate=_reference_format)
    shipping_product = fields.String(load_default="SHIPPING", validate=validate.Length(min=1))
    discount_product = fields.String(load_default="DISCOUNT", validate=validate.Length(min=1))
    invoice = fields.String(load_default="post", validate=validate.OneOf(["post", "draft", "none"]))
    invoiced_changes = fields.String(load_default="credit_note",
                                     validate=validate.OneOf(["credit_note", "refuse"]))
    pricelists = fields.Dict(keys=fields.String(validate=validate.Regexp(
                                 r"^[A-Z]{3}$", error="an ISO 4217 currency code, e.g. EUR")),
                             values=fields.Integer(strict=True, validate=validate.Range(min=1)),
                             load_default=dict)

    @validates_schema
    def _protocol_needs(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("protocol", "json2") == "json2":
            if data.get("username"):
                raise ValidationError({"username": [
                    "not used by protocol json2 (the API key says who you are); remove it"]})
            return
        errors = {f: [f"required for protocol {data['protocol']}"]
                  for f in ("database", "username") if not data.get(f)}
        if errors:
            raise ValidationError(errors)


class _Fault(Exception):
    """An error answer: Odoo's exception class name, its message, the HTTP status if any."""

    def __init__(self, name: str, message: str, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.name, self.message, self.status, self.retry_after = name, message, status, retry_after


class _Marshaller(xmlrpc.client.Marshaller):
    """XML-RPC marshalling that writes a Decimal as a <double> with its exact digits."""

    dispatch = dict(xmlrpc.client.Marshaller.dispatch)

    def dump_decimal(self, value: Decimal, write: Callable[[str], Any]) -> None:
        write("<value><double>")
        write(format(value, "f"))
        write("</double></value>\n")

    dispatch[Decimal] = dump_decimal


class _Unmarshaller(xmlrpc.client.Unmarshaller):
    """XML-RPC unmarshalling that reads a <double> as the Decimal of its text, never a float."""

    dispatch = dict(xmlrpc.client.Unmarshaller.dispatch)

    def end_double(self, data: str) -> None:
        self.append(Decimal(data.strip()))
        self._value = 0

    dispatch["double"] = end_double
    dispatch["float"] = end_double




class _Client:
    """One Odoo server spoken to over one protocol: ``call(model, method, ids, **named_args)``."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.settings = settings
        self.base = settings["url"].rstrip("/")
        self.protocol = settings["protocol"]
        context: dict[str, Any] = {}
        if settings.get("lang"):
            context["lang"] = settings["lang"]
        if settings.get("company_id"):
            context["allowed_company_ids"] = [settings["company_id"]]
        self.context = context
        self._pool: urllib3.PoolManager | None = None
        self._uid: int | None = None
        self._version: int | None = None
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._ids = itertools.count(1)

    # --- the ORM ---------------------------------------------------------------------
    def call(self, model: str, method: str, ids: Sequence[int] | None = None, *,
             context: Mapping[str, Any] | None = None, **params: Any) -> Any:
        ctx = {**self.context, **(context or {})}
        if self.protocol == "json2":
            body = dict(params)
            if ids is not None:
                body["ids"] = list(ids)
            if ctx:
                body["context"] = ctx
            return self._json2(f"/json/2/{model}/{method}", body)
        args: list[Any] = [list(ids)] if ids is not None else []
        if method == "create":  # Odoo's call_kw reads create's values from args[0]
            args.append(params.pop("vals_list"))
        kwargs = dict(params)
        if ctx:
            kwargs["context"] = ctx
        uid = self.uid()
        try:
            return self._rpc("object", "execute_kw", [self.settings["database"], uid,
                                                      self.settings["api_key"], model, method,
                                                      args, kwargs])
        except _Fault as fault:
            # Odoo marshals XML-RPC answers with allow_none=False: a method returning nothing
            # (action_lock, button_cancel...) has run and committed, only its answer failed
            # (odoo#19889, odoo#86140). Data methods never return None, so there it is an error.
            if self.protocol == "xmlrpc" and method not in _DATA_METHODS and \
                    "cannot marshal None" in fault.message:
                return None
            raise

    def uid(self) -> int:
        """The user id (RPC protocols): ``common.authenticate``, once per connector."""
        with self._auth_lock:
            if self._uid is None:
                uid = self._rpc("common", "authenticate", [
                    self.settings["database"], self.settings["username"],
                    self.settings["api_key"], {}])
                if not uid or isinstance(uid, bool):
                    raise _Fault("odoo.exceptions.AccessDenied", "authenticate returned False")
                self._uid = int(uid)
            return self._uid

    def version(self) -> int:
        """The server's major version: 19 for JSON-2 (it exists since 19.0), else common.version."""
        if self._version is None:
            if self.protocol == "json2":
                self._version = 19
            else:
                info = self._rpc("common", "version", [])
                first = (info.get("server_version_info") or [0])[0] if isinstance(info, dict) else 0
                digits = re.sub(r"\D", "", str(first)) or "0"  # "saas~18" -> 18
                self._version = int(digits)
        return self._version

    # --- wire protocols --------------------------------------------------------------
    def _json2(self, path: str, body: Mapping[str, Any]) -> Any:
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "Authorization": f"bearer {self.settings['api_key']}"}
        if self.settings.get("database"):
            headers["X-Odoo-Database"] = self.settings["database"]
        status, answer_headers, data = self._post(path, exact_json(body).encode(), headers)
        if status == 200:
            return self._loads(data)
        try:
            error = json.loads(data)
        except ValueError:
            error = None
        if not isinstance(error, dict):
            raise _Fault("", _snippet(data), status, _retry_after(answer_headers))
        raise _Fault(str(error.get("name") or ""), str(error.get("message") or _snippet(data)),
                     status, _retry_after(answer_headers))

    def _rpc(self, service: str, method: str, args: list[Any]) -> Any:
        if self.protocol == "jsonrpc":
            body = {"jsonrpc": "2.0", "method": "call", "id": next(self._ids),
                    "params": {"service": service, "method": method, "args": args}}
            status, headers, data = self._post("/jsonrpc", exact_json(body).encode(),
                                               {"Content-Type": "application/json"})
            if status != 200:
                raise _Fault("", _snippet(data), status, _retry_after(headers))
            answer = self._loads(data)
            if not isinstance(answer, dict):
                raise _Fault("BadAnswer", f"not a JSON-RPC answer: {_snippet(data)}", status)
            if answer.get("error"):
                error = answer["error"]
                detail = error.get("data") if isinstance(error.get("data"), dict) else {}
                raise _Fault(str(detail.get("name") or ""),
                             str(detail.get("message") or error.get("message") or ""))
            return answer.get("result")
        payload = _Marshaller("utf-8", allow_none=True).dumps(tuple(args))
        body = (f"<?xml version='1.0'?>\n<methodCall>\n<methodName>{method}</methodName>\n"
                f"{payload}</methodCall>\n").encode()
        status, headers, data = self._post(f"/xmlrpc/2/{service}", body,
                                           {"Content-Type": "text/xml"})
        if status != 200:
            raise _Fault("", _snippet(data), status, _retry_after(headers))
        unmarshaller = _Unmarshaller(use_builtin_types=True)
        parser = xmlrpc.client.ExpatParser(unmarshaller)
        try:
            parser.feed(data)
            parser.close()
            return unmarshaller.close()[0]
        except xmlrpc.client.Fault as fault:
            raise _from_fault(fault) from None
        except Exception as exc:  # expat errors, an empty answer
            raise _Fault("BadAnswer", f"not an XML-RPC answer ({exc}): {_snippet(data)}",
                         status) from None

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json, text/xml", **headers}
        try:
            response = self._http().request("POST", self.base + path, body=body, headers=headers,
                                            redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            raise TransientError(f"Odoo at {_origin(self.base)} unreachable: {network_reason(exc)}"
                                 ) from exc
        return response.status, response.headers, response.data

    @staticmethod
    def _loads(data: bytes) -> Any:
        try:
            return json.loads(data, parse_float=Decimal)
        except ValueError as exc:
            raise _Fault("BadAnswer", f"not JSON: {_snippet(data)}", 200) from exc

    def _http(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                self._pool = pool(connect_timeout=min(10.0, self.settings["timeout"]),
                                  timeout=self.settings["timeout"], verify_tls=self.settings["verify_tls"])
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None


def _from_fault(fault: xmlrpc.client.Fault) -> _Fault:
    """An XML-RPC Fault as (exception name, message); code 1 carries a traceback."""
    code, text = fault.faultCode, str(fault.faultString or "")
    if code in _FAULT_NAMES:
        return _Fault(_FAULT_NAMES[code], text)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        match = _EXC_LINE.match(line)
        if match:
            return _Fault(match.group(1), match.group(2))
    return _Fault("", lines[-1] if lines else f"fault {code}")


@dataclass
class _Want:
    """One sale order line the order needs: its kind and the values to write."""

    kind: str  # product | discount | shipping | note
    vals: dict[str, Any]


class OdooConnector(Connector):
    """Book orders into Odoo as sale orders (see the module docstring for the whole mapping).

    Update: lines rewritten in place; invoiced orders get a credit note and a new invoice (or a
    PermanentError with ``invoiced_changes: refuse``). Cancel: ``action_cancel``; posted
    invoices are credited first (or PermanentError: credit and cancel by hand).
    """

    kind = "odoo"
    title = "Odoo (sale orders and invoices)"
    Config = OdooConfig

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:  # idempotent on a loaded config; fills defaults on a raw one
            self.settings: dict[str, Any] = OdooConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages}; "
                                 "fix it under Connectors") from exc
        self.client = _Client(self.settings)
        self._cache: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"<OdooConnector {self.name} {self.settings['protocol']} {_origin(self.client.base)}>"

    # --- the contract --------------------------------------------------------------------
    def check(self) -> None:
        """Sign in and read sale orders (proves the Sales app and the user's rights).

        Raises: TransientError if unreachable, PermanentError for credentials, database, rights.
        """
        if self.settings["protocol"] == "json2":
            self._call("sign in", "res.users", "context_get")
        else:
            self._version()
            self._guard("sign in", self.client.uid)
        self._call("read sale orders", "sale.order", "search_count", domain=[["id", "=", 0]])

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Make Odoo hold this order version: create, or update in place; confirm; invoice.

        Raises: TransientError, PermanentError, MissingMapping, IdentityReview.
        """
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        so = self._find(order)
        if so is not None and so["state"] == "cancel":
            if ctx.action == "create":  # booked before and cancelled in Odoo since: once is once
                return self._result(so, created=False)
            raise PermanentError(
                f"{so['name']} ({_label(order)}) is cancelled in Odoo, so this change was not "
                f"booked; set it back to quotation in Odoo and replay, or skip this delivery")
        if so is None and ctx.action == "update":
            raise PermanentError(
                f"{_label(order)} was booked as {ctx.reference} but no sale order with customer "
                f"reference {self._ref(order)!r} is in Odoo any more; restore it (or book the order "
                "by hand) and skip this delivery")
        wants = self._plan(order, ctx)  # every mapping before any write: parks without side effect
        links: tuple[Link, ...] = ()
        created = so is None
        if so is None:
            partner, invoice_to, ship_to, links = self._customer(order, ctx)
            so = self._create_order(order, partner, invoice_to, ship_to, wants)
        self._sync(so, order, wants, ctx)
        so = self._read_order(so["id"])
        if so["state"] in ("draft", "sent"):
            self._call(f"confirm {so['name']}", "sale.order", "action_confirm", [so["id"]])
            so = self._read_order(so["id"])
        self._invoice(so)
        return self._result(self._read_order(so["id"]), created=created, links=links)

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Cancel the sale order; posted invoices get a credit note first (or PermanentError).

        Raises: TransientError, PermanentError.
        """
        so = self._find(order)
        if so is None:
            raise PermanentError(
                f"cannot cancel {_label(order)}: no sale order with customer reference "
                f"{self._ref(order)!r} is in Odoo (booked as {ctx.reference or 'unknown'}); check "
                "Odoo and cancel by hand if it is there under another reference")
        if so["state"] != "cancel":
            moves = self._moves(so)
            posted = self._open_invoices(moves)
            if posted and self.settings["invoiced_changes"] == "refuse":
                raise PermanentError(
                    f"{so['name']} ({_label(order)}) has posted invoice(s) "
                    f"{', '.join(m['name'] for m in posted)}: Odoo cancels an invoiced order only "
                    f"after a credit note; add a credit note in Odoo, then cancel {so['name']} by "
                    "hand (or set invoiced_changes: credit_note on the connector and replay)")
            if posted:
                self._credit(so, posted, f"{_label(order)} cancelled in the channel")
            if self._locked(so):
                self._call(f"unlock {so['name']}", "sale.order", "action_unlock", [so["id"]])
            self._call(f"cancel {so['name']}", "sale.order", "action_cancel", [so["id"]],
                       context={"disable_cancel_warning": True})
            so = self._read_order(so["id"])
            if so["state"] != "cancel":
                raise PermanentError(f"Odoo did not cancel {so['name']} (state {so['state']}); "
                                     "cancel it by hand")
        return self._result(so, created=False)

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The reference of a complete booking; None when absent or left half-way (push resumes).

        Raises: TransientError, PermanentError.
        """
        so = self._find(order)
        if so is None or so["state"] in ("draft", "sent"):
            return None
        moves = self._moves(so)
        if so["state"] != "cancel" and not self._invoiced_enough(so, moves):
            return None
        return self._reference(so, moves)

    def close(self) -> None:
        self.client.close()

    # --- finding the order ---------------------------------------------------------------
    def _ref(self, order: Mapping[str, Any]) -> str:
        return self.settings["reference_format"].format(
            external_id=order["external_id"], channel=order.get("channel") or "",
            number=order.get("number") or "")

    def _order_fields(self) -> list[str]:
        return [*_ORDER_FIELDS, "locked"] if self._version() >= 17 else list(_ORDER_FIELDS)

    def _find(self, order: Mapping[str, Any]) -> dict[str, Any] | None:
        ref = self._ref(order)
        rows = self._call(f"look up {_label(order)}", "sale.order", "search_read",
                          domain=[["client_order_ref", "=", ref]], fields=self._order_fields(),
                          order="id asc")
        live = [r for r in rows if r["state"] != "cancel"]
        if len(live) > 1:
            raise PermanentError(
                f"{len(live)} sale orders carry customer reference {ref!r} in Odoo "
                f"({', '.join(r['name'] for r in live)}); cancel the duplicates, then replay")
        if live:
            return live[0]
        return rows[-1] if rows else None

    def _read_order(self, so_id: int) -> dict[str, Any]:
        rows = self._call("read the sale order", "sale.order", "read", [so_id],
                          fields=self._order_fields())
        if not rows:
            raise PermanentError(f"sale order {so_id} vanished from Odoo while booking; replay")
        return rows[0]

    def _locked(self, so: Mapping[str, Any]) -> bool:
        return bool(so.get("locked")) or so["state"] == "done"  # "done" is 16's locked state

    # --- what the order needs ------------------------------------------------------------
    def _plan(self, order: Mapping[str, Any], ctx: PushContext) -> list[_Want]:
        """The order's lines as Odoo sale order lines, every product and tax resolved."""
        included = bool(order.get("prices_include_tax"))
        taxfield = self._tax_field()
        products = resolve_products(order["lines"], ctx, connector=self.name, find=self._product)
        digits = self._price_digits()
        wants: list[_Want] = []

        def add(kind: str, **vals: Any) -> None:
            wants.append(_Want(kind, {"sequence": 10 * (len(wants) + 1), **vals}))

        for line in order["lines"]:
            sku = line.get("sku") or line.get("name")
            if _places(line["unit_price"]) > digits:
                raise PermanentError(
                    f"the unit price {line['unit_price']} of SKU {sku} in {_label(order)} has more "
                    f"decimals than Odoo's 'Product Price' accuracy ({digits}); raise it under "
                    "Settings > Technical > Decimal Accuracy, then replay")
            taxes = self._taxes(line.get("taxes") or [], ctx, included, order)
            label = line.get("name") or sku
            add("product", product_id=int(products[sku]), name=label,
                product_uom_qty=line["quantity"], price_unit=line["unit_price"],
                discount=Decimal(0), **{taxfield: [[6, 0, taxes]]})
            if line.get("discount"):  # after the line, with its taxes: as the channel discounted
                add("discount", product_id=self._special("discount_product", ctx),
                    name=f"Discount on {label}", product_uom_qty=Decimal(1),
                    price_unit=-line["discount"], discount=Decimal(0),
                    **{taxfield: [[6, 0, taxes]]})
        for discount in order.get("discounts") or []:
            if discount["amount"]:
                add("discount", product_id=self._special("discount_product", ctx),
                    name=f"Discount {discount.get('code') or ''}".strip(),
                    product_uom_qty=Decimal(1), price_unit=-discount["amount"],
                    discount=Decimal(0), **{taxfield: [[6, 0, []]]})
        for shipping in order.get("shipping") or []:
            method = shipping.get("method")
            linked = mapped(ctx, "shipping", method, connector=self.name, default="")
            product = int(linked) if linked else self._special("shipping_product", ctx)
            taxes = self._taxes(shipping.get("taxes") or [], ctx, included, order)
            add("shipping", product_id=product, name=f"Shipping: {method}" if method else "Shipping",
                product_uom_qty=Decimal(1), price_unit=shipping["amount"], discount=Decimal(0),
                **{taxfield: [[6, 0, taxes]]})
        if order.get("note"):
            add("note", display_type="line_note", name=order["note"])
        return wants

    def _product(self, code: str) -> str | None:
        rows = self._call(f"find product {code}", "product.product", "search_read",
                          domain=[["default_code", "=", code]], fields=["id"], limit=3)
        if len(rows) > 1:
            raise MissingMapping(
                f"missing mapping: SKU {code} matches {len(rows)} products in {self.name} "
                f"({', '.join(str(r['id']) for r in rows)}); map the right one with `broker "
                f"mappings add {self.name} product {code} PRODUCT_ID`", kind="product", key=code)
        return str(rows[0]["id"]) if rows else None

    def _special(self, setting: str, ctx: PushContext) -> int:
        """The discount or shipping product: a product link on its code, else by default_code."""
        code = self.settings[setting]
        key = ("special", code)
        if key not in self._cache or code in ctx.links.product:
            found = resolve_products([{"sku": code}], ctx, connector=self.name, find=self._product)
            self._cache[key] = int(found[code])
        return self._cache[key]

    def _tax_field(self) -> str:
        """sale.order.line's taxes: tax_id up to 18.0, tax_ids since saas-18.1 (odoo#186869)."""
        if "taxfield" not in self._cache:
            found = self._call("read sale order line fields", "sale.order.line", "fields_get",
                               allfields=["tax_id", "tax_ids"], attributes=["type"])
            self._cache["taxfield"] = "tax_ids" if "tax_ids" in found else "tax_id"
        return self._cache["taxfield"]

    def _price_digits(self) -> int:
        if "digits" not in self._cache:
            rows = self._call("read the price accuracy", "decimal.precision", "search_read",
                              domain=[["name", "=", "Product Price"]], fields=["digits"])
            self._cache["digits"] = int(rows[0]["digits"]) if rows else 2
        return self._cache["digits"]

    def _version(self) -> int:
        return self._guard("read the server version", self.client.version)

    # --- taxes ---------------------------------------------------------------------------
    def _taxes(self, taxes: Iterable[Mapping[str, Any]], ctx: PushContext, included: bool,
               order: Mapping[str, Any]) -> list[int]:
        """account.tax ids for the channel's taxes: a tax mapping, else the tax of that rate."""
        ids: list[int] = []
        for tax in taxes:
            rate = tax.get("rate")
            key = tax.get("name") or (f"{_percent(rate)}%" if rate is not None else None)
            linked = mapped(ctx, "tax", key, connector=self.name, default="")
            if not linked and not tax.get("amount") and not rate:
                continue  # an unmapped zero tax changes nothing
            tax_id = int(linked) if linked else self._tax_by_rate(key, rate, included)
            self._verify_tax(tax_id, key, rate, included, order)
            if tax_id not in ids:
                ids.append(tax_id)
        return ids

    def _tax_by_rate(self, key: str | None, rate: Decimal | None, included: bool) -> int:
        label = key or "unnamed tax"
        how = "included in" if included else "excluded from"
        hint = (f"create it in Odoo or map it with `broker mappings add {self.name} tax "
                f"'{label}' ACCOUNT_TAX_ID`")
        if rate is None:
            raise MissingMapping(f"missing mapping: tax {label!r} has no rate and no mapping in "
                                 f"{self.name}; {hint}", kind="tax", key=label)
        cached = ("taxes", _percent(rate))
        if cached not in self._cache:
            domain: list[Any] = [["type_tax_use", "=", "sale"], ["amount_type", "=", "percent"],
                                 ["amount", "=", _percent(rate)]]
            if self.settings.get("company_id"):
                domain.append(["company_id", "=", self.settings["company_id"]])
            rows = self._call(f"find the {_percent(rate)}% sale tax", "account.tax", "search_read",
                              domain=domain, fields=["name", "amount", "amount_type",
                                                     "price_include", "type_tax_use"])
            for row in rows:
                self._cache[("tax", row["id"])] = row
            self._cache[cached] = rows
        rows = self._cache[cached]
        fitting = [r for r in rows if bool(r.get("price_include")) == included]
        if len(fitting) > 1:
            named = [r for r in fitting if str(r.get("name") or "").lower() == label.lower()]
            fitting = named if len(named) == 1 else fitting
        if len(fitting) == 1:
            return int(fitting[0]["id"])
        self._cache.pop(cached, None)  # parked: read Odoo afresh once the admin acted
        if fitting:
            raise MissingMapping(
                f"missing mapping: tax {label!r} ({_percent(rate)}%) matches {len(fitting)} sale "
                f"taxes in {self.name} ({', '.join(str(r['id']) for r in fitting)}); map the right "
                f"one with `broker mappings add {self.name} tax '{label}' ACCOUNT_TAX_ID`",
                kind="tax", key=label)
        raise MissingMapping(
            f"missing mapping: no active {_percent(rate)}% sale tax with the price {how} it in "
            f"{self.name} for tax {label!r}; {hint}", kind="tax", key=label)

    def _verify_tax(self, tax_id: int, key: str | None, rate: Decimal | None, included: bool,
                    order: Mapping[str, Any]) -> None:
        """A mapped tax must compute what the channel charged, else totals cannot match."""
        for fresh in (False, True):  # a cached tax that looks wrong is read again before failing
            info = self._tax_info(tax_id, fresh)
            problem = _tax_problem(info, rate, included)
            if problem is None:
                return
        raise PermanentError(
            f"tax {key!r} of {_label(order)} is booked as account.tax {tax_id} "
            f"({info.get('name', '?')}) but {problem}; map it to the right tax with `broker "
            f"mappings add {self.name} tax '{key}' ACCOUNT_TAX_ID` (or fix the tax in Odoo), "
            "then replay")

    def _tax_info(self, tax_id: int, fresh: bool) -> dict[str, Any]:
        key = ("tax", tax_id)
        if fresh or key not in self._cache:
            rows = self._call(f"read account.tax {tax_id}", "account.tax", "search_read",
                              domain=[["id", "=", tax_id]],
                              fields=["name", "amount", "amount_type", "price_include",
                                      "type_tax_use"])
            self._cache[key] = rows[0] if rows else {"missing": True}
        return self._cache[key]

    # --- the customer --------------------------------------------------------------------
    def _customer(self, order: Mapping[str, Any], ctx: PushContext
                  ) -> tuple[int, int, int, tuple[Link, ...]]:
        """(partner, invoice address, delivery address, links learned)."""
        anchors = self.settings["customer_anchors"]
        keys = customer_keys(order, anchors)
        key = next((k for k in keys if k in ctx.links.customer), None)
        partner = int(ctx.links.customer[key]) if key else None
        if key and partner is not None and not self._call(
                "check the linked customer", "res.partner", "search_count",
                domain=[["id", "=", partner]], context={"active_test": False}):
            raise IdentityReview(
                f"identity review: {key} is linked to partner {partner}, which no longer exists "
                f"in {self.name}; link the right one with `broker mappings add {self.name} "
                f"customer {key} PARTNER_ID`", kind="customer", key=key)
        ref = self._partner_ref(order)
        if partner is None:  # the partner an earlier attempt created, its answer lost
            rows = self._call("look up the customer", "res.partner", "search_read",
                              domain=[["ref", "=", ref]], fields=["id"], limit=1)
            partner = int(rows[0]["id"]) if rows else None
        if partner is None:
            found = resolve_customer(order, ctx, anchors=anchors, search_by_email=self._by_email)
            partner = int(found) if found else None
        billing = order.get("billing_address") or {}
        shipping = order.get("shipping_address") or billing
        if partner is None:
            partner = self._new_partner(order, ref, billing, shipping)
            children = self._call("read the new customer's addresses", "res.partner",
                                  "search_read", domain=[["parent_id", "=", partner]],
                                  fields=["type"])
            by_type = {r["type"]: int(r["id"]) for r in children}
            invoice_to, ship_to = by_type.get("invoice", partner), by_type.get("delivery", partner)
        else:
            invoice_to = self._address(partner, "invoice", billing)
            ship_to = self._address(partner, "delivery", shipping)
        return partner, invoice_to, ship_to, customer_links(order, str(partner), anchors)

    def _partner_ref(self, order: Mapping[str, Any]) -> str:
        customer = order.get("customer") or {}
        if customer.get("external_id") and "customer_id" in self.settings["customer_anchors"]:
            return customer_keys(order, ["customer_id"])[0]
        return f"order:{order.get('channel') or 'unknown'}:{order['external_id']}"

    def _by_email(self, email: str) -> list[str]:
        # =ilike is SQL ILIKE as is: escape its wildcards, or "a_b@x" also matches "axb@x"
        pattern = email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._call("look up the customer by email", "res.partner", "search_read",
                          domain=[["email", "=ilike", pattern], ["type", "=", "contact"]],
                          fields=["id"], limit=10, order="id asc")
        return [str(r["id"]) for r in rows]

    def _new_partner(self, order: Mapping[str, Any], ref: str, billing: Mapping[str, Any],
                     shipping: Mapping[str, Any]) -> int:
        customer = order.get("customer") or {}
        person = f"{customer.get('first_name') or ''} {customer.get('last_name') or ''}".strip()
        name = (person or billing.get("name") or customer.get("company") or customer.get("email")
                or f"Customer of {_label(order)}")
        vals: dict[str, Any] = _clean({
            "name": name, "email": customer.get("email"), "phone": customer.get("phone"),
            "ref": ref, "vat": customer.get("tax_id"), "company_name": customer.get("company"),
            "type": "contact", **self._address_vals(billing)})
        children = [[0, 0, {"type": kind, **self._address_vals(address),
                            "name": address.get("name") or name}]
                    for kind, address in (("invoice", billing), ("delivery", shipping)) if address]
        if children:
            vals["child_ids"] = children
        return self._create("create the customer", "res.partner", vals)

    def _address(self, partner: int, kind: str, address: Mapping[str, Any]) -> int:
        """An existing child contact of `kind` at this address, else a new one."""
        if not address:
            return partner
        vals = self._address_vals(address)
        domain = [["parent_id", "=", partner], ["type", "=", kind]] + [
            [f, "=", vals.get(f, False)] for f in ("street", "zip", "city", "country_id")]
        rows = self._call(f"look up the {kind} address", "res.partner", "search_read",
                          domain=domain, fields=["id"], limit=1)
        if rows:
            return int(rows[0]["id"])
        return self._create(f"create the {kind} address", "res.partner", {
            "parent_id": partner, "type": kind, "name": address.get("name") or False, **vals})

    def _address_vals(self, address: Mapping[str, Any]) -> dict[str, Any]:
        country = self._country(address.get("country")) if address.get("country") else None
        state = self._state(country, address.get("region")) if country and address.get("region") \
            else None
        return _clean({"street": address.get("line1"), "street2": address.get("line2"),
                       "city": address.get("city"), "zip": address.get("postal_code"),
                       "phone": address.get("phone"), "country_id": country, "state_id": state})

    def _country(self, code: str) -> int | None:
        key = ("country", code)
        if key not in self._cache:
            rows = self._call(f"find country {code}", "res.country", "search_read",
                              domain=[["code", "=", code]], fields=["id"], limit=1)
            self._cache[key] = int(rows[0]["id"]) if rows else None
        return self._cache[key]

    def _state(self, country: int, region: str) -> int | None:
        key = ("state", country, region)
        if key not in self._cache:
            rows = self._call(f"find region {region}", "res.country.state", "search_read",
                              domain=[["country_id", "=", country], "|", ["code", "=", region],
                                      ["name", "=ilike", region]], fields=["id"], limit=2)
            self._cache[key] = int(rows[0]["id"]) if len(rows) == 1 else None
        return self._cache[key]

    # --- the sale order ------------------------------------------------------------------
    def _create_order(self, order: Mapping[str, Any], partner: int, invoice_to: int,
                      ship_to: int, wants: list[_Want]) -> dict[str, Any]:
        vals: dict[str, Any] = {
            "partner_id": partner, "partner_invoice_id": invoice_to,
            "partner_shipping_id": ship_to, "client_order_ref": self._ref(order),
            "origin": f"{order.get('channel') or ''} {order.get('number') or ''}".strip()
            or order["external_id"],
            "order_line": [[0, 0, want.vals] for want in wants]}
        if order.get("placed_at"):
            vals["date_order"] = order["placed_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        pricelist = self.settings["pricelists"].get(order["currency"])
        if pricelist:
            vals["pricelist_id"] = pricelist
        if self.settings.get("company_id"):
            vals["company_id"] = self.settings["company_id"]
        so_id = self._create(f"create the sale order of {_label(order)}", "sale.order", vals)
        so = self._read_order(so_id)
        currency = so["currency_id"][1] if so.get("currency_id") else "?"
        if currency != order["currency"]:
            self._call(f"remove quotation {so['name']}", "sale.order", "unlink", [so_id])
            raise PermanentError(
                f"Odoo prices {_label(order)} in {currency} (the customer's pricelist) but the "
                f"order is in {order['currency']}; add pricelists: {{{order['currency']}: "
                "PRICELIST_ID} (a pricelist in that currency) to the connector, then replay")
        return so

    def _sync(self, so: dict[str, Any], order: Mapping[str, Any], wants: list[_Want],
              ctx: PushContext) -> None:
        """Make the order's lines say what this version says; book the rounding difference."""
        taxfield = self._tax_field()
        lines = self._call(f"read the lines of {so['name']}", "sale.order.line", "read",
                           so["order_line"], fields=[*_LINE_FIELDS, taxfield])
        adjustments = [ln for ln in lines if ln["name"] == ADJUSTMENT]
        others = [ln for ln in lines if ln["name"] != ADJUSTMENT]
        draft = so["state"] in ("draft", "sent")
        commands = _pair(others, wants, taxfield, deletable=draft)
        old = sum((_dec(ln["price_subtotal"]) for ln in adjustments), Decimal(0))
        total, places = order["totals"]["total"], _places(order["totals"]["total"])
        if not commands:
            new = total - (_money(so["amount_total"], places) - old)
            if new == old and len(adjustments) <= 1:
                return
        relock = False
        if not draft:
            self._before_change(so, order)
            relock = self._locked(so)
            if relock:
                self._call(f"unlock {so['name']}", "sale.order", "action_unlock", [so["id"]])
        try:
            if commands:
                self._call(f"write the lines of {so['name']}", "sale.order", "write", [so["id"]],
                           vals={"order_line": commands})
            current = self._read_order(so["id"])
            odoo_total = _money(current["amount_total"], places) - old
            new = total - odoo_total
            self._check_difference(current, order, new, odoo_total, draft=draft)
            adjust: list[Any] = []
            for extra in adjustments[1:]:
                adjust.append([2, extra["id"], 0] if draft else
                              [1, extra["id"], {"price_unit": Decimal(0)}])
            if adjustments:
                if _dec(adjustments[0]["price_unit"]) != new:
                    adjust.append([1, adjustments[0]["id"], {"price_unit": new}])
            elif new:
                adjust.append([0, 0, {"product_id": self._special("discount_product", ctx),
                                      "name": ADJUSTMENT, "sequence": 10 * (len(wants) + 1),
                                      "product_uom_qty": Decimal(1), "price_unit": new,
                                      "discount": Decimal(0), taxfield: [[6, 0, []]]}])
            if adjust:
                self._call(f"book the rounding difference on {so['name']}", "sale.order", "write",
                           [so["id"]], vals={"order_line": adjust})
        except Exception:
            if relock:
                try:
                    self._lock(so)
                except ConnectorError as exc:  # the first error is the one to report
                    log.warning("could not lock %s again: %s", so["name"], exc)
            raise
        if relock:
            self._lock(so)

    def _lock(self, so: Mapping[str, Any]) -> None:
        method = "action_lock" if self._version() >= 17 else "action_done"  # 16: "done" = locked
        self._call(f"lock {so['name']} again", "sale.order", method, [so["id"]])

    def _check_difference(self, so: Mapping[str, Any], order: Mapping[str, Any],
                          difference: Decimal, odoo_total: Decimal, *, draft: bool) -> None:
        """Refuse a difference larger than rounding: one minor unit per taxed line."""
        places = _places(order["totals"]["total"])
        unit = Decimal(1).scaleb(-places)
        taxed = len(order["lines"]) + len(order.get("shipping") or [])
        if abs(difference) <= unit * max(1, taxed):
            return
        tax = order["totals"].get("tax")
        raise PermanentError(
            f"Odoo computes {odoo_total} {order['currency']} for {so['name']} ({_label(order)}, tax "
            f"{_money(so['amount_tax'], places)}) but the order's total is "
            f"{order['totals']['total']} (tax {tax if tax is not None else 'not given'}); the "
            "difference is more than rounding: check the tax mappings of the connector (rate and "
            "price inclusion) and the taxes in Odoo, then replay (" + (
                "the order stays a quotation until then)" if draft else
                "the new lines are written but not invoiced until then)"))

    def _before_change(self, so: Mapping[str, Any], order: Mapping[str, Any]) -> None:
        """A confirmed order is about to change: credit posted invoices, cancel draft ones."""
        moves = self._moves(so)
        posted = self._open_invoices(moves)
        if posted and self.settings["invoiced_changes"] == "refuse":
            raise PermanentError(
                f"{so['name']} ({_label(order)}) changed in the channel but is invoiced "
                f"({', '.join(m['name'] for m in posted)}); Odoo changes an invoiced order only "
                "through a credit note: add a credit note, edit the order and invoice it again "
                "by hand, then skip this delivery (or set invoiced_changes: credit_note and replay)")
        if posted:
            self._credit(so, posted, f"{_label(order)} changed in the channel")
        drafts = [m["id"] for m in moves if m["state"] == "draft" and m["move_type"] == "out_invoice"]
        if drafts:
            self._call(f"cancel the draft invoices of {so['name']}", "account.move",
                       "button_cancel", drafts)

    # --- invoices ------------------------------------------------------------------------
    def _moves(self, so: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not so.get("invoice_ids"):
            return []
        return self._call(f"read the invoices of {so['name']}", "account.move", "read",
                          so["invoice_ids"], fields=_MOVE_FIELDS)

    @staticmethod
    def _open_invoices(moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Posted customer invoices no posted credit note reverses yet."""
        reversed_ids = {m["reversed_entry_id"][0] for m in moves
                        if m["move_type"] == "out_refund" and m["state"] == "posted"
                        and m.get("reversed_entry_id")}
        return [m for m in moves if m["move_type"] == "out_invoice" and m["state"] == "posted"
                and m["id"] not in reversed_ids]

    def _invoiced_enough(self, so: Mapping[str, Any], moves: list[dict[str, Any]]) -> bool:
        mode = self.settings["invoice"]
        if mode == "none" or so["state"] not in ("sale", "done"):
            return True
        if so.get("invoice_status") == "to invoice":
            return False
        return mode != "post" or not any(m["state"] == "draft" for m in moves)

    def _invoice(self, so: dict[str, Any]) -> None:
        """Invoice what Odoo says is to invoice (wizard "delivered"), then post it."""
        mode = self.settings["invoice"]
        if mode == "none" or so["state"] not in ("sale", "done"):
            return
        post = mode == "post"
        drafts = [m["id"] for m in self._moves(so) if m["state"] == "draft"]
        if drafts and post:
            self._call(f"post the invoices of {so['name']}", "account.move", "action_post", drafts)
            so = self._read_order(so["id"])
        if so.get("invoice_status") != "to invoice":
            return
        before = set(so.get("invoice_ids") or [])
        context = {"active_model": "sale.order", "active_ids": [so["id"]], "active_id": so["id"]}
        wizard = self._create(f"start invoicing {so['name']}", "sale.advance.payment.inv",
                              {"advance_payment_method": "delivered",
                               "sale_order_ids": [[6, 0, [so["id"]]]]}, context=context)
        self._call(f"invoice {so['name']}", "sale.advance.payment.inv", "create_invoices", [wizard],
                   context=context)
        so = self._read_order(so["id"])
        new = [i for i in so.get("invoice_ids") or [] if i not in before]
        if new and post:
            self._call(f"post the invoice of {so['name']}", "account.move", "action_post", new)

    def _credit(self, so: Mapping[str, Any], invoices: list[dict[str, Any]], reason: str) -> None:
        """Reverse posted invoices with posted credit notes (``account.move.reversal``).

        A credit note an interrupted attempt left in draft is posted, not issued twice. Posted
        whatever `invoice` says: it answers a posted invoice, and a draft one would be cancelled
        with the order's other drafts by action_cancel.
        """
        ids = [m["id"] for m in invoices]
        pending = self._draft_credit_notes(ids)
        todo = [m for m in invoices
                if m["id"] not in {n["reversed_entry_id"][0] for n in pending}]
        if todo:
            todo_ids = [m["id"] for m in todo]
            context = {"active_model": "account.move", "active_ids": todo_ids}
            vals: dict[str, Any] = {"move_ids": [[6, 0, todo_ids]], "reason": reason[:200]}
            if self._version() >= 17:
                method = "refund_moves"
            else:  # 16: one reverse_moves button, the credit method chosen on the wizard
                vals["refund_method"] = "refund"
                method = "reverse_moves"
            wizard = self._create(f"start the credit note of {so['name']}",
                                  "account.move.reversal", vals, context=context)
            self._call(f"credit {', '.join(m['name'] for m in todo)}", "account.move.reversal",
                       method, [wizard], context=context)
            pending = self._draft_credit_notes(ids)
        if pending:
            self._call("post the credit notes", "account.move", "action_post",
                       [n["id"] for n in pending])

    def _draft_credit_notes(self, invoice_ids: list[int]) -> list[dict[str, Any]]:
        return self._call("find the credit notes", "account.move", "search_read",
                          domain=[["reversed_entry_id", "in", invoice_ids],
                                  ["state", "=", "draft"], ["move_type", "=", "out_refund"]],
                          fields=["id", "reversed_entry_id"])

    # --- results -------------------------------------------------------------------------
    def _reference(self, so: Mapping[str, Any], moves: list[dict[str, Any]]) -> str:
        names = [m["name"] for m in self._open_invoices(moves)]
        return f"{so['name']} / {', '.join(names)}" if names else str(so["name"])

    def _result(self, so: Mapping[str, Any], *, created: bool, links: tuple[Link, ...] = ()
                ) -> PushResult:
        moves = self._moves(so)
        details = {"sale_order_id": so["id"], "sale_order": so["name"], "state": so["state"],
                   "amount_total": str(_dec(so["amount_total"])), "created": created,
                   "invoices": [{"id": m["id"], "name": m["name"], "type": m["move_type"],
                                 "state": m["state"]} for m in moves]}
        return PushResult(self._reference(so, moves), details=details, links=links)

    # --- calling Odoo --------------------------------------------------------------------
    def _create(self, what: str, model: str, vals: Mapping[str, Any], *,
                context: Mapping[str, Any] | None = None) -> int:
        result = self._call(what, model, "create", vals_list=dict(vals), context=context)
        return int(result[0] if isinstance(result, list) else result)

    def _call(self, what: str, model: str, method: str, ids: Sequence[int] | None = None, *,
              context: Mapping[str, Any] | None = None, **params: Any) -> Any:
        """One ORM call; an error answer becomes a Transient/PermanentError saying `what`."""
        return self._guard(what, lambda: self.client.call(model, method, ids, context=context,
                                                          **params))

    def _guard(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except _Fault as fault:
            raise self._error(fault, what) from None
        except TransientError as exc:
            raise TransientError(self._redact(str(exc)), retry_after=exc.retry_after) from None

    def _error(self, fault: _Fault, what: str) -> Exception:
        name = fault.name.rsplit(".", 1)[-1]
        message = " ".join(self._redact(fault.message).split())[:400] or "(no message)"
        where = f"Odoo at {_origin(self.client.base)}"
        said = f"{where} answered {fault.status} " if fault.status else f"{where} "
        said += f"{fault.name or 'error'}: {message}" if fault.name else f"said: {message}"
        credentials = ("api_key" if self.settings["protocol"] == "json2"
                       else "username / api_key (password or API key)")
        if fault.status == 401 or name in ("AccessDenied", "Unauthorized"):
            return PermanentError(f"{said} (while trying to {what}); check {credentials} and "
                                  f"database of connector '{self.name}', then replay")
        if "database" in message.lower() and "does not exist" in message.lower():
            return PermanentError(f"{said} (while trying to {what}); check the database name of "
                                  f"connector '{self.name}'")
        if name in _TRANSIENT or fault.status in _RETRY_STATUS or "could not serialize" in message:
            return TransientError(f"{said} (while trying to {what}); will retry",
                                  retry_after=fault.retry_after)
        if name in ("AccessError", "Forbidden") or fault.status == 403:
            return PermanentError(f"{said} (while trying to {what}); give the Odoo user of "
                                  f"connector '{self.name}' the Sales and Invoicing rights, then "
                                  "replay")
        if name == "BadAnswer" or (fault.status is not None and 300 <= fault.status < 400):
            return PermanentError(f"{said} (while trying to {what}); this is not Odoo's "
                                  f"{self.settings['protocol']} endpoint (redirects are not "
                                  f"followed): check the url of connector '{self.name}' (https, "
                                  "no path) and its protocol")
        if name in _PERMANENT:
            return PermanentError(f"{said} (while trying to {what}); fix this in Odoo (or the "
                                  f"connector '{self.name}' config) and replay")
        if fault.status == 404 or name == "NotFound":
            hint = ("the URL, the database (X-Odoo-Database) and the protocol — JSON-2 needs Odoo "
                    "19; use jsonrpc or xmlrpc for Odoo 16-18 —" if self.settings["protocol"] ==
                    "json2" else "the URL")
            return PermanentError(f"{said} (while trying to {what}); check {hint} of connector "
                                  f"'{self.name}' and that the Sales and Invoicing apps are "
                                  "installed")
        if fault.status is None or fault.status >= 500 or fault.status == 200:
            # a server error (XML-RPC fault 1, JSON-RPC error, HTTP 5xx): often a restart or a
            # database hiccup; the broker's attempt limit dead-letters a lasting one
            return TransientError(f"{said} (while trying to {what}); will retry",
                                  retry_after=fault.retry_after)
        return PermanentError(f"{said} (while trying to {what}); fix this in Odoo (or the "
                              f"connector '{self.name}' config) and replay")

    def _redact(self, text: str) -> str:
        secret = self.settings.get("api_key") or ""
        return text.replace(secret, "***") if len(secret) >= 4 else text


# --- helpers -----------------------------------------------------------------------------
def _pair(existing: list[dict[str, Any]], wants: list[_Want], taxfield: str, *, deletable: bool
          ) -> list[Any]:
    """One2many commands turning `existing` lines into `wants`; [] when they already match.

    Lines pair by product (and description first), so a confirmed line is edited, not replaced:
    Odoo forbids deleting confirmed lines, so unpaired ones go to quantity 0 unless `deletable`.
    """
    pool = list(existing)
    paired: dict[int, dict[str, Any]] = {}
    for strict in (True, False):
        for i, want in enumerate(wants):
            if i in paired:
                continue
            for line in pool:
                if _key(line) == _want_key(want) and (not strict or line["name"] == want.vals["name"]):
                    paired[i] = line
                    pool.remove(line)
                    break
    commands: list[Any] = []
    for i, want in enumerate(wants):
        line = paired.get(i)
        if line is None:
            commands.append([0, 0, want.vals])
        elif not _same(line, want, taxfield):
            commands.append([1, line["id"], want.vals])
    for line in pool:
        if deletable or line.get("display_type"):
            commands.append([2, line["id"], 0])
        elif _dec(line["product_uom_qty"]):  # the price too: Odoo reprices on a qty change
            commands.append([1, line["id"], {"product_uom_qty": Decimal(0),
                                             "price_unit": _dec(line["price_unit"])}])
    return commands


def _key(line: Mapping[str, Any]) -> tuple[Any, Any]:
    product = line.get("product_id")
    return (product[0] if isinstance(product, list) else product or False,
            line.get("display_type") or False)


def _want_key(want: _Want) -> tuple[Any, Any]:
    return (want.vals.get("product_id") or False, want.vals.get("display_type") or False)


def _same(line: Mapping[str, Any], want: _Want, taxfield: str) -> bool:
    vals = want.vals
    if line["name"] != vals["name"]:
        return False
    if vals.get("display_type"):
        return True
    return (_dec(line["product_uom_qty"]) == vals["product_uom_qty"]
            and _dec(line["price_unit"]) == vals["price_unit"]
            and _dec(line["discount"]) == vals["discount"]
            and sorted(line.get(taxfield) or []) == sorted(vals[taxfield][0][2]))


def _tax_problem(info: Mapping[str, Any], rate: Decimal | None, included: bool) -> str | None:
    if info.get("missing"):
        return "that tax does not exist (or is archived) in Odoo"
    if info.get("type_tax_use") not in (None, "sale"):
        return f"it is a {info.get('type_tax_use')} tax, not a sale tax"
    if info.get("amount_type") != "percent":
        return None  # fixed, group or division taxes: trust the mapping; totals are checked after
    if rate is not None and _dec(info.get("amount")) != _percent(rate):
        return f"it is {_dec(info.get('amount')).normalize():f}% where the channel charged {_percent(rate)}%"
    if bool(info.get("price_include")) != included:
        return ("it is excluded from prices where the order's prices include tax" if included
                else "it is included in prices where the order's prices exclude tax")
    return None


def _percent(rate: Decimal) -> Decimal:
    value = (rate * 100).normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


def _dec(value: Any) -> Decimal:
    if value is None or value is False:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _money(value: Any, places: int) -> Decimal:
    return _dec(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _places(value: Decimal) -> int:
    return max(0, -int(value.as_tuple().exponent))


def _clean(vals: Mapping[str, Any]) -> dict[str, Any]:
    """Drop empty values: XML-RPC has no None, and Odoo reads a missing key as empty."""
    return {k: v for k, v in vals.items() if v is not None and v != ""}


def _label(order: Mapping[str, Any]) -> str:
    return f"order {order.get('number') or order.get('external_id')}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


def _snippet(data: bytes) -> str:
    text = re.sub(r"<[^>]+>", " ", data[:2000].decode("utf-8", "replace"))
    return " ".join(text.split())[:300] or "(empty body)"




def _retry_after(headers: Any) -> float | None:
    return retry_after(headers.get("Retry-After") if headers is not None else None)


__all__ = ["OdooConfig", "OdooConnector"]
