"""The contract kit on the tryton connector, against a real trytond 8 (tests/backoffice/tryton.py).

Two configurations: the default one books sales through to processing (invoice created,
posted and paid), where Tryton allows neither editing nor cancelling the sale, so the kit
checks that update and cancel say so; the "quotation" workflow leaves sales open, where
both work.
"""

from __future__ import annotations

from typing import Any

import pytest
from backoffice.tryton import TrytonBackOffice, TrytonServer, shared_server
from harness import free_port

from connectors.testing import ConnectorContract


class TestTrytonContract(ConnectorContract):
    kind = "tryton"
    supports_update = False  # a processed sale cannot be edited in Tryton
    supports_cancel = False  # nor cancelled: the connector says what to do by hand

    @pytest.fixture(scope="class")
    def server(self, request: pytest.FixtureRequest) -> TrytonServer:
        return shared_server(request)

    @pytest.fixture
    def backoffice(self, server: TrytonServer) -> TrytonBackOffice:
        return TrytonBackOffice(server)

    @pytest.fixture
    def config(self, server: TrytonServer) -> dict[str, Any]:
        return server.connector_config()

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "password": "wrong-tryton-canary-0b7e"}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "url": f"http://127.0.0.1:{free_port()}", "timeout": 2,
                "connect_timeout": 2}


class TestTrytonQuotationContract(TestTrytonContract):
    """Sales left as quotations for a person to confirm: Tryton lets the connector edit and cancel."""

    supports_update = True
    supports_cancel = True

    @pytest.fixture
    def config(self, server: TrytonServer) -> dict[str, Any]:
        return server.connector_config(workflow="quotation")
