"""Identity links and mappings per connector: what a push needs, what it learned, what an
admin maps — and resuming the deliveries parked for a mapping when it is added."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from broker.db import Database, insert_ignore, utcnow
from broker.models import Connector, Delivery, DeliveryStatus, IdentityLink, Order
from broker.services import audit, timeline
from broker.services.sources import SetupError
from connectors.base import LINK_KINDS, Link, Links
from connectors.errors import MissingSetting
from connectors.identity import ANCHORS, customer_keys


def needed_keys(data: Mapping[str, Any], anchors: Iterable[str] = ANCHORS) -> set[str]:
    """Every link key an order may need: customer anchors, SKUs, taxes, shipping, payment."""
    keys = set(customer_keys(data, list(anchors)))
    for line in data.get("lines") or []:
        keys.add(line.get("sku") or line.get("name") or "")
        keys.update(t.get("name") or "" for t in line.get("taxes") or [])
    for ship in data.get("shipping") or []:
        keys.add(ship.get("method") or "")
        keys.update(t.get("name") or "" for t in ship.get("taxes") or [])
    payment = data.get("payment") or {}
    keys.update((payment.get("method") or "", payment.get("gateway") or ""))
    keys.discard("")
    return keys


def load_links(session: Session, connector: Connector,
               documents: Iterable[Mapping[str, Any]]) -> Links:
    """The links these orders may need, in one query (never the whole table)."""
    anchors = (connector.config or {}).get("customer_anchors") or ANCHORS
    keys = set().union(*(needed_keys(d, anchors) for d in documents))
    found: dict[str, dict[str, str]] = {kind: {} for kind in LINK_KINDS}
    if keys:
        rows = session.execute(select(IdentityLink.kind, IdentityLink.key, IdentityLink.value).where(
            IdentityLink.connector_id == connector.id, IdentityLink.key.in_(sorted(keys))))
        for kind, key, value in rows:
            found.setdefault(kind, {})[key] = value
    return Links(**{kind: found[kind] for kind in LINK_KINDS})


def learn(session: Session, connector_id: str, links: Iterable[Link]) -> None:
    """Keep what a connector learned; an existing link (e.g. an admin's) is never overwritten."""
    now = utcnow()
    for link in links:
        if link.kind in LINK_KINDS and link.key and link.value:
            insert_ignore(session, IdentityLink, {
                "connector_id": connector_id, "kind": link.kind, "key": link.key[:255],
                "value": str(link.value)[:255], "origin": "learned", "created_at": now,
                "updated_at": now}, unique=("connector_id", "kind", "key"))


def resume_parked(session: Session, connector: Connector, kind: str, keys: Iterable[str] | None,
                  why: str, now: datetime | None = None, *, step: str = "resumed") -> int:
    """Make the deliveries of `connector` parked on (kind, key) due again (every key of the
    kind when `keys` is None); each gets a timeline entry saying why ("resumed" when a person
    caused it). Returns how many."""
    query = select(Delivery.id, Delivery.order_id).where(
        Delivery.connector_id == connector.id, Delivery.status == DeliveryStatus.PARKED,
        Delivery.parked_kind == kind)
    if keys is not None:
        keys = sorted(set(keys))
        if not keys:
            return 0
        query = query.where(Delivery.parked_key.in_(keys))
    now = now or utcnow()
    parked = session.execute(query).all()
    for delivery_id, order_id in parked:
        timeline.record(session, order_id, step, why, delivery_id=delivery_id)
    if parked:
        session.execute(update(Delivery).where(Delivery.id.in_([d for d, _ in parked])).values(
            status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, parked_reason=None,
            parked_kind=None, parked_key=None, last_error=None, updated_at=now)
            .execution_options(synchronize_session=False))
    return len(parked)


def resume_identity_reviews(session: Session, connector: Connector, learned: Iterable[Link],
                            now: datetime | None = None) -> int:
    """A booking taught a customer link: orders parked on that customer key try again (the
    identity may be clear now, e.g. "matches 2 customers" after one was linked)."""
    keys = [link.key for link in learned if link.kind == "customer"]
    return resume_parked(session, connector, "customer", keys,
                         f"a booking in {connector.name} linked this customer; trying again", now,
                         step="rechecked")


def _connector(session: Session, name: str) -> Connector:
    connector = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if connector is None:
        raise SetupError(f"no connector named {name!r}")
    return connector


def add_mapping(db: Database, connector_name: str, kind: str, key: str, value: str,
                actor: str = audit.SYSTEM) -> tuple[int, list[tuple[str, str]]]:
    """Map a front-office key to a back-office id and resume the deliveries parked for it.

    Returns (deliveries resumed, connectors to wake).
    """
    if kind not in LINK_KINDS:
        raise SetupError(f"unknown mapping kind {kind!r}; choose one of {', '.join(LINK_KINDS)}")
    if not key or not value:
        raise SetupError("a mapping needs a key and a value")
    now = utcnow()
    with db.begin() as session:
        connector = _connector(session, connector_name)
        inserted, link_id = insert_ignore(session, IdentityLink, {
            "connector_id": connector.id, "kind": kind, "key": key, "value": value,
            "origin": "admin", "created_at": now, "updated_at": now},
            unique=("connector_id", "kind", "key"))
        before = None
        if not inserted:
            link = session.get(IdentityLink, link_id)
            before = {"value": link.value, "origin": link.origin}
            link.value, link.origin, link.updated_at = value, "admin", now
        why = f"{kind} {key} mapped to {value} in {connector.name} by {actor}"
        resumed = resume_parked(session, connector, kind, [key], why, now)
        # A mapping may stand in for a setting (a shipping method mapped instead of a default
        # shipping product): orders parked on a missing setting try again too.
        resumed += resume_parked(session, connector, MissingSetting.KIND, None, why, now)
        audit.record(session, actor=actor, action="mapping.add", target_type="mapping",
                     target=f"{connector.name}/{kind}/{key}", before=before,
                     after={"connector": connector.name, "kind": kind, "key": key, "value": value,
                            "origin": "admin", "resumed": resumed})
        return resumed, [(connector.id, connector.queue)] if resumed else []


def remove_mapping(db: Database, connector_name: str, kind: str, key: str, *,
                   actor: str = audit.SYSTEM) -> bool:
    """Delete one mapping (audited); False when there was none."""
    with db.begin() as session:
        connector = _connector(session, connector_name)
        link = session.execute(select(IdentityLink).where(
            IdentityLink.connector_id == connector.id, IdentityLink.kind == kind,
            IdentityLink.key == key)).scalar_one_or_none()
        if link is not None:
            audit.record(session, actor=actor, action="mapping.remove", target_type="mapping",
                         target=f"{connector.name}/{kind}/{key}",
                         before={"connector": connector.name, "kind": kind, "key": key,
                                 "value": link.value, "origin": link.origin})
            session.delete(link)
        return link is not None


def list_mappings(session: Session, *, connector: str | None = None, kind: str | None = None,
                  key: str | None = None, after: tuple[str, str, str] | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    """By connector, kind and key; `after` is the (connector, kind, key) the previous page ended on."""
    order = (Connector.name, IdentityLink.kind, IdentityLink.key)
    query = (select(IdentityLink, Connector.name).join(Connector, Connector.id == IdentityLink.connector_id)
             .order_by(*order).limit(limit))
    if connector:
        query = query.where(Connector.name == connector)
    if kind:
        query = query.where(IdentityLink.kind == kind)
    if key:
        query = query.where(IdentityLink.key == key)
    if after:
        query = query.where(tuple_(*order) > tuple_(*after))
    return [{"id": link.id, "connector": name, "kind": link.kind, "key": link.key, "value": link.value,
             "origin": link.origin} for link, name in session.execute(query)]


def mapping_gaps(session: Session, *, connector: str | None = None,
                 source_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Parked deliveries grouped by what they wait for, biggest first (of `source_ids` only,
    when given)."""
    query = (select(Connector.name, Delivery.parked_reason, Delivery.parked_kind, Delivery.parked_key,
                    func.count(), func.min(Delivery.last_error))
             .join(Connector, Connector.id == Delivery.connector_id)
             .where(Delivery.status == DeliveryStatus.PARKED)
             .group_by(Connector.name, Delivery.parked_reason, Delivery.parked_kind, Delivery.parked_key)
             .order_by(func.count().desc()))
    if connector:
        query = query.where(Connector.name == connector)
    if source_ids is not None:
        query = query.join(Order, Order.id == Delivery.order_id).where(Order.source_id.in_(list(source_ids)))
    return [{"connector": c, "reason": r, "kind": k, "key": key, "deliveries": n, "message": m}
            for c, r, k, key, n, m in session.execute(query)]
