"""The built-in `sql` connector: book orders into a legacy order-capture database.

Many back offices are a pair of tables that a desktop ERP or a nightly job reads: an order
header and its lines. This connector writes there with SQLAlchemy Core on any dialect
SQLAlchemy supports (PostgreSQL, MariaDB/MySQL, SQLite, ...). The admin maps each column to a
canonical path (`{"column": "canonical.dotted.path"}`); the tables are reflected, never
described by hand and never assembled from strings.

Vendor documentation this follows:
- SQLAlchemy reflection and the Inspector (unique constraints, indexes, primary keys):
  https://docs.sqlalchemy.org/en/20/core/reflection.html
- SQLAlchemy exception classes (DBAPIError, IntegrityError, OperationalError ...):
  https://docs.sqlalchemy.org/en/20/core/exceptions.html
- SQLite keeps a NUMERIC/DECIMAL value with a fraction as an 8-byte REAL (type affinity,
  https://www.sqlite.org/datatype3.html); SQLAlchemy warns that its sqlite dialect "does *not*
  support Decimal objects natively" and advises strings: so money goes to TEXT there.
- PostgreSQL SQLSTATE codes: https://www.postgresql.org/docs/current/errcodes-appendix.html
  (libpq reports no SQLSTATE for a refused connection, so those are told apart by the
  server's FATAL message: https://www.postgresql.org/docs/current/libpq-connect.html)
- MariaDB/MySQL error numbers:
  https://mariadb.com/docs/server/reference/error-codes/mariadb-error-code-reference
- SQLite result codes (SQLITE_BUSY/SQLITE_LOCKED): https://www.sqlite.org/rescode.html
"""

from __future__ import annotations

import difflib
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError, fields, validate, validates, validates_schema
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from connectors.base import Connector, Link, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.identity import (
    anchors_field,
    customer_links,
    mapped,
    resolve_customer,
    resolve_products,
)
from connectors.ssrf import guard_engine

log = logging.getLogger(__name__)
CHECK_KEY = "fobo-broker-check"

# --- canonical paths ----------------------------------------------------------------------
# Value kinds: what a column must be able to hold exactly.
TEXT, MONEY, NUMBER, TIME, FLAG, COUNT, ID = "text", "money", "number", "time", "flag", "count", "id"
_DECIMAL_KINDS = (MONEY, NUMBER)


@dataclass
class _Subject:
    """One order being written, with what was resolved for it (customer, products)."""

    order: Mapping[str, Any]
    ctx: PushContext | None
    connector: str
    customer_id: Any = None
    products: dict[str, str] = field(default_factory=dict)

    @property
    def places(self) -> int:
        # A loaded order carries every amount with at least, and totals with exactly, the
        # currency's ISO 4217 minor units (broker.schemas.order normalises them), so the
        # exponent of the total tells the minor units without importing the broker.
        total = (self.order.get("totals") or {}).get("total")
        return max(0, -total.as_tuple().exponent) if isinstance(total, Decimal) else 2

    def money(self, value: Decimal) -> Decimal:
        return value.quantize(Decimal(1).scaleb(-self.places), rounding=ROUND_HALF_EVEN)

    def code(self, kind: str, key: Any) -> str | None:
        """A tax/shipping/payment code from the broker's mappings; parks when unmapped."""
        if self.ctx is None:
            return None
        return mapped(self.ctx, kind, key, connector=self.connector)


Getter = Callable[[_Subject], Any]
LineGetter = Callable[[_Subject, Mapping[str, Any], int], Any]


def _at(*keys: str) -> Getter:
    def read(s: _Subject) -> Any:
        value: Any = s.order
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value
    return read


def _total(key: str, parts: Callable[[Mapping[str, Any]], Iterator[Decimal]]) -> Getter:
    """A totals figure; when the channel left it out, the sum of its parts."""
    def read(s: _Subject) -> Any:
        given = (s.order.get("totals") or {}).get(key)
        return given if given is not None else s.money(sum(parts(s.order), Decimal(0)))
    return read


def _line_net(line: Mapping[str, Any]) -> Decimal:
    return line["quantity"] * line["unit_price"] - (line.get("discount") or Decimal(0))


def _joined(values: Any) -> str | None:
    text = ", ".join(str(v) for v in values if v)
    return text or None


def _taxes(items: Any) -> Iterator[Mapping[str, Any]]:
    for item in items or ():
        yield from item.get("taxes") or ()


def _customer_name(s: _Subject) -> str | None:
    customer = s.order.get("customer") or {}
    name = " ".join(p for p in (customer.get("first_name"), customer.get("last_name")) if p)
    return name or (s.order.get("billing_address") or {}).get("name") or None


def _header_paths() -> dict[str, tuple[str, Getter]]:
    paths: dict[str, tuple[str, Getter]] = {
        name: (TEXT, _at(name)) for name in ("external_id", "number", "channel", "status",
                                             "currency", "note")}
    paths["channel_key"] = (TEXT, lambda s: f"{s.order.get('channel') or 'unknown'}:"
                                            f"{s.order['external_id']}")
    paths["placed_at"] = (TIME, _at("placed_at"))
    paths["updated_at"] = (TIME, _at("updated_at"))
    paths["prices_include_tax"] = (FLAG, _at("prices_include_tax"))
    for key in ("external_id", "email", "first_name", "last_name", "phone", "company", "tax_id"):
        paths[f"customer.{key}"] = (TEXT, _at("customer", key))
    paths["customer.email_verified"] = (FLAG, _at("customer", "email_verified"))
    paths["customer.name"] = (TEXT, _customer_name)
    paths["customer.id"] = (ID, lambda s: s.customer_id)
    for address in ("billing_address", "shipping_address"):
        for key in ("name", "company", "line1", "line2", "city", "region", "postal_code",
                    "country", "phone"):
            paths[f"{address}.{key}"] = (TEXT, _at(address, key))
    paths["totals.subtotal"] = (MONEY, _total("subtotal", lambda o: (_line_net(x) for x in o["lines"])))
    paths["totals.discount"] = (MONEY, _total("discount", lambda o: (
        d["amount"] for d in o.get("discounts") or ())))
    paths["totals.shipping"] = (MONEY, _total("shipping", lambda o: (
        x["amount"] for x in o.get("shipping") or ())))
    paths["totals.tax"] = (MONEY, _total("tax", lambda o: (
        t["amount"] for t in _taxes([*o["lines"], *(o.get("shipping") or ())]))))
    paths["totals.total"] = (MONEY, _at("totals", "total"))
    for key in ("status", "method", "gateway", "transaction_id"):
        paths[f"payment.{key}"] = (TEXT, _at("payment", key))
    paths["payment.amount"] = (MONEY, _at("payment", "amount"))
    paths["payment.code"] = (TEXT, lambda s: s.code("payment", (s.order.get("payment") or {}).get(
        "method") or (s.order.get("payment") or {}).get("gateway")))
    paths["shipping.method"] = (TEXT, lambda s: _joined(x.get("method") for x in s.order.get(
        "shipping") or ()))
    paths["shipping.code"] = (TEXT, lambda s: s.code("shipping", next(
        (x.get("method") for x in s.order.get("shipping") or () if x.get("method")), None)))
    paths["shipping.amount"] = (MONEY, lambda s: sum(
        (x["amount"] for x in s.order.get("shipping") or ()), Decimal(0)))
    paths["shipping.tax"] = (MONEY, lambda s: sum(
        (t["amount"] for t in _taxes(s.order.get("shipping"))), Decimal(0)))
    paths["discounts.code"] = (TEXT, lambda s: _joined(d.get("code") for d in s.order.get(
        "discounts") or ()))
    paths["discounts.amount"] = (MONEY, lambda s: sum(
        (d["amount"] for d in s.order.get("discounts") or ()), Decimal(0)))
    paths["tags"] = (TEXT, lambda s: _joined(s.order.get("tags") or ()))
    paths["line_count"] = (COUNT, lambda s: len(s.order["lines"]))
    paths["broker.idempotency_key"] = (TEXT, lambda s: s.ctx.idempotency_key if s.ctx else None)
    paths["broker.delivery_id"] = (TEXT, lambda s: s.ctx.delivery_id if s.ctx else None)
    return paths


