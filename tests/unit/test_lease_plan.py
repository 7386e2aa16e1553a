"""Delivery batches sized from the real work: measured push times, the connector's timeouts
and its worst-case calls per push."""

from __future__ import annotations

from broker.models import Connector
from broker.services.delivery import lease_plan


def http(**config: object) -> Connector:
    return Connector(name="erp", kind="http", config={"url": "https://erp.example.com", **config})


def test_an_unmeasured_connector_gets_one_delivery_per_batch() -> None:
    assert lease_plan(http(), 120, 50).batch == 1


def test_a_fast_back_office_gets_whole_batches_and_a_slow_one_small_ones() -> None:
    assert lease_plan(http(), 120, 50, push_seconds=0.02).batch == 50
    assert lease_plan(http(), 120, 50, push_seconds=7.0).batch == 8   # 120 s / (2 x 7 s)
    assert lease_plan(http(), 120, 50, push_seconds=300.0).batch == 1


def test_a_push_starts_only_with_room_for_its_slowest_case_within_half_a_lease() -> None:
    plan = lease_plan(http(timeout=10, connect_timeout=2), 120, 50)
    assert plan.push_room == 2 * 12   # http: two calls (a lookup, a write) of 2 + 10 s
    assert lease_plan(http(timeout=30), 120, 50).push_room == 60  # never more than half


def test_the_push_limit_is_the_connectors_own_else_its_kinds() -> None:
    assert lease_plan(http(), 120, 50).max_in_flight == 4
    row = http()
    row.max_in_flight = 1
    assert lease_plan(row, 120, 50).max_in_flight == 1
    tryton = Connector(name="t", kind="tryton", config={})
    assert lease_plan(tryton, 120, 50).max_in_flight == 1
