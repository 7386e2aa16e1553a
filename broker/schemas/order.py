"""The canonical order (v1, docs/ORDER.md): one shape for every channel and connector.

Imports only marshmallow, pycountry and the stdlib, because connector plugins import it.
Parse JSON with ``json.loads(body, parse_float=Decimal)``; floats are accepted but go through
``str()`` so a JSON ``12.5`` becomes ``Decimal("12.5")``, never a binary approximation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal, localcontext
from typing import Any

import pycountry
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validates_schema
from marshmallow.validate import Length, OneOf

from connectors.money import minor_units

UNIT_PRICE_EXTRA_PLACES = 4  # unit prices may carry fractional minor units (e.g. 0.0125 USD)
QUANTITY_PLACES = 4
METADATA_MAX_BYTES = 16 * 1024
METADATA_MAX_DEPTH = 32
ORDER_STATUSES = ("open", "cancelled")
PAYMENT_STATUSES = ("pending", "authorized", "paid", "partially_refunded", "refunded", "voided")
_DECIMAL_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")  # no exponents, blanks or underscores
_ZERO = Decimal(0)


def _places(value: Decimal) -> int:
    return max(0, -int(value.as_tuple().exponent))


def _strip(value: Decimal) -> Decimal:
    """Drop trailing zeros without switching to exponent form ("2.50" -> 2.5, "100" -> 100)."""
    value = value.normalize() if value else Decimal(0)  # also turns -0 into 0
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


class Amount(fields.Decimal):
    """A non-negative decimal from a number or a plain decimal string, dumped as a string.

    Discounts are positive amounts that get subtracted, so no amount is ever negative. The sign
    is checked here rather than with ``Range`` so OpenAPI gets no numeric ``minimum`` on a string.
    """

    default_error_messages = {
        "invalid": 'Not a decimal: give a number or a string like "12.50".',
        "too_large": "Number too large (at most 15 integer digits).",
        "places": "At most {places} decimal places.",
        "negative": "Must not be negative.",
        "not_positive": "Must be greater than 0.",
    }

    def __init__(self, *, max_places: int | None = None, positive: bool = False,
                 **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"type": "string", "format": "decimal",
                                       "pattern": _DECIMAL_RE.pattern, "example": "12.50"})
        super().__init__(as_string=True, **kwargs)
        self.max_places, self.positive = max_places, positive

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if isinstance(value, str) and not _DECIMAL_RE.fullmatch(value):
            raise self.make_error("invalid")
        num = super()._deserialize(value, attr, data, **kwargs)  # float via str(); no NaN/inf
        if num and num.adjusted() >= 15:  # bounds the digits so totals arithmetic stays exact
            raise self.make_error("too_large")
        if num < 0 or (self.positive and num == 0):
            raise self.make_error("not_positive" if self.positive else "negative")
        num = _strip(num)
        if self.max_places is not None and _places(num) > self.max_places:
            raise self.make_error("places", places=self.max_places)
        return num


class UtcDateTime(fields.AwareDateTime):
    """ISO 8601 with an offset, stored as aware UTC, dumped with ``Z``."""

    default_error_messages = {
        "invalid_awareness": "Give an ISO 8601 time with an offset, e.g. 2026-11-20T14:03:00Z."
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        return super()._deserialize(value, attr, data, **kwargs).astimezone(dt.UTC)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class IsoCode(fields.String):
    """An ISO code, upper-cased on load so "usd" and "USD" are the same order."""

    def __init__(self, size: int, lookup: Any, what: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.lookup, self.what = size, lookup, what

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        code = super()._deserialize(value, attr, data, **kwargs).upper()
        if not (len(code) == self.size and code.isascii() and code.isalpha() and self.lookup(code)):
            raise ValidationError(f"Not an {self.what} code: {code[:8]!r}.")
        return code


class Metadata(fields.Dict):
    """Free-form JSON object; numbers kept as Decimal inside, size and depth capped."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, Mapping):
            raise ValidationError("metadata must be a JSON object.")
        loaded = _walk(value, _load_json)
        if len(_canonical_json(_walk(loaded, _dump_json)).encode()) > METADATA_MAX_BYTES:
            raise ValidationError(f"metadata exceeds {METADATA_MAX_BYTES // 1024} KiB of JSON.")
        return loaded

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> dict | None:
        return None if value is None else _walk(value, _dump_json)