def _line_paths() -> dict[str, tuple[str, LineGetter]]:
    def at(key: str) -> LineGetter:
        return lambda s, line, i: line.get(key)

    def tax_code(s: _Subject, line: Mapping[str, Any], i: int) -> Any:
        return s.code("tax", next((t.get("name") for t in line.get("taxes") or () if t.get("name")),
                                  None))

    return {
        "line_number": (COUNT, lambda s, line, i: i + 1),
        "external_id": (TEXT, at("external_id")),
        "sku": (TEXT, at("sku")),
        "name": (TEXT, at("name")),
        "quantity": (NUMBER, at("quantity")),
        "unit_price": (MONEY, at("unit_price")),
        "discount": (MONEY, lambda s, line, i: line.get("discount") or Decimal(0)),
        # Rounded half-even to the currency's minor units: ORDER.md allows one minor unit per
        # line between the lines and the subtotal, and a money column has the currency's scale.
        "total": (MONEY, lambda s, line, i: s.money(_line_net(line))),
        "tax": (MONEY, lambda s, line, i: sum((t["amount"] for t in line.get("taxes") or ()),
                                              Decimal(0))),
        "tax_rate": (NUMBER, lambda s, line, i: sum((t.get("rate") or Decimal(0)
                                                    for t in line.get("taxes") or ()), Decimal(0))),
        "tax_name": (TEXT, lambda s, line, i: _joined(t.get("name") for t in line.get("taxes") or ())),
        "tax_code": (TEXT, tax_code),
        "product_id": (ID, lambda s, line, i: s.products.get(line.get("sku") or line.get("name"))),
    }


def _per_line(read: Getter) -> LineGetter:
    """An order-level value repeated on every line (`order.<header path>`)."""
    return lambda s, line, i: read(s)


HEADER_PATHS = _header_paths()
LINE_PATHS = _line_paths()
ORDER_PREFIX = "order."
CUSTOMER_PATHS = {p: v for p, v in HEADER_PATHS.items()
                  if p.startswith(("customer.", "billing_address.")) and p != "customer.id"}


def _path_errors(columns: Mapping[str, str], known: Mapping[str, Any], *,
                 prefix: str | None = None) -> dict[str, list[str]]:
    """Column → error for every path that is not a canonical path this connector knows."""
    errors: dict[str, list[str]] = {}
    for column, path in columns.items():
        if path in known or (prefix and path.startswith(prefix)
                             and path[len(prefix):] in HEADER_PATHS):
            continue
        close = difflib.get_close_matches(path, list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        extra = f" (or {prefix}<header path>)" if prefix else ""
        errors[column] = [f"unknown canonical path {path!r}{hint} Known paths{extra}: "
                          f"{', '.join(sorted(known))}"]
    return errors


# --- config -------------------------------------------------------------------------------
_name = fields.String(required=True, validate=validate.Length(min=1, max=128))


def _columns() -> fields.Dict:
    return fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=128)),
                       values=fields.String(), load_default=dict)


class HeaderConfig(ConfigSchema):
    """The order header table; `key_column` holds the order's external key and is UNIQUE."""

    table = _name
    key_column = _name
    key = fields.String(load_default="external_id", validate=validate.OneOf(
        ["external_id", "channel_key"]))  # channel_key when several channels share one table
    reference_column = fields.String(load_default=None, allow_none=True)  # default: primary key
    columns = _columns()

    @validates("columns")
    def _known_paths(self, value: Mapping[str, str], **kwargs: Any) -> None:
        errors = _path_errors(value, HEADER_PATHS)
        if errors:
            raise ValidationError(errors)


class LinesConfig(ConfigSchema):
    """The order line table; `header_column` refers to the header (its primary key by default)."""

    table = _name
    header_column = _name
    header_key_column = fields.String(load_default=None, allow_none=True)
    columns = _columns()

    @validates("columns")
    def _known_paths(self, value: Mapping[str, str], **kwargs: Any) -> None:
        errors = _path_errors(value, LINE_PATHS, prefix=ORDER_PREFIX)
        if errors:
            raise ValidationError(errors)


class StatusConfig(ConfigSchema):
    """The header's status column: the values written on create and cancel; `locked` are the
    statuses in which the back office owns the order (shipped, invoiced) and the broker must
    not change it."""

    column = _name
    open = fields.String(required=True)
    cancelled = fields.String(required=True)
    locked = fields.List(fields.String(), load_default=list)


class ProductsConfig(ConfigSchema):
    """A product table: each SKU must exist there (else the delivery parks naming it)."""

    table = _name
    sku_column = _name
    id_column = _name


class CustomersConfig(ConfigSchema):
    """A customer table: customers are matched by link or email, else created here."""

    table = _name
    id_column = _name
    email_column = _name
    columns = _columns()

    @validates("columns")
    def _known_paths(self, value: Mapping[str, str], **kwargs: Any) -> None:
        errors = _path_errors(value, CUSTOMER_PATHS)
        if errors:
            raise ValidationError(errors)


