"""Batched lease claims on every database: no delivery is ever held by two workers at once."""

from __future__ import annotations

import threading
from datetime import timedelta

from harness import order
from sqlalchemy import update

from broker.models import Connector, Delivery, DeliveryStatus, Source
from broker.schemas.order import load_order
from broker.services.delivery import claim, db_now
from broker.services.orders import apply_version


def _orders(stack, count: int) -> Connector:
    stack.source("shop")
    stack.http_connector("erp", "http://127.0.0.1:9/orders")
    stack.route("shop", "erp")
    with stack.runtime.db.begin() as session:
        source = session.query(Source).one()
        for i in range(count):
            apply_version(session, source, load_order(order(f"C{i:04d}")))
        connector = session.query(Connector).one()
        session.expunge(connector)
    return connector


def _expire_leases(stack) -> None:
    """Move every lease into the past, as if its worker had stopped that long ago (the claim
    compares leases with the database clock, so this is exactly what waiting would do)."""
    with stack.runtime.db.begin() as session:
        past = db_now(session) - timedelta(hours=1)
        session.execute(update(Delivery).where(Delivery.lease_until.is_not(None)).values(
            lease_until=past))


def test_concurrent_claimers_never_share_a_delivery(db_stack):
    stack = db_stack
    connector = _orders(stack, 120)
    taken: list[list[str]] = []
    errors: list[BaseException] = []

    def claimer() -> None:
        mine: list[str] = []
        try:
            while True:
                with stack.runtime.db.begin() as session:
                    batch = claim(session, connector, limit=7, lease_seconds=60, max_attempts=5)
                if not batch:
                    break
                mine += [c.delivery_id for c in batch]
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        taken.append(mine)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    every = [d for batch in taken for d in batch]
    assert len(every) == 120 and len(set(every)) == 120
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.LEASED) == 120


def test_expired_lease_is_claimed_again_with_a_new_token(db_stack):
    stack = db_stack
    connector = _orders(stack, 1)
    with stack.runtime.db.begin() as session:
        first = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    with stack.runtime.db.begin() as session:
        assert claim(session, connector, limit=5, lease_seconds=60, max_attempts=5) == []
    _expire_leases(stack)
    with stack.runtime.db.begin() as session:
        second = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    assert [c.delivery_id for c in second] == [first[0].delivery_id]
    assert second[0].token != first[0].token and second[0].attempt == 2


def test_a_delivery_whose_worker_dies_every_time_is_dead_lettered_after_max_attempts(db_stack):
    """T26 poison task: the attempt counter lives in the database, so the loop is bounded."""
    stack = db_stack
    connector = _orders(stack, 1)
    for _ in range(3):
        with stack.runtime.db.begin() as session:
            assert len(claim(session, connector, limit=5, lease_seconds=60, max_attempts=3)) == 1
        _expire_leases(stack)
    with stack.runtime.db.begin() as session:
        assert claim(session, connector, limit=5, lease_seconds=60, max_attempts=3) == []
        dead = session.query(Delivery).one()
    assert dead.status == DeliveryStatus.DEAD and dead.attempts == 3
    assert "gave up after 3 attempts" in dead.last_error


def test_an_outcome_is_dropped_when_its_lease_was_taken_over(db_stack):
    """T21: a late worker (lease expired, delivery re-claimed) cannot overwrite the new owner."""
    from broker.db import utcnow
    from broker.services.delivery import Outcome, record

    stack = db_stack
    connector = _orders(stack, 2)
    with stack.runtime.db.begin() as session:
        late = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    _expire_leases(stack)
    with stack.runtime.db.begin() as session:
        owner = claim(session, connector, limit=1, lease_seconds=60, max_attempts=5)
    stale = [Outcome(c, "booked", utcnow(), 5, reference="LATE") for c in late]
    with stack.runtime.db.begin() as session:
        written = record(session, stack.runtime, connector, stale)
    assert [w.outcome.claim.delivery_id for w in written] == [
        c.delivery_id for c in late if c.delivery_id != owner[0].delivery_id]
    with stack.runtime.db.begin() as session:
        taken = session.get(Delivery, owner[0].delivery_id)
    assert taken.status == DeliveryStatus.LEASED and taken.reference is None
