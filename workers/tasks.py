"""Thin task shells over broker.services; tasks take ids and re-read the database."""

from __future__ import annotations

import logging

from broker import metrics
from broker.logging import order_context
from broker.runtime import process_runtime
from broker.services import delivery, intake, sweeper
from workers.celery import app, settings

log = logging.getLogger(__name__)


@app.task(name="broker.normalise")
def normalise(event_id: str, force: bool = False) -> str:
    rt = process_runtime(settings)
    result = intake.normalise_event(rt.db, event_id, force=force)
    order_id = result.outcomes[0].order_id if result.outcomes else None
    with order_context(order_id):
        if result.error:
            log.warning("event %s rejected: %s", event_id, result.error)
            metrics.ORDERS_RECEIVED.labels(source=result.source, outcome="rejected").inc()
        else:
            log.info("event %s %s", event_id, result.status)
    rt.publisher.wake(result.wake)
    return result.status


@app.task(name="broker.deliver")
def deliver(connector_id: str) -> int:
    rt = process_runtime(settings)
    budget = max(1.0, settings.lease_seconds / 2)
    processed = delivery.run(rt, connector_id, budget_seconds=budget)
    return processed


@app.task(name="broker.sweep")
def sweep() -> dict[str, int]:
    rt = process_runtime(settings)
    found = sweeper.sweep(rt.db, grace_seconds=settings.sweep_interval)
    for event_id in found.events:
        rt.publisher.normalise(event_id)
    rt.publisher.wake(found.connectors)
    if found.events or found.connectors:
        log.info("sweep re-enqueued %d events and %d connectors", len(found.events),
                 len(found.connectors))
    return {"events": len(found.events), "connectors": len(found.connectors)}