def _check_url(value: str) -> None:
    # Never echo the value: it may carry a password.
    try:
        url = make_url(value)
        url.get_dialect()
    except sa_exc.NoSuchModuleError as exc:
        raise ValidationError("unknown SQLAlchemy dialect or driver; use e.g. "
                              "postgresql+psycopg://, mysql+pymysql:// or sqlite:///") from exc
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ValidationError("not a SQLAlchemy database URL, e.g. "
                              "postgresql+psycopg://user:password@host:5432/dbname") from exc


class SqlConfig(ConfigSchema):
    """Where the legacy database is and how its tables map to the canonical order."""

    url = Secret(required=True, validate=_check_url)
    schema = fields.String(load_default=None, allow_none=True)  # database schema of the tables
    connect_timeout = fields.Integer(load_default=10, validate=validate.Range(min=1, max=300))
    timeout = fields.Integer(load_default=30, validate=validate.Range(min=1, max=3600))
    header = fields.Nested(HeaderConfig, required=True)
    lines = fields.Nested(LinesConfig, required=True)
    status = fields.Nested(StatusConfig, load_default=None, allow_none=True)
    products = fields.Nested(ProductsConfig, load_default=None, allow_none=True)
    customers = fields.Nested(CustomersConfig, load_default=None, allow_none=True)
    customer_anchors = anchors_field()

    @validates_schema
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, Any] = {}
        header, lines = data.get("header") or {}, data.get("lines") or {}
        head_cols = header.get("columns") or {}
        managed = {header.get("key_column"): "it holds the external key"}
        if data.get("status"):
            managed[data["status"]["column"]] = "it is status.column"
        for column, why in managed.items():
            if column in head_cols:
                errors.setdefault("header", {}).setdefault("columns", {})[column] = [
                    f"do not map this column: {why}"]
        if lines.get("header_column") in (lines.get("columns") or {}):
            errors.setdefault("lines", {}).setdefault("columns", {})[lines["header_column"]] = [
                "do not map this column: it is lines.header_column"]
        needs = {"customer.id": ("customers", "header"), "order.customer.id": ("customers", "lines"),
                 "product_id": ("products", "lines")}
        for path, (section, where) in needs.items():
            cols = (header if where == "header" else lines).get("columns") or {}
            for column, mapped_path in cols.items():
                if mapped_path == path and not data.get(section):
                    errors.setdefault(where, {}).setdefault("columns", {})[column] = [
                        f"{path} needs the '{section}' section"]
        if errors:
            raise ValidationError(errors)


# --- the reflected plan -------------------------------------------------------------------
class _Misfit(Exception):
    """A value the column cannot hold exactly."""


@dataclass
class _Column:
    column: sa.Column[Any]
    path: str
    kind: str
    read: Callable[..., Any]

    @property
    def where(self) -> str:
        return f"{self.column.table.name}.{self.column.name}"


@dataclass
class _Plan:
    """The reflected tables and the validated mapping, built once per connector."""

    header: sa.Table
    lines: sa.Table
    key: sa.Column[Any]
    reference: sa.Column[Any]
    header_key: sa.Column[Any]
    line_fk: sa.Column[Any]
    head_cols: list[_Column]
    line_cols: list[_Column]
    status: sa.Column[Any] | None = None
    version: sa.Column[Any] | None = None  # a header column mapped to broker.idempotency_key
    note: bool = False  # whether a header or line column holds the order's note
    products: tuple[sa.Table, sa.Column[Any], sa.Column[Any]] | None = None
    customers: tuple[sa.Table, sa.Column[Any], sa.Column[Any], list[_Column]] | None = None


_FLOATING = "floating point loses cents; make it DECIMAL/NUMERIC with the currency's scale"


def _kind_problem(col: sa.Column[Any], kind: str, dialect: str) -> str | None:
    """Why a column cannot hold values of this kind exactly, or None."""
    if kind in _DECIMAL_KINDS:
        if isinstance(col.type, sa.Float):
            return f"is {col.type} ({_FLOATING})"
        if isinstance(col.type, sa.Numeric) and dialect == "sqlite":
            return ("is NUMERIC on SQLite, which stores it as binary floating point; use a TEXT "
                    "column for exact amounts")
    if kind == TIME and not isinstance(col.type, sa.DateTime | sa.Date | sa.String):
        return f"is {col.type}, which cannot hold a date and time"
    return None


def _convert(col: sa.Column[Any], kind: str, value: Any) -> Any:
    """The value as the column stores it, exactly, or _Misfit saying why it cannot be."""
    if value is None:
        return None
    typ = col.type
    if isinstance(value, bool):
        if isinstance(typ, sa.String):
            return "true" if value else "false"
        return int(value) if isinstance(typ, sa.Integer | sa.Numeric) else value
    if isinstance(value, datetime):
        value = value.astimezone(UTC)
        if isinstance(typ, sa.DateTime):
            return value if typ.timezone else value.replace(tzinfo=None)
        if isinstance(typ, sa.Date):
            return value.date()
        value = value.isoformat().replace("+00:00", "Z")
    if isinstance(typ, sa.Integer) and not isinstance(value, bool):
        try:
            number = Decimal(str(value).strip())
        except ArithmeticError:
            raise _Misfit(f"{value!r} is not a whole number") from None
        if number != number.to_integral_value():
            raise _Misfit(f"{number:f} is not a whole number")
        return int(number)
    if isinstance(typ, sa.Numeric) and not isinstance(typ, sa.Float):
        try:
            number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
        except ArithmeticError:
            raise _Misfit(f"{value!r} is not a number") from None
        if typ.scale is not None and number != number.quantize(Decimal(1).scaleb(-typ.scale)):
            raise _Misfit(f"{number:f} has more than {typ.scale} decimal places")
        if typ.precision is not None and typ.scale is not None and \
                number.adjusted() >= typ.precision - typ.scale:
            raise _Misfit(f"{number:f} has more than {typ.precision - typ.scale} integer digits")
        return number
    if isinstance(typ, sa.String):
        text = f"{value:f}" if isinstance(value, Decimal) else str(value)
        if typ.length is not None and len(text) > typ.length:
            raise _Misfit(f"{len(text)} characters do not fit {typ}")
        return text
    if isinstance(value, Decimal) and isinstance(typ, sa.Float):
        raise _Misfit(f"{typ} is floating point")
    if isinstance(typ, sa.Boolean) and isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "y")
    if isinstance(typ, sa.Date) and not isinstance(value, date):
        raise _Misfit(f"{value!r} is not a date")
    return value


def _required(col: sa.Column[Any]) -> bool:
    """NOT NULL without a default: the insert must give a value."""
    return not col.nullable and col.server_default is None and \
        col is not col.table.autoincrement_column and col.default is None


