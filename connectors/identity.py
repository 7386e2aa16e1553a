"""Identity links, the way a careful clerk matches: known links first, then the back office.

Connectors call these helpers inside push(); the broker loads the links an order needs into
`ctx.links` and keeps what the connector learned (`PushResult.links`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from marshmallow import fields, validate

from connectors.base import Link, PushContext
from connectors.errors import IdentityReview, MissingMapping

ANCHORS = ("customer_id", "email")


def anchors_field() -> fields.List:
    """Config field `customer_anchors`: how customers are matched, strongest first."""
    return fields.List(fields.String(validate=validate.OneOf(ANCHORS)),
                       load_default=list(ANCHORS), validate=validate.Length(min=1))


def customer_keys(order: Mapping[str, Any], anchors: Sequence[str] = ANCHORS) -> list[str]:
    """The link keys of the order's customer, in anchor order."""
    customer = order.get("customer") or {}
    keys = []
    for anchor in anchors:
        if anchor == "customer_id" and customer.get("external_id"):
            keys.append(f"customer:{order.get('channel') or 'unknown'}:{customer['external_id']}")
        elif anchor == "email" and customer.get("email"):
            keys.append(f"email:{customer['email'].strip().lower()}")
    return keys


def trusted_keys(order: Mapping[str, Any], anchors: Sequence[str] = ANCHORS) -> list[str]:
    """The anchors that may select a linked customer: an unverified email proves nothing."""
    verified = bool((order.get("customer") or {}).get("email_verified"))
    return [k for k in customer_keys(order, anchors) if verified or not k.startswith("email:")]


def resolve_customer(order: Mapping[str, Any], ctx: PushContext, *,
                     anchors: Sequence[str] = ANCHORS,
                     search_by_email: Callable[[str], list[str]] | None = None,
                     connector: str | None = None) -> str | None:
    """The back-office customer id, or None when a new customer should be created.

    Order: a link on any anchor; then the back office by email — one match is used only when
    the channel verified the email (never merge silently on an unverified one); several
    matches, or a match on an unverified email, park the delivery for identity review, whose
    message names the command with this connector's name (`connector`, else the name of the
    connector `search_by_email` is a method of).
    """
    owner = getattr(search_by_email, "__self__", None)
    name = connector or getattr(owner, "name", None) or "CONNECTOR"
    keys = customer_keys(order, anchors)
    customer = order.get("customer") or {}
    for key in trusted_keys(order, anchors):  # never an unverified email, even if it once matched
        if key in ctx.links.customer:
            return ctx.links.customer[key]
    email = (customer.get("email") or "").strip().lower()
    if not (email and search_by_email and "email" in anchors):
        return None
    found = search_by_email(email)
    if not found:
        return None
    who = f"{customer.get('first_name') or ''} {customer.get('last_name') or ''}".strip() or email
    if len(found) > 1:
        raise IdentityReview(
            f"identity review: {who} <{email}> matches {len(found)} customers in the back office "
            f"({', '.join(map(str, found[:5]))}); link the right one with `broker mappings add "
            f"{name} customer {keys[0]} ID`", kind="customer", key=keys[0])
    if not customer.get("email_verified"):
        raise IdentityReview(
            f"identity review: unverified email {email} matches customer {found[0]}; confirm with "
            f"`broker mappings add {name} customer {keys[0]} {found[0]}` (or map another id)",
            kind="customer", key=keys[0])
    return str(found[0])


def customer_links(order: Mapping[str, Any], customer_id: str,
                   anchors: Sequence[str] = ANCHORS) -> tuple[Link, ...]:
    """Links to keep after booking: every anchor of this customer → the id used.

    An unverified email is not recorded as an anchor, so it never matches later on its own.
    """
    customer = order.get("customer") or {}
    keys = [k for k in customer_keys(order, anchors)
            if not k.startswith("email:") or customer.get("email_verified")]
    return tuple(Link("customer", key, str(customer_id)) for key in keys)


def resolve_products(lines: Iterable[Mapping[str, Any]], ctx: PushContext, *, connector: str,
                     find: Callable[[str], str | None]) -> dict[str, str]:
    """SKU → back-office product id for every line: a link, else a product with that code.

    A SKU with neither parks the delivery ("missing mapping"), naming the SKU.
    """
    resolved: dict[str, str] = {}
    for line in lines:
        sku = line.get("sku") or line.get("name")
        if sku in resolved:
            continue
        value = ctx.links.product.get(sku) or find(sku)
        if value is None:
            raise MissingMapping(
                f"missing mapping: SKU {sku} has no product in {connector}; map it with `broker "
                f"mappings add {connector} product {sku} PRODUCT_ID` (the order resumes at once) or "
                "create the product there (parked orders are tried again every 15 minutes)",
                kind="product", key=sku)
        resolved[sku] = str(value)
    return resolved


def mapped(ctx: PushContext, kind: str, key: str | None, *, connector: str,
           default: str | None = None) -> str | None:
    """A tax, shipping or payment mapping; `default` when none is configured and one is allowed.

    Without a default, an unmapped key parks the delivery naming it.
    """
    if not key:
        return default
    value = getattr(ctx.links, kind).get(key)
    if value is not None:
        return value
    if default is not None:
        return default
    raise MissingMapping(
        f"missing mapping: {kind} {key!r} has no counterpart in {connector}; map it with "
        f"`broker mappings add {connector} {kind} '{key}' VALUE`", kind=kind, key=key)
