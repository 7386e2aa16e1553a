"""Retention: rows older than their window are archived and purged in small batches (each its
own transaction); recent rows and whatever an unfinished order or a connector's latest booking
needs remain. Ages are set in the database, nobody sleeps."""

from __future__ import annotations

import json
import math
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.sink import Sink
from harness import Stack, newer, order
from sqlalchemy import event, select, update

from broker.db import utcnow
from broker.models import (
    AuditEntry,
    Connector,
    Delivery,
    DeliveryAttempt,
    EventStatus,
    InboundEvent,
    Order,
    OrderVersion,
    Source,
    TimelineEntry,
)
from broker.services import delivery, retention
from broker.services.intake import normalise_pending, store_event

BATCH = 2


@pytest.fixture(params=[("sqlite", "embedded"), ("postgresql", "redis"), ("mariadb", "redis")],
                ids=["sqlite", "postgresql", "mariadb"])
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    database, queue = request.param
    built = Stack(tmp_path, database, queue, retention_batch=BATCH,
                  retention_archive_dir=str(tmp_path / "archive"))
    try:
        yield built
    finally:
        built.close()


def settle(stack: Stack) -> None:
    normalise_pending(stack.runtime.db, limit=50)
    with stack.runtime.db.begin() as session:
        ids = session.execute(select(Connector.id)).scalars().all()
    for connector_id in ids:
        delivery.run(stack.runtime, connector_id, budget_seconds=20)


def order_ids(stack: Stack) -> dict[str, str]:
    with stack.runtime.db.begin() as session:
        return dict(session.execute(select(Order.external_id, Order.id)).all())


def age(stack: Stack, ids: list[str], days: int) -> None:
    """Make everything of these orders `days` old, as if it had been there that long."""
    then = utcnow() - timedelta(days=days)
    with stack.runtime.db.begin() as session:
        event_ids = select(OrderVersion.inbound_event_id).where(OrderVersion.order_id.in_(ids))
        session.execute(update(InboundEvent).where(InboundEvent.id.in_(event_ids)).values(received_at=then))
        session.execute(update(OrderVersion).where(OrderVersion.order_id.in_(ids)).values(created_at=then))
        session.execute(update(TimelineEntry).where(TimelineEntry.order_id.in_(ids)).values(at=then))
        session.execute(update(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(
            select(Delivery.id).where(Delivery.order_id.in_(ids)))).values(started_at=then))


def left(stack: Stack) -> dict[str, Any]:
    """What each order still has: versions, timeline entries, events, attempts."""
    ids = order_ids(stack)
    with stack.runtime.db.begin() as session:
        def per_order(column: Any, key: Any, *where: Any) -> dict[str, int]:
            rows = session.execute(select(key, column).where(*where)).all()
            return {ext: sum(1 for k, _ in rows if k == oid) for ext, oid in ids.items()}

        return {
            "versions": {ext: session.execute(select(OrderVersion.version).where(
                OrderVersion.order_id == oid).order_by(OrderVersion.version)).scalars().all()
                for ext, oid in ids.items()},
            "timeline": per_order(TimelineEntry.id, TimelineEntry.order_id),
            "events": per_order(InboundEvent.id, InboundEvent.order_id),
            "attempts": per_order(DeliveryAttempt.id, Delivery.order_id,
                                  Delivery.id == DeliveryAttempt.delivery_id),
            "unlinked_events": sorted(session.execute(select(InboundEvent.status).where(
                InboundEvent.order_id.is_(None))).scalars()),
            "audit": sorted(session.execute(select(AuditEntry.action)).scalars()),
        }


