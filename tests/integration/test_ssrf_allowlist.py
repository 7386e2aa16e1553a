"""An on-premises back office reached without turning the SSRF guard off: a broker configured
as in production (BROKER_ALLOW_PRIVATE_NETWORKS=false) with BROKER_ALLOWED_PRIVATE_HOSTS books
into the listed host on loopback and refuses its neighbours, and the SQL connector's database
host (real PostgreSQL and MariaDB on 127.0.0.1) goes through the same check.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fakes.sink import Sink
from harness import Stack, create_database, order, wait_until

from broker.models import Delivery, DeliveryStatus
from connectors import ssrf
from connectors.sql import SqlConnector


@pytest.fixture
def on_premises(tmp_path: Path) -> Iterator[Stack]:
    """Production settings, with the loopback 'ERP' listed for plain http."""
    stack = Stack(tmp_path, "sqlite", "embedded", allow_private_networks="false",
                  allowed_private_hosts="http://127.0.0.1")
    try:
        yield stack
    finally:
        stack.close()


def test_a_listed_host_books_and_its_neighbours_are_refused(on_premises: Stack, sink: Sink) -> None:
    stack = on_premises
    assert not ssrf.private_allowed()
    port = sink.url.rsplit(":", 1)[1]
    for url, said in ((f"http://127.0.0.2:{port}/orders", "127.0.0.2 is a loopback address"),
                      (f"https://10.0.0.7:{port}/orders", "10.0.0.7 is a private address"),
                      ("https://169.254.169.254/latest", "the cloud metadata address")):
        result = stack.app.test_cli_runner().invoke(args=[
            "broker", "connectors", "add", "erp", "--kind", "http", "--config", json.dumps({"url": url})])
        assert result.exit_code != 0 and said in result.output, result.output
        assert "BROKER_ALLOWED_PRIVATE_HOSTS" in result.output
    stack.http_connector("erp", sink.url + "/orders")  # http://127.0.0.1:PORT: listed with http://
    secret = stack.source("shop")
    stack.route("shop", "erp")
    stack.start_worker()  # inherits the same settings
    status, _ = stack.webhook("shop", secret, order("8101"))
    assert status == 202
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 1,
               message="booked through the allow-list", timeout=60)
    assert dict(sink.creates) == {"8101": 1}


# --- the SQL connector's database host -------------------------------------------------------

def _tables(engine: sa.Engine) -> tuple[str, str]:
    token = secrets.token_hex(3)
    metadata = sa.MetaData()
    head = sa.Table(f"hdr_{token}", metadata, sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("ext", sa.String(64), nullable=False, unique=True),
                    sa.Column("total", sa.Numeric(12, 2), nullable=False))
    sa.Table(f"lin_{token}", metadata, sa.Column("id", sa.Integer, primary_key=True),
             sa.Column("hdr_id", sa.Integer, sa.ForeignKey(head.c.id), nullable=False),
             sa.Column("sku", sa.String(64)), sa.Column("price", sa.Numeric(12, 2), nullable=False))
    metadata.create_all(engine)
    return head.name, f"lin_{token}"


@pytest.fixture(params=["postgresql", "mariadb"])
def legacy(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """A real database on 127.0.0.1 with a header and a lines table: (url, header, lines)."""
    url, drop = create_database(request.param)
    engine = sa.create_engine(url)
    try:
        header, lines = _tables(engine)
        yield url, header, lines
    finally:
        engine.dispose()
        drop()


def _connector(url: str, header: str, lines: str) -> SqlConnector:
    config: dict[str, Any] = {
        "url": url, "connect_timeout": 5,
        "header": {"table": header, "key_column": "ext", "columns": {"total": "totals.total"}},
        "lines": {"table": lines, "header_column": "hdr_id",
                  "columns": {"sku": "sku", "price": "unit_price"}}}
    return SqlConnector(SqlConnector.Config().load(config), name="legacy")


def test_the_sql_connectors_database_host_is_checked_at_every_connection(
        legacy: tuple[str, str, str]) -> None:
    url, header, lines = legacy
    with ssrf.policy(allow_private=False):
        with pytest.raises(ssrf.Refused, match=r"127\.0\.0\.1 is a loopback address") as caught:
            ssrf.check_settings({"url": url})  # at setup
        assert "BROKER_ALLOWED_PRIVATE_HOSTS" in str(caught.value)
        connector = _connector(url, header, lines)
        try:
            with pytest.raises(ssrf.Refused, match=r"127\.0\.0\.1 is a loopback address"):
                connector.check()  # at connect: the driver is never called
        finally:
            connector.close()
    with ssrf.policy(allow_private=False, allowed="127.0.0.1"):
        ssrf.check_settings({"url": url})
        connector = _connector(url, header, lines)
        try:
            connector.check()  # connects, reflects both tables, writes nothing
        finally:
            connector.close()
        neighbour = _connector(url.replace("127.0.0.1", "127.0.0.2"), header, lines)
        try:
            with pytest.raises(ssrf.Refused, match=r"127\.0\.0\.2 is a loopback address"):
                neighbour.check()
        finally:
            neighbour.close()


def test_a_listed_database_name_is_pinned_to_the_checked_address() -> None:
    """libpq connects to `hostaddr` (the address the guard checked) and keeps the name for TLS."""
    url, drop = create_database("postgresql")
    named = url.replace("127.0.0.1", "localhost")
    engine = sa.create_engine(named, connect_args={"connect_timeout": 5})
    ssrf.guard_engine(engine)
    seen: list[dict[str, Any]] = []
    sa.event.listen(engine, "do_connect", lambda d, r, a, params: seen.append(dict(params)))
    try:
        with ssrf.policy(allow_private=False, allowed="localhost"), engine.connect() as conn:
            server = conn.execute(sa.text("SELECT host(inet_server_addr())")).scalar()
        assert server in ("127.0.0.1", "::1")
        assert seen and seen[0]["host"] == "localhost" and seen[0]["hostaddr"] in ("127.0.0.1", "::1")
    finally:
        engine.dispose()
        drop()
