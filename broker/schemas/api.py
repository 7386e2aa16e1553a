"""REST input and output of the admin API: the marshmallow schemas the OpenAPI document is
made from. Output schemas list exactly what may leave the broker, so a secret column added to
a model never reaches a response by accident: secrets are write-only (`load_only`), and an
output names the secrets that are set, never their values."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from broker.models.deliveries import DeliveryStatus
from connectors.base import LINK_KINDS

MAX_PAGE = 200  # the cap of every list endpoint's `limit`
DEFAULT_PAGE = 50
TIME = {"format": "date-time"}
DELIVERY_STATUSES = tuple(s.value for s in DeliveryStatus)
ORDER_STATES = ("booked", "partly booked", "parked", "dead", "waiting", "not routed")  # services.status


def _no_nul(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("must not contain NUL characters")


def text(max_length: int = 255, *, min_length: int = 0, **kwargs: Any) -> fields.String:
    """A bounded string without NUL characters (PostgreSQL refuses them in text)."""
    return fields.String(validate=[validate.Length(min=min_length, max=max_length), _no_nul], **kwargs)


def name_field(**kwargs: Any) -> fields.String:
    """A source, connector or client name (as `broker.services.sources.check_name` wants it)."""
    return fields.String(validate=validate.Regexp(r"^[a-z0-9][a-z0-9_-]{0,63}$", error=(
        "1-64 lower-case letters, digits, '-' or '_', starting with a letter or digit")), **kwargs)


def time_field(**kwargs: Any) -> fields.String:
    """An ISO 8601 UTC time as the API writes it (`2026-01-31T12:00:00.123456Z`)."""
    return fields.String(allow_none=True, metadata=TIME, **kwargs)


# --- errors and pages ----------------------------------------------------------------------

class ErrorDetailSchema(Schema):
    code = fields.String(required=True, metadata={"description": "machine-readable, e.g. not_found"})
    message = fields.String(required=True, metadata={"description": "what went wrong and how to fix it"})
    field_errors = fields.Dict(keys=fields.String(), values=fields.List(fields.String()), data_key="fields",
                               metadata={"description": "messages by field path, e.g. `config.url`"})
    request_id = fields.String(metadata={"description": "quote it to your operator"})


class ErrorSchema(Schema):
    """The one error shape of every endpoint."""

    error = fields.Nested(ErrorDetailSchema, required=True)


class PageArgsSchema(Schema):
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(min=1), metadata={
        "description": f"page size; at most {MAX_PAGE} (a larger value is capped)"})
    cursor = text(200, metadata={"description": "`next_cursor` of the previous page (opaque)"})


def page_of(item: type[Schema], title: str) -> type[Schema]:
    """The page schema `{"items": [...], "next_cursor": ...}` of one kind of item."""
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item), required=True),
        "next_cursor": fields.String(allow_none=True, required=True, metadata={
            "description": "pass as `cursor` for the next page; null on the last page"}),
    }, name=title)


# --- sources ---------------------------------------------------------------------------------

class SourceSchema(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    enabled = fields.Boolean()
    webhook_url = fields.String(allow_none=True, metadata={"description": "null for REST sources"})
    settings = fields.Dict(keys=fields.String(), values=fields.Raw())
    credentials = fields.List(fields.String(), metadata={
        "description": "names of the channel API credentials that are set (values are never shown)"})
    signing_secrets = fields.Integer(metadata={"description": "how many signing secrets are valid"})
    max_body_bytes = fields.Integer(allow_none=True)
    created_at = time_field()
    catchup_at = time_field()
    catchup_error = fields.String(allow_none=True)


class SourceCreatedSchema(SourceSchema):
    signing_secret = fields.String(allow_none=True, metadata={
        "description": "the generated signing secret, shown this once (null when you gave it)"})


class SourceCreateSchema(Schema):
    name = name_field(required=True)
    kind = text(32, required=True, metadata={
        "description": "standard-webhooks, shopify, woocommerce, stripe, square, bigcommerce or rest"})
    secret = text(1000, min_length=1, load_only=True, metadata={
        "description": "signing secret where the channel issues it; generated otherwise",
        "format": "password"})
    max_body_bytes = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=100_000_000))
    settings = fields.Dict(keys=text(64), values=text(2000), load_default=dict)
    credentials = fields.Dict(keys=text(64), values=text(10_000), load_default=dict, load_only=True,
                              metadata={"description": "channel API credentials (write-only)"})


class SourceUpdateSchema(Schema):
    settings = fields.Dict(keys=text(64), values=text(2000), metadata={
        "description": "merged into the stored settings; an empty value removes one"})
    credentials = fields.Dict(keys=text(64), values=text(10_000), load_only=True, metadata={
        "description": "merged into the stored credentials (write-only); an empty value removes one"})
    enabled = fields.Boolean()


class RotateSecretSchema(Schema):
    secret = text(1000, min_length=1, load_only=True, metadata={
        "description": "the new secret where the channel issues it; generated otherwise",
        "format": "password"})
    keep_previous = fields.Boolean(load_default=True, metadata={
        "description": "keep the previous secrets valid (up to three in all) for a rotation "
                       "without downtime"})


class RotatedSchema(Schema):
    name = fields.String()
    signing_secret = fields.String(metadata={"description": "the new secret, shown this once"})
    kept_previous = fields.Boolean()


# --- connectors ------------------------------------------------------------------------------

class ConnectorKindSchema(Schema):
    kind = fields.String()
    class_name = fields.String(data_key="class")
    secrets = fields.List(fields.String(), metadata={"description": "dotted paths of secret fields"})
    config_schema = fields.Dict(metadata={"description": "JSON Schema of the kind's config; secret "
                                                         "fields are writeOnly, format password"})


class ConsentSchema(Schema):
    state = fields.String(metadata={"description": "needed, ok or refresh_failed"})
    summary = fields.String()


class ConnectorSchema(Schema):
    id = fields.String()
    name = fields.String()
    kind = fields.String()
    enabled = fields.Boolean()
    queue = fields.String()
    config = fields.Dict(metadata={"description": "the public part of the config"})
    secrets = fields.List(fields.String(), metadata={
        "description": "paths of the secrets that are set (values are never shown)"})
    consent = fields.Nested(ConsentSchema, allow_none=True)
    created_at = time_field()


class ConnectorCreateSchema(Schema):
    name = name_field(required=True)
    kind = text(32, required=True)
    config = fields.Dict(required=True, metadata={
        "description": "validated by the kind's config schema (GET /connector-kinds/{kind})"})
    enabled = fields.Boolean(load_default=True)


class ConnectorUpdateSchema(Schema):
    config = fields.Dict(metadata={
        "description": "the whole config; a secret left out keeps the stored one"})
    enabled = fields.Boolean()


class CheckSchema(Schema):
    name = fields.String()
    ok = fields.Boolean()
    error = fields.String(allow_none=True)
    consent = fields.Nested(ConsentSchema, allow_none=True)
    warnings = fields.List(fields.String())


# --- routes ----------------------------------------------------------------------------------

class RouteFiltersSchema(Schema):
    channel = fields.List(text(64))
    tags = fields.List(text(255))
    currency = fields.List(text(3))
    country = fields.List(text(2))


class RouteSchema(Schema):
    id = fields.String()
    source = fields.String()
    connector = fields.String()
    filters = fields.Nested(RouteFiltersSchema, metadata={"description": "empty: every order"})
    enabled = fields.Boolean()
    created_at = time_field()


class RouteCreateSchema(Schema):
    source = name_field(required=True)
    connector = name_field(required=True)
    filters = fields.Nested(RouteFiltersSchema, load_default=dict)


class RouteUpdateSchema(Schema):
    filters = fields.Nested(RouteFiltersSchema, required=True)


# --- orders ----------------------------------------------------------------------------------

class OrderSearchArgsSchema(PageArgsSchema):
    number = text(64, metadata={"description": "order number, with or without a leading #"})
    external_id = text(255, metadata={"description": "the channel's id of the order"})
    email = text(320, metadata={"description": "customer email"})
    reference = text(255, metadata={"description": "back-office reference of a delivery (exact)"})
    status = fields.String(validate=validate.OneOf(("open", "cancelled")), metadata={
        "description": "the order itself: open or cancelled"})
    state = fields.String(validate=validate.OneOf(ORDER_STATES), metadata={
        "description": "where the order stands in the back offices (from each connector's newest "
                       "delivery): booked, partly booked, parked, dead, waiting or not routed"})
    delivery_status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES), metadata={
        "description": "orders with a delivery in this status"})
    source = name_field(metadata={"description": "source name"})
    received_from = fields.AwareDateTime(default_timezone=UTC, metadata={
        "description": "received at or after (ISO 8601; UTC when no offset is given)"})
    received_to = fields.AwareDateTime(default_timezone=UTC, metadata={"description": "received before"})


class ReferenceSchema(Schema):
    connector = fields.String()
    reference = fields.String(metadata={"description": "the back office's reference of the booking"})


class OrderSummarySchema(Schema):
    id = fields.String()
    source = fields.String()
    external_id = fields.String()
    number = fields.String(allow_none=True)
    channel = fields.String(allow_none=True)
    status = fields.String(metadata={"description": "the order itself: open or cancelled"})
    state = fields.String(validate=validate.OneOf(ORDER_STATES), metadata={
        "description": "where it stands in the back offices: booked, partly booked, parked, dead, "
                       "waiting or not routed (the console and `broker orders list` show the same)"})
    tone = fields.String(metadata={"description": "ok, busy, warn or bad: how urgent the state is"})
    detail = fields.String(metadata={"description": "one line: what it waits for, or the error"})
    references = fields.List(fields.Nested(ReferenceSchema))
    currency = fields.String()
    total = fields.String()
    email = fields.String(allow_none=True)
    version = fields.Integer()
    received_at = time_field()
    updated_at = time_field()


class OrderDetailArgsSchema(Schema):
    payloads = fields.Boolean(load_default=False, metadata={
        "description": "add `events`: the stored inbound webhooks with headers and body "
                       "(values of secret-looking keys are shown as ***)"})


# --- deliveries ------------------------------------------------------------------------------

class DeliveryArgsSchema(PageArgsSchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))
    connector = name_field()
    order_id = text(64)


class DeliverySchema(Schema):
    id = fields.String()
    order_id = fields.String()
    version = fields.Integer()
    connector = fields.String()
    action = fields.String()
    status = fields.String()
    attempts = fields.Integer()
    reference = fields.String(allow_none=True)
    last_error = fields.String(allow_none=True)
    parked_reason = fields.String(allow_none=True)
    parked_kind = fields.String(allow_none=True)
    parked_key = fields.String(allow_none=True)
    next_attempt_at = time_field()
    booked_at = time_field()
    created_at = time_field()
    updated_at = time_field()


class AttemptSchema(Schema):
    number = fields.Integer()
    outcome = fields.String()
    error = fields.String(allow_none=True)
    reference = fields.String(allow_none=True)
    started_at = time_field()
    duration_ms = fields.Integer()


class DeliveryDetailSchema(DeliverySchema):
    attempt_log = fields.List(fields.Nested(AttemptSchema))


class BulkReplaySchema(Schema):
    connector = name_field(metadata={"description": "only this connector's dead letters"})
    reason = text(64, metadata={"description": "only this reason (`reason` of GET /dead-letters)"})
    confirm = fields.Integer(validate=validate.Range(min=0), metadata={
        "description": "the `matched` count of a dry run; without it nothing is replayed"})


class BulkReplayResultSchema(Schema):
    matched = fields.Integer(metadata={"description": "dead letters the filter selects now"})
    replayed = fields.Integer()
    dry_run = fields.Boolean()


class DeadLetterGroupSchema(Schema):
    connector = fields.String()
    reason = fields.String(metadata={"description": "stable id of the reason, for bulk replay"})
    error_class = fields.String(metadata={"description": "permanent, retries_exhausted or worker_crash"})
    message = fields.String(metadata={"description": "the error, with ids and values elided"})
    example = fields.String(metadata={"description": "one error message as recorded"})
    count = fields.Integer()
    oldest = time_field()
    newest = time_field()


class ParkedGroupSchema(Schema):
    connector = fields.String()
    reason = fields.String(allow_none=True, metadata={"description": "missing mapping, identity review …"})
    kind = fields.String(allow_none=True, metadata={"description": "the mapping kind it waits for"})
    key = fields.String(allow_none=True, metadata={"description": "the key to map (POST /mappings)"})
    deliveries = fields.Integer()
    message = fields.String(allow_none=True)


class GroupArgsSchema(PageArgsSchema):
    connector = name_field()


# --- mappings and clients --------------------------------------------------------------------

class MappingArgsSchema(PageArgsSchema):
    connector = name_field()
    kind = fields.String(validate=validate.OneOf(LINK_KINDS))
    key = text(255)


class MappingSchema(Schema):
    id = fields.String()
    connector = fields.String()
    kind = fields.String()
    key = fields.String()
    value = fields.String()
    origin = fields.String(metadata={"description": "admin, or learned from a booking"})


class MappingCreateSchema(Schema):
    connector = name_field(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(LINK_KINDS))
    key = text(255, min_length=1, required=True, metadata={
        "description": "SKU, customer anchor, tax/shipping/payment name"})
    value = text(255, min_length=1, required=True, metadata={"description": "the back-office id"})


class MappingCreatedSchema(MappingSchema):
    resumed = fields.Integer(metadata={"description": "parked deliveries resumed by this mapping"})


class ClientSchema(Schema):
    id = fields.String()
    name = fields.String()
    client_id = fields.String()
    scope = fields.String()
    source = fields.String(allow_none=True)
    revoked = fields.Boolean()
    created_at = time_field()


class ClientCreateSchema(Schema):
    name = name_field(required=True)
    scope = text(255, load_default="orders:write orders:read", metadata={
        "description": "space-separated: orders:write, orders:read, admin"})
    source = name_field(metadata={"description": "the REST source its orders enter (made if absent; "
                                           "default: the client's name)"})


class ClientCreatedSchema(ClientSchema):
    client_secret = fields.String(metadata={"description": "shown this once", "format": "password"})
    token_url = fields.String()


# --- customers' personal data ------------------------------------------------------------------

class CustomerEraseSchema(Schema):
    email = text(320, min_length=3, required=True, metadata={
        "description": "the customer's email, in any case", "format": "email"})
    force = fields.Boolean(load_default=False, metadata={
        "description": "erase even while orders of the customer wait to be delivered (they are "
                       "then pushed without the customer's data); without it that is a 409"})


class ErasureSchema(Schema):
    subject = fields.String(metadata={
        "description": "what the audit log keeps of the customer: `sha256:` + the SHA-256 of "
                       "the email in lower case"})
    orders, versions, events, timeline, deliveries, attempts, links, audit_entries = (
        fields.Integer(metadata={"description": f"{what} changed"}) for what in (
            "orders", "order versions", "raw events", "timeline entries", "deliveries",
            "delivery attempts", "identity links (deleted)", "audit entries"))
    already_erased_at = fields.String(allow_none=True, metadata={
        **TIME, "description": "set when nothing was left: the time of the earlier erasure"})
    order_ids = fields.List(fields.String(), metadata={"description": "the orders erased"})
