"""The contract kit on the built-in http connector, against the fake REST back office."""

from __future__ import annotations

from typing import Any

import pytest
from fakes.sink import Sink
from harness import free_port

from connectors.testing import ConnectorContract
from connectors.tokens import StaticTokens

TOKEN = "contract-bearer-canary-7c1f"


class SinkBackOffice:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def prepare(self, order: Any) -> None:
        """The sink takes any line: nothing to create."""

    def records(self, external_id: str) -> list[dict[str, Any]]:
        record = self.sink.records.get(external_id)
        if record is None:
            return []
        cancelled = "cancelled" in (record["status"], record["order"].get("status"))
        one = {"reference": record["id"], "total": record["order"]["totals"]["total"],
               "status": "cancelled" if cancelled else "open", "note": record["order"].get("note")}
        return [one] * self.sink.creates[external_id]


class TestHttpConnectorContract(ConnectorContract):
    kind = "http"
    maps_products = False
    matches_customers = False  # the back office receives the customer as it is

    @pytest.fixture(scope="class")
    def server(self) -> Any:
        with Sink() as sink:
            sink.require_bearer(TOKEN)
            yield sink

    @pytest.fixture
    def backoffice(self, server: Sink) -> SinkBackOffice:
        return SinkBackOffice(server)

    @pytest.fixture
    def config(self, server: Sink) -> dict[str, Any]:
        return {"url": server.url + "/orders", "timeout": 5,
                "lookup_url": server.url + "/orders/by-external/{external_id}",
                "auth": {"type": "bearer", "token": TOKEN}}

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "auth": {"type": "bearer", "token": "wrong-canary-token"}}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "url": f"http://127.0.0.1:{free_port()}/orders", "timeout": 2,
                "lookup_url": f"http://127.0.0.1:{free_port()}/orders/by-external/{{external_id}}"}


class TestHttpConnectorConsentContract(TestHttpConnectorContract):
    """The same contract under auth type oauth2_consent: the bearer comes from the broker's
    TokenSource (an admin's consent); a token the back office refuses is permanent."""

    @pytest.fixture
    def config(self, server: Sink) -> dict[str, Any]:
        auth = {"type": "oauth2_consent", "authorize_url": "https://idp.example.com/authorize",
                "token_url": "https://idp.example.com/token", "client_id": "broker",
                "client_secret": "contract-consent-client-secret-3b9d", "scope": "orders"}
        return {"url": server.url + "/orders", "timeout": 5,
                "lookup_url": server.url + "/orders/by-external/{external_id}", "auth": auth}

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "auth": {**config["auth"], "client_id": "revoked-consent"}}

    def token_source(self, config: Any) -> StaticTokens:
        good = config["auth"]["client_id"] == "broker"
        return StaticTokens(TOKEN if good else "revoked-consent-canary-token")
