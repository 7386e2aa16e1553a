"""Erasing one customer's personal data (GDPR art. 17) while the books stay whole.

What is erased, found by the customer's email (any case): on each of their orders the
customer (email, names, phone, company, tax id, channel id) and the addresses (all but the
country) of every version, the note, and every other text of the order that repeats one of
those values (line names, metadata, timeline and error messages, parked keys); the raw
payloads of their webhooks and polled events (the body is replaced, the dedupe key kept so a
redelivery is still recognised); identity links keyed by them; audit entries naming them.
What stays: orders with their number, totals, state, versions' digests (a re-sent old payload
stays a duplicate), deliveries with their back-office references, and the journey's steps.

Each order is erased in a transaction of its own (its row locked, so a version arriving
meanwhile waits), then events, links and audit entries in short batches: erasing again
finishes an interrupted run, and an erasure that finds nothing names the earlier one. The
erasure itself is audited under the SHA-256 of the normalised email, never the email.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.db import Database
from broker.models import (
    AuditEntry,
    Delivery,
    DeliveryAttempt,
    EventStatus,
    IdentityLink,
    InboundEvent,
    Order,
    OrderVersion,
    TimelineEntry,
)
from broker.services import audit, timeline
from broker.services.retention import UNFINISHED
from broker.services.sources import Conflict, NotFound, SetupError
from connectors.identity import customer_keys

ERASED = "[erased]"
ERASED_BODY = b'{"erased":"personal data erased on request"}'
ACTION = "customer.erase"
SCAN_BATCH = 200
MIN_NEEDLE = 3  # shorter values are wiped where they are fields, not searched for in text
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


@dataclass
class Erasure:
    """What an erasure changed, per table; `subject` is the hash the audit log keeps."""

    subject: str
    orders: int = 0
    versions: int = 0
    events: int = 0
    timeline: int = 0
    deliveries: int = 0
    attempts: int = 0
    links: int = 0
    audit_entries: int = 0
    already_erased_at: str | None = None
    order_ids: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return (self.orders + self.versions + self.events + self.timeline + self.deliveries
                + self.attempts + self.links + self.audit_entries)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def normalise_email(email: str) -> str:
    value = (email or "").strip()
    if not _EMAIL.fullmatch(value) or len(value) > 320:
        raise SetupError(f"{value[:80]!r} is not an email address")
    return value.casefold()


def subject_of(email: str) -> str:
    """What the audit log keeps of an erased customer: the SHA-256 of the normalised email."""
    return "sha256:" + hashlib.sha256(normalise_email(email).encode()).hexdigest()


class Needles:
    """The customer's values to find in text. Their emails are searched everywhere (raw
    events, audit entries); names, phones and address lines only within records already known
    to be the customer's, so a namesake's data is never touched."""

    def __init__(self, email: str) -> None:
        self.emails: set[str] = {email}
        self.values: set[str] = {email}

    def add(self, doc: dict[str, Any]) -> None:
        customer = doc.get("customer") or {}
        first, last = customer.get("first_name") or "", customer.get("last_name") or ""
        if customer.get("email"):
            self.emails.add(customer["email"].strip().casefold())
        self.values.update(v for v in (f"{first} {last}".strip(), first, last, customer.get("email"),
                                       customer.get("phone"), customer.get("company"),
                                       customer.get("tax_id")) if v)
        for key in ("billing_address", "shipping_address"):
            address = doc.get(key) or {}
            self.values.update(address.get(k) or "" for k in (
                "name", "company", "line1", "line2", "city", "postal_code", "phone"))

    def pattern(self) -> re.Pattern[str]:
        values = {v.strip() for v in self.values if v and len(v.strip()) >= MIN_NEEDLE}
        values |= {json.dumps(v)[1:-1] for v in values}  # as an escaped JSON text quotes it
        parts = []
        for value in sorted(values, key=len, reverse=True):
            edge = r"[\w.,]" if value.replace(" ", "").isdigit() else r"\w"
            parts.append(f"(?<!{edge}){re.escape(value)}(?!{edge})")
        return re.compile("|".join(parts), re.IGNORECASE)

    def forms(self) -> list[bytes]:
        """Each email as it may sit in a raw body: UTF-8 and JSON-escaped, lower case."""
        found = set()
        for email in self.emails:
            found.add(email.encode())
            found.add(json.dumps(email)[1:-1].lower().encode())
        return sorted(found)


def scrub(value: Any, pattern: re.Pattern[str]) -> Any:
    """A copy with every occurrence of the customer's values replaced by "[erased]"."""
    if isinstance(value, str):
        return pattern.sub(ERASED, value)
    if isinstance(value, dict):
        return {scrub(str(k), pattern): scrub(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, pattern) for v in value]
    return value


