"""A folder as a back office: the minimal connector every other one is built like.

It shows the whole contract: a config schema with a secret, `check()`, an idempotent `push()`
keyed by the order's external id (a record already there is updated with the version pushed),
`lookup()`, updates, cancellation, identity links for customers (learned when created; an
unverified email never matches) and products (a SKU without a product parks the delivery).
"""

from __future__ import annotations

import hmac
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marshmallow import fields

from connectors.base import Connector, PushContext, PushResult
from connectors.config import ConfigSchema, Secret
from connectors.errors import PermanentError, TransientError
from connectors.identity import anchors_field, customer_links, resolve_customer, resolve_products


class JsonlConfig(ConfigSchema):
    path = fields.String(required=True)
    token = Secret(required=True)
    customer_anchors = anchors_field()


class JsonlConnector(Connector):
    """Updates rewrite the order's file; cancellation marks it cancelled."""

    kind = "jsonl"
    title = "JSON files in a folder"
    Config = JsonlConfig

    def __init__(self, config: Mapping[str, Any], *, name: str = "") -> None:
        super().__init__(config, name=name)
        self.root = Path(config["path"])

    def __repr__(self) -> str:
        return f"JsonlConnector({self.root})"

    # --- the back office ------------------------------------------------------------
    def _read(self, name: str, default: Any) -> Any:
        path = self.root / name
        return json.loads(path.read_text()) if path.exists() else default

    def _write(self, path: Path, doc: Any) -> None:
        """Atomically: a crash never leaves half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(doc, tmp, default=str, ensure_ascii=False)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)

    def _file(self, order: Mapping[str, Any]) -> Path:
        return self.root / "orders" / f"{order['external_id']}.json"

    def check(self) -> None:
        if not self.root.is_dir():
            raise TransientError(f"folder {self.root} is not reachable (not mounted?)")
        expected = (self.root / ".token").read_text().strip() if (self.root / ".token").exists() else ""
        if not hmac.compare_digest(expected.encode(), str(self.config["token"]).encode()):
            raise PermanentError(f"the token was refused by {self.root}; set the right one with "
                                 "`broker connectors add NAME --kind jsonl --config ...`")

    def lookup(self, order: Mapping[str, Any]) -> str | None:
        return self._file(order).stem if self._file(order).exists() else None

    def push(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        """Create or update: a record found by external key (an earlier version whose answer
        was lost, or a retry) is rewritten with this version, never returned as it is."""
        self.check()
        customers = self._read("customers.json", {})
        anchors = self.config.get("customer_anchors")
        customer = resolve_customer(order, ctx, anchors=anchors, search_by_email=lambda email: [
            cid for cid, known in customers.items() if known.lower() == email])
        catalog = self._read("catalog.json", {})
        products = resolve_products(order["lines"], ctx, connector=self.name, find=catalog.get)
        learned = ()
        if customer is None and order.get("customer"):
            customer = f"C{len(customers) + 1:05d}"
            customers[customer] = order["customer"].get("email") or ""
            self._write(self.root / "customers.json", customers)
        if customer:
            learned = customer_links(order, customer, anchors)
        self._write(self._file(order), {
            "external_id": order["external_id"], "customer": customer, "status": order.get("status"),
            "currency": order["currency"], "total": str(order["totals"]["total"]),
            "note": order.get("note"),
            "lines": [{"product": products[line.get("sku") or line.get("name")],
                       "quantity": str(line["quantity"]), "unit_price": str(line["unit_price"])}
                      for line in order["lines"]]})
        return PushResult(self._file(order).stem, links=learned)

    def cancel(self, order: Mapping[str, Any], ctx: PushContext) -> PushResult:
        self.check()
        path = self._file(order)
        if not path.exists():
            raise PermanentError(f"order {order['external_id']} is not in {self.root}; nothing to cancel")
        doc = json.loads(path.read_text())
        doc["status"] = "cancelled"
        self._write(path, doc)
        return PushResult(path.stem)