# --- errors -------------------------------------------------------------------------------
# PostgreSQL SQLSTATE classes / codes (errcodes-appendix) that a later attempt may get past.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58", "HV")
_PG_TRANSIENT = {"55P03", "55006"}  # lock_not_available, object_in_use
_PG_AUTH = {"28000", "28P01"}
_PG_SETUP = {"3D000", "3F000", "42501", "42P01", "42703", "42883"}
# libpq gives no SQLSTATE for a refused connection: the server's FATAL text tells.
_PG_REFUSED = re.compile(r"password authentication failed|role \".*\" does not exist|"
                         r"no pg_hba\.conf entry|permission denied for database|"
                         r"not permitted to log in|authentication failed for user|certificate",
                         re.I)
_PG_NO_DATABASE = re.compile(r"database \".*\" does not exist", re.I)
# MariaDB/MySQL error numbers (mariadb-error-code-reference).
_MY_TRANSIENT = {1040, 1053, 1159, 1160, 1161, 1203, 1205, 1213, 1226, 1317, 1614, 1927, 1969,
                 2002, 2003, 2005, 2006, 2012, 2013, 2014, 2026, 2055, 3024, 4031}
_MY_AUTH = {1044, 1045, 1698, 1862, 1251}
_MY_SETUP = {1049, 1054, 1142, 1143, 1146, 1227, 1370}
_SQLITE_TRANSIENT = re.compile(r"locked|busy|unable to open|disk i/o", re.I)


def _db_code(orig: BaseException) -> tuple[str | None, int | None]:
    sqlstate = getattr(orig, "sqlstate", None)
    number = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    return (sqlstate if isinstance(sqlstate, str) else None), number


def _first_line(orig: BaseException) -> str:
    text = str(orig.args[1]) if len(orig.args) > 1 and isinstance(orig.args[0], int) else str(orig)
    text = text.replace("connection failed: ", "")
    return " ".join(text.split())[:400] or type(orig).__name__


