"""The contract kit on the odoo connector, against the fake Odoo (tests/fakes/odoo.py).

One class per protocol, each on the Odoo version that speaks it: JSON-2 on 19, JSON-RPC on 17,
XML-RPC on 16 (16's "done" lock state, ``tax_id`` and ``reverse_moves`` differ from 17+).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from fakes.odoo import API_KEY, DATABASE, LOGIN, PASSWORD, FakeOdoo
from harness import free_port

from connectors.testing import ConnectorContract


class OdooBackOffice:
    """What the fake Odoo holds, read from its records rather than through the connector."""

    def __init__(self, fake: FakeOdoo) -> None:
        self.fake = fake

    def prepare(self, order: Mapping[str, Any]) -> None:
        for line in order["lines"]:
            self.fake.ensure_product(line["sku"])

    def records(self, external_id: str) -> list[dict[str, Any]]:
        return [{"reference": so["name"], "total": so["amount_total"],
                 "status": "cancelled" if so["state"] == "cancel" else "open",
                 "customer": so["partner_id"], "note": note_text(so["note"]),
                 "invoiced": self.invoiced(so["id"])}
                for so in self.fake.orders(external_id)]

    def invoiced(self, so_id: int) -> Decimal:
        """Posted invoices net of posted credit notes."""
        sign = {"out_invoice": 1, "out_refund": -1}
        return sum((sign[m["move_type"]] * m["amount_total"] for m in self.fake.moves(so_id)
                    if m["state"] == "posted" and m["move_type"] in sign), Decimal(0))


def note_text(value: Any) -> str | None:
    """The text of Odoo's HTML note, as a person reads it on the order."""
    if not value:
        return None
    text = re.sub(r"<br\s*/?>|</p>\s*<p[^>]*>", "\n", str(value))
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


class OdooContract(ConnectorContract):
    kind = "odoo"
    protocol: ClassVar[str]
    version: ClassVar[int]
    secret: ClassVar[str] = API_KEY

    @pytest.fixture(scope="class")
    def server(self) -> Iterator[FakeOdoo]:
        with FakeOdoo(version=self.version) as fake:
            yield fake  # type: ignore[misc]

    @pytest.fixture
    def backoffice(self, server: FakeOdoo) -> OdooBackOffice:
        return OdooBackOffice(server)

    @pytest.fixture
    def config(self, server: FakeOdoo) -> dict[str, Any]:
        config: dict[str, Any] = {"url": server.url, "protocol": self.protocol,
                                  "database": DATABASE, "api_key": self.secret, "timeout": 5,
                                  "pricelists": {"USD": server.pricelists["USD"]}}
        if self.protocol != "json2":
            config["username"] = LOGIN
        return config

    @pytest.fixture
    def bad_credentials_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "api_key": "wrong-canary-key-4711"}

    @pytest.fixture
    def unreachable_config(self, config: dict[str, Any]) -> dict[str, Any]:
        return {**config, "url": f"http://127.0.0.1:{free_port()}", "timeout": 2}


class TestOdooJson2Contract(OdooContract):
    protocol = "json2"
    version = 19


class TestOdooJsonRpcContract(OdooContract):
    protocol = "jsonrpc"
    version = 17


class TestOdooXmlRpcContract(OdooContract):
    protocol = "xmlrpc"
    version = 16
    secret = PASSWORD  # the RPC protocols take the password as well as an API key
