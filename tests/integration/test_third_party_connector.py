"""A third party's connector package, installed through its entry point: the contract kit
runs on it, and through the pipeline its missing mappings park and resume, and the customers
it matches or creates become identity links."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import Stack, order, wait_until

from broker.db import utcnow
from broker.models import Delivery, DeliveryStatus
from connectors.registry import connector_kinds
from connectors.testing import SKUS, ConnectorContract

EXAMPLE = Path(__file__).parents[2] / "examples" / "connector-jsonl"
TOKEN = "jsonl-token-canary-51d2"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`pip install` the example package into a folder put on the path, as a user would."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, work / "src")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(work / "site"), str(work / "src")], check=True, timeout=300)
    sys.path.insert(0, str(work / "site"))
    importlib.invalidate_caches()
    connector_kinds.cache_clear()
    yield work / "site"
    sys.path.remove(str(work / "site"))
    connector_kinds.cache_clear()


def back_office(root: Path, catalog: dict[str, str], customers: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / ".token").write_text(TOKEN)
    (root / "catalog.json").write_text(json.dumps(catalog))
    (root / "customers.json").write_text(json.dumps(customers or {}))
    return root


class FolderBackOffice:
    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self, order: Any) -> None:
        catalog = json.loads((self.root / "catalog.json").read_text())
        for line in order["lines"]:
            catalog.setdefault(line["sku"], f"P-{line['sku']}")
        (self.root / "catalog.json").write_text(json.dumps(catalog))

    def records(self, external_id: str) -> list[dict[str, Any]]:
        path = self.root / "orders" / f"{external_id}.json"
        if not path.exists():
            return []
        doc = json.loads(path.read_text())
        return [{"reference": path.stem, "total": doc["total"], "status": doc["status"],
                 "customer": doc["customer"], "note": doc.get("note")}]


class TestThirdPartyConnectorContract(ConnectorContract):
    kind = "jsonl"

    @pytest.fixture(autouse=True)
    def installed(self, plugin: Path) -> None:
        assert "jsonl" in connector_kinds()

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        return back_office(tmp_path / "bo", {sku: f"P-{sku}" for sku in SKUS})

    @pytest.fixture
    def config(self, folder: Path) -> dict[str, Any]:
        return {"path": str(folder), "token": TOKEN}

    @pytest.fixture
    def bad_credentials_config(self, folder: Path) -> dict[str, Any]:
        return {"path": str(folder), "token": "wrong-canary"}

    @pytest.fixture
    def unreachable_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "not-mounted"), "token": TOKEN}

    @pytest.fixture
    def backoffice(self, folder: Path) -> FolderBackOffice:
        return FolderBackOffice(folder)


def parked(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.PARKED)


def booked(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED)


def test_missing_mappings_park_and_resume_and_customers_become_links(plugin, stack: Stack, tmp_path):
    root = back_office(tmp_path / "bo", {"SKU-001": "P-1"}, {"C00042": "known@example.com"})
    stack.env["PYTHONPATH"] = str(plugin)
    secret = stack.source("shop")
    stack.cli("connectors", "add", "files", "--kind", "jsonl", "--config",
              json.dumps({"path": str(root), "token": TOKEN}), "--json")
    stack.route("shop", "files")
    stack.start_worker()
    known = {"external_id": "k-1", "email": "known@example.com", "email_verified": True}

    # A known customer by verified email, a known SKU: booked, and the match kept as a link.
    assert stack.webhook("shop", secret, order("A-1", customer=known))[0] == 202
    wait_until(lambda: booked(stack) == 1, message="A-1 booked")
    assert json.loads((root / "orders" / "A-1.json").read_text())["customer"] == "C00042"
    links = stack.cli("mappings", "list", "--connector", "files", "--json")
    assert {(m["key"], m["value"], m["origin"]) for m in links} == {
        ("customer:shopify:k-1", "C00042", "learned"), ("email:known@example.com", "C00042", "learned")}

    # An unknown SKU parks the delivery naming it; mapping it resumes the order by itself.
    lines = [{"sku": "SKU-001", "quantity": "1", "unit_price": "10.00"},
             {"sku": "SKU-NEW", "quantity": "1", "unit_price": "15.00"}]
    totals = {"subtotal": "25.00", "total": "25.00"}
    newcomer = {"external_id": "n-1", "email": "new@example.com", "email_verified": True}
    assert stack.webhook("shop", secret, order("B-1", customer=newcomer, lines=lines, totals=totals,
                                               shipping=[], discounts=[], payment=None))[0] == 202
    wait_until(lambda: parked(stack) == 1, message="B-1 parked")
    [gap] = stack.cli("mappings", "gaps", "--json")
    assert (gap["reason"], gap["kind"], gap["key"], gap["deliveries"]) == (
        "missing mapping", "product", "SKU-NEW", 1)
    assert "SKU SKU-NEW has no product in files" in gap["message"]
    added = stack.cli("mappings", "add", "files", "product", "SKU-NEW", "P-77", "--json")
    assert added["resumed"] == 1
    wait_until(lambda: booked(stack) == 2, message="B-1 booked after the mapping")
    booked_b = json.loads((root / "orders" / "B-1.json").read_text())
    assert [line["product"] for line in booked_b["lines"]] == ["P-1", "P-77"]
    assert booked_b["customer"] == "C00002"  # created, not merged with anyone

    # The same email, unverified, for another channel customer: never merged silently.
    stranger = {"external_id": "s-9", "email": "known@example.com", "email_verified": False}
    assert stack.webhook("shop", secret, order("C-1", customer=stranger))[0] == 202
    wait_until(lambda: parked(stack) == 1, message="C-1 parked for review")
    [gap] = stack.cli("mappings", "gaps", "--json")
    assert gap["reason"] == "identity review" and gap["key"] == "customer:shopify:s-9"
    stack.cli("mappings", "add", "files", "customer", gap["key"], "C00042")
    wait_until(lambda: booked(stack) == 3, message="C-1 booked after review")
    assert json.loads((root / "orders" / "C-1.json").read_text())["customer"] == "C00042"
    assert stack.cli("mappings", "gaps", "--json") == []


def test_a_product_created_in_the_back_office_unparks_the_order_at_the_next_recheck(
        plugin, stack: Stack, tmp_path):
    from sqlalchemy import update

    from broker.services.sweeper import RECHECK_PARKED_SECONDS

    root = back_office(tmp_path / "bo", {})
    stack.env["PYTHONPATH"] = str(plugin)
    secret = stack.source("shop")
    stack.cli("connectors", "add", "files", "--kind", "jsonl", "--config",
              json.dumps({"path": str(root), "token": TOKEN}), "--json")
    stack.route("shop", "files")
    stack.start_worker()
    assert stack.webhook("shop", secret, order("R-1"))[0] == 202
    wait_until(lambda: parked(stack) == 1, message="parked on SKU-001")
    (root / "catalog.json").write_text(json.dumps({"SKU-001": "P-1"}))  # created there
    time.sleep(2)
    assert parked(stack) == 1  # not before the recheck interval
    with stack.runtime.db.begin() as session:  # let the recheck interval pass
        session.execute(update(Delivery).values(
            updated_at=utcnow() - timedelta(seconds=RECHECK_PARKED_SECONDS + 1)))
    wait_until(lambda: booked(stack) == 1, message="booked by the recheck")
    assert json.loads((root / "orders" / "R-1.json").read_text())["lines"][0]["product"] == "P-1"