# --- the connector ------------------------------------------------------------------------
class SqlConnector(Connector):
    """Writes each order as one header row and its line rows, in one transaction.

    Idempotency: the header's key column is UNIQUE (check() and every push insist). A push
    looks the key up first; a concurrent writer that wins the race makes our INSERT fail on
    the unique key, and the retry in a new transaction finds its row. Either way the
    reference of the one row is returned: the reference column, by default the primary key.

    update: the header row is rewritten and its lines replaced, in one transaction. A row
    whose status is one of `status.locked` (the back office took over: shipped, invoiced)
    or that is cancelled raises PermanentError telling the operator to change it by hand.
    A create of a row that exists (an earlier answer was lost) returns it unchanged when it
    holds this version, and applies this version otherwise: a header column mapped to
    `broker.idempotency_key` tells which version a row holds; without one, the mapped columns
    and lines are compared with what this version would write.

    cancel: sets `status.column` to `status.cancelled` (idempotent); a cancelled version that
    finds its row live (even as a create) cancels it. Without a `status` section, or on a
    locked row, PermanentError says to configure it or cancel by hand; an order cancelled
    before it was ever booked is then not written at all, and the result says so
    (`not_applied`). So is a note the mapping has no column for.

    Money: amounts are Decimal from the order straight into DECIMAL/NUMERIC (or text)
    columns; a value with more places or digits than its column is refused, never rounded,
    and floating-point columns are refused for amounts. The legacy database does not compute
    taxes: it stores the order's tax amounts as given, so its totals equal the order's.
    """

    kind = "sql"
    title = "SQL order-capture database (header + lines tables)"
    Config = SqlConfig
    # Statements one push runs, measured on PostgreSQL and MariaDB with the kit's 2-line order
    # and a customers table: 8 to create (look-up, 2 SKUs, customer look-up and insert,
    # header, read-back, lines) or to apply a later version after a lost answer; a push that
    # loses the insert race runs its transaction twice, and each transaction starts with the
    # pool's pre-ping: 20, plus one per line left to different column defaults. The first
    # push of a process also reflects the tables (17 catalog queries on MariaDB, 54 on
    # PostgreSQL), which wait on no lock.
    calls_per_push = 20

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        try:  # validating again is idempotent and fills defaults when given a raw config
            self.settings: dict[str, Any] = SqlConfig().load(dict(config))
        except ValidationError as exc:
            raise PermanentError(f"connector '{self.name}' has an invalid config: {exc.messages};"
                                 " fix it under Connectors") from exc
        self._url: URL = make_url(self.settings["url"])
        self._engine: Engine | None = None
        self._dispose: weakref.finalize | None = None
        self._plan_cache: _Plan | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<SqlConnector {self.name!r} {self._where}>"

    # --- public API -----------------------------------------------------------------------
    def check(self) -> None:
        """Connect, reflect the tables and prove the mapping fits them, writing nothing.

        Raises: TransientError if the database is unreachable, PermanentError naming what is
        wrong (credentials, a missing table or column, a key column that is not UNIQUE).
        """
        with self._lock:
            self._plan_cache = None  # an admin runs check after changing the schema
        plan = self._plan()

        def probe(conn: Connection) -> None:
            conn.execute(sa.select(sa.func.count()).select_from(plan.header)
                         .where(plan.key == CHECK_KEY)).scalar()
        self._run(probe, "the connection check")

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Create or update the order's header and lines in one transaction.

        Raises: TransientError, PermanentError, MissingMapping (SKU, tax/shipping/payment code),
        IdentityReview (ambiguous customer, with a customers table).
        """
        if ctx.action == "cancel":
            return self.cancel(order, ctx)
        plan = self._plan()
        if order.get("status") == "cancelled" and plan.status is None:
            if self.lookup(order) is not None:
                return self.cancel(order, ctx)  # says what to configure, or to cancel by hand
            # Without a status column a row can only say "open": write nothing, and say so.
            return PushResult("", details={"table": plan.header.name, "written": False},
                              not_applied=(
                                  f"the order: it was cancelled before it was booked, and the "
                                  f"mapping of connector '{self.name}' has no status column to "
                                  "book it as cancelled, so nothing was written (set status.column, "
                                  "status.open and status.cancelled to book such orders)",))
        try:
            result = self._run(lambda conn: self._write(conn, plan, order, ctx),
                               f"booking {_label(order)}")
        except _Raced:
            # A concurrent writer inserted this key between our look-up and our INSERT; its
            # row is committed now, so the same work in a new transaction finds it.
            result = self._run(lambda conn: self._write(conn, plan, order, ctx, raced=True),
                               f"booking {_label(order)}")
        if order.get("note") and not plan.note:
            result = replace(result, not_applied=(
                *result.not_applied, f"the note: the mapping of connector '{self.name}' has no "
                "note column (map one to the path note under header.columns)"))
        return result

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Set the status column to the cancelled value.

        Raises: PermanentError without a status section or when the order is locked;
        TransientError.
        """
        status = self.settings["status"]
        if status is None:
            raise PermanentError(
                f"connector '{self.name}' cannot cancel {_label(order)}: no status column is "
                "configured; set status.column, status.open and status.cancelled under "
                f"Connectors → {self.name}, or cancel it by hand"
                + (f" (reference {ctx.reference})" if ctx.reference else ""))
        plan = self._plan()
        return self._run(lambda conn: self._cancel(conn, plan, order, ctx),
                         f"cancelling {_label(order)}")

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        """The reference of the header row with this order's key, or None.

        Raises: TransientError, PermanentError.
        """
        plan = self._plan()
        key = self._key(plan, order)

        def find(conn: Connection) -> str | None:
            row = conn.execute(sa.select(plan.reference).where(plan.key == key)).first()
            return None if row is None else _reference(row, key)
        return self._run(find, f"the look-up of {_label(order)}")

    def discard(self, order: Mapping[str, Any], ctx: PushContext) -> None:
        """Delete the rows this order wrote: its lines, then its header, in one transaction.

        A row in a `status.locked` status belongs to the back office and stays (PermanentError
        says so); customers the connector created stay too, as other orders may use them.
        Raises: TransientError, PermanentError.
        """
        plan = self._plan()
        key = self._key(plan, order)

        def remove(conn: Connection) -> None:
            row = self._find(conn, plan, key, lock=True)
            if row is None:
                return
            status = self.settings["status"]
            if status is not None and plan.status is not None and str(row[2]) in status["locked"]:
                raise PermanentError(
                    f"{_label(order)} ({plan.header.name} {row[0]}) is {row[2]!r} in the back "
                    "office, which the broker must not change; delete it by hand if it was a test")
            conn.execute(sa.delete(plan.lines).where(plan.line_fk == row[1]))
            conn.execute(sa.delete(plan.header).where(plan.key == key))
        self._run(remove, f"discarding {_label(order)}")

    def close(self) -> None:
        with self._lock:
            if self._dispose is not None:
                self._dispose()
            self._engine = self._dispose = None

    # --- writing --------------------------------------------------------------------------
    def _find(self, conn: Connection, plan: _Plan, key: Any, *, lock: bool) -> Any:
        columns = [plan.reference, plan.header_key, *(c for c in (plan.status, plan.version) if
                                                      c is not None)]
        query = sa.select(*columns).where(plan.key == key)
        return conn.execute(query.with_for_update() if lock else query).first()

    def _write(self, conn: Connection, plan: _Plan, order: Mapping[str, Any], ctx: PushContext,
               *, raced: bool = False) -> PushResult:
        key = self._key(plan, order)
        # No FOR UPDATE here: on InnoDB a locking read of an absent key takes a gap lock, and
        # two pushes of one new order would deadlock instead of one waiting on the other.
        row = self._find(conn, plan, key, lock=False)
        if row is None:
            if ctx.action == "update" and ctx.reference:
                raise PermanentError(
                    f"{_label(order)} was booked as {ctx.reference} but no row of "
                    f"{plan.header.name} has {plan.key.name} = {key!r} any more (deleted or "
                    "re-keyed by hand?); restore it, or re-book the order by hand")
            return self._insert(conn, plan, order, ctx, key, raced=raced)
        subject = _Subject(order, ctx, self.name)
        if order.get("status") == "cancelled":  # status is configured (push() saw to that)
            return self._cancel(conn, plan, order, ctx)
        if ctx.action == "create" and not self._other_version(conn, plan, row, key, subject):
            return PushResult(_reference(row, key), details={"table": plan.header.name,
                                                            "found": True})
        row = self._find(conn, plan, key, lock=True)
        self._editable(plan, row, order, "update")
        links = self._resolve(conn, plan, subject)
        values = self._values(plan.head_cols, subject, insert=False)
        conn.execute(sa.update(plan.header).where(plan.key == key).values(values))
        conn.execute(sa.delete(plan.lines).where(plan.line_fk == row[1]))
        count = self._insert_lines(conn, plan, subject, row[1])
        return PushResult(_reference(row, key), details={"table": plan.header.name,
                                                        "updated": True, "lines": count},
                          links=links)

    def _insert(self, conn: Connection, plan: _Plan, order: Mapping[str, Any], ctx: PushContext,
                key: Any, *, raced: bool) -> PushResult:
        subject = _Subject(order, ctx, self.name)
        links = self._resolve(conn, plan, subject)
        values = self._values(plan.head_cols, subject, insert=True)
        values[plan.key.name] = key
        if plan.status is not None:
            status = self.settings["status"]
            wanted = status["cancelled"] if order.get("status") == "cancelled" else status["open"]
            values[plan.status.name] = self._fit(plan.status, TEXT, wanted, order, "status")
        try:
            conn.execute(sa.insert(plan.header).values(values))
        except sa_exc.IntegrityError as exc:
            if raced:  # the key is free, so the row itself breaks a constraint
                raise self._integrity(exc, order, plan.header) from exc
            raise _Raced from exc
        row = self._find(conn, plan, key, lock=False)
        if row is None:  # a trigger or rule swallowed the row
            raise PermanentError(f"inserting {_label(order)} into {plan.header.name} left no row "
                                 f"with {plan.key.name} = {key!r}; check its triggers")
        count = self._insert_lines(conn, plan, subject, row[1])
        log.info("booked %s into %s as %s", _label(order), plan.header.name, row[0])
        return PushResult(_reference(row, key), details={"table": plan.header.name,
                                                        "created": True, "lines": count},
                          links=links)

    def _insert_lines(self, conn: Connection, plan: _Plan, subject: _Subject, parent: Any) -> int:
        rows = []
        for index, line in enumerate(subject.order["lines"]):
            values = {}
            for col in plan.line_cols:
                value = col.read(subject, line, index)
                if value is None and col.column.server_default is not None:
                    continue  # let the database's default stand
                values[col.column.name] = self._fit(col.column, col.kind, value, subject.order,
                                                    col.path, line=index + 1)
            values[plan.line_fk.name] = parent
            rows.append(values)
        try:
            if len({frozenset(r) for r in rows}) == 1:
                conn.execute(sa.insert(plan.lines), rows)
            else:  # lines that leave different columns to their defaults
                for values in rows:
                    conn.execute(sa.insert(plan.lines).values(values))
        except sa_exc.IntegrityError as exc:
            raise self._integrity(exc, subject.order, plan.lines) from exc
        return len(rows)

    def _cancel(self, conn: Connection, plan: _Plan, order: Mapping[str, Any],
                ctx: PushContext) -> PushResult:
        status = self.settings["status"]
        key = self._key(plan, order)
        row = self._find(conn, plan, key, lock=True)
        if row is None:
            raise PermanentError(
                f"cannot cancel {_label(order)}: no row of {plan.header.name} has "
                f"{plan.key.name} = {key!r}" + (f" (booked as {ctx.reference})" if ctx.reference
                                                else "") + "; cancel it by hand")
        if str(row[2]) == status["cancelled"]:
            return PushResult(_reference(row, key), details={"table": plan.header.name,
                                                            "cancelled": True, "already": True})
        self._editable(plan, row, order, "cancel")
        subject = _Subject(order, ctx, self.name)
        values = {plan.status.name: self._fit(plan.status, TEXT, status["cancelled"], order,
                                              "status")}
        # The columns that describe the version (status text, updated_at, idempotency key)
        # follow the cancellation; amounts and lines stay as booked.
        follow = {"status", "updated_at", "broker.idempotency_key", "broker.delivery_id"}
        values.update(self._values([c for c in plan.head_cols if c.path in follow], subject,
                                   insert=False))
        conn.execute(sa.update(plan.header).where(plan.key == key).values(values))
        return PushResult(_reference(row, key), details={"table": plan.header.name,
                                                        "cancelled": True})

    def _editable(self, plan: _Plan, row: Any, order: Mapping[str, Any], action: str) -> None:
        status = self.settings["status"]
        if status is None or plan.status is None:
            return
        current = str(row[2])
        if current in status["locked"]:
            raise PermanentError(
                f"cannot {action} {_label(order)} ({plan.header.name} {row[0]}): its status in "
                f"the back office is {current!r}, which the broker must not change; "
                f"{action} it by hand there")
        if action == "update" and current == status["cancelled"]:
            raise PermanentError(
                f"cannot update {_label(order)} ({plan.header.name} {row[0]}): it is cancelled "
                f"in the back office; re-open it by hand (status {status['open']!r}) and replay, "
                "or leave it cancelled")

    def _other_version(self, conn: Connection, plan: _Plan, row: Any, key: Any,
                       subject: _Subject) -> bool:
        """Whether the booked row holds another version than this one: a create that finds
        its row after a lost answer is either a retry (leave it) or a later version (apply it).

        A header column mapped to broker.idempotency_key tells; without one, the mapped
        columns are compared with what this version would write.
        """
        if plan.version is not None:
            stored = row[-1]
            assert subject.ctx is not None
            return stored is not None and str(stored) != subject.ctx.idempotency_key
        head = [c for c in plan.head_cols if _comparable(c)]
        if head:
            stored = conn.execute(sa.select(*(c.column for c in head)).where(plan.key == key)).one()
            wanted = self._values(head, subject, insert=False)
            if any(c.column.name in wanted and _norm(have) != _norm(wanted[c.column.name])
                   for c, have in zip(head, stored, strict=True)):
                return True
        lines = [c for c in plan.line_cols if _comparable(c)]
        stored_lines = conn.execute(sa.select(*(c.column for c in lines) if lines else [plan.line_fk])
                                    .where(plan.line_fk == row[1])).all()
        if len(stored_lines) != len(subject.order["lines"]):
            return True
        if not lines:
            return False
        wanted_lines = [tuple(_norm(self._fit(c.column, c.kind, c.read(subject, line, i),
                                              subject.order, c.path, line=i + 1)) for c in lines)
                        for i, line in enumerate(subject.order["lines"])]
        have_lines = [tuple(_norm(v) for v in r) for r in stored_lines]
        return sorted(map(repr, wanted_lines)) != sorted(map(repr, have_lines))

    def _resolve(self, conn: Connection, plan: _Plan, subject: _Subject) -> tuple[Link, ...]:
        """Products and the customer this order needs; links learned for the broker to keep."""
        links: list[Link] = []
        ctx = subject.ctx
        if plan.products is not None and ctx is not None:
            _, sku_col, id_col = plan.products

            def find(sku: str) -> str | None:
                ids = conn.execute(sa.select(id_col).where(sku_col == sku).limit(2)).scalars().all()
                return str(ids[0]) if len(ids) == 1 else None
            subject.products = resolve_products(subject.order["lines"], ctx, connector=self.name,
                                                find=find)
            links += [Link("product", sku, pid) for sku, pid in subject.products.items()
                      if ctx.links.product.get(sku) != pid]
        if plan.customers is not None and ctx is not None:
            subject.customer_id = self._customer(conn, plan, subject)
            anchors = self.settings["customer_anchors"]
            links += customer_links(subject.order, str(subject.customer_id), anchors)
        return tuple(links)

    def _customer(self, conn: Connection, plan: _Plan, subject: _Subject) -> Any:
        assert plan.customers is not None and subject.ctx is not None
        table, id_col, email_col, cols = plan.customers

        def search(email: str) -> list[str]:
            query = sa.select(id_col).where(sa.func.lower(email_col) == email).limit(6)
            return [str(v) for v in conn.execute(query).scalars()]
        found = resolve_customer(subject.order, subject.ctx, anchors=self.settings["customer_anchors"],
                                 search_by_email=search, connector=self.name)
        if found is not None:
            return found
        values = self._values(cols, subject, insert=True)
        email = ((subject.order.get("customer") or {}).get("email") or "").strip().lower() or None
        values[email_col.name] = self._fit(email_col, TEXT, email, subject.order, "customer.email")
        result = conn.execute(sa.insert(table).values(values))
        if id_col.name in values:
            return values[id_col.name]
        pk = result.inserted_primary_key
        if pk is not None and len(table.primary_key.columns) == 1 and id_col.primary_key:
            return pk[0]
        raise PermanentError(f"could not read back the id of the customer created in "
                             f"{table.name}; make {id_col.name} its autoincrement primary key")

    def _values(self, cols: Sequence[_Column], subject: _Subject, *, insert: bool) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for col in cols:
            value = col.read(subject)
            if value is None and col.column.server_default is not None and \
                    (insert or not col.column.nullable):
                continue  # let the database's default stand
            values[col.column.name] = self._fit(col.column, col.kind, value, subject.order, col.path)
        return values

    def _fit(self, column: sa.Column[Any], kind: str, value: Any, order: Mapping[str, Any],
             path: str, *, line: int | None = None) -> Any:
        where = f"{column.table.name}.{column.name}"
        what = f"line {line} {path}" if line else path
        if value is None:
            if not column.nullable and column is not column.table.autoincrement_column:
                raise PermanentError(
                    f"{_label(order)} has no {what}, but {where} is NOT NULL; complete the "
                    "order in the channel, map another path to this column or give the column "
                    "a default, then replay")
            return None
        try:
            return _convert(column, kind, value)
        except _Misfit as exc:
            raise PermanentError(f"{what} of {_label(order)} does not fit {where} ({column.type}): "
                                 f"{exc}; widen the column or change the mapping under "
                                 f"Connectors → {self.name}, then replay") from None

    def _key(self, plan: _Plan, order: Mapping[str, Any]) -> Any:
        """The order's external key as the key column stores it."""
        if self.settings["header"]["key"] == "channel_key":
            key = f"{order.get('channel') or 'unknown'}:{order['external_id']}"
        else:
            key = str(order["external_id"])
        return self._fit(plan.key, TEXT, key, order, "external key")

    # --- reflection -----------------------------------------------------------------------
    def _plan(self) -> _Plan:
        plan = self._plan_cache
        if plan is not None:
            return plan
        plan = self._run(self._reflect, "reading the table definitions")
        with self._lock:
            self._plan_cache = plan
        return plan

    def _reflect(self, conn: Connection) -> _Plan:
        cfg, schema = self.settings, self.settings["schema"]
        inspector = sa.inspect(conn)
        metadata = sa.MetaData(schema=schema)
        problems: list[str] = []
        dialect = conn.dialect.name

        def table(name: str, section: str) -> sa.Table | None:
            if not inspector.has_table(name, schema=schema):
                problems.append(f"table {name!r} ({section}.table) does not exist"
                                + (f" in schema {schema!r}" if schema else ""))
                return None
            return sa.Table(name, metadata, autoload_with=conn, resolve_fks=False)

        def column(tab: sa.Table | None, name: str | None, setting: str) -> sa.Column[Any] | None:
            if tab is None or name is None:
                return None
            if name not in tab.c:
                problems.append(f"column {tab.name}.{name} ({setting}) does not exist; "
                                f"{tab.name} has {', '.join(c.name for c in tab.c)}")
                return None
            return tab.c[name]

        def primary(tab: sa.Table | None, setting: str) -> sa.Column[Any] | None:
            if tab is None:
                return None
            pk = list(tab.primary_key.columns)
            if len(pk) != 1:
                problems.append(f"table {tab.name} has no single-column primary key; set {setting}")
                return None
            return pk[0]

        def mapping(tab: sa.Table | None, columns: Mapping[str, str], section: str,
                    known: Mapping[str, tuple[str, Any]], line: bool = False) -> list[_Column]:
            result = []
            for name, path in columns.items():
                col = column(tab, name, f"{section}.columns")
                if col is None:
                    continue
                if line and path.startswith(ORDER_PREFIX):
                    kind, head = HEADER_PATHS[path[len(ORDER_PREFIX):]]
                    read: Callable[..., Any] = _per_line(head)
                else:
                    kind, read = known[path]
                problem = _kind_problem(col, kind, dialect)
                if problem:
                    problems.append(f"column {col.table.name}.{name} ← {path} {problem}")
                result.append(_Column(col, path, kind, read))
            return result

        def unmapped(tab: sa.Table | None, covered: set[str], section: str) -> None:
            for col in tab.c if tab is not None else ():
                if col.name not in covered and _required(col):
                    problems.append(f"column {tab.name}.{col.name} is NOT NULL without a default "
                                    f"and not mapped; map it under {section}.columns or give it "
                                    "a default")

        head_cfg, line_cfg = cfg["header"], cfg["lines"]
        header = table(head_cfg["table"], "header")
        lines = table(line_cfg["table"], "lines")
        key = column(header, head_cfg["key_column"], "header.key_column")
        reference = (column(header, head_cfg["reference_column"], "header.reference_column")
                     if head_cfg["reference_column"] else primary(header, "header.reference_column"))
        header_key = (column(header, line_cfg["header_key_column"], "lines.header_key_column")
                      if line_cfg["header_key_column"] else primary(header, "lines.header_key_column"))
        line_fk = column(lines, line_cfg["header_column"], "lines.header_column")
        head_cols = mapping(header, head_cfg["columns"], "header", HEADER_PATHS)
        line_cols = mapping(lines, line_cfg["columns"], "lines", LINE_PATHS, line=True)
        if header is not None and key is not None and not self._unique(inspector, header, key):
            problems.append(
                f"column {header.name}.{key.name} (header.key_column) is not UNIQUE: add a "
                f"unique constraint on it alone, so no order can be booked twice")
        status = None
        if cfg["status"]:
            status = column(header, cfg["status"]["column"], "status.column")
        covered = {c.column.name for c in head_cols} | {c.name for c in (key, status) if c is not None}
        unmapped(header, covered, "header")
        unmapped(lines, {c.column.name for c in line_cols} | {line_cfg["header_column"]}, "lines")
        products = customers = None
        if cfg["products"]:
            p = cfg["products"]
            ptab = table(p["table"], "products")
            sku, pid = column(ptab, p["sku_column"], "products.sku_column"), \
                column(ptab, p["id_column"], "products.id_column")
            if ptab is not None and sku is not None and pid is not None:
                products = (ptab, sku, pid)
        if cfg["customers"]:
            c = cfg["customers"]
            ctab = table(c["table"], "customers")
            cid = column(ctab, c["id_column"], "customers.id_column")
            email = column(ctab, c["email_column"], "customers.email_column")
            ccols = mapping(ctab, c["columns"], "customers", CUSTOMER_PATHS)
            unmapped(ctab, {x.column.name for x in ccols} | {c["id_column"], c["email_column"]},
                     "customers")
            if ctab is not None and cid is not None and email is not None:
                customers = (ctab, cid, email, ccols)
        if problems:
            raise PermanentError(f"the tables of connector '{self.name}' at {self._where} do not "
                                 f"match its config: {'; '.join(problems)}. Fix the schema or the "
                                 "config, then run the connection check")
        assert header is not None and lines is not None and key is not None
        assert reference is not None and header_key is not None and line_fk is not None
        version = next((c.column for c in head_cols if c.path == "broker.idempotency_key"), None)
        note = any(c.path in ("note", f"{ORDER_PREFIX}note") for c in [*head_cols, *line_cols])
        return _Plan(header, lines, key, reference, header_key, line_fk, head_cols, line_cols,
                     status=status, version=version, note=note, products=products,
                     customers=customers)

    @staticmethod
    def _unique(inspector: Any, table: sa.Table, key: sa.Column[Any]) -> bool:
        wanted = [key.name]
        if [c.name for c in table.primary_key.columns] == wanted:
            return True
        schema = table.schema
        uniques = inspector.get_unique_constraints(table.name, schema=schema)
        indexes = [ix for ix in inspector.get_indexes(table.name, schema=schema)
                   if ix.get("unique") and not any(  # a partial index leaves some keys free
                       k.endswith("_where") and v is not None
                       for k, v in (ix.get("dialect_options") or {}).items())]
        return any(list(u.get("column_names") or ()) == wanted for u in [*uniques, *indexes])

    # --- engine and errors ----------------------------------------------------------------
    @property
    def _where(self) -> str:
        """The database, named without user or password."""
        url = self._url
        if url.get_backend_name() == "sqlite":
            return f"SQLite file {url.database or ':memory:'}"
        port = f":{url.port}" if url.port else ""
        return f"{url.get_backend_name()} database {url.database!r} at {url.host}{port}"

    def _db(self) -> Engine:
        # NOTE (SSRF): the drivers connect to the URL's host directly, not through
        # connectors.ssrf.connect_tcp like the HTTP and SFTP connectors; a database host that
        # resolves to a private or metadata address is not refused yet.
        if self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None:
                self._engine = sa.create_engine(
                    self._url, pool_pre_ping=True, pool_recycle=1800, hide_parameters=True,
                    connect_args=self._connect_args())
                guard_engine(self._engine)  # the SSRF guard checks the host at each connect
                # A connector dropped without close() still closes its pooled connections.
                self._dispose = weakref.finalize(self, self._engine.dispose)
            return self._engine

    def _connect_args(self) -> dict[str, Any]:
        """Bounded waits per driver, so a hung database is a retry, never a stuck worker."""
        backend, driver = self._url.get_backend_name(), self._url.get_driver_name()
        connect, wait = self.settings["connect_timeout"], self.settings["timeout"]
        if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
            return {"connect_timeout": connect,
                    "options": f"-c statement_timeout={wait * 1000} -c lock_timeout={wait * 1000}"}
        if backend in ("mysql", "mariadb") and driver == "pymysql":
            return {"connect_timeout": connect, "read_timeout": wait + 5, "write_timeout": wait + 5,
                    "init_command": f"SET SESSION innodb_lock_wait_timeout={wait}"}
        if backend == "sqlite":
            return {"timeout": wait}
        return {}

    def _run(self, work: Callable[[Connection], Any], subject: str) -> Any:
        """One transaction around `work`; database failures become Transient or Permanent."""
        try:
            with self._db().begin() as conn:
                return work(conn)
        except (ConnectorError, _Raced):
            raise
        except sa_exc.NoSuchTableError as exc:
            with self._lock:
                self._plan_cache = None
            raise PermanentError(f"table {exc} of connector '{self.name}' does not exist at "
                                 f"{self._where}; fix the config and run the check") from exc
        except sa_exc.DBAPIError as exc:
            raise self._classify(exc, subject) from exc
        except sa_exc.StatementError as exc:  # a value the driver could not send
            raise PermanentError(f"{self._where} could not take a value for {subject}: "
                                 f"{self._redact(str(exc.orig))[:300]}; change the mapping of "
                                 f"connector '{self.name}', then replay") from exc
        except sa_exc.TimeoutError as exc:  # the connection pool is exhausted
            raise TransientError(f"no free connection to {self._where} for {subject}: {exc}; "
                                 "will retry") from exc

    def _classify(self, exc: sa_exc.DBAPIError, subject: str) -> ConnectorError:
        orig = exc.orig if isinstance(exc.orig, BaseException) else exc
        sqlstate, number = _db_code(orig)
        said = self._redact(_first_line(orig))
        lead = f"{self._where} failed {subject}: {said}"
        backend = self._url.get_backend_name()
        if backend == "postgresql" and sqlstate is None and isinstance(exc, sa_exc.OperationalError):
            sqlstate = ("3D000" if _PG_NO_DATABASE.search(said) else
                        "28000" if _PG_REFUSED.search(said) else "08000")
        if sqlstate in _PG_AUTH or number in _MY_AUTH:
            return PermanentError(f"{lead}; check the user name and password in the url of "
                                  f"connector '{self.name}' and that this user may connect")
        if sqlstate in _PG_SETUP or number in _MY_SETUP:
            with self._lock:
                self._plan_cache = None
            return PermanentError(f"{lead}; check the database name, the tables and the user's "
                                  f"privileges (SELECT, INSERT, UPDATE, DELETE) for connector "
                                  f"'{self.name}', then run the connection check")
        if exc.connection_invalidated:
            transient = True
        elif backend == "postgresql" and sqlstate is not None:
            transient = sqlstate[:2] in _PG_TRANSIENT_CLASSES or sqlstate in _PG_TRANSIENT
        elif backend == "sqlite":
            # SQLITE_BUSY/LOCKED, or a file on a volume that is not mounted (yet); "no such
            # table" is an OperationalError there too, and no retry fixes it.
            transient = bool(_SQLITE_TRANSIENT.search(said))
        else:  # DB-API: OperationalError is "not necessarily under the control of the programmer"
            transient = number in _MY_TRANSIENT or isinstance(
                exc, sa_exc.OperationalError | sa_exc.InterfaceError)
        if transient:
            return TransientError(f"{lead}; will retry")
        return PermanentError(f"{lead}; fix the data or the mapping of connector '{self.name}', "
                              "then replay")

    def _integrity(self, exc: sa_exc.IntegrityError, order: Mapping[str, Any],
                   table: sa.Table) -> PermanentError:
        orig = exc.orig if isinstance(exc.orig, BaseException) else exc
        return PermanentError(
            f"{table.name} refused {_label(order)}: {self._redact(_first_line(orig))}; map the "
            f"column it names under Connectors → {self.name} or relax the constraint, then replay")

    def _redact(self, text: str) -> str:
        password = self._url.password
        if not password:
            return text
        if len(password) >= 8:
            return text.replace(str(password), "***")
        return re.sub(rf"(?<!\w){re.escape(str(password))}(?!\w)", "***", text)


def _comparable(col: _Column) -> bool:
    """Columns that say what a version holds: not the broker's markers, not resolved ids (a
    customer or product is looked up, maybe created, only when something is written)."""
    path = col.path[len(ORDER_PREFIX):] if col.path.startswith(ORDER_PREFIX) else col.path
    return col.kind != ID and not path.startswith("broker.")


def _norm(value: Any) -> Any:
    """A stored or wanted value in one form: 3 = 3.0000, CHAR padding, naive UTC to the second."""
    if isinstance(value, Decimal):
        return f"{(value + 0).normalize():f}"  # + 0 turns -0 into 0
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.replace(microsecond=0)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _norm(Decimal(str(value)))
    if isinstance(value, str):
        return value.rstrip()
    return value


class _Raced(Exception):
    """The header INSERT hit the unique key: someone else booked this order meanwhile."""


def _reference(row: Any, key: Any) -> str:
    """The reference column's value; the external key while the back office has not filled it
    (e.g. an order number a nightly job assigns)."""
    return str(row[0]) if row[0] is not None else str(key)


def _label(order: Mapping[str, Any]) -> str:
    number = order.get("number")
    return f"order {number} ({order['external_id']})" if number else f"order {order['external_id']}"
