"""The contract kit on the edi connector, once per format, writing over SFTP to a loopback server.

The back office is the trading partner: it reads the served folder and parses every file with an
independent EDI library (tests/fakes/sftp.py: PartnerInbox), so the totals and statuses asserted
by the kit are what a partner's translator would book.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fakes.sftp import FakeSftpServer, PartnerInbox
from harness import free_port

from connectors.testing import ConnectorContract

USER, PASSWORD = "partner-outbox", "sftp-canary-pw-5d1e"


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeSftpServer]:
    with FakeSftpServer(tmp_path_factory.mktemp("sftp-root"), users={USER: PASSWORD}) as server:
        yield server


class _EdiContract(ConnectorContract):
    kind = "edi"
    maps_products = False  # EDI carries SKUs as they are; the partner maps them
    matches_customers = False  # no partner directory: the buyer is a linked id or the channel's
    format: ClassVar[str]
    prefix: ClassVar[str]
    extension: ClassVar[str]
    extra: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def backoffice(self, sftp_server: FakeSftpServer) -> PartnerInbox:
        folder = sftp_server.root / f"outbox-{self.format}"
        folder.mkdir(exist_ok=True)
        return PartnerInbox(folder, self.format, self.prefix, self.extension)

    @pytest.fixture
    def config(self, sftp_server: FakeSftpServer, backoffice: PartnerInbox) -> dict[str, Any]:
        return {"format": self.format, "sftp_host": "127.0.0.1", "sftp_port": sftp_server.port,
                "sftp_user": USER, "sftp_password": PASSWORD,
                "sftp_host_key": sftp_server.host_key_line, "sftp_path": f"/{Path(backoffice.folder).name}",
                "timeout": 5, **self.extra}

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "sftp_password": "wrong-canary-password"}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "sftp_port": free_port(), "timeout": 2}


class TestEdifactContract(_EdiContract):
    format, prefix, extension = "edifact", "ORDERS", "edi"
    extra = {"sender_id": "4012345000016", "sender_qualifier": "14",
             "receiver_id": "4098765000013", "receiver_qualifier": "14"}


class TestX12Contract(_EdiContract):
    format, prefix, extension = "x12", "850", "edi"
    extra = {"sender_id": "FOBOBROKER", "receiver_id": "PARTNER01", "sender_qualifier": "ZZ",
             "receiver_qualifier": "ZZ"}


class TestCsvContract(_EdiContract):
    format, prefix, extension = "csv", "ORDER", "csv"


def test_the_broker_delivers_versions_as_new_replace_and_cancel_files(
        stack: Any, sftp_server: FakeSftpServer) -> None:
    """Through the real pipeline: stored (encrypted) SFTP password, worker, versions, cancel."""
    import json

    from harness import order, wait_until

    from broker.models import Delivery, DeliveryStatus

    folder = sftp_server.root / "outbox-e2e"
    folder.mkdir()
    config = {"format": "edifact", "sftp_host": "127.0.0.1", "sftp_port": sftp_server.port,
              "sftp_user": USER, "sftp_password": PASSWORD,
              "sftp_host_key": sftp_server.host_key_line, "sftp_path": "/outbox-e2e",
              "sender_id": "FOBO", "receiver_id": "PARTNER", "timeout": 5}
    stack.cli("connectors", "add", "partner", "--kind", "edi", "--config", json.dumps(config),
              "--json")
    secret = stack.source("shop")
    stack.route("shop", "partner")
    stack.start_worker()
    inbox = PartnerInbox(folder, "edifact", "ORDERS", "edi")
    versions = [order("E2E-1"),
                order("E2E-1", updated_at="2026-11-20T15:00:00Z", note="ring twice"),
                order("E2E-1", updated_at="2026-11-20T16:00:00Z", status="cancelled")]
    for booked, doc in enumerate(versions, start=1):
        status, _ = stack.webhook("shop", secret, doc)
        assert status == 202
        wait_until(lambda n=booked: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED)
                   == n, message=f"version {booked} booked")
    names = inbox.files("E2E-1")
    assert [n.split("_")[3] for n in names] == ["new", "replace", "cancel"]
    record, = inbox.records("E2E-1")
    assert (record["reference"], record["total"], record["status"]) == (
        names[-1], Decimal("29.06"), "cancelled")
    detail = stack.cli("orders", "show", stack.cli("orders", "list", "--json")[0]["id"], "--json")
    assert [(d["action"], d["reference"]) for d in detail["deliveries"]] == [
        ("create", names[0]), ("update", names[1]), ("cancel", names[2])]
    assert PASSWORD not in stack.worker_logs()
