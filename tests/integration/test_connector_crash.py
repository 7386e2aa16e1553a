"""A worker killed (-9) after the back office acted and before it answered: the retry finds
the booking (or finishes it) and the back office holds exactly one record — per connector,
against its real system or faithful fake."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes.erpnext import API_KEY as ERP_KEY
from fakes.erpnext import API_SECRET as ERP_SECRET
from fakes.erpnext import FakeErpNext
from fakes.odoo import API_KEY as ODOO_KEY
from fakes.odoo import DATABASE as ODOO_DB
from fakes.odoo import FakeOdoo
from fakes.proxy import HoldingProxy
from fakes.sink import Sink
from harness import Stack, wait_until
from sqlalchemy.engine import make_url
from test_contract_erpnext import ErpNextBackOffice
from test_contract_http import SinkBackOffice
from test_contract_odoo import OdooBackOffice
from test_contract_sql import LegacyDatabase, full_config

from broker.models import Delivery, DeliveryStatus
from broker.schemas.order import dump_order
from connectors.testing import contract_order


@dataclass
class System:
    kind: str
    config: Callable[[HoldingProxy], dict[str, Any]]
    upstream: tuple[str, int]
    markers: tuple[bytes, ...]   # what the worker sends just before the answer we hold
    backoffice: Any
    close: Callable[[], None]


def odoo() -> System:
    fake = FakeOdoo(version=19).start()
    return System("odoo", lambda proxy: {
        "url": proxy.url, "protocol": "json2", "database": ODOO_DB, "api_key": ODOO_KEY,
        "timeout": 20, "pricelists": {"USD": fake.pricelists["USD"]}},
        ("127.0.0.1", int(fake.url.rsplit(":", 1)[1])), (b"/json/2/sale.order/create",),
        OdooBackOffice(fake), fake.stop)


def erpnext() -> System:
    fake = FakeErpNext().start()
    return System("erpnext", lambda proxy: {
        "url": proxy.url, "api_key": ERP_KEY, "api_secret": ERP_SECRET, "company": fake.company,
        "tax_account": "Sales Tax - FT", "shipping_account": "Freight and Forwarding Charges - FT",
        "timeout": 20}, ("127.0.0.1", int(fake.url.rsplit(":", 1)[1])),
        (b"POST /api/resource/Sales%20Order",), ErpNextBackOffice(fake), fake.stop)


def sql_mariadb() -> System:
    legacy = LegacyDatabase("mariadb")
    url = make_url(str(legacy.render(legacy.url)))

    def config(proxy: HoldingProxy) -> dict[str, Any]:
        return full_config(legacy.render(url.set(host="127.0.0.1", port=proxy.port)))

    return System("sql", config, ("127.0.0.1", url.port or 3306),
                  (b"INSERT INTO", b"COMMIT"), legacy, legacy.close)


def http(lookup: bool) -> Callable[[], System]:
    """A REST back office that honours Idempotency-Key, or one that ignores it but can be
    looked up by external id."""
    def build() -> System:
        sink = Sink().start()
        config: dict[str, Any] = {"timeout": 20}
        if lookup:
            sink.ignore_idempotency_keys()
        upstream = ("127.0.0.1", int(sink.url.rsplit(":", 1)[1]))

        def full(proxy: HoldingProxy) -> dict[str, Any]:
            extra = {"lookup_url": proxy.url + "/orders/by-external/{external_id}"} if lookup else {}
            return {"url": proxy.url + "/orders", **config, **extra}

        return System("http", full, upstream, (b"POST /orders",), SinkBackOffice(sink), sink.stop)
    return build


SYSTEMS = {"odoo": odoo, "erpnext": erpnext, "sql-mariadb": sql_mariadb,
           "http-idempotent": http(lookup=False), "http-lookup": http(lookup=True)}


pytestmark = pytest.mark.slow


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A short lease: the killed worker's delivery is taken over after 3 s, not 8."""
    stack = Stack(tmp_path, "sqlite", "embedded", lease_seconds=3)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(params=sorted(SYSTEMS))
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    if request.param.startswith("sql-"):
        import harness

        harness.require("mariadb")
    built = SYSTEMS[request.param]()
    yield built
    built.close()


def test_kill_9_between_the_back_office_write_and_its_answer_books_once(system: System, stack: Stack):
    _kill_after_the_write(system, stack, newer_version=False)


def test_a_newer_version_after_a_kill_between_write_and_answer_updates_the_one_record(
        system: System, stack: Stack):
    """Version 2 arrives while version 1's outcome is unknown: one record, holding version 2."""
    _kill_after_the_write(system, stack, newer_version=True)


def _kill_after_the_write(system: System, stack: Stack, *, newer_version: bool) -> None:
    with HoldingProxy(*system.upstream) as proxy:
        secret = stack.source("shop")
        stack.cli("connectors", "add", "erp", "--kind", system.kind, "--config",
                  json.dumps(system.config(proxy)), "--json")
        stack.route("shop", "erp")
        order = contract_order()
        system.backoffice.prepare(order)
        proxy.hold_after(*system.markers, seconds=6)
        stack.start_worker()
        assert stack.webhook("shop", secret, dump_order(order))[0] == 202
        assert proxy.held.wait(30), "the worker never reached the back-office write"
        stack.kill_workers(signal.SIGKILL)   # the write is done; its answer never arrives
        assert stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 0
        if newer_version:
            later = datetime.fromisoformat(str(order["updated_at"])) + timedelta(minutes=3)
            order = contract_order(order["external_id"], quantity=5, updated_at=later)
            assert stack.webhook("shop", secret, dump_order(order))[0] == 202
        stack.start_worker()
        wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 1,
                   timeout=60, message="booked by the retry")
        records = system.backoffice.records(order["external_id"])
        assert len(records) == 1, records
        assert str(records[0]["total"]) == str(order["totals"]["total"])
