"""The `tryton` connector: book orders as Tryton sales over trytond's JSON-RPC.

Vendor documentation this follows:
- JSON-RPC, `common.db.login` and the `Session` authorization header (base64 of
  login:user_id:session): https://docs.tryton.org/projects/server/en/latest/topics/rpc.html
  (trytond 8 serves it at POST /<db>/rpc/, see trytond/protocols/dispatcher.py; older
  servers at POST /<db>/, so a 405 on the former switches to the latter).
- The sale workflow (draft, quotation, confirmed, processing, done; cancel from draft or
  quotation; "Handle Invoice/Shipment Exception" once documents exist):
  https://docs.tryton.org/latest/modules-sale/usage/index.html and
  https://discuss.tryton.org/t/status-exeption-of-invoice-and-shipment/3718
- Invoices, posting and the pay wizard (`account.invoice.pay`):
  http://docs.tryton.org/projects/modules-account-invoice/en/latest/usage/index.html
- Tax rounding per line or per document (account configuration `tax_rounding`), and why
  "document" rounding never matches per-line channel taxes exactly:
  https://discuss.tryton.org/t/improve-rounding-taxes-when-the-tax-rounding-field-is-set-to-document/1164
- How Tryton's own Shopify integration matches channel totals (a tax adjustment):
  tryton/tryton modules/web_shop_shopify/sale.py
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from decimal import ROUND_FLOOR, Decimal
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from marshmallow import ValidationError, fields, validate, validates_schema

from connectors.base import Connector, Link, PushContext, PushResult
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
from connectors.wire import pool

USER_AGENT = "fobo-broker/0.1"
OPEN_STATES = ("draft", "quotation", "confirmed")  # a sale Tryton still lets us change
WORKFLOWS = ("quotation", "confirmed", "processed")
log = logging.getLogger(__name__)


class TaxMapping(ConfigSchema):
    """A channel tax name and what books it: Tryton tax ids ("12" or "12,13"), or a product."""

    name = fields.String(required=True, validate=validate.Length(min=1))
    value = fields.String(required=True, validate=validate.Length(min=1))


class TrytonConfig(ConfigSchema):
    """Where the Tryton server is, who the broker is there, and how sales are booked.

    Products (`*_product`, and link values) are a product id or code. `workflow` is how far a
    sale goes: "quotation" (a person confirms it), "confirmed", or "processed" (invoice
    created). `taxes` maps channel tax names like links do, for when no `tax` link exists:
    to Tryton tax ids ("12" or "12,13") under tax_mode "tryton", to a product under "amounts".
    `accept_warnings` answers Tryton's "are you sure?" warnings with yes, as a person would.
    """

    url = fields.String(required=True, validate=validate.URL(schemes={"http", "https"},
                                                             require_tld=False))
    database = fields.String(required=True, validate=validate.Length(min=1))
    login = fields.String(required=True, validate=validate.Length(min=1))
    password = Secret(required=True, validate=validate.Length(min=1))
    timeout = fields.Float(load_default=60.0, validate=validate.Range(min=0, min_inclusive=False))
    connect_timeout = fields.Float(load_default=5.0,
                                   validate=validate.Range(min=0, min_inclusive=False))
    verify_tls = fields.Boolean(load_default=True)
    reference_prefix = fields.String(load_default="", validate=validate.Length(max=40))
    workflow = fields.String(load_default="processed", validate=validate.OneOf(WORKFLOWS))
    invoice_method = fields.String(load_default="order",
                                   validate=validate.OneOf(["order", "manual", "fulfillment"]))
    post_invoices = fields.Boolean(load_default=True)
    payment_method = fields.Integer(load_default=None, allow_none=True)
    accept_warnings = fields.Boolean(load_default=False)
    tax_mode = fields.String(load_default="tryton", validate=validate.OneOf(["tryton", "amounts"]))
    taxes = fields.List(fields.Nested(TaxMapping), load_default=list)
    tax_product = fields.String(load_default=None, allow_none=True)
    shipping_product = fields.String(load_default=None, allow_none=True)
    discount_product = fields.String(load_default=None, allow_none=True)
    adjustment_product = fields.String(load_default=None, allow_none=True)
    customer_anchors = anchors_field()

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("tax_mode") == "amounts" and not data.get("tax_product"):
            raise ValidationError({"tax_product": ["required when tax_mode is 'amounts'"]})
        url = urlsplit(data.get("url", ""))
        if "@" in (url.netloc or ""):
            raise ValidationError({"url": ["put credentials in login/password, not in the URL"]})
        if url.query or url.fragment or _rpc_suffix(url.path, data.get("database")):
            raise ValidationError({"url": [
                f"give the address trytond serves, e.g. {url.scheme}://{url.netloc}: remove "
                f"'{data['url'][len(url.scheme) + 3 + len(url.netloc):]}' (the database goes in "
                "'database'; the connector adds /<database>/rpc/ itself, and a web client "
                "address is not the server's)"]})


def _rpc_suffix(path: str, database: str | None) -> bool:
    """Whether a URL path names the database or the RPC endpoint (the connector adds both)."""
    parts = [p for p in path.split("/") if p]
    return bool(parts) and (parts[-1] in ("rpc", "index.html", "sao") or parts[-1] == database)


class _TrytonError(Exception):
    """An error Tryton answered inside a JSON-RPC response (not an HTTP failure)."""

    def __init__(self, kind: str, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.key = kind, message, key


def _encode(value: Any) -> Any:
    """trytond's JSON-RPC types (trytond/protocols/jsonrpc.py): Decimal and dates as objects."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"__class__": "datetime", "year": value.year, "month": value.month,
                "day": value.day, "hour": value.hour, "minute": value.minute,
                "second": value.second, "microsecond": value.microsecond}
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"],
                           obj["second"], obj.get("microsecond", 0))
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


