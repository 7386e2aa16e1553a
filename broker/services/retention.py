"""Retention: delete what is older than its window, in small batches, never what is still needed.

Each data class (raw events, order versions, delivery attempts, timeline, audit log) has its
own window in days (BROKER_RETENTION_*; 0 keeps it for ever). A batch is one short
transaction: its rows are picked oldest first along an index (locked rows skipped, so
concurrent purges and workers never wait on each other), optionally appended to a JSON-lines
archive, then deleted. Between batches the lock is released, so ingest (a webhook's insert, on
SQLite the one write lock) waits at most one batch.

Never purged: events not yet normalised or rejected (they still await a person), anything of an
order that has a pending, in-flight, parked or dead delivery (dead letters stay replayable and
their journey readable until resolved), the latest applied version of every order and any
version holding a connector's latest booking (the next update is sent against it), attempts of
unfinished deliveries, and the audit entries of customer erasures (they prove the erasure and
hold only a hash).
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Table, delete, func, select
from sqlalchemy.orm import Session, aliased

from broker.db import Database, utcnow
from broker.models import (
    AuditEntry,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    EventStatus,
    InboundEvent,
    OrderVersion,
    TimelineEntry,
)
from broker.settings import Settings

CLASSES = ("events", "versions", "attempts", "timeline", "audit")
# Deliveries that still need their order's data, journey and raw payloads.
UNFINISHED = (DeliveryStatus.PENDING, DeliveryStatus.LEASED, DeliveryStatus.PARKED,
              DeliveryStatus.DEAD)
FINISHED = (DeliveryStatus.BOOKED, DeliveryStatus.SUPERSEDED)
KEPT_AUDIT_ACTIONS = ("customer.erase",)
SQLITE_PAUSE = 0.05  # between batches on SQLite, so a waiting webhook gets the write lock


@dataclass(frozen=True)
class Policy:
    """Days per data class (0: keep for ever), rows per batch, where purged rows are archived."""

    days: dict[str, int]
    batch: int = 500
    archive_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls({name: int(getattr(settings, f"retention_{name}_days")) for name in CLASSES},
                   settings.retention_batch,
                   Path(settings.retention_archive_dir).expanduser()
                   if settings.retention_archive_dir else None)


@dataclass
class Purged:
    """What one data class's purge did (or would do, in a dry run)."""

    keep_days: int
    cutoff: str | None
    rows: int = 0
    batches: int = 0
    related: dict[str, int] = field(default_factory=dict)  # deliveries and attempts of versions
    complete: bool = True  # False: the time budget ran out, the next run goes on


def _unfinished_delivery(order_id: Any) -> Any:
    """An unfinished delivery of the order: everything of it is still needed."""
    return select(Delivery.id).where(Delivery.order_id == order_id,
                                     Delivery.status.in_(UNFINISHED)).exists()


def _events(cutoff: datetime) -> tuple[Any, Any]:
    return (InboundEvent.__table__, select(InboundEvent.id).where(
        InboundEvent.status.in_((EventStatus.NORMALISED, EventStatus.IGNORED)),
        InboundEvent.received_at < cutoff,
        ~(InboundEvent.order_id.is_not(None) & _unfinished_delivery(InboundEvent.order_id)))
        .order_by(InboundEvent.received_at))


def _versions(cutoff: datetime) -> tuple[Any, Any]:
    newer = aliased(OrderVersion)
    booked, later_booked, later_version = aliased(Delivery), aliased(Delivery), aliased(OrderVersion)
    superseded_by_newer_applied = select(newer.id).where(
        newer.order_id == OrderVersion.order_id, newer.applied.is_(True), newer.id != OrderVersion.id,
        (newer.version > OrderVersion.version) | OrderVersion.applied.is_(False)).exists()
    holds_latest_booking = select(booked.id).where(
        booked.order_version_id == OrderVersion.id, booked.status == DeliveryStatus.BOOKED,
        ~select(later_booked.id).join(later_version, later_version.id == later_booked.order_version_id)
        .where(later_booked.order_id == booked.order_id,
               later_booked.connector_id == booked.connector_id,
               later_booked.status == DeliveryStatus.BOOKED,
               later_version.version > OrderVersion.version).exists()).exists()
    return (OrderVersion.__table__, select(OrderVersion.id).where(
        OrderVersion.created_at < cutoff, superseded_by_newer_applied, ~holds_latest_booking,
        ~_unfinished_delivery(OrderVersion.order_id)).order_by(OrderVersion.created_at))


def _attempts(cutoff: datetime) -> tuple[Any, Any]:
    return (DeliveryAttempt.__table__, select(DeliveryAttempt.id).where(
        DeliveryAttempt.started_at < cutoff,
        select(Delivery.id).where(Delivery.id == DeliveryAttempt.delivery_id,
                                  Delivery.status.in_(FINISHED)).exists())
        .order_by(DeliveryAttempt.started_at))


