"""The one order status an admin reads (booked, partly booked, parked, dead, waiting, not
routed), derived from the order's deliveries, and the journey with repeated errors folded.

Read-only: the CLI, the API and the console all call these, so they never disagree. An
order's status counts, for each connector, its newest delivery that was not superseded (a new
version of the order replaces what an older one still waited for); a delivery booked for an
older version while the newer one waits is waiting, not booked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, not_, select
from sqlalchemy.orm import Session, aliased

from broker.models import Connector, Delivery, DeliveryStatus, Order

BOOKED, PARTLY, PARKED, DEAD, WAITING, UNROUTED = (
    "booked", "partly booked", "parked", "dead", "waiting", "not routed")
STATES = (BOOKED, PARTLY, PARKED, DEAD, WAITING, UNROUTED)
# How each state looks: ok (done), busy (on its way), warn (a person may look), bad (act).
TONES = {BOOKED: "ok", PARTLY: "busy", WAITING: "busy", PARKED: "warn", DEAD: "bad", UNROUTED: "warn"}
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.LEASED)


def parse_state(value: str) -> str:
    """A state as typed on a command line or in a URL ("partly-booked", "Not routed")."""
    state = value.strip().lower().replace("-", " ").replace("_", " ")
    if state not in STATES:
        raise ValueError(f"unknown status {value!r}; use one of {', '.join(STATES)}")
    return state


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return str(value or "")[:16].replace("T", " ") + " UTC" if value else ""


def delivery_label(d: Mapping[str, Any]) -> tuple[str, str]:
    """(label, tone) of one delivery: "pending" with failed attempts is "retrying", not grey."""
    status = d["status"]
    if status in OPEN and d.get("connector_enabled") is False:
        return "waiting: connector disabled", "warn"
    if status == DeliveryStatus.PENDING and d.get("attempts") and d.get("last_error"):
        return "retrying", "warn"
    if status == DeliveryStatus.LEASED:
        return "in flight", "busy"
    return {DeliveryStatus.PENDING: ("queued", "busy"), DeliveryStatus.BOOKED: ("booked", "ok"),
            DeliveryStatus.PARKED: ("parked", "warn"), DeliveryStatus.DEAD: ("dead", "bad"),
            DeliveryStatus.SUPERSEDED: ("superseded", "idle")}.get(status, (status, "idle"))


def _why(d: Mapping[str, Any]) -> str:
    """What one unfinished delivery waits for, in a few words."""
    label, _ = delivery_label(d)
    if d["status"] == DeliveryStatus.PARKED:
        return f"{d['connector']}: {d.get('parked_reason') or 'parked'}" + (
            f" {d['parked_key']}" if d.get("parked_key") else "")
    if d["status"] == DeliveryStatus.DEAD:
        return f"{d['connector']}: {first_line(d.get('last_error'))}"
    if label == "retrying":
        return (f"{d['connector']}: retrying after {d['attempts']} failed attempt"
                f"{'s' if d['attempts'] != 1 else ''} ({first_line(d.get('last_error'))})")
    return f"{d['connector']}: {label}"


def first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def latest(deliveries: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Per connector, the newest delivery that was not superseded (ids are time-ordered)."""
    newest: dict[str, Mapping[str, Any]] = {}
    for d in deliveries:
        if d["status"] == DeliveryStatus.SUPERSEDED:
            continue
        key = d.get("connector_id") or d["connector"]
        if key not in newest or d["id"] > newest[key]["id"]:
            newest[key] = d
    return sorted(newest.values(), key=lambda d: d["connector"])