class _Client:
    """One JSON-RPC session: logs in lazily, again once when the session expired (401)."""

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        self.settings, self.name = settings, name
        self.base = settings["url"].rstrip("/")
        self.origin = f"{urlsplit(self.base).scheme}://{urlsplit(self.base).netloc}"
        self.database = settings["database"]
        self.path = f"{self.base}/{quote(self.database, safe='')}/rpc/"
        self._pool: urllib3.PoolManager | None = None
        self._auth: str | None = None
        self.context: dict[str, Any] = {}
        self.user_id: int | None = None
        self._lock = threading.Lock()
        self._ids = 0

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.clear()
                self._pool = None
            self._auth = None

    def call(self, method: str, *params: Any, context: Mapping[str, Any] | None = None) -> Any:
        """Call a model/wizard method with the user's context appended, as Tryton clients do."""
        auth = self._session()
        try:
            return self._post(method, [*params, {**self.context, **(context or {})}], auth)
        except _Expired:
            with self._lock:
                if self._auth == auth:
                    self._auth = None
            auth = self._session()
            return self._post(method, [*params, {**self.context, **(context or {})}], auth)

    def _session(self) -> str:
        with self._lock:
            if self._auth is None:
                self._login()
            assert self._auth is not None
            return self._auth

    def _login(self) -> None:
        login, password = self.settings["login"], self.settings["password"]
        try:
            answer = self._post("common.db.login", [login, {"password": password}, "en"], None)
        except _Expired:
            answer = None
        if not answer:
            raise PermanentError(
                f"Tryton at {self.origin} refused the login of user '{login}' on database "
                f"'{self.database}': check login and password of connector '{self.name}' (and that "
                "the user is active)")
        user_id, session = answer[0], answer[1]
        token = base64.b64encode(f"{login}:{user_id}:{session}".encode()).decode()
        self._auth, self.user_id = f"Session {token}", int(user_id)
        self.context = {}
        prefs = self._post("model.res.user.get_preferences", [True, {}], self._auth)
        self.context = {k: v for k, v in prefs.items() if not k.endswith(".") and k != "locale"}

    def _http(self) -> urllib3.PoolManager:
        if self._pool is None:
            self._pool = pool(connect_timeout=self.settings["connect_timeout"],
                              timeout=self.settings["timeout"], verify_tls=self.settings["verify_tls"])
        return self._pool

    def _post(self, method: str, params: list[Any], auth: str | None) -> Any:
        self._ids += 1
        body = json.dumps({"id": self._ids, "method": method, "params": params},
                          default=_encode, separators=(",", ":")).encode()
        # trytond labels every large answer "Content-Encoding: gzip" but only compresses it
        # when the request accepts gzip (trytond/protocols/jsonrpc.py): so always accept it
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "Accept-Encoding": "gzip", "User-Agent": USER_AGENT}
        if auth:
            headers["Authorization"] = auth
        try:
            resp = self._http().request("POST", self.path, body=body, headers=headers,
                                        redirect=False)
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise TransientError(f"Tryton at {self.origin} unreachable ({method}): "
                                 f"{type(reason).__name__}: {reason}") from exc
        status = resp.status
        if status == 405 and self.path.endswith("/rpc/"):
            # trytond before /rpc/ existed answers JSON-RPC at /<db>/ (rpc.html above)
            self.path = self.path[: -len("rpc/")]
            return self._post(method, params, auth)
        if status == 401:
            raise _Expired()
        if status == 403:
            raise PermanentError(
                f"Tryton forbids {method} to user '{self.settings['login']}' (403): give the user "
                "the groups Sales and Accounting (or the access this call needs)")
        prefix = urlsplit(self.base).path.rstrip("/")
        if status == 405 or (status == 404 and prefix):
            # no JSON-RPC here: a reverse proxy's prefix that is wrong, or a page of the web client
            raise PermanentError(
                f"Tryton at {self.origin} answered {status} ({resp.reason or 'no JSON-RPC'}) to "
                f"POST {urlsplit(self.path).path}: url {self.base} of connector '{self.name}' is "
                f"not where trytond serves JSON-RPC. Set url to the server's address, e.g. "
                f"{self.origin}{'' if not prefix else ' (or the prefix your proxy really uses)'}, "
                "without the database name, /rpc or a web client page; the database goes in "
                "'database'")
        if status == 404:
            raise PermanentError(f"Tryton at {self.origin} has no database '{self.database}' "
                                 f"(404 on {method}): fix 'database' of connector '{self.name}'")
        if status == 429 or status >= 500:
            retry = resp.headers.get("Retry-After")
            raise TransientError(f"Tryton at {self.origin} answered {status} to {method}; "
                                 "will retry", retry_after=float(retry) if retry
                                 and retry.isdigit() else None)
        if status != 200:
            raise PermanentError(f"Tryton at {self.origin} answered {status} to {method}: "
                                 f"{resp.data[:300].decode(errors='replace')}")
        try:
            answer = json.loads(resp.data, object_hook=_decode)
        except ValueError as exc:
            raise TransientError(f"Tryton at {self.origin} sent no JSON for {method}; is 'url' the "
                                 "trytond server?") from exc
        error = answer.get("error") if isinstance(answer, dict) else None
        if error:
            raise _error(error)
        return answer.get("result") if isinstance(answer, dict) else None


class _Expired(Exception):
    """401: the session is gone (timeout, server restart) or the login was refused."""


def _error(error: Any) -> _TrytonError:
    """Tryton's error list: [kind, args] for its exceptions, [text, traceback] otherwise."""
    kind, args = [*error, None, None][:2] if isinstance(error, list) else (str(error), None)
    if kind == "UserError" and isinstance(args, list):
        message = " — ".join(str(a) for a in args[:2] if a)
        return _TrytonError("UserError", message)
    if kind == "UserWarning" and isinstance(args, list):
        return _TrytonError("UserWarning", " — ".join(str(a) for a in args[1:3] if a), key=args[0])
    if kind == "ConcurrencyException":
        return _TrytonError("ConcurrencyException", str(args))
    if kind == "LoginException":
        return _TrytonError("LoginException", str(args))
    return _TrytonError("ServerError", str(kind))


_ADDRESS_FIELDS = ("street", "postal_code", "city", "country", "subdivision", "party_name")
# Database errors trytond passes on as they are (its own retries exhausted, or a unique key it
# has no message for): PostgreSQL's and SQLite's words for a race that a later attempt can win.
_CONCURRENCY = re.compile(
    r"deadlock detected|could not serialize access|could not obtain lock|lock timeout|"
    r"lock_not_available|database is locked|database table is locked|"
    r"duplicate key value violates unique constraint|UNIQUE constraint failed", re.I)


_UNKNOWN = object()  # not read from Tryton yet (a place Tryton lacks is kept as None)


class _Reference:
    """Reference data read from Tryton (products by code or id, currencies, countries, regions),
    kept for `ttl` seconds so that pushes stop reading it again and again, yet an edit made in
    Tryton (a product made unsalable, a code moved to another product) counts within `ttl`.
    Products and currencies are kept only when found: one created in Tryton counts at once."""

    def __init__(self, ttl: float, clock: Any) -> None:
        self.ttl, self.clock = ttl, clock
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, missing: Any = None) -> Any:
        held = self._items.get(key)
        if held is None or self.clock() - held[0] >= self.ttl:
            return missing
        return held[1]

    def put(self, key: Any, value: Any) -> Any:
        self._items[key] = (self.clock(), value)
        return value

    def clear(self) -> None:
        self._items.clear()


def _label(order: Mapping[str, Any]) -> str:
    return f"order {order.get('number') or order['external_id']}"


