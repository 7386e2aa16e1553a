"""What needs an admin now, worst first: a back office that keeps failing (since when), dead
letters, parked deliveries, a consent to give or renew, a disabled connector holding orders,
a failing catch-up, rejected events. Read-only; the console's dashboard and `broker problems`
show the same list, each with what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from broker.models import (
    Connector,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EventStatus,
    InboundEvent,
    Source,
)
from broker.services.crypto import SecretBox
from broker.services.status import first_line

BAD, WARN = "bad", "warn"


@dataclass
class Problem:
    kind: str          # failing, dead, parked, consent, disabled, catchup, rejected
    tone: str          # bad | warn
    subject: str       # the connector or source it is about
    what: str          # one line: "erp keeps failing: 3 deliveries retrying"
    detail: str = ""   # the error, the reason
    since: datetime | None = None
    count: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    when: str = "since"  # what `since` is: since (the first), latest, last run

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tone": self.tone, "subject": self.subject, "what": self.what,
                "detail": self.detail, "since": self.since.isoformat() if self.since else None,
                "when": self.when,
                "count": self.count, **self.extra}


def _failing(session: Session) -> list[Problem]:
    """Connectors whose deliveries are retrying after failures, with the first failure's time."""
    retrying = and_(Delivery.status == DeliveryStatus.PENDING, Delivery.attempts > 0,
                    Delivery.last_error.is_not(None))
    rows = session.execute(
        select(Connector.name, Connector.enabled, func.count(), func.max(Delivery.updated_at))
        .select_from(Delivery).join(Connector, Connector.id == Delivery.connector_id).where(retrying)
        .group_by(Connector.name, Connector.enabled)).all()
    if not rows:
        return []
    since = dict(session.execute(
        select(Connector.name, func.min(DeliveryAttempt.started_at))
        .select_from(DeliveryAttempt).join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
        .join(Connector, Connector.id == Delivery.connector_id)
        .where(retrying).group_by(Connector.name)).all())
    found = []
    for name, _enabled, count, newest in rows:
        error = session.execute(
            select(Delivery.last_error).join(Connector, Connector.id == Delivery.connector_id)
            .where(retrying, Connector.name == name, Delivery.updated_at == newest).limit(1)).scalar()
        found.append(Problem(
            "failing", BAD, name, f"{name} keeps failing: {count} deliver{'y' if count == 1 else 'ies'} "
            "retrying", first_line(error, 240), since.get(name), count))
    return found


def _dead(session: Session) -> list[Problem]:
    rows = session.execute(
        select(Connector.name, func.count(), func.max(Delivery.updated_at))
        .select_from(Delivery).join(Connector, Connector.id == Delivery.connector_id)
        .where(Delivery.status == DeliveryStatus.DEAD).group_by(Connector.name)).all()
    return [Problem("dead", BAD, name, f"{name}: {count} dead letter{'s' if count != 1 else ''}",
                    "fix the cause, then replay them", newest, count, when="latest")
            for name, count, newest in rows]


def _parked(session: Session) -> list[Problem]:
    rows = session.execute(
        select(Connector.name, Delivery.parked_reason, func.count(), func.min(Delivery.updated_at))
        .select_from(Delivery).join(Connector, Connector.id == Delivery.connector_id)
        .where(Delivery.status == DeliveryStatus.PARKED)
        .group_by(Connector.name, Delivery.parked_reason)).all()
    return [Problem("parked", WARN, name, f"{name}: {count} deliver{'y' if count == 1 else 'ies'} "
                    f"parked ({reason or 'waiting'})", "", oldest, count, {"reason": reason})
            for name, reason, count, oldest in rows]


def _consents(session: Session, box: SecretBox) -> list[Problem]:
    from broker.services.custody import consent_health

    found = []
    for row in session.execute(select(Connector).where(Connector.enabled.is_(True))
                               .order_by(Connector.name)).scalars():
        health = consent_health(session, box, row)
        if health is None or health["state"] == "ok":
            continue
        what = (f"{row.name}: the back office's authorization was never given" if health["state"] == "needed"
                else f"{row.name}: the back office's authorization expired or was revoked")
        found.append(Problem("consent", WARN if health["state"] == "needed" else BAD, row.name, what,
                             health["summary"], extra={"state": health["state"]}))
    return found


def _disabled(session: Session) -> list[Problem]:
    rows = session.execute(
        select(Connector.name, func.count())
        .select_from(Delivery).join(Connector, Connector.id == Delivery.connector_id)
        .where(Connector.enabled.is_(False),
               Delivery.status.in_((DeliveryStatus.PENDING, DeliveryStatus.LEASED)))
        .group_by(Connector.name)).all()
    return [Problem("disabled", WARN, name, f"{name} is disabled: {count} deliver"
                    f"{'y waits' if count == 1 else 'ies wait'} until it is enabled", count=count)
            for name, count in rows]


def _sources(session: Session) -> list[Problem]:
    found = []
    for name, error, at in session.execute(
            select(Source.name, Source.catchup_error, Source.catchup_at)
            .where(Source.catchup_error.is_not(None), Source.enabled.is_(True))):
        found.append(Problem("catchup", WARN, name, f"catch-up of {name} is failing",
                             first_line(error, 240), at, when="last run"))
    for name, count, newest in session.execute(
            select(Source.name, func.count(), func.max(InboundEvent.received_at))
            .select_from(InboundEvent).join(Source, Source.id == InboundEvent.source_id)
            .where(InboundEvent.status == EventStatus.REJECTED).group_by(Source.name)):
        found.append(Problem("rejected", WARN, name, f"{name}: {count} event{'s' if count != 1 else ''} "
                             "rejected", "their reasons and a reprocess button are on the source's page",
                             newest, count, when="latest"))
    return found


def problems(session: Session, box: SecretBox) -> list[Problem]:
    """Everything that needs a person, worst first (then the biggest)."""
    found = [*_failing(session), *_dead(session), *_consents(session, box), *_parked(session),
             *_disabled(session), *_sources(session)]
    return sorted(found, key=lambda p: (p.tone != BAD, -p.count, p.subject))