def erase_document(doc: dict[str, Any], pattern: re.Pattern[str]) -> dict[str, Any]:
    """A canonical order without its customer's personal data; amounts and lines kept."""
    doc = copy.deepcopy(doc)
    if isinstance(doc.get("customer"), dict):
        doc["customer"] = {k: (False if k == "email_verified" else None) for k in doc["customer"]}
    for key in ("billing_address", "shipping_address"):
        if isinstance(doc.get(key), dict):
            doc[key] = {k: (v if k == "country" else None) for k, v in doc[key].items()}
    if doc.get("note"):
        doc["note"] = None  # the customer's own words
    return scrub(doc, pattern)


def _find_orders(session: Session, email: str) -> list[str]:
    by_order = select(Order.id).where(func.lower(Order.email) == email)
    by_version = select(OrderVersion.order_id).where(
        func.lower(OrderVersion.data[("customer", "email")].as_string()) == email)
    return sorted(set(session.execute(by_order).scalars()) | set(session.execute(by_version).scalars()))


def _contains(raw: bytes | None, forms: list[bytes]) -> bool:
    if not raw:
        return False
    lowered = bytes(raw).lower()
    return any(form in lowered for form in forms)


def _event_names(event: Any, forms: list[bytes]) -> bool:
    text = json.dumps([event.headers, event.error], ensure_ascii=False, default=str).encode()
    return bytes(event.body or b"") != ERASED_BODY and (
        _contains(event.body, forms) or _contains(event.fetched, forms) or _contains(text, forms))


def _scan_events(db: Database, forms: list[bytes], statuses: Iterable[str] | None = None
                 ) -> Iterator[str]:
    """Ids of events whose payload, headers or error name the customer (keyset batches)."""
    last = ""
    columns = (InboundEvent.id, InboundEvent.body, InboundEvent.fetched, InboundEvent.headers,
               InboundEvent.error)
    while True:
        query = select(*columns).where(InboundEvent.id > last).order_by(InboundEvent.id).limit(SCAN_BATCH)
        if statuses is not None:
            query = query.where(InboundEvent.status.in_(list(statuses)))
        with db.begin() as session:
            rows = session.execute(query).all()
        for row in rows:
            if _event_names(row, forms):
                yield row.id
        if len(rows) < SCAN_BATCH:
            return
        last = rows[-1].id


def _erase_events(session: Session, event_ids: Iterable[str], pattern: re.Pattern[str]) -> int:
    done = 0
    for event in session.execute(select(InboundEvent).where(
            InboundEvent.id.in_(sorted(set(event_ids)))).with_for_update()).scalars():
        if bytes(event.body or b"") == ERASED_BODY and event.fetched is None:
            continue
        event.body, event.fetched = ERASED_BODY, None
        event.headers = scrub(event.headers or {}, pattern)
        if event.status in (EventStatus.RECEIVED, EventStatus.PARKED, EventStatus.REJECTED):
            event.status, event.waiting_for = EventStatus.IGNORED, None
            event.error = "personal data erased on request; nothing left to process"
        elif event.error:
            event.error = scrub(event.error, pattern)
        done += 1
    return done


def _unfinished(session: Session, order_ids: list[str]) -> list[str]:
    """Numbers (or ids) of these orders that still have something to deliver."""
    if not order_ids:
        return []
    rows = session.execute(select(Order.number, Order.id).where(
        Order.id.in_(order_ids),
        select(Delivery.id).where(Delivery.order_id == Order.id,
                                  Delivery.status.in_(UNFINISHED)).exists())).all()
    return sorted(number or order_id for number, order_id in rows)


def _erase_order(session: Session, order_id: str, pattern: re.Pattern[str], result: Erasure,
                 subject: str) -> None:
    order = session.execute(select(Order).where(Order.id == order_id).with_for_update()).scalar_one()
    order.email = None
    result.orders += 1
    event_ids = set(session.execute(select(InboundEvent.id).where(
        InboundEvent.order_id == order.id)).scalars())
    for version in session.execute(select(OrderVersion).where(OrderVersion.order_id == order.id)).scalars():
        erased = erase_document(version.data, pattern)
        if erased != version.data:
            version.data = erased
            result.versions += 1
        if version.inbound_event_id:
            event_ids.add(version.inbound_event_id)
    result.events += _erase_events(session, event_ids, pattern)
    for entry in session.execute(select(TimelineEntry).where(TimelineEntry.order_id == order.id)).scalars():
        message, data = scrub(entry.message or "", pattern), scrub(entry.data or {}, pattern)
        if (message, data) != (entry.message or "", entry.data or {}):
            entry.message, entry.data = message, data
            result.timeline += 1
    deliveries = session.execute(select(Delivery).where(Delivery.order_id == order.id)).scalars().all()
    for delivery in deliveries:
        error = scrub(delivery.last_error, pattern) if delivery.last_error else delivery.last_error
        key = delivery.parked_key
        if key and (delivery.parked_kind == "customer" or pattern.search(key)):
            key = ERASED
        if (error, key, None) != (delivery.last_error, delivery.parked_key, delivery.serial_key):
            delivery.last_error, delivery.parked_key, delivery.serial_key = error, key, None
            result.deliveries += 1
    if deliveries:
        for attempt in session.execute(select(DeliveryAttempt).where(
                DeliveryAttempt.delivery_id.in_([d.id for d in deliveries]),
                DeliveryAttempt.error.is_not(None))).scalars():
            error = scrub(attempt.error, pattern)
            if error != attempt.error:
                attempt.error = error
                result.attempts += 1
    timeline.record(session, order.id, "erased",
                    f"the customer's personal data was erased on request ({subject[:19]}…)")