def _addresses(order: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The invoice and shipment addresses: each stands in for the other when one is missing."""
    billing = order.get("billing_address") or order.get("shipping_address") or {}
    return billing, order.get("shipping_address") or billing


def _party_name(order: Mapping[str, Any]) -> str:
    customer = order.get("customer") or {}
    billing, _ = _addresses(order)
    return (customer.get("company")
            or f"{customer.get('first_name') or ''} {customer.get('last_name') or ''}".strip()
            or billing.get("company") or billing.get("name") or customer.get("email")
            or f"Customer of {_label(order)}")


def _numbered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines keep the order's order (Tryton sorts sale lines by sequence)."""
    return [{**row, "sequence": n} for n, row in enumerate(rows, 1)]


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


class TrytonConnector(Connector):
    """Each order becomes one Tryton sale whose `reference` is the order's external id.

    Booking: the party (customer link, else a party whose email contact mechanism matches,
    else a new party with its addresses), one sale line per order line by product code, a
    shipping line (product mapped per shipping method, default `shipping_product`), order
    discounts as negative lines of `discount_product`; then quote → confirm → process, so the
    invoice is created (invoice method "order"), posted (`post_invoices`), and paid with the
    mapped payment method when the order is paid (`payment_method`, or a `payment` link by
    gateway or method). The reference is "SALE_NUMBER / INVOICE_NUMBER".

    Exact money: a line discount is folded into the unit price, splitting the line when it
    does not divide evenly (3 x 19.99 - 0.01 → 2 x 19.99 + 1 x 19.98), so no rounding is
    needed. Taxes (`tax_mode`): "tryton" lets Tryton compute them from the Tryton taxes each
    channel tax name maps to (a `tax` link, else `taxes` in the config, else the delivery
    parks naming the tax); "amounts" books each channel tax as charged on a line of its
    product. The draft sale's total is then compared with the order's: a rounding gap of at
    most one minor unit per line is booked on `adjustment_product`; anything else (a wrong
    tax mapping, a rounding rule unlike the channel's) deletes the draft and dead-letters
    with both figures. Under "amounts", products that carry default customer taxes make
    Tryton warn when the invoice is posted (see `accept_warnings`).

    Customers: a party is reused only through a link, the identifier this connector gives the
    parties it creates (the channel's customer key, so an attempt that follows one whose answer
    was lost finds its party again), or a verified email (identity.py); an order without
    customer identity gets a new party. Addresses are reused when identical,
    added otherwise.

    Update: a sale Tryton still lets us change (draft, quotation, confirmed) is reset to draft,
    rewritten and advanced again. A processed sale cannot be edited in Tryton: if the new
    version books the same lines and total (only a status, a note or the payment changed), the
    connector writes a changed note to the sale's Comment (editable in every state) and posts
    and pays what is due; otherwise it raises PermanentError saying what to book by hand. A
    create that finds its sale already booked (the answer was lost) does the same, rewriting
    only when lines or total differ. Cancel: draft, quotation and confirmed
    sales are cancelled; a processed one raises PermanentError with the manual steps (cancel
    the invoice and shipments, handle the sale's exceptions). A cancelled order never booked
    is booked as a cancelled sale, so Tryton still knows of it.

    Settings: a line that needs a product setting that is empty or names no salable product
    (shipping_product, discount_product, adjustment_product, tax_product, `taxes`) parks the
    delivery (MissingSetting) before anything is written; saving the configuration resumes it.
    Errors: Tryton's refusals (UserError) dead-letter with its words after one repeat (a repeat
    that succeeds was a race on a unique key); concurrent access, locks and 5xx are retried.
    """

    kind = "tryton"
    title = "Tryton (JSON-RPC)"
    Config = TrytonConfig
    # One push at a time: trytond's SQLite backend takes no table lock (its lock() is a no-op,
    # trytond/backend/sqlite/database.py), so two workers posting at once drew the same invoice
    # number (5 duplicate pairs among 24 invoices posted by 4 workers, trytond 8.2) and the same
    # party code (8 of 32 pushes refused). On PostgreSQL trytond locks the sequence table
    # (LOCK ... NOWAIT) and answers 503 to the loser, which retries: no duplicates among 25
    # invoices posted by 2 then 4 workers, but 23 of 48 pushes had to retry. One at a time
    # avoids both.
    max_in_flight = 1
    # Measured against trytond 8.2: the kit's 2-line order with shipping and a discount, booked
    # through to a paid invoice by a fresh connector (login included), makes 26 requests (17 once
    # products and places are known); a rounding adjustment (3), a partial payment (1), an
    # accepted warning (2), a refused call repeated once (1) and a sale Tryton left confirmed,
    # confirmed again (6) add up to 13 more. Each further SKU adds 1 (leases are renewed while
    # a push runs).
    calls_per_push = 40
    # How long products, currencies and places read from Tryton are reused (seconds); a push
    # that fails forgets them all, so its replay reads Tryton afresh.
    reference_ttl = 60.0
    clock = staticmethod(time.monotonic)  # when reference data is due (tests move it)

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:
            self.settings: dict[str, Any] = TrytonConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages}; "
                                 "fix it under Connectors") from exc
        self.rpc = _Client(self.settings, self.name)
        self._known = _Reference(self.reference_ttl, lambda: self.clock())

    def __repr__(self) -> str:
        return f"<TrytonConnector {self.name} {self.rpc.origin}/{self.settings['database']}>"

    # --- the contract ------------------------------------------------------------------------
    def check(self) -> None:
        """Log in, read a sale, and resolve the configured products and payment method.

        Raises: TransientError if unreachable, PermanentError for credentials or config.
        """
        self._call("check the connection", "model.sale.sale.search", [], 0, 1, None)
        for key in ("shipping_product", "discount_product", "adjustment_product", "tax_product"):
            if self.settings[key]:
                self._product(self.settings[key], f"{key} of connector '{self.name}'")
        if self.settings["payment_method"] is not None:
            found = self._call("check payment_method", "model.account.invoice.payment.method.search",
                               [("id", "=", self.settings["payment_method"])], 0, 1, None)
            if not found:
                raise PermanentError(f"payment_method {self.settings['payment_method']} of connector "
                                     f"'{self.name}' is not an invoice payment method in Tryton")

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The reference of the sale booked for this order, if any. Raises: Transient/Permanent."""
        sale = self._find(order)
        return self._reference(sale) if sale else None

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Create (or resume) the sale, or update it; see the class docstring.

        Raises: TransientError, PermanentError, MissingMapping, IdentityReview.
        """
        try:
            return self._push(order, ctx)
        except Exception:
            self._known.clear()  # the replay reads products and the like from Tryton afresh
            raise

    def _push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        cancelled = order.get("status") == "cancelled"
        sale = self._find(order, ctx.reference)
        if sale and sale["state"] == "cancelled" and not cancelled:
            sale = None  # the order is live again: book it anew (the old sale stays cancelled)
        created = False
        if sale is None:
            sale = self._create(order, {**self._plan(order, ctx), **self._party(order, ctx)})
            created = True
        elif sale["state"] == "draft":  # an attempt died before quoting: make the draft whole
            sale = self._rewrite(order, sale, {**self._plan(order, ctx), **self._party(order, ctx)})
        elif not cancelled:  # booked already: a new version, or a retry whose answer was lost
            return self._update(order, ctx, sale, rewrite=ctx.action == "update")
        if cancelled:  # a cancelled order never booked: book it as a cancelled sale
            self._advance(order, sale, ctx, until="quotation")  # a number to find it by
            return self._result(order, self._cancel_open(order, sale), created=created)
        return self._result(order, self._advance(order, sale, ctx), created=created)

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Cancel the sale if Tryton still allows it, else explain the manual steps.

        Raises: TransientError, PermanentError.
        """
        sale = self._find(order, ctx.reference)
        if sale is None:
            return PushResult(ctx.reference or "", details={"found": False})
        if sale["state"] != "cancelled":
            sale = self._cancel_open(order, sale)
        return self._result(order, sale)

    def discard(self, order: Mapping[str, Any], ctx: PushContext) -> None:
        """Delete the order's sales as far as Tryton allows: a draft, quotation or confirmed sale
        is cancelled then deleted; a processed one stays (Tryton keeps its posted invoice and its
        shipments), and PermanentError says what is left. Parties stay: other sales may use them.
        """
        sales = self._search_read(f"find the sales of {_label(order)}", "sale.sale",
                                  [("reference", "=", self._external(order))], self._SALE_FIELDS)
        left = []
        for sale in sales:
            if sale["state"] in ("processing", "done"):
                left.append(self._reference(sale))
                continue
            if sale["state"] != "cancelled":
                sale = self._cancel_open(order, sale)
            self._call(f"delete sale {sale['number'] or sale['id']} of {_label(order)}",
                       "model.sale.sale.delete", [sale["id"]])
        if left:
            raise PermanentError(
                f"{_label(order)}: Tryton cannot delete processed sales ({', '.join(left)}); their "
                "invoices are posted. Cancel or credit the invoices and cancel the shipments by "
                "hand if this was a test")

    def close(self) -> None:
        self.rpc.close()

    # --- finding ------------------------------------------------------------------------------
    _SALE_FIELDS = ("number", "reference", "state", "party", "total_amount", "invoices", "lines",
                    "currency", "invoice_state", "comment", "invoice_address", "shipment_address")
    _INVOICE_FIELDS = ("number", "state", "total_amount", "amount_to_pay", "payment_lines")
    _INVOICE_NESTED = tuple(f"invoices.{name}" for name in _INVOICE_FIELDS)

    def _external(self, order: Mapping[str, Any]) -> str:
        return f"{self.settings['reference_prefix']}{order['external_id']}"

    def _find(self, order: Mapping[str, Any], reference: str | None = None) -> dict[str, Any] | None:
        """The live sale of this order (the earliest), else its latest cancelled one."""
        sales = self._search_read(f"find the sale of {_label(order)}", "sale.sale",
                                  [("reference", "=", self._external(order))], self._SALE_FIELDS)
        if not sales and reference:  # the reference field was edited in Tryton: use the number
            number = reference.split(" / ")[0].strip()
            sales = self._search_read(f"find sale {number}", "sale.sale", [("number", "=", number)],
                                      self._SALE_FIELDS) if number else []
        if not sales:
            return None
        live = [s for s in sales if s["state"] != "cancelled"]
        return live[0] if live else sales[-1]

    def _reload(self, sale: Mapping[str, Any], *, invoices: bool = False) -> dict[str, Any]:
        """The sale as Tryton has it now; with `invoices`, its invoices too, in the same call
        (under "invoices.", as trytond reads a relation's fields)."""
        names = self._SALE_FIELDS + (self._INVOICE_NESTED if invoices else ())
        return self._read("sale.sale", [sale["id"]], names)[0]

    def _invoices(self, sale: Mapping[str, Any]) -> list[dict[str, Any]]:
        if not sale.get("invoices"):
            return []
        if "invoices." in sale:  # read with the sale
            return list(sale["invoices."])
        return self._read("account.invoice", sale["invoices"], self._INVOICE_FIELDS)

    def _reference(self, sale: Mapping[str, Any], invoices: list[dict[str, Any]] | None = None) -> str:
        invoices = self._invoices(sale) if invoices is None else invoices
        numbers = [i["number"] for i in invoices if i["number"] and i["state"] != "cancelled"]
        head = sale["number"] or f"sale #{sale['id']}"
        return f"{head} / {', '.join(numbers)}" if numbers else head

    def _result(self, order: Mapping[str, Any], sale: Mapping[str, Any], *, created: bool = False,
                not_applied: tuple[str, ...] = (), **details: Any) -> PushResult:
        invoices = self._invoices(sale)
        anchors = self.settings["customer_anchors"]
        links: tuple[Link, ...] = customer_links(order, str(sale["party"]), anchors) \
            if order.get("customer") else ()
        return PushResult(self._reference(sale, invoices), details={
            "sale_id": sale["id"], "number": sale["number"], "state": sale["state"],
            "total": str(sale["total_amount"]), "created": created,
            "invoices": [{"id": i["id"], "number": i["number"], "state": i["state"],
                          "total": str(i["total_amount"])} for i in invoices], **details},
            links=links, not_applied=not_applied)

    # --- planning: everything resolved before anything is written -----------------------------
    def _plan(self, order: Mapping[str, Any], ctx: PushContext) -> dict[str, Any]:
        """The currency and the sale lines; raises MissingMapping before anything is written."""
        currency = self._currency(order["currency"])
        lines = list(order["lines"])
        products = resolve_products(lines, ctx, connector=self.name, find=self._find_product)
        rows: list[dict[str, Any]] = []
        include = bool(order.get("prices_include_tax"))
        quantum = currency["rounding"]
        for line in lines:
            sku = line.get("sku") or line.get("name")
            product = self._product(products[sku], f"SKU {sku}", mapped_from=sku)
            taxes = line.get("taxes") or []
            net = _dec(line["quantity"]) * _dec(line["unit_price"]) - _dec(line.get("discount"))
            if include:
                net -= sum((_dec(t.get("amount")) for t in taxes), Decimal(0))
            label = line.get("name") or sku
            if _dec(line.get("discount")):
                label = f"{label} (discount {_dec(line.get('discount'))})"
            rows += self._rows(product, _dec(line["quantity"]), _dec(line["unit_price"]), net,
                               quantum, label, self._tax_ids(ctx, taxes))
        for shipping in order.get("shipping") or []:
            amount = _dec(shipping.get("amount"))
            taxes = shipping.get("taxes") or []
            if include:
                amount -= sum((_dec(t.get("amount")) for t in taxes), Decimal(0))
            if not amount:
                continue
            method = shipping.get("method") or "shipping"
            linked = ctx.links.shipping.get(method)
            product = self._product(linked, f"shipping method {method!r}",
                                    mapped_from=("shipping", method)) if linked \
                else self._setting_product("shipping_product", order, f"shipping {method!r}", (
                    f" (or map this method to a product: `broker mappings add {self.name} "
                    f"shipping '{method}' PRODUCT`, then replay)"))
            rows.append(self._row(product, Decimal(1), amount, f"Shipping: {method}",
                                  self._tax_ids(ctx, taxes)))
        listed = Decimal(0)
        for discount in order.get("discounts") or []:
            amount = _dec(discount.get("amount"))
            listed += amount
            if amount:
                rows.append(self._row(self._discount_product(order), Decimal(1), -amount,
                                      f"Discount {discount.get('code') or ''}".strip(), []))
        totals = order.get("totals") or {}
        extra = _dec(totals.get("discount")) - listed
        if extra > 0:  # an order-level discount the channel did not itemise
            rows.append(self._row(self._discount_product(order), Decimal(1), -extra, "Discount",
                                  []))
        if self.settings["tax_mode"] == "amounts":
            rows += self._tax_rows(ctx, order)
        return {"currency": currency, "rows": rows}

    def _rows(self, product: Mapping[str, Any], quantity: Decimal, price: Decimal, net: Decimal,
              quantum: Decimal, label: str, taxes: list[int]) -> list[dict[str, Any]]:
        """Sale lines worth exactly `net`: the price as given, or split to the minor unit."""
        if net == quantity * price:
            return [self._row(product, quantity, price, label, taxes)]
        if quantity == quantity.to_integral_value() and quantity > 0 and \
                net == net.quantize(quantum):
            units = int(quantity)
            base = (net / units / quantum).to_integral_value(ROUND_FLOOR) * quantum
            more = int((net - base * units) / quantum)  # this many units cost one quantum more
            rows = [self._row(product, Decimal(units - more), base, label, taxes)] \
                if units - more else []
            if more:
                rows.append(self._row(product, Decimal(more), base + quantum, label, taxes))
            return rows
        # a fractional quantity: the nearest price; the total check books what rounding leaves
        return [self._row(product, quantity, (net / quantity).quantize(Decimal("0.0001")), label,
                          taxes)]

    @staticmethod
    def _row(product: Mapping[str, Any], quantity: Decimal, price: Decimal, label: str,
             taxes: list[int]) -> dict[str, Any]:
        row: dict[str, Any] = {
            "type": "line", "product": product["id"], "unit": product["sale_uom"],
            # sale.line.quantity is a Float field in Tryton; money stays Decimal
            "quantity": float(quantity), "unit_price": price, "description": label}
        if taxes:
            row["taxes"] = [("add", sorted(set(taxes)))]
        return row

    def _tax_ids(self, ctx: PushContext, taxes: Sequence[Mapping[str, Any]]) -> list[int]:
        if self.settings["tax_mode"] != "tryton":
            return []
        ids: list[int] = []
        for tax in taxes:
            name = tax.get("name") or (f"rate {tax.get('rate')}" if tax.get("rate") else None)
            if not name:
                continue
            value = mapped(ctx, "tax", name, connector=self.name, default=self._configured_tax(name))
            try:
                ids += [int(part) for part in str(value).replace(" ", "").split(",") if part]
            except ValueError as exc:
                raise MissingMapping(
                    f"missing mapping: tax {name!r} maps to {value!r}, which is not a list of Tryton "
                    f"tax ids; map it with `broker mappings add {self.name} tax '{name}' TAX_ID`",
                    kind="tax", key=name) from exc
        return ids

    def _configured_tax(self, name: str) -> str | None:
        for item in self.settings["taxes"]:
            if item["name"] == name:
                return item["value"]
        return None

    def _tax_rows(self, ctx: PushContext, order: Mapping[str, Any]) -> list[dict[str, Any]]:
        """tax_mode "amounts": one line per channel tax, for the amount the channel charged."""
        amounts: dict[str, Decimal] = {}
        for holder in [*order["lines"], *(order.get("shipping") or [])]:
            for tax in holder.get("taxes") or []:
                name = tax.get("name") or "Tax"
                amounts[name] = amounts.get(name, Decimal(0)) + _dec(tax.get("amount"))
        total = _dec((order.get("totals") or {}).get("tax"))
        itemised = sum(amounts.values(), Decimal(0))
        if total and total != itemised and not order.get("prices_include_tax"):
            amounts["Tax"] = amounts.get("Tax", Decimal(0)) + total - itemised
        rows = []
        for name, amount in amounts.items():
            if not amount:  # with prices including tax, the lines above are net of it
                continue
            if (linked := ctx.links.tax.get(name)) is not None:
                product = self._product(linked, f"tax {name!r}", mapped_from=("tax", name))
            elif (configured := self._configured_tax(name)) is not None:
                product = self._product(configured, f"tax {name!r} under taxes of connector "
                                        f"'{self.name}'", setting="taxes")
            else:
                product = self._setting_product("tax_product", order, f"tax {name!r}")
            rows.append(self._row(product, Decimal(1), amount, name, []))
        return rows

    def _discount_product(self, order: Mapping[str, Any]) -> dict[str, Any]:
        return self._setting_product("discount_product", order, "an order discount")

    def _setting_product(self, key: str, order: Mapping[str, Any], needs: str,
                         alternative: str = "") -> dict[str, Any]:
        """The product a setting names; parks the delivery (MissingSetting) while it names none.

        Every kind of line alike (shipping, discount, rounding adjustment, collected tax): the
        order waits, and saving the connector's configuration resumes it.
        """
        value = self.settings[key]
        if not value:
            raise MissingSetting(
                f"missing setting: {_label(order)} has {needs} but connector '{self.name}' has no "
                f"{key}: set it to the code (or id) of a salable service product in Tryton under "
                f"Connectors → {self.name}; saving the configuration resumes the order"
                f"{alternative}", key=key)
        return self._product(value, f"{key} of connector '{self.name}'", setting=key)

    # --- products, currencies, parties --------------------------------------------------------
    _PRODUCT_FIELDS = ("code", "sale_uom", "default_uom", "salable", "rec_name")

    def _products_where(self, what: str, domain: list[Any], limit: int) -> list[dict[str, Any]]:
        """Active products matching `domain`, with the unit each is sold in."""
        rows = self._search_read(what, "product.product", domain, self._PRODUCT_FIELDS, limit=limit)
        for row in rows:
            row["sale_uom"] = row.get("sale_uom") or row["default_uom"]
        return rows

    def _find_product(self, sku: str) -> str | None:
        found = self._known.get(("sku", sku))
        if found is None:
            rows = self._products_where(f"find product {sku}", [("code", "=", sku)], 2)
            if len(rows) > 1:
                raise MissingMapping(
                    f"missing mapping: several Tryton products have the code {sku}; map the SKU "
                    f"with `broker mappings add {self.name} product {sku} PRODUCT_ID`",
                    kind="product", key=sku)
            if not rows:
                return None
            found = self._known.put(("sku", sku), str(rows[0]["id"]))
            self._known.put(("product", found), rows[0])
        return found

    def _product(self, value: str, what: str, *, mapped_from: str | tuple[str, str] | None = None,
                 setting: str | None = None) -> dict[str, Any]:
        """A product by id ("42") or code ("SHIP"), with the unit it is sold in.

        A product that is missing, ambiguous or not salable parks the delivery when it came from
        a mapping (`mapped_from`: a SKU, or (kind, key)) or a setting (`setting`); the fix (a
        new mapping, a saved configuration) resumes it. Otherwise it is a PermanentError.
        """
        kind, key = mapped_from if isinstance(mapped_from, tuple) else ("product", mapped_from)
        value = str(value).strip()
        product = self._known.get(("product", value))
        if product is None:
            if value.isdigit():
                rows = self._products_where(f"read product {value}", [("id", "=", int(value))], 1)
            else:
                rows = self._products_where(f"find product {value}", [("code", "=", value)], 2)
            if len(rows) != 1:
                problem = "no" if not rows else "more than one"
                if key:
                    label = "SKU" if kind == "product" else kind
                    raise MissingMapping(
                        f"missing mapping: {label} {key} maps to {value!r} but Tryton has {problem} "
                        f"active product with that id or code; fix the mapping with `broker mappings "
                        f"add {self.name} {kind} '{key}' PRODUCT_ID`", kind=kind, key=key)
                if setting:
                    raise MissingSetting(
                        f"missing setting: {what} is {value!r} but Tryton has {problem} active "
                        f"product with that id or code; set {setting} to an existing product under "
                        f"Connectors → {self.name} (saving the configuration resumes the order)",
                        key=setting)
                raise PermanentError(f"{what} is {value!r} but Tryton has {problem} active product "
                                     "with that id or code: fix the connector config or the product")
            product = self._known.put(("product", value), rows[0])
        if not product["salable"] and setting:
            raise MissingSetting(
                f"missing setting: Tryton product {product['rec_name']} ({what}) is not salable: "
                f"tick Salable on it and replay, or set {setting} to a salable product under "
                f"Connectors → {self.name}", key=setting)
        if not product["salable"]:
            raise PermanentError(f"Tryton product {product['rec_name']} ({what}) is not salable: "
                                 "tick Salable on it, then replay")
        return product

    def _currency(self, code: str) -> dict[str, Any]:
        currency = self._known.get(("currency", code))
        if currency is None:
            rows = self._search_read(f"find currency {code}", "currency.currency",
                                     [("code", "=", code)], ("code", "rounding"), limit=1)
            if not rows:
                raise PermanentError(f"Tryton has no currency {code}: add it (Currency > "
                                     "Currencies, with a rate) and replay")
            currency = self._known.put(("currency", code), rows[0])
        return currency

    def _party(self, order: Mapping[str, Any], ctx: PushContext) -> dict[str, Any]:
        """The party (linked, found by email or created) and its invoice / shipment addresses."""
        anchors = self.settings["customer_anchors"]
        own = self._own_key(order)
        party = resolve_customer(order, ctx, anchors=anchors)  # a link, if the broker has one
        if party is None and own:  # a party an earlier attempt created, its answer lost
            found = self._search_read(f"find the customer of {_label(order)}", "party.identifier",
                                      [("code", "=", own), ("type", "=", None)], ("party",), limit=1)
            if found:
                party = str(found[0]["party"])
        if party is None:
            party = resolve_customer(order, ctx, anchors=anchors,
                                     search_by_email=self._parties_by_email)
        customer = order.get("customer") or {}
        billing, shipping = _addresses(order)
        name = _party_name(order)
        wanted = [self._address_values(billing, name)]
        if shipping != billing:
            wanted.append(self._address_values(shipping, name))
        existing: list[dict[str, Any]] = []
        if party is None:
            contacts = [{"type": "email", "value": customer["email"]}] if customer.get("email") else []
            if customer.get("phone"):
                contacts.append({"type": "phone", "value": customer["phone"]})
            values: dict[str, Any] = {"name": name[:255]}
            if contacts:
                values["contact_mechanisms"] = [("create", contacts)]
            if own:  # found again by the next attempt, whatever its email proves
                values["identifiers"] = [("create", [{"code": own[:255]}])]
            values["addresses"] = []  # its addresses come next, not Tryton's default blank one
            party_id = self._call(f"create the customer of {_label(order)}",
                                  "model.party.party.create", [values])[0]
        else:
            party_id = int(party)
            key = next((k for k in customer_keys(order, anchors) if k in ctx.links.customer), None)
            if key and not self._call(f"read customer {party_id}", "model.party.party.search",
                                      [("id", "=", party_id)], 0, 1, None):
                raise MissingMapping(
                    f"missing mapping: customer {key} is linked to Tryton party {party_id}, which "
                    f"no longer exists (or is inactive); relink it with `broker mappings add "
                    f"{self.name} customer {key} PARTY_ID`", kind="customer", key=key)
            existing = self._search_read("read the customer's addresses", "party.address",
                                         [("party", "=", party_id)], tuple(wanted[0]))
        ids = self._addresses(party_id, wanted, existing)
        return {"party": party_id, "invoice_address": ids[0], "shipment_address": ids[-1]}

    def _own_key(self, order: Mapping[str, Any]) -> str | None:
        """The identifier (untyped) of a party this connector creates: the channel's customer
        key, when customers are matched by it (`customer_anchors`)."""
        keys = customer_keys(order, [a for a in self.settings["customer_anchors"]
                                     if a == "customer_id"])
        return keys[0] if keys else None

    def _parties_by_email(self, email: str) -> list[str]:
        pattern = email.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        found = self._search_read("find customers by email", "party.contact_mechanism",
                                  [("type", "=", "email"), ("value", "ilike", pattern)],
                                  ("value", "party"), limit=50)
        return sorted({str(c["party"]) for c in found if (c["value"] or "").strip().lower() == email},
                      key=int)

    def _address_values(self, address: Mapping[str, Any], party_name: str) -> dict[str, Any]:
        """A canonical address as Tryton's party.address fields."""
        country = self._country(address.get("country"))
        values: dict[str, Any] = {
            "street": "\n".join(x for x in (address.get("line1"), address.get("line2")) if x) or None,
            "postal_code": address.get("postal_code") or None, "city": address.get("city") or None,
            "country": country, "subdivision": self._subdivision(country, address),
        }
        who = ", ".join(x for x in (address.get("name"), address.get("company")) if x)
        values["party_name"] = who if who and who != party_name else None
        return values

    def _addresses(self, party: int, wanted: list[dict[str, Any]],
                   existing: list[dict[str, Any]]) -> list[int]:
        """For each wanted address, an equal one of the party's, else a new one (parties keep
        history); the new ones in one call."""

        def equal(values: Mapping[str, Any]) -> int | None:
            for candidate in existing:
                if all((candidate.get(k) or None) == v for k, v in values.items()):
                    return int(candidate["id"])
            return int(existing[0]["id"]) if existing and not any(values.values()) else None

        ids = [equal(values) for values in wanted]
        new = [values for values, found in zip(wanted, ids, strict=True) if found is None]
        new = [values for n, values in enumerate(new) if values not in new[:n]]
        created = self._call("create the customer's address", "model.party.address.create",
                             [{**values, "party": party} for values in new]) if new else []
        return [int(created[new.index(values)]) if found is None else found
                for values, found in zip(wanted, ids, strict=True)]

    def _country(self, code: str | None) -> int | None:
        """The country by ISO code; None (the address keeps its text) when Tryton lacks it."""
        if not code:
            return None
        key = ("country", code.upper())
        found = self._known.get(key, missing=_UNKNOWN)
        if found is _UNKNOWN:
            ids = self._call(f"find country {code}", "model.country.country.search",
                             [("code", "=", code.upper())], 0, 1, None)
            found = self._known.put(key, ids[0] if ids else None)
        return found

    def _subdivision(self, country: int | None, address: Mapping[str, Any]) -> int | None:
        region, code = address.get("region"), (address.get("country") or "").upper()
        if not (country and region):
            return None
        key = ("region", f"{code}-{region}")
        found = self._known.get(key, missing=_UNKNOWN)
        if found is _UNKNOWN:
            ids = self._call(f"find region {region}", "model.country.subdivision.search",
                             [("country", "=", country),
                              ["OR", ("code", "=", f"{code}-{region}".upper()), ("name", "=", region)]],
                             0, 1, None)
            found = self._known.put(key, ids[0] if ids else None)
        return found

    # --- writing ------------------------------------------------------------------------------
    def _header(self, order: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
        placed = order.get("placed_at")
        values = {
            "party": plan["party"], "invoice_address": plan["invoice_address"],
            "shipment_address": plan["shipment_address"], "currency": plan["currency"]["id"],
            "reference": self._external(order),
            "description": f"{order.get('channel') or 'channel'} order "
                           f"{order.get('number') or order['external_id']}"[:255],
            "invoice_method": self.settings["invoice_method"],
            "comment": order.get("note") or None,
        }
        if isinstance(placed, dt.datetime):
            values["sale_date"] = placed.astimezone(dt.UTC).date()
        return values

    def _create(self, order: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
        values = {**self._header(order, plan), "lines": [("create", _numbered(plan["rows"]))]}
        sale_id = self._call(f"create the sale of {_label(order)}", "model.sale.sale.create",
                             [values])[0]
        sale = self._reload({"id": sale_id})
        return self._balance(order, sale, plan, fresh=True)

    def _rewrite(self, order: Mapping[str, Any], sale: Mapping[str, Any],
                 plan: Mapping[str, Any]) -> dict[str, Any]:
        values = {**self._header(order, plan),
                  "lines": [("delete", list(sale["lines"])), ("create", _numbered(plan["rows"]))]}
        self._call(f"rewrite sale {sale['number'] or sale['id']} of {_label(order)}",
                   "model.sale.sale.write", [sale["id"]], values)
        return self._balance(order, self._reload(sale), plan, fresh=False)

    def _balance(self, order: Mapping[str, Any], sale: dict[str, Any], plan: Mapping[str, Any], *,
                 fresh: bool) -> dict[str, Any]:
        """Make the draft's total the order's: book a rounding gap, refuse anything larger.

        A refused draft is deleted when this attempt created it (so nothing half-booked is
        found later); a sale that existed before stays in draft with the new lines, and the
        replay after the fix rewrites it again.
        """
        expected = _dec(order["totals"]["total"])
        gap = expected - sale["total_amount"]
        if not gap:
            return sale
        quantum = plan["currency"]["rounding"]
        tolerance = quantum * max(1, len(plan["rows"]))
        if abs(gap) <= tolerance:
            try:
                product = self._setting_product(
                    "adjustment_product", order,
                    f"a rounding gap of {gap} against Tryton's total {sale['total_amount']}")
            except MissingSetting:
                if fresh:  # nothing half-booked stays behind while the order waits
                    self._call(f"delete the unbalanced draft of {_label(order)}",
                               "model.sale.sale.delete", [sale["id"]])
                raise
        else:
            tax = self._read("sale.sale", [sale["id"]], ("tax_amount",))[0]["tax_amount"]
            if fresh:
                self._call(f"delete the unbalanced draft of {_label(order)}",
                           "model.sale.sale.delete", [sale["id"]])
            why = (f"more than the rounding tolerance of {tolerance}: check the tax mapping "
                   f"(each channel tax name → the Tryton tax with the same rate), whether Tryton "
                   f"rounds taxes per line like the channel (Accounting configuration > Tax "
                   f"Rounding), and whether discounts reduce the taxed base")
            raise PermanentError(
                f"{_label(order)}: Tryton computes a total of {sale['total_amount']} "
                f"(tax {tax}) but the order's total is {expected} (tax "
                f"{_dec(order['totals'].get('tax'))}); the gap of {gap} is {why}; then replay")
        adjustment = self._row(product, Decimal(1), gap, "Rounding adjustment", [])
        adjustment["sequence"] = len(plan["rows"]) + 1
        log.info("tryton %s: %s books a rounding adjustment of %s on sale %s", self.name,
                 _label(order), gap, sale["id"])
        self._call(f"book the rounding adjustment of {_label(order)}", "model.sale.sale.write",
                   [sale["id"]], {"lines": [("create", [adjustment])]})
        sale = self._reload(sale)
        if sale["total_amount"] != expected:
            raise PermanentError(f"{_label(order)}: Tryton's total {sale['total_amount']} still "
                                 f"differs from {expected} after a rounding adjustment; book it by hand")
        return sale

    def _advance(self, order: Mapping[str, Any], sale: dict[str, Any], ctx: PushContext,
                 until: str | None = None) -> dict[str, Any]:
        """Quote, confirm and process as far as `workflow` says; post and pay what is due."""
        target = until or self.settings["workflow"]
        what = f"sale {sale['number'] or sale['id']} of {_label(order)}"
        if sale["state"] == "draft":
            self._call(f"quote {what}", "model.sale.sale.quote", [sale["id"]])
            if target == "quotation":
                return self._reload(sale)
            # Tryton's quote moves a draft sale to quotation or refuses (an error): confirm it
            # without reading it back; the read after confirming says where it is
            sale = {**sale, "state": "quotation"}
        if target == "quotation":
            return sale
        if sale["state"] == "quotation":
            self._call(f"confirm {what}", "model.sale.sale.confirm", [sale["id"]])
            sale = self._reload(sale, invoices=target == "processed")
        if target == "confirmed":
            return sale
        if sale["state"] == "confirmed":  # processing failed, or is queued or delayed
            sale = self._process(order, sale)
        if sale["state"] in ("processing", "done"):
            sale = self._settle(order, sale, ctx)
        return sale

    def _process(self, order: Mapping[str, Any], sale: dict[str, Any]) -> dict[str, Any]:
        """Process a sale Tryton left confirmed: with the Process button, else by confirming it
        again, which queues Tryton's processing task anew.

        Tryton processes a sale in a task run after confirmation (trytond sale.py `confirm` →
        `__queue__.process`); a task that fails is only logged. Its Process button is for the
        Sales Administrator group (sale.xml `sale_process_button_group_sale_admin`), which a
        booking user in Sales and Accounting lacks; confirm is theirs.
        """
        what = f"sale {sale['number'] or sale['id']} of {_label(order)}"
        try:
            self._call(f"process {what}", "model.sale.sale.process", [sale["id"]])
            return self._reload(sale)
        except PermanentError as exc:
            refused = exc
        sale = self._reload(sale)
        if sale["state"] != "confirmed":  # a trytond worker processed it meanwhile
            return sale
        for step in ("draft", "quote", "confirm"):
            self._call(f"{step} {what} again", f"model.sale.sale.{step}", [sale["id"]])
        sale = self._reload(sale)
        if sale["state"] == "confirmed":
            raise PermanentError(
                f"Tryton confirmed {what} but does not process it: Tryton processes a sale in a "
                "task after confirming it, and that task failed (the trytond log says why, e.g. "
                "a product without a revenue account) or waits for a trytond worker; pressing "
                f"Process answered: {refused}. Fix the cause in Tryton, then replay (or process the "
                f"sale there; giving user '{self.settings['login']}' the Sales Administrator group "
                "lets the connector do it)") from refused
        return sale

    def _settle(self, order: Mapping[str, Any], sale: dict[str, Any],
                ctx: PushContext) -> dict[str, Any]:
        """Post the sale's draft invoices and pay them when the order is paid; the sale as it
        is then, with its invoices."""
        posted = False
        for invoice in self._invoices(sale):
            if invoice["state"] in ("draft", "validated") and self.settings["post_invoices"]:
                self._call(f"post the invoice of sale {sale['number']} ({_label(order)})",
                           "model.account.invoice.post", [invoice["id"]])
                posted = True
        if posted:  # what is due now
            sale = self._reload(sale, invoices=True)
        paid = False
        for invoice in self._invoices(sale):
            if invoice["state"] == "posted" and not invoice["payment_lines"] \
                    and invoice["amount_to_pay"] > 0:
                paid = self._pay(order, invoice, ctx) or paid
        return self._reload(sale, invoices=True) if paid or "invoices." not in sale else sale

    def _pay(self, order: Mapping[str, Any], invoice: Mapping[str, Any], ctx: PushContext) -> bool:
        """Pay the invoice as the order was paid (Tryton's Pay wizard); whether it did."""
        payment = order.get("payment") or {}
        if payment.get("status") != "paid":
            return False
        keys = [k for k in (payment.get("gateway"), payment.get("method")) if k]
        method = next((ctx.links.payment[k] for k in keys if k in ctx.links.payment), None) \
            or self.settings["payment_method"]
        if method is None:
            return False  # no way to record it: the invoice stays due, as documented
        amount = min(_dec(payment.get("amount")) or invoice["amount_to_pay"], invoice["amount_to_pay"])
        context = {"active_model": "account.invoice", "active_id": invoice["id"],
                   "active_ids": [invoice["id"]]}
        what = f"pay invoice {invoice['number']} of {_label(order)}"
        session, _, _ = self._call(what, "wizard.account.invoice.pay.create", context=context)
        try:
            view = self._call(what, "wizard.account.invoice.pay.execute", session, {}, "start",
                              context=context)["view"]
            start = {k: v for k, v in view["defaults"].items() if not k.endswith(".")}
            start.update(amount=amount, payment_method=int(method),
                         description=(payment.get("transaction_id") or _label(order))[:255])
            answer = self._call(what, "wizard.account.invoice.pay.execute", session,
                                {"start": start}, "choice", context=context)
            if (answer or {}).get("view", {}).get("state") == "ask":  # a partial payment
                ask = {k: v for k, v in answer["view"]["defaults"].items() if not k.endswith(".")}
                ask["type"] = "partial"
                self._call(what, "wizard.account.invoice.pay.execute", session,
                           {"start": start, "ask": ask}, "pay", context=context)
        finally:
            self._call(what, "wizard.account.invoice.pay.delete", session, context=context)
        return True

    def _cancel_open(self, order: Mapping[str, Any], sale: dict[str, Any]) -> dict[str, Any]:
        what = f"sale {sale['number'] or sale['id']} of {_label(order)}"
        if sale["state"] == "confirmed":
            self._call(f"reset {what} to draft", "model.sale.sale.draft", [sale["id"]])
            sale = self._reload(sale)
        if sale["state"] in ("draft", "quotation"):
            self._call(f"cancel {what}", "model.sale.sale.cancel", [sale["id"]])
            return self._reload(sale)
        if sale["state"] == "cancelled":
            return sale
        raise PermanentError(
            f"cannot cancel {what}: it is already {sale['state']} in Tryton (reference "
            f"{self._reference(sale)}), and Tryton only cancels draft or quotation sales. Cancel it "
            "by hand: cancel (or credit) its invoice and cancel its shipments, then use the sale's "
            "Handle Invoice Exception and Handle Shipment Exception buttons without recreating "
            "anything, so the sale ends done (https://docs.tryton.org/latest/modules-sale/usage/index.html)")

    def _update(self, order: Mapping[str, Any], ctx: PushContext, sale: dict[str, Any], *,
                rewrite: bool) -> PushResult:
        """Apply a version to a booked sale: rewrite it while Tryton allows, else compare.

        `rewrite` (a new version): an open sale is rewritten even when its lines are the same
        (the addresses or the note may have changed). Otherwise (a retry) it is left alone
        unless its lines or total differ.
        """
        plan = self._plan(order, ctx)
        booked = self._read("sale.line", sale["lines"], ("type", "product", "quantity", "unit_price"))
        same = self._same(plan["rows"], booked, sale, order)
        moved = self._moved(order, sale) if same else []
        if same and sale["state"] in OPEN_STATES and not rewrite:
            rewrite = bool(moved) or (sale.get("comment") or None) != (order.get("note") or None)
        if same and not (rewrite and sale["state"] in OPEN_STATES):
            sale = self._advance(order, sale, ctx)  # post and pay what became due
            kept = tuple(f"{what}: Tryton keeps the addresses of a {sale['state']} sale; change "
                         "it on the sale's shipment or invoice by hand if they are not sent yet"
                         for what in moved)
            return self._result(order, sale, unchanged=True,
                                not_applied=self._note(order, sale) + kept)
        if sale["state"] in OPEN_STATES:
            if sale["state"] != "draft":
                self._call(f"reset sale {sale['number']} to draft", "model.sale.sale.draft",
                           [sale["id"]])
                sale = self._reload(sale)
            if sale["state"] != "draft":
                raise PermanentError(f"Tryton did not reset sale {sale['number']} to draft "
                                     f"(it is {sale['state']}); update it by hand")
            sale = self._rewrite(order, sale, {**plan, **self._party(order, ctx)})
            return self._result(order, self._advance(order, sale, ctx), updated=True)
        raise PermanentError(
            f"{_label(order)} changed after its sale {sale['number']} was processed in Tryton "
            f"(booked total {sale['total_amount']}, new total {_dec(order['totals']['total'])}); "
            "Tryton cannot edit a processed sale. Book the difference by hand (a return sale or a "
            f"credit note on the invoice of {self._reference(sale)}, or a complementary sale), then "
            "close this delivery")

    def _note(self, order: Mapping[str, Any], sale: Mapping[str, Any]) -> tuple[str, ...]:
        """Carry a changed note to a sale whose lines stay: its Comment, which Tryton lets anyone
        edit in every state (trytond sale.py: `comment` has no states). What Tryton refuses is
        returned as not applied, with its words."""
        wanted = order.get("note") or None
        if (sale.get("comment") or None) == wanted:
            return ()
        what = f"sale {sale['number'] or sale['id']}"
        try:
            self._call(f"write the note of {_label(order)} on {what}", "model.sale.sale.write",
                       [sale["id"]], {"comment": wanted})
        except PermanentError as exc:
            return (f"the note: Tryton keeps it in the sale's Comment but refused to change it on "
                    f"{what} ({exc}); change it there by hand",)
        return ()

    def _moved(self, order: Mapping[str, Any], sale: Mapping[str, Any]) -> list[str]:
        """The order's addresses that differ from the sale's (read, never created)."""
        name = _party_name(order)
        ids = [i for i in (sale.get("invoice_address"), sale.get("shipment_address")) if i]
        have = {a["id"]: a for a in self._read("party.address", ids, _ADDRESS_FIELDS)} if ids else {}
        moved = []
        for what, field, address in zip(("the billing address", "the shipping address"),
                                        ("invoice_address", "shipment_address"), _addresses(order),
                                        strict=True):
            booked = have.get(sale.get(field)) or {}
            if address and any((booked.get(k) or None) != v
                               for k, v in self._address_values(address, name).items()):
                moved.append(what)
        return moved

    def _same(self, rows: list[dict[str, Any]], booked: list[dict[str, Any]],
              sale: Mapping[str, Any], order: Mapping[str, Any]) -> bool:
        """Whether the new version books what the processed sale holds (adjustments aside)."""
        adjustment = self.settings["adjustment_product"]
        skip = {self._product(adjustment, "adjustment_product", setting="adjustment_product")["id"]} \
            if adjustment else set()

        def key(product: Any, quantity: Any, price: Any) -> tuple[Any, ...]:
            return (int(product), Decimal(str(quantity)).normalize(), _dec(price).normalize())

        wanted = Counter(key(r["product"], r["quantity"], r["unit_price"]) for r in rows)
        have = Counter(key(b["product"], b["quantity"], b["unit_price"]) for b in booked
                       if b["type"] == "line" and b["product"] and int(b["product"]) not in skip)
        return wanted == have and sale["total_amount"] == _dec(order["totals"]["total"])

    # --- plumbing -----------------------------------------------------------------------------
    def _search_read(self, what: str, model: str, domain: list[Any], names: Sequence[str], *,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Search and read in one call (trytond's search_read), in id order."""
        return self._call(what, f"model.{model}.search_read", domain, 0, limit, [("id", "ASC")],
                          list(names))

    def _read(self, model: str, ids: Sequence[int], names: Sequence[str]) -> list[dict[str, Any]]:
        rows = self._call(f"read {model}", f"model.{model}.read", list(ids), list(names))
        order = {i: n for n, i in enumerate(ids)}
        return sorted(rows, key=lambda r: order.get(r["id"], 0))

    def _call(self, what: str, method: str, *params: Any,
              context: Mapping[str, Any] | None = None) -> Any:
        """One JSON-RPC call; Tryton's answers become the broker's errors, saying what to fix."""
        accepted: set[str] = set()
        refused: _TrytonError | None = None
        while True:
            try:
                answer = self.rpc.call(method, *params, context=context)
                if refused is not None:
                    log.info("tryton %s: Tryton refused to %s (%s), then accepted the same call: "
                             "a race with another writer", self.name, what, refused.message)
                return answer
            except _TrytonError as exc:
                if exc.kind == "UserWarning" and self.settings["accept_warnings"] \
                        and exc.key and exc.key not in accepted:
                    accepted.add(exc.key)  # what the Tryton client does when a person says yes
                    log.info("tryton %s: accepting Tryton's warning while trying to %s: %s",
                             self.name, what, exc.message)
                    self.rpc.call("model.res.user.warning.skip", exc.key, False)
                    continue
                if exc.kind in ("UserError", "ServerError") and refused is None \
                        and method.startswith("model.") and not _CONCURRENCY.search(exc.message):
                    # Tryton rolled the call back, so it is safe to repeat. A unique key that
                    # another writer took meanwhile ("The code on party must be unique." when two
                    # workers drew the same party code, a journal period both created) is gone on
                    # the repeat; a refusal on the merits comes back, and dead-letters then.
                    # Telling them apart by the text would not work: Tryton translates it.
                    refused = exc
                    continue
                raise self._translate(what, exc, refused) from exc
            except _Expired as exc:  # the fresh login was refused too
                raise PermanentError(
                    f"Tryton refused the session of user '{self.settings['login']}' ({what}): check "
                    f"login and password of connector '{self.name}'") from exc

    def _translate(self, what: str, exc: _TrytonError, first: _TrytonError | None = None) -> Exception:
        """Transient for concurrent access and locks, permanent with Tryton's words otherwise."""
        if exc.kind == "ConcurrencyException":
            return TransientError(f"Tryton reported a concurrent change while trying to {what}; "
                                  "will retry")
        if exc.kind == "ServerError" and _CONCURRENCY.search(exc.message):
            return TransientError(f"Tryton's database reported concurrent access while trying to "
                                  f"{what} ({exc.message[:200]}); will retry")
        if first is not None and (first.kind, first.message) != (exc.kind, exc.message):
            # the repeat failed otherwise than the first call: the state moved under us
            return TransientError(f"Tryton refused to {what} ({first.message[:200]}), then "
                                  f"failed otherwise on the repeat ({exc.message[:200]}); will retry")
        if exc.kind == "UserWarning":
            return PermanentError(
                f"Tryton warns while trying to {what}: {exc.message}. Fix the cause in Tryton (for "
                "taxes: the product's customer taxes), or set accept_warnings on connector "
                f"'{self.name}' to answer yes as a person would; then replay")
        if exc.kind == "LoginException":
            return PermanentError(f"Tryton asks user '{self.settings['login']}' for another login "
                                  f"factor ({exc.message}); use a user that logs in with a password")
        if exc.kind == "UserError":
            return PermanentError(f"Tryton refused to {what}: {exc.message}. Fix it in Tryton or "
                                  f"in the configuration of connector '{self.name}', then replay")
        return PermanentError(f"Tryton failed to {what}: {exc.message}; see the trytond log")