def order_state(deliveries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The status of an order from its deliveries (rows with id, connector, status, reference,
    attempts, last_error, parked_reason/key, connector_enabled), with a one-line detail and
    the back-office references."""
    rows = latest(deliveries)
    references = [{"connector": d["connector"], "reference": d["reference"]}
                  for d in rows if d["status"] == DeliveryStatus.BOOKED and d.get("reference")]
    by_status: dict[str, list[Mapping[str, Any]]] = {}
    for d in rows:
        by_status.setdefault(d["status"], []).append(d)
    booked = by_status.get(DeliveryStatus.BOOKED, [])
    if not rows:
        state, detail = UNROUTED, "no route sends this order to a connector"
    elif by_status.get(DeliveryStatus.DEAD):
        state, detail = DEAD, "; ".join(_why(d) for d in by_status[DeliveryStatus.DEAD])
    elif by_status.get(DeliveryStatus.PARKED):
        state, detail = PARKED, "; ".join(_why(d) for d in by_status[DeliveryStatus.PARKED])
    elif len(booked) == len(rows):
        state = BOOKED
        detail = "; ".join(f"{d['connector']} {d.get('reference') or ''}".strip() for d in booked)
    else:
        state = PARTLY if booked else WAITING
        detail = "; ".join(_why(d) for d in rows if d["status"] in OPEN)
    if state in (DEAD, PARKED) and booked:
        detail += f" ({len(booked)} of {len(rows)} booked)"
    tone = TONES[state]
    if state in (WAITING, PARTLY) and any(delivery_label(d)[1] == "warn" for d in rows):
        tone = "warn"  # retrying, or held by a disabled connector: on its way, but not smoothly
    return {"state": state, "tone": tone, "detail": detail, "references": references}


def delivery_rows(session: Session, order_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The deliveries of these orders as order_state reads them (one query)."""
    found: dict[str, list[dict[str, Any]]] = {order_id: [] for order_id in order_ids}
    if not order_ids:
        return found
    query = (select(Delivery.id, Delivery.order_id, Delivery.connector_id, Connector.name,
                    Connector.enabled, Delivery.status, Delivery.reference, Delivery.attempts,
                    Delivery.last_error, Delivery.parked_reason, Delivery.parked_key,
                    Delivery.next_attempt_at)
             .join(Connector, Connector.id == Delivery.connector_id)
             .where(Delivery.order_id.in_(list(order_ids))))
    for row in session.execute(query):
        found[row.order_id].append({
            "id": row.id, "connector_id": row.connector_id, "connector": row.name,
            "connector_enabled": row.enabled, "status": row.status, "reference": row.reference,
            "attempts": row.attempts, "last_error": row.last_error, "parked_reason": row.parked_reason,
            "parked_key": row.parked_key, "next_attempt_at": row.next_attempt_at})
    return found


def states_of(session: Session, order_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """order_state for each of these orders."""
    return {order_id: order_state(rows) for order_id, rows in delivery_rows(session, order_ids).items()}


def _latest_with(*statuses: str) -> Any:
    """Ids of orders whose newest delivery to some connector has one of these statuses."""
    later = aliased(Delivery)
    newer = exists().where(later.order_id == Delivery.order_id,
                           later.connector_id == Delivery.connector_id,
                           later.id > Delivery.id, later.status != DeliveryStatus.SUPERSEDED)
    return select(Delivery.order_id).where(Delivery.status.in_(statuses), not_(newer))


def state_filter(state: str) -> Any:
    """A WHERE clause on Order selecting the orders in this state (same rules as order_state)."""
    dead, parked = _latest_with(DeliveryStatus.DEAD), _latest_with(DeliveryStatus.PARKED)
    booked, unfinished = _latest_with(DeliveryStatus.BOOKED), _latest_with(*OPEN)
    if state == UNROUTED:
        return Order.id.not_in(select(Delivery.order_id).where(
            Delivery.status != DeliveryStatus.SUPERSEDED))
    if state == DEAD:
        return Order.id.in_(dead)
    calm = and_(Order.id.not_in(dead), Order.id.not_in(parked))
    if state == PARKED:
        return and_(Order.id.in_(parked), Order.id.not_in(dead))
    if state == BOOKED:
        return and_(Order.id.in_(booked), Order.id.not_in(unfinished), calm)
    if state == PARTLY:
        return and_(Order.id.in_(booked), Order.id.in_(unfinished), calm)
    return and_(Order.id.in_(unfinished), Order.id.not_in(booked), calm)  # WAITING


# --- the journey, with repeated errors folded ---------------------------------------------------

_VARYING = [(re.compile(r"\battempt \d+\b"), "attempt N"), (re.compile(r"\bnext in \d+(\.\d+)?\s*s\b"), "")]


def _shape(step: str, message: str) -> tuple[str, str]:
    text = message or ""
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return step, text


def fold_timeline(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Timeline entries where a step of one delivery that repeats with the same error is one
    entry with `count`, `first_at` and `at` (its latest time), shown as "x8 since 16:51"."""
    folded: list[dict[str, Any]] = []
    last_of: dict[str | None, int] = {}
    for entry in entries:
        key = entry.get("delivery_id")
        index = last_of.get(key) if key else None
        if index is not None and _shape(folded[index]["step"], folded[index]["message"]) == \
                _shape(entry["step"], entry["message"]):
            folded[index].update(count=folded[index]["count"] + 1, at=entry["at"],
                                 message=entry["message"])
            continue
        folded.append({**entry, "count": 1, "first_at": entry["at"]})
        if key:
            last_of[key] = len(folded) - 1
    for entry in folded:
        entry["repeat"] = (f"\u00d7{entry['count']} since {_when(entry['first_at'])}"
                           if entry["count"] > 1 else "")
    return folded


def fold_attempts(attempts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A delivery's attempts with consecutive identical failures as one row (numbers a to b)."""
    folded: list[dict[str, Any]] = []
    for attempt in attempts:
        previous = folded[-1] if folded else None
        if previous is not None and attempt.get("error") and previous.get("error") == attempt.get("error") \
                and previous["outcome"] == attempt["outcome"]:
            previous.update(count=previous["count"] + 1, last_number=attempt["number"],
                            last_started_at=attempt["started_at"])
            continue
        folded.append({**attempt, "count": 1, "last_number": attempt["number"],
                       "last_started_at": attempt["started_at"]})
    return folded


def parked_hint(connector: str, reason: str | None, kind: str | None, key: str | None) -> str:
    """What resumes a group of parked deliveries, as a command (the console offers the form)."""
    if reason == "missing setting":
        return (f"set {key} in the configuration of connector {connector} (console: Connectors → "
                f"{connector}); saving it resumes them")
    if reason == "consent required":
        return f"connect {connector} to its back office: console → Connectors → {connector} → Connect"
    if reason == "identity review":
        return f"broker mappings add {connector} customer {key} CUSTOMER_ID"
    if kind and key:
        return f"broker mappings add {connector} {kind} {key} VALUE"
    return f"fix the cause, then broker orders replay ORDER_ID (connector {connector})"
