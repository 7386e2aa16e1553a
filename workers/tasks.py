"""Thin task shells over broker.services; tasks take ids and re-read the database."""

from __future__ import annotations

import logging
import time

from broker import metrics
from broker.logging import order_context
from broker.queue import BROKER_QUEUE
from broker.runtime import process_runtime
from broker.services import catchup, custody, delivery, intake, leases, retention, sweeper
from workers.celery import app, settings

log = logging.getLogger(__name__)


@app.task(name="broker.normalise")
def normalise(event_id: str | None = None) -> int:
    """Normalise waiting events in batches; `event_id` is only a hint that work is waiting.

    A worker asked to stop finishes the batch in hand and leaves the rest to another worker.
    """
    rt = process_runtime(settings)
    done, deadline = 0, time.monotonic() + max(1.0, settings.lease_seconds / 2)
    while True:
        if rt.stopping.is_set():
            rt.publisher.normalise(event_id or "")  # whatever waits, for a worker that stays
            return done
        results = intake.normalise_pending(rt.db, limit=settings.claim_batch, box=rt.box,
                                           stopping=rt.stopping)
        for result in results:
            order_id = result.outcomes[0].order_id if result.outcomes else None
            with order_context(order_id):
                if result.error:
                    log.warning("event %s: %s", result.status, result.error)
                metrics.EVENTS_NORMALISED.labels(source=result.source, outcome=result.status).inc()
        rt.publisher.wake(sorted({w for r in results for w in r.wake}))
        done += len(results)
        if len(results) < settings.claim_batch and not any(r.released for r in results):
            return done
        if time.monotonic() > deadline:  # let other tasks run; the rest is one message away
            rt.publisher.normalise(event_id or "")
            return done


@app.task(name="broker.deliver")
def deliver(connector_id: str) -> int:
    rt = process_runtime(settings)
    budget = max(1.0, settings.lease_seconds / 2)
    processed = delivery.run(rt, connector_id, budget_seconds=budget)
    return processed


@app.task(name="broker.sweep")
def sweep(fence: int | None = None) -> dict[str, int]:
    """Re-enqueue what is due, claim catch-ups, refresh consents: only under the sweeper
    lease's current token (`fence`), so of several beats only the holder's sweeps act."""
    rt = process_runtime(settings)
    try:
        found = sweeper.sweep(rt.db, grace_seconds=settings.sweep_interval, fence=fence)
    except leases.Fenced as exc:
        log.info("sweep refused: %s", exc)
        return {"refused": 1}
    if found.events or found.released:
        rt.publisher.normalise(found.events[0] if found.events else "")
    rt.publisher.wake(found.connectors)
    if found.events or found.connectors:
        log.info("sweep re-enqueued %d events and %d connectors", len(found.events),
                 len(found.connectors))
    if not leases.current(rt.db, leases.SWEEPER, fence):  # taken over meanwhile
        return {"events": len(found.events), "connectors": len(found.connectors)}
    for source_name in catchup.claim_due(rt.db):
        rt.publisher.catch_up(source_name)
    try:  # OAuth consents: refresh before expiry even without traffic; a failure shows on health
        custody.refresh_due(rt.db, rt.box)
    except Exception:  # never let it stop the sweep
        log.exception("refreshing connector grants failed")
    return {"events": len(found.events), "connectors": len(found.connectors)}


@app.task(name="broker.catch_up")
def catch_up(source_name: str) -> dict[str, int]:
    """Poll one source's channel API (claimed by the sweep so only one worker does)."""
    rt = process_runtime(settings)
    result = catchup.catch_up(rt.db, rt.box, source_name)
    if result.first_event_id:
        rt.publisher.normalise(result.first_event_id)
    return {"polled": result.polled, "stored": result.stored}


@app.task(name="broker.retention")
def purge_expired() -> dict[str, int]:
    """Delete data past its retention window (BROKER_RETENTION_*) in small batches, for at
    most half a lease, then hand the rest to a new task so other work interleaves."""
    rt = process_runtime(settings)
    result = retention.purge(rt.db, retention.Policy.from_settings(settings),
                             budget_seconds=max(1.0, settings.lease_seconds / 2))
    counts = {name: p.rows for name, p in result.items()}
    if any(counts.values()):
        log.info("retention purged %s", ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    if not all(p.complete for p in result.values()):
        try:
            purge_expired.apply_async(queue=BROKER_QUEUE)
        except Exception as exc:  # the next scheduled run goes on
            log.warning("could not enqueue the rest of the retention purge: %s", exc)
    return counts