def test_purge_archives_and_deletes_old_rows_in_batches_and_keeps_what_is_needed(
        stack: Stack, sink: Sink, tmp_path: Path):
    secret = stack.source("shop")
    for name in ("erp", "wh"):
        stack.http_connector(name, sink.url + "/orders")
        stack.route("shop", name)
    send = lambda doc: stack.webhook("shop", secret, doc)[0] == 202  # noqa: E731
    later = {"tags": ["vip", "changed"], "updated_at": newer(20)}
    assert all(send(order(ext)) for ext in ("OLD-1", "OLD-KEEP", "OLD-DEAD", "NEW-1"))
    settle(stack)
    assert all(send(order(ext, **later)) for ext in ("OLD-1", "OLD-DEAD", "NEW-1"))
    settle(stack)
    stack.cli("routes", "remove", "--source", "shop", "--connector", "wh", "--json")
    assert send(order("OLD-KEEP", **later))  # booked only in erp: wh's booking stays on version 1
    settle(stack)
    ids = order_ids(stack)
    with stack.runtime.db.begin() as session:  # OLD-DEAD's newest push to erp died
        dead = session.execute(select(Delivery.id).join(OrderVersion).join(
            Connector, Connector.id == Delivery.connector_id).where(
            Delivery.order_id == ids["OLD-DEAD"], OrderVersion.version == 2,
            Connector.name == "erp")).scalar_one()
        session.execute(update(Delivery).where(Delivery.id == dead).values(status="dead"))
        source_id = session.execute(select(Source.id)).scalar_one()
        session.execute(update(AuditEntry).values(at=utcnow() - timedelta(days=800)))
        session.add(AuditEntry(actor="cli:dpo", action="customer.erase", target_type="customer",
                               target="sha256:00", at=utcnow() - timedelta(days=800)))
    for key, status in (("rejected-old", EventStatus.REJECTED), ("waiting-old", EventStatus.RECEIVED)):
        store_event(stack.runtime.db, source_id, key, "order", {}, b'{"x": 1}', status=status)
    age(stack, [ids["OLD-1"], ids["OLD-KEEP"], ids["OLD-DEAD"]], days=800)
    with stack.runtime.db.begin() as session:
        session.execute(update(InboundEvent).where(InboundEvent.order_id.is_(None))
                        .values(received_at=utcnow() - timedelta(days=800)))
    stack.cli("mappings", "add", "erp", "product", "SKU-001", "P-1", "--json")  # a recent entry
    before = left(stack)
    counts = stack.row_counts()

    dry = stack.cli("data", "purge", "--dry-run", "--json")["data"]
    assert stack.row_counts() == counts  # a dry run deletes nothing
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(stack.runtime.db.engine, "commit", count)
    try:
        report = stack.cli("data", "purge", "--json")["data"]
    finally:
        event.remove(stack.runtime.db.engine, "commit", count)

    rows = {name: r["rows"] for name, r in report.items()}
    assert rows == {"events": 4, "versions": 1, "attempts": 8, "timeline": before["timeline"]["OLD-1"]
                    + before["timeline"]["OLD-KEEP"], "audit": len(before["audit"]) - 2}
    assert report["versions"]["related"] == {"delivery_attempts": 2, "deliveries": 2}
    assert dry["versions"]["related"] == report["versions"]["related"]
    # a dry run counts each kind alone: the attempts of purged versions show under both
    assert {name: r["rows"] for name, r in dry.items()} == {**rows, "attempts": rows["attempts"] + 2}
    for name, r in report.items():  # small batches, each its own transaction
        assert r["batches"] == math.ceil(r["rows"] / BATCH), (name, r)
        assert r["complete"] and r["keep_days"] > 0
    assert len(commits) >= sum(r["batches"] for r in report.values())

    after = left(stack)
    assert after["versions"] == {"OLD-1": [2], "OLD-KEEP": [1, 2], "OLD-DEAD": [1, 2], "NEW-1": [1, 2]}
    assert after["timeline"] == {**before["timeline"], "OLD-1": 0, "OLD-KEEP": 0}
    assert after["events"] == {**before["events"], "OLD-1": 0, "OLD-KEEP": 0}
    assert after["attempts"] == {"OLD-1": 0, "OLD-KEEP": 0, "OLD-DEAD": 1,
                                 "NEW-1": before["attempts"]["NEW-1"]}
    assert after["unlinked_events"] == ["received", "rejected"]
    assert after["audit"] == ["customer.erase", "data.purge", "mapping.add"]
    states = {o["external_id"]: o["state"] for o in stack.cli("orders", "list", "--json")}
    assert states == {"OLD-1": "booked", "OLD-KEEP": "booked", "OLD-DEAD": "dead", "NEW-1": "booked"}

    archive = tmp_path / "archive"
    archived = {path.name.rsplit("-", 3)[0]: [json.loads(line) for line in path.read_text().splitlines()]
                for path in archive.glob("*.jsonl")}
    assert {t: len(r) for t, r in archived.items()} == {
        "inbound_events": 4, "order_versions": 1, "deliveries": 2, "delivery_attempts": 10,
        "timeline": rows["timeline"], "audit_log": rows["audit"]}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in archive.glob("*.jsonl"))
    assert all("$base64" in e["body"] for e in archived["inbound_events"])

    assert all(r["rows"] == 0 for r in stack.cli("data", "purge", "--json")["data"].values())
    policy = retention.Policy.from_settings(stack.settings)
    stopped = retention.purge(stack.runtime.db, policy, budget_seconds=1e-9)
    assert not any(p.complete for p in stopped.values() if p.keep_days)


def test_the_periodic_task_purges_with_the_configured_windows(tmp_path: Path):
    """`broker.retention` (what the beat sends every BROKER_RETENTION_INTERVAL), run as a worker
    runs it: in its own process, configured only by BROKER_* variables."""
    import os
    import subprocess
    import sys

    stack = Stack(tmp_path, "sqlite", "embedded", retention_timeline_days=2, retention_events_days=0)
    try:
        secret = stack.source("shop")
        assert stack.webhook("shop", secret, order("UNROUTED-1"))[0] == 202
        normalise_pending(stack.runtime.db, limit=10)
        ids = order_ids(stack)
        with stack.runtime.db.begin() as session:
            steps = session.execute(select(TimelineEntry.id).where(
                TimelineEntry.order_id == ids["UNROUTED-1"])).scalars().all()
        age(stack, [ids["UNROUTED-1"]], days=3)
        task = ("import json; from workers.tasks import purge_expired; "
                "print(json.dumps(purge_expired()))")
        done = subprocess.run([sys.executable, "-c", task], env={**os.environ, **stack.env},
                              capture_output=True, text=True, timeout=120, check=True)
        counts = json.loads(done.stdout.strip().splitlines()[-1])
        assert counts == {"events": 0, "versions": 0, "attempts": 0, "timeline": len(steps),
                          "audit": 0}
        assert left(stack)["timeline"] == {"UNROUTED-1": 0} and left(stack)["events"] == {"UNROUTED-1": 1}
    finally:
        stack.close()