def _walk(value: Any, leaf: Any, depth: int = 0) -> Any:
    if depth > METADATA_MAX_DEPTH:
        raise ValidationError(f"metadata is nested deeper than {METADATA_MAX_DEPTH} levels.")
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise ValidationError("metadata keys must be strings.")
        return {k: _walk(v, leaf, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk(v, leaf, depth + 1) for v in value]
    return leaf(value)


def _load_json(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float | Decimal):
        num = Decimal(str(value))
        if num.is_finite():
            return num
    raise ValidationError("metadata values must be JSON (no NaN, Infinity or other types).")


def _dump_json(value: Any) -> Any:
    # JSON has one number type: integral decimals become ints, others the shortest float text.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _text(max_len: int = 255, **kwargs: Any) -> fields.String:
    return fields.String(validate=Length(max=max_len), allow_none=True, **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class CustomerSchema(_Strict):
    external_id = _text()
    email = fields.Email(validate=Length(max=254), allow_none=True)
    email_verified = fields.Boolean(load_default=False)
    first_name, last_name, phone, company, tax_id = (_text() for _ in range(5))


class AddressSchema(_Strict):
    name, company, line1, line2, city, region, postal_code, phone = (_text() for _ in range(8))
    country = IsoCode(2, lambda c: pycountry.countries.get(alpha_2=c), "ISO 3166-1 alpha-2 country",
                      allow_none=True)


class TaxSchema(_Strict):
    name = _text()
    rate = Amount(allow_none=True)
    amount = Amount(required=True)


class LineSchema(_Strict):
    external_id, sku, name = _text(), _text(), _text()
    quantity = Amount(required=True, max_places=QUANTITY_PLACES, positive=True)
    unit_price = Amount(required=True)
    discount = Amount(allow_none=True)
    taxes = fields.List(fields.Nested(TaxSchema), load_default=list)

    @validates_schema
    def _named(self, data: dict, **kwargs: Any) -> None:
        if not (data.get("sku") or data.get("name")):
            raise ValidationError("Give a sku or a name for each line.", "sku")


class ShippingLineSchema(_Strict):
    method = _text()
    amount = Amount(required=True)
    taxes = fields.List(fields.Nested(TaxSchema), load_default=list)


class DiscountSchema(_Strict):
    code = _text()
    amount = Amount(required=True)


class TotalsSchema(_Strict):
    subtotal, discount, shipping, tax = (Amount(allow_none=True) for _ in range(4))
    total = Amount(required=True)


class PaymentSchema(_Strict):
    status = fields.String(validate=OneOf(PAYMENT_STATUSES), allow_none=True)
    method, gateway, transaction_id = _text(), _text(), _text()
    amount = Amount(allow_none=True)


def _amounts(order: dict) -> Iterator[tuple[dict, str, tuple, int]]:
    """Yield (holder, key, path, extra places) for every money amount present in the order."""
    def dicts(items: Any) -> list[tuple[int, dict]]:
        return [(i, x) for i, x in enumerate(items or []) if isinstance(x, dict)]

    def money(holder: dict, keys: tuple, path: tuple, extra: int = 0) -> Iterator:
        for key in keys:
            if isinstance(holder.get(key), Decimal):
                yield holder, key, (*path, key), extra

    for i, line in dicts(order.get("lines")):
        yield from money(line, ("unit_price",), ("lines", i), UNIT_PRICE_EXTRA_PLACES)
    for name, keys in (("lines", ("discount",)), ("shipping", ("amount",)),
                       ("discounts", ("amount",))):
        for i, item in dicts(order.get(name)):
            yield from money(item, keys, (name, i))
            for j, tax in dicts(item.get("taxes")):
                yield from money(tax, ("amount",), (name, i, "taxes", j))
    for name in ("totals", "payment"):
        holder = order.get(name)
        if isinstance(holder, dict):
            yield from money(holder, tuple(holder), (name,))


NUL_MESSAGE = "Must not contain a NUL character (\\u0000)."


def _nul_paths(value: Any, path: tuple = ()) -> Iterator[tuple]:
    """Paths of every string (and object key) holding a NUL character.

    PostgreSQL refuses NUL in text and JSON, so such an order could never be stored: it is
    invalid input, refused with its path by the REST API, the webhook gateway and the worker
    alike (they all load orders through this schema).
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                yield (*path, key.replace("\x00", "\\u0000"))
            else:
                yield from _nul_paths(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _nul_paths(item, (*path, index))


def _has_nul(value: Any) -> bool:
    """_nul_paths' quick yes/no (every order is checked; few have one)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
            if any("\x00" in key for key in item if isinstance(key, str)):
                return True
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _nest(errors: dict, path: tuple, message: str) -> None:
    for key in path[:-1]:
        errors = errors.setdefault(key, {})
    errors.setdefault(path[-1], []).append(message)


class OrderSchema(_Strict):
    external_id = fields.String(required=True, validate=Length(min=1, max=255))
    number = _text(64)  # the orders table indexes it as 64 characters
    channel = _text(64)
    placed_at = UtcDateTime(allow_none=True)
    updated_at = UtcDateTime(allow_none=True)
    status = fields.String(validate=OneOf(ORDER_STATUSES), load_default="open")
    currency = IsoCode(3, lambda c: pycountry.currencies.get(alpha_3=c), "ISO 4217 currency",
                       required=True)
    customer = fields.Nested(CustomerSchema, allow_none=True)
    billing_address = fields.Nested(AddressSchema, allow_none=True)
    shipping_address = fields.Nested(AddressSchema, allow_none=True)
    lines = fields.List(fields.Nested(LineSchema), required=True, validate=Length(min=1))
    shipping = fields.List(fields.Nested(ShippingLineSchema), load_default=list)
    discounts = fields.List(fields.Nested(DiscountSchema), load_default=list)
    prices_include_tax = fields.Boolean(load_default=False)
    totals = fields.Nested(TotalsSchema, required=True)
    payment = fields.Nested(PaymentSchema, allow_none=True)
    note = _text(5000)
    tags = fields.List(fields.String(validate=Length(max=255)), load_default=list)
    metadata = Metadata(load_default=dict)

    @pre_load
    def _no_nul(self, data: Any, **kwargs: Any) -> Any:
        if not _has_nul(data):
            return data
        errors: dict = {}
        for path in _nul_paths(data):
            _nest(errors, path or ("_schema",), NUL_MESSAGE)
        if errors:
            raise ValidationError(errors)
        return data

    @validates_schema(skip_on_field_errors=False)
    def _check_places(self, data: dict, **kwargs: Any) -> None:
        if "currency" not in data:
            return
        units, errors = minor_units(data["currency"]), {}
        for holder, key, path, extra in _amounts(data):
            if _places(holder[key]) > units + extra:
                _nest(errors, path, f"At most {units + extra} decimal places in "
                                    f"{data['currency']} (ISO 4217 minor units).")
        if errors:
            raise ValidationError(errors)

    @validates_schema
    def _check_totals(self, data: dict, **kwargs: Any) -> None:
        minor = Decimal(1).scaleb(-minor_units(data["currency"]))
        tolerance = len(data["lines"]) * minor  # ORDER.md: "to within one minor unit per line"
        totals, lines = data["totals"], data["lines"]

        def fmt(value: Decimal) -> str:
            return f"{value.quantize(minor):f}"

        def pick(key: str, parts: Iterator[Decimal]) -> Decimal:
            """A totals figure, when given, wins over the sum of its parts."""
            return sum(parts, _ZERO) if totals.get(key) is None else totals[key]

        with localcontext(prec=60):  # exact: each factor has at most 15 + 8 digits
            computed = sum((ln["quantity"] * ln["unit_price"] - (ln.get("discount") or 0)
                            for ln in lines), _ZERO)
            subtotal = totals.get("subtotal")
            if subtotal is not None and abs(subtotal - computed) > tolerance:
                raise ValidationError({"totals": {"subtotal": [
                    f"subtotal {fmt(subtotal)} does not match "
                    f"sum(quantity * unit_price - discount) of the lines = {fmt(computed)}"]}})
            subtotal = computed if subtotal is None else subtotal
            taxed = (*lines, *data["shipping"])
            discount = pick("discount", (d["amount"] for d in data["discounts"]))
            shipping = pick("shipping", (s["amount"] for s in data["shipping"]))
            tax = pick("tax", (t["amount"] for x in taxed for t in x["taxes"]))
            expected = subtotal - discount + shipping
            sum_text = (f"subtotal {fmt(subtotal)} - discount {fmt(discount)}"
                        f" + shipping {fmt(shipping)}")
            if data["prices_include_tax"]:
                sum_text += f" (tax {fmt(tax)} included in prices)"
            else:
                expected += tax
                sum_text += f" + tax {fmt(tax)}"
            if abs(totals["total"] - expected) > tolerance:
                raise ValidationError({"totals": {"total": [
                    f"total {fmt(totals['total'])} does not match {sum_text} = {fmt(expected)}"]}})

    @post_load
    def _normalise(self, data: dict, **kwargs: Any) -> dict:
        """Give every amount at least the currency's places, so "12.5" and 12.50 dump alike."""
        units = minor_units(data["currency"])
        for holder, key, _path, _extra in _amounts(data):
            if _places(holder[key]) < units:
                holder[key] = holder[key].quantize(Decimal(1).scaleb(-units))
        return data


_SCHEMA = OrderSchema()


def load_order(data: object) -> dict:
    """Validate and normalise an order; raises ValidationError keyed by field path."""
    if not isinstance(data, Mapping):
        raise ValidationError({"_schema": ["An order must be a JSON object."]})
    return _SCHEMA.load(data)


def dump_order(order: dict) -> dict:
    """JSON-ready form of a loaded order: decimals as strings, times as ISO 8601 with Z."""
    return _SCHEMA.dump(order)


def reload_order(dumped: dict) -> dict:
    """The loaded form of a dump this schema produced and validated before (no re-validation).

    Deliveries re-read stored versions; running every validator again cost more than the push.
    Equal to load_order(dumped) for any dumped order (tested).
    """
    return _reload(_SCHEMA, dumped)


def _reload(schema: Schema, data: dict) -> dict:
    return {key: _reload_value(schema.fields.get(key), value) for key, value in data.items()}


def _reload_value(field: Any, value: Any) -> Any:
    if value is None or field is None:
        return value
    if isinstance(field, Amount):
        return Decimal(value)
    if isinstance(field, UtcDateTime):
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(field, fields.Nested):
        return _reload(field.schema, value)
    if isinstance(field, fields.List):
        return [_reload_value(field.inner, item) for item in value]
    if isinstance(field, Metadata):
        return field.deserialize(value)
    return value


def order_digest(order: dict) -> str:
    """sha256 of the canonical JSON dump, to spot a re-sent identical version."""
    return dumped_digest(dump_order(order))


def dumped_digest(dumped: dict) -> str:
    """order_digest of an order already dumped (saves a second dump on the hot path)."""
    return hashlib.sha256(_canonical_json(dumped).encode()).hexdigest()


def flatten_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested messages into {"lines.3.unit_price": [...]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            # a nested object's own "_schema" errors belong to the object's path
            path = prefix if key == "_schema" and prefix else ".".join(
                filter(None, (prefix, str(key))))
            for k, v in flatten_errors(value, path).items():
                flat.setdefault(k, []).extend(v)
    elif isinstance(messages, list | tuple):
        for item in messages:
            for k, v in flatten_errors(item, prefix).items():
                flat.setdefault(k, []).extend(v)
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat


_ADDRESS = {"name": "Ana Silva", "company": None, "line1": "1 Main St", "line2": None,
            "city": "Springfield", "region": "IL", "postal_code": "62701", "country": "US",
            "phone": None}
ORDER_EXAMPLE: dict[str, Any] = {
    "external_id": "5001234567890", "number": "#1042", "channel": "shopify",
    "placed_at": "2026-11-20T14:03:00Z", "updated_at": "2026-11-20T14:05:00Z",
    "status": "open", "currency": "USD",
    "customer": {"external_id": "207119551", "email": "ana@example.com", "email_verified": True,
                 "first_name": "Ana", "last_name": "Silva", "phone": "+15550100",
                 "company": None, "tax_id": None},
    "billing_address": dict(_ADDRESS), "shipping_address": dict(_ADDRESS),
    "lines": [{"external_id": "866550311766439020", "sku": "SKU-001", "name": "Blue Widget",
               "quantity": "2", "unit_price": "12.50", "discount": "0.00",
               "taxes": [{"name": "IL State Tax", "rate": "0.0625", "amount": "1.56"}]}],
    "shipping": [{"method": "Standard", "amount": "5.00", "taxes": []}],
    "discounts": [{"code": "WELCOME10", "amount": "2.50"}],
    "prices_include_tax": False,
    "totals": {"subtotal": "25.00", "discount": "2.50", "shipping": "5.00", "tax": "1.56",
               "total": "29.06"},
    "payment": {"status": "paid", "method": "card", "gateway": "shopify_payments",
                "transaction_id": "ch_123", "amount": "29.06"},
    "note": "Leave at the door", "tags": ["vip"], "metadata": {},
}