def _timeline(cutoff: datetime) -> tuple[Any, Any]:
    return (TimelineEntry.__table__, select(TimelineEntry.id).where(
        TimelineEntry.at < cutoff, ~_unfinished_delivery(TimelineEntry.order_id))
        .order_by(TimelineEntry.at))


def _audit(cutoff: datetime) -> tuple[Any, Any]:
    return (AuditEntry.__table__, select(AuditEntry.id).where(
        AuditEntry.at < cutoff, AuditEntry.action.not_in(KEPT_AUDIT_ACTIONS))
        .order_by(AuditEntry.at))


CANDIDATES: dict[str, Callable[[datetime], tuple[Table, Any]]] = {
    "events": _events, "versions": _versions, "attempts": _attempts, "timeline": _timeline,
    "audit": _audit}


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class Archive:
    """Appends purged rows as JSON lines (one file per table and day, mode 0600), synced to
    disk before the delete commits. A batch whose delete then fails is archived again by the
    next run: read archives by row id."""

    def __init__(self, folder: Path, day: str) -> None:
        self.folder, self.day = folder, day

    def write(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{table.name}-{self.day}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({k: _json_value(v) for k, v in row.items()},
                                    ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _remove(session: Session, table: Table, where: Any, archive: Archive | None) -> int:
    """Delete rows matching `where`, archiving them first."""
    if archive is not None:
        archive.write(table, [dict(r) for r in session.execute(select(table).where(where)).mappings()])
    return session.execute(delete(table).where(where)).rowcount


def _purge_batch(session: Session, name: str, table: Table, ids: list[str],
                 archive: Archive | None, purged: Purged) -> None:
    if name == "versions":  # their deliveries and attempts would go by cascade: archive them too
        deliveries = select(Delivery.id).where(Delivery.order_version_id.in_(ids))
        for related, where in (
                (DeliveryAttempt.__table__, DeliveryAttempt.delivery_id.in_(deliveries)),
                (Delivery.__table__, Delivery.order_version_id.in_(ids))):
            count = _remove(session, related, where, archive)
            purged.related[related.name] = purged.related.get(related.name, 0) + count
    purged.rows += _remove(session, table, table.c.id.in_(ids), archive)


def purge_class(db: Database, name: str, days: int, *, batch: int = 500,
                archive_dir: Path | None = None, now: datetime | None = None,
                dry_run: bool = False, deadline: float | None = None) -> Purged:
    """Purge one data class older than `days` in batches of `batch` rows, each its own
    transaction; a dry run only counts. Stops early (complete=False) past `deadline`
    (time.monotonic())."""
    if days <= 0:
        return Purged(days, None)
    now = now or utcnow()
    cutoff = now - timedelta(days=days)
    purged = Purged(days, cutoff.isoformat())
    table, candidates = CANDIDATES[name](cutoff)
    if dry_run:  # counted per class: attempts of purgeable versions are counted twice
        ids = candidates.order_by(None)
        with db.begin() as session:
            purged.rows = session.execute(select(func.count()).select_from(ids.subquery())).scalar_one()
            if name == "versions":
                deliveries = select(Delivery.id).where(Delivery.order_version_id.in_(ids))
                purged.related = {
                    "delivery_attempts": session.execute(select(func.count()).where(
                        DeliveryAttempt.delivery_id.in_(deliveries))).scalar_one(),
                    "deliveries": session.execute(select(func.count()).select_from(
                        deliveries.subquery())).scalar_one()}
        return purged
    archive = Archive(archive_dir, now.strftime("%Y-%m-%d")) if archive_dir else None
    pause = SQLITE_PAUSE if db.dialect == "sqlite" else 0.0
    while True:
        if deadline is not None and time.monotonic() > deadline:
            purged.complete = False
            return purged
        with db.begin() as session:
            ids = list(session.execute(
                candidates.limit(batch).with_for_update(skip_locked=True)).scalars())
            if not ids:
                return purged
            _purge_batch(session, name, table, ids, archive, purged)
        purged.batches += 1
        if len(ids) < batch:
            return purged
        if pause:
            time.sleep(pause)


def purge(db: Database, policy: Policy, *, now: datetime | None = None, dry_run: bool = False,
          budget_seconds: float | None = None) -> dict[str, Purged]:
    """Every data class by its policy; within `budget_seconds` if given (the rest next time)."""
    deadline = time.monotonic() + budget_seconds if budget_seconds else None
    now = now or utcnow()
    return {name: purge_class(db, name, policy.days.get(name, 0), batch=policy.batch,
                              archive_dir=policy.archive_dir, now=now, dry_run=dry_run,
                              deadline=deadline)
            for name in CLASSES}


def report(result: dict[str, Purged]) -> dict[str, dict[str, Any]]:
    """JSON-ready: per class its window, cutoff, rows, batches, related rows, completeness."""
    return {name: {"keep_days": p.keep_days, "cutoff": p.cutoff, "rows": p.rows,
                   "batches": p.batches, "related": p.related, "complete": p.complete}
            for name, p in result.items()}