def _erase_links(session: Session, emails: Iterable[str], keys: set[str]) -> int:
    keys = {k for k in keys if k}
    ids: set[str] = set()
    for email in emails:
        ids |= set(session.execute(select(IdentityLink.id).where(
            func.lower(IdentityLink.key).contains(email, autoescape=True))).scalars())
    if keys:
        ids |= set(session.execute(select(IdentityLink.id).where(
            IdentityLink.kind == "customer", IdentityLink.key.in_(sorted(keys)))).scalars())
    if ids:
        session.execute(IdentityLink.__table__.delete().where(IdentityLink.id.in_(sorted(ids))))
    return len(ids)


def _erase_audit(db: Database, needles: Needles, pattern: re.Pattern[str]) -> int:
    """Audit entries naming the customer (an identity mapping by email, …), scrubbed in place."""
    emails = sorted(needles.emails)
    last, done = "", 0
    while True:
        with db.begin() as session:
            rows = session.execute(select(AuditEntry.id, AuditEntry.target, AuditEntry.before,
                                          AuditEntry.after)
                                   .where(AuditEntry.id > last, AuditEntry.action != ACTION)
                                   .order_by(AuditEntry.id).limit(SCAN_BATCH)).all()
        hits = [row.id for row in rows if any(
            e in json.dumps([row.target, row.before, row.after], ensure_ascii=False,
                            default=str).casefold() for e in emails)]
        if hits:
            with db.begin() as session:
                for entry in session.execute(select(AuditEntry).where(
                        AuditEntry.id.in_(hits))).scalars():
                    entry.target = scrub(entry.target, pattern) if entry.target else entry.target
                    entry.before = scrub(entry.before, pattern) if entry.before else entry.before
                    entry.after = scrub(entry.after, pattern) if entry.after else entry.after
                    done += 1
        if len(rows) < SCAN_BATCH:
            return done
        last = rows[-1].id


def erase_customer(db: Database, email: str, *, actor: str = audit.SYSTEM,
                   force: bool = False) -> Erasure:
    """Erase what the broker holds about the customer with this email (see the module).

    Raises SetupError for a malformed email, Conflict when orders of the customer still have
    something to deliver (the back office still needs their data; `force` erases anyway and
    they are pushed without it), NotFound when nothing names the email and it was never erased.
    """
    wanted = normalise_email(email)
    result = Erasure(subject_of(wanted))
    needles = Needles(wanted)
    keys: set[str] = {f"email:{wanted}"}
    with db.begin() as session:
        order_ids = _find_orders(session, wanted)
        for (data,) in session.execute(select(OrderVersion.data).where(
                OrderVersion.order_id.in_(order_ids))):
            needles.add(data)
            keys.update(customer_keys(data))
        busy = [] if force else _unfinished(session, order_ids)
    forms = needles.forms()
    if not force:
        waiting = list(_scan_events(db, forms, (EventStatus.RECEIVED, EventStatus.PARKED)))
        if busy or waiting:
            what = (f"{len(busy)} order(s) not yet fully delivered ({', '.join(busy[:10])})"
                    if busy else f"{len(waiting)} event(s) not yet normalised")
            raise Conflict(f"the back office still needs this customer's data: {what}; book, "
                           "cancel or resolve them first, or erase anyway (--force, API "
                           "\"force\": true): they are then pushed without the customer's data")
    pattern = needles.pattern()
    for order_id in order_ids:
        with db.begin() as session:
            _erase_order(session, order_id, pattern, result, result.subject)
    result.order_ids = order_ids
    for event_id in list(_scan_events(db, forms)):
        with db.begin() as session:
            result.events += _erase_events(session, [event_id], pattern)
    with db.begin() as session:
        result.links = _erase_links(session, sorted(needles.emails), keys)
    result.audit_entries = _erase_audit(db, needles, pattern)
    with db.begin() as session:
        if not result.changed:
            earlier = session.execute(select(AuditEntry.at).where(
                AuditEntry.action == ACTION, AuditEntry.target == result.subject)
                .order_by(AuditEntry.at.desc()).limit(1)).scalar()
            if earlier is None:
                raise NotFound("the broker holds no data for this email: no order, event, "
                               "identity link or audit entry names it")
            result.already_erased_at = earlier.isoformat().replace("+00:00", "Z")
            return result
        counts = {k: v for k, v in result.as_dict().items()
                  if k not in ("subject", "already_erased_at", "order_ids")}
        audit.record(session, actor=actor, action=ACTION, target_type="customer",
                     target=result.subject, after={"erased": counts, "orders": order_ids})
    return result
