"""Batched lease claims on every database: no delivery is ever held by two workers at once."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

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
        for i in range(count):  # a customer each: one customer's orders are claimed one batch at a time
            apply_version(session, source, load_order(order(f"C{i:04d}", customer={
                "email": f"c{i}@example.com", "email_verified": True})))
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


def test_a_connector_never_has_more_batches_in_flight_than_its_limit(db_stack):
    stack = db_stack
    connector = _orders(stack, 6)
    with stack.runtime.db.begin() as session:
        first = claim(session, connector, limit=2, lease_seconds=60, max_attempts=5, max_in_flight=1)
    with stack.runtime.db.begin() as session:  # another worker, while the first batch runs
        assert claim(session, connector, limit=2, lease_seconds=60, max_attempts=5,
                     max_in_flight=1) == []
        second = claim(session, connector, limit=2, lease_seconds=60, max_attempts=5, max_in_flight=2)
    assert len(first) == len(second) == 2
    assert {c.delivery_id for c in first}.isdisjoint(c.delivery_id for c in second)
    _expire_leases(stack)  # both workers died: their slots come back with their leases
    with stack.runtime.db.begin() as session:
        assert len(claim(session, connector, limit=9, lease_seconds=60, max_attempts=5,
                         max_in_flight=1)) == 6


def test_one_customers_orders_are_never_in_two_batches_at_once(db_stack):
    """Two first orders of a new customer in two workers would create the customer twice."""
    stack = db_stack
    connector = _orders(stack, 0)
    with stack.runtime.db.begin() as session:
        source = session.query(Source).one()
        for number, email in (("A1", "ann@example.com"), ("A2", "ANN@example.com"),
                              ("B1", "bob@example.com")):
            apply_version(session, source, load_order(order(number, customer={
                "email": email, "email_verified": True})))
    with stack.runtime.db.begin() as session:
        first = claim(session, connector, limit=1, lease_seconds=60, max_attempts=5)
    with stack.runtime.db.begin() as session:
        second = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    numbers = {c.order_id: n for n, c in _numbers(stack, first + second).items()}
    assert len(first) == 1 and len(second) == 1, numbers
    assert {numbers[first[0].order_id][0], numbers[second[0].order_id][0]} == {"A", "B"}


def test_an_older_versions_expired_lease_is_superseded_not_pushed(db_stack):
    """After a crash the expired v1 lease and the pending v2 are both due: only v2 is pushed."""
    stack = db_stack
    connector = _orders(stack, 1)
    with stack.runtime.db.begin() as session:
        (v1,) = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    with stack.runtime.db.begin() as session:
        source = session.query(Source).one()
        apply_version(session, source, load_order(order("C0000", updated_at="2099-01-01T00:00:00Z")))
    _expire_leases(stack)
    with stack.runtime.db.begin() as session:
        claimed = claim(session, connector, limit=5, lease_seconds=60, max_attempts=5)
    assert [c.version for c in claimed] == [2]
    with stack.runtime.db.begin() as session:
        assert session.get(Delivery, v1.delivery_id).status == DeliveryStatus.SUPERSEDED


def _numbers(stack, claims) -> dict[str, Any]:
    from broker.models import Order

    with stack.runtime.db.begin() as session:
        rows = session.query(Order.id, Order.external_id).filter(
            Order.id.in_([c.order_id for c in claims])).all()
    by_id = dict(rows)
    return {by_id[c.order_id]: c for c in claims}
