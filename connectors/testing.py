"""The connector contract kit: one named test per promise every connector makes.

Subclass `ConnectorContract` in a test module of your package, set `kind`, and provide four
pytest fixtures against a real system or a faithful fake of it:

    config                  a working config (secrets included), as an admin would enter it
    bad_credentials_config  the same with wrong credentials
    unreachable_config      the same pointing at a closed port / absent host
    backoffice              a BackOffice: what the system holds, read back independently

Declare what the back office cannot do (`supports_update`, `supports_cancel`), whether it
resolves products by SKU (`maps_products`) and whether it matches orders to its own customers
(`matches_customers`); the matching cases then prove the connector says so with a
PermanentError instead of doing something wrong. Every order the kit pushes has a
fresh external id, so a module- or session-scoped back office may be shared between cases.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import pytest
from marshmallow import ValidationError

from connectors.base import Connector, Links, PushResult
from connectors.config import secret_paths, split_secrets
from connectors.errors import IdentityReview, MissingMapping, PermanentError, TransientError
from connectors.kit_orders import SKUS, contract_order, later_version, push_context
from connectors.registry import connector_class, connector_kinds

__all__ = ["SKUS", "BackOffice", "ConnectorContract", "contract_order", "later_version", "push_context"]

class BackOffice(Protocol):
    def prepare(self, order: Mapping[str, Any]) -> None:
        """Make what the order needs exist in the back office (its products, by SKU)."""

    def records(self, external_id: str) -> list[dict[str, Any]]:
        """Every record of this order in the back office:
        {"reference": str (contained in PushResult.reference), "total": decimal or string,
        "status": "open" | "cancelled"}, and where the back office has them: "customer" (its
        id of the customer), "invoiced" (posted invoices net of credit notes), "note"."""


def _secret_values(schema: Any, config: Mapping[str, Any]) -> list[str]:
    _, secrets = split_secrets(schema, json.loads(json.dumps(config, default=str)))
    return [str(v) for v in secrets.values() if v]


class ConnectorContract:
    """Inherit, set `kind`, provide the fixtures; pytest collects the named cases below."""

    kind: ClassVar[str]
    supports_update: ClassVar[bool] = True
    supports_cancel: ClassVar[bool] = True
    maps_products: ClassVar[bool] = True
    matches_customers: ClassVar[bool] = True
    money_currency: ClassVar[str] = "USD"

    # --- helpers --------------------------------------------------------------------------
    @pytest.fixture(autouse=True)
    def _close_connectors(self) -> Any:
        self._made: list[Connector] = []
        yield
        for connector in self._made:
            connector.close()

    def make(self, config: Mapping[str, Any]) -> Connector:
        cls = connector_class(self.kind)
        connector = cls(cls.Config().load(dict(config)), name=f"contract-{self.kind}")
        if connector.consent() is not None and (source := self.token_source(config)) is not None:
            connector.use_tokens(source)
        self._made.append(connector)
        return connector

    def token_source(self, config: Mapping[str, Any]) -> Any:
        """Override for a config that asks for an OAuth consent (`Connector.consent()`): the
        connectors.tokens.TokenSource the broker would hand it, e.g. StaticTokens(a token)."""
        return None

    def order(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("currency", self.money_currency)
        return contract_order(**kwargs)

    def book(self, connector: Connector, backoffice: BackOffice, order: Mapping[str, Any],
             **ctx: Any) -> PushResult:
        backoffice.prepare(order)
        return connector.push(order, push_context(order, **ctx))

    @staticmethod
    def one(backoffice: BackOffice, order: Mapping[str, Any]) -> dict[str, Any]:
        records = backoffice.records(order["external_id"])
        assert len(records) == 1, f"expected one record of {order['external_id']}, found {records}"
        return records[0]

    # --- the contract ---------------------------------------------------------------------
    def test_entry_point_matches_kind(self) -> None:
        cls = connector_kinds().get(self.kind)
        assert cls is not None, f"no entry point '{self.kind}' in group broker.connectors"
        assert issubclass(cls, Connector) and cls.kind == self.kind

    def test_config_rejects_unknown_fields_with_path(self, config: dict[str, Any]) -> None:
        schema = connector_class(self.kind).Config()
        with pytest.raises(ValidationError) as caught:
            schema.load({**config, "unknown_field": "x"})
        assert "unknown_field" in caught.value.messages
        nested = next((k for k, v in config.items() if isinstance(v, dict)), None)
        if nested:
            with pytest.raises(ValidationError) as caught:
                schema.load({**config, nested: {**config[nested], "unknown_nested": 1}})
            assert "unknown_nested" in json.dumps(caught.value.messages[nested])

    def test_secrets_never_dumped(self, config: dict[str, Any]) -> None:
        schema = connector_class(self.kind).Config()
        assert secret_paths(schema), "a connector with credentials marks them with Secret fields"
        loaded = schema.load(dict(config))
        secrets = _secret_values(schema, loaded)
        assert secrets, "the contract config should carry its credentials"
        shown = json.dumps(schema.dump(loaded), default=str) + repr(self.make(config))
        public, _ = split_secrets(schema, json.loads(json.dumps(loaded, default=str)))
        shown += json.dumps(public, default=str)
        for secret in secrets:
            assert secret not in shown

    def test_check_ok(self, config: dict[str, Any]) -> None:
        connector = self.make(config)
        try:
            connector.check()
        finally:
            connector.close()

    def test_bad_credentials_are_permanent_without_the_secret(
            self, bad_credentials_config: dict[str, Any]) -> None:
        connector = self.make(bad_credentials_config)
        with pytest.raises(PermanentError) as caught:
            connector.check()
        schema = connector_class(self.kind).Config()
        for secret in _secret_values(schema, schema.load(dict(bad_credentials_config))):
            assert secret not in str(caught.value)
        assert str(caught.value), "say what to fix"

    def test_push_creates_one_record(self, config: dict[str, Any], backoffice: BackOffice) -> None:
        order = self.order()
        result = self.book(self.make(config), backoffice, order)
        record = self.one(backoffice, order)
        assert str(record["reference"]) in result.reference
        assert record["status"] == "open"

    def test_push_twice_makes_one_record(self, config: dict[str, Any], backoffice: BackOffice) -> None:
        order = self.order()
        first = self.book(self.make(config), backoffice, order)
        second = self.book(self.make(config), backoffice, order)  # a retry after a lost answer
        self.one(backoffice, order)
        assert first.reference == second.reference

    def test_lookup_finds_a_record_whose_acknowledgement_was_lost(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        order = self.order()
        assert self.make(config).lookup(order) is None
        result = self.book(self.make(config), backoffice, order)
        found = self.make(config).lookup(order)  # another worker, after the first one died
        assert found is not None and str(self.one(backoffice, order)["reference"]) in found
        assert found == result.reference

    def test_new_version_updates_instead_of_duplicating(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        first = self.order()
        result = self.book(self.make(config), backoffice, first)
        later = datetime.fromisoformat(str(first["updated_at"])) + timedelta(minutes=3)
        second = self.order(external_id=first["external_id"], quantity=5, updated_at=later)
        ctx = {"action": "update", "reference": result.reference, "version": 2}
        if not self.supports_update:
            with pytest.raises(PermanentError):
                self.make(config).push(second, push_context(second, **ctx))
            return
        self.make(config).push(second, push_context(second, **ctx))
        record = self.one(backoffice, second)
        assert Decimal(str(record["total"])) == second["totals"]["total"]

    def test_cancel_works_or_is_declared_unsupported(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        order = self.order()
        result = self.book(self.make(config), backoffice, order)
        cancelled = {**order, "status": "cancelled"}
        ctx = push_context(cancelled, action="cancel", reference=result.reference, version=2)
        if not self.supports_cancel:
            with pytest.raises(PermanentError) as caught:
                self.make(config).cancel(cancelled, ctx)
            assert "by hand" in str(caught.value) or "cancel" in str(caught.value)
            assert self.one(backoffice, order)["status"] == "open"
            return
        self.make(config).cancel(cancelled, ctx)
        assert self.one(backoffice, order)["status"] == "cancelled"

    def test_new_version_after_a_lost_answer_updates_the_one_record(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        """v1 reached the back office but its answer was lost, so v2 comes as a create."""
        first = self.order()
        self.book(self.make(config), backoffice, first)
        later = datetime.fromisoformat(str(first["updated_at"])) + timedelta(minutes=3)
        second = self.order(external_id=first["external_id"], quantity=5, updated_at=later)
        ctx = push_context(second, action="create", version=2)
        if not self.supports_update:
            with pytest.raises(PermanentError):
                self.make(config).push(second, ctx)
            self.one(backoffice, first)
            return
        self.make(config).push(second, ctx)
        assert Decimal(str(self.one(backoffice, second)["total"])) == second["totals"]["total"]

    def test_cancelled_first_version_is_never_booked_live(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        """The first version the broker sees is already cancelled: never a live, invoiced record."""
        order = self.order(status="cancelled")
        backoffice.prepare(order)
        try:
            result = self.make(config).push(order, push_context(order))
        except PermanentError as exc:
            assert str(exc), "say what to do"
            assert backoffice.records(order["external_id"]) == []
            return
        records = backoffice.records(order["external_id"])
        assert len(records) <= 1, records
        assert records or result.not_applied, "book it cancelled, or say why nothing was booked"
        for record in records:
            assert record["status"] == "cancelled", record
            assert Decimal(str(record.get("invoiced") or 0)) == 0, record

    def test_note_only_change_is_applied_or_reported_not_applied(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        first = self.order()
        booked = self.book(self.make(config), backoffice, first)
        second = later_version(first, note="ring twice, then leave it with the neighbour")
        result = self.make(config).push(second, push_context(
            second, action="update", reference=booked.reference, version=2))
        record = self.one(backoffice, second)
        if record.get("note") != second["note"]:
            assert any("note" in why for why in result.not_applied), (
                f"the note did not reach the back office ({record}) and the result does not say so")

    def test_unverified_email_never_attaches_to_a_known_customer(
            self, config: dict[str, Any], backoffice: BackOffice) -> None:
        """A verified order taught a link for an email; an unverified order with that email
        must not land on that customer, even through the learned link."""
        known = self.order()
        booked = self.book(self.make(config), backoffice, known)
        stranger = self.order()
        stranger["customer"] = {**stranger["customer"], "email": known["customer"]["email"],
                                "email_verified": False}
        links = Links(customer={link.key: link.value for link in booked.links
                                if link.kind == "customer"})
        connector = self.make(config)
        if not self.matches_customers:
            connector.push(stranger, push_context(stranger, links=links))
            self.one(backoffice, stranger)
            return
        try:
            connector.push(stranger, push_context(stranger, links=links))
        except IdentityReview as exc:
            assert known["customer"]["email"] in str(exc)
            assert backoffice.records(stranger["external_id"]) == []
            return
        theirs, ours = self.one(backoffice, known), self.one(backoffice, stranger)
        assert "customer" in ours, "BackOffice.records must report the customer of a record"
        assert ours["customer"] != theirs["customer"], "booked onto the verified customer"

    def test_unreachable_system_is_transient(self, unreachable_config: dict[str, Any]) -> None:
        connector = self.make(unreachable_config)
        with pytest.raises(TransientError):
            connector.check()
        order = self.order()
        with pytest.raises(TransientError):
            connector.push(order, push_context(order))

    def test_money_is_exact_to_the_minor_unit(self, config: dict[str, Any],
                                              backoffice: BackOffice) -> None:
        order = self.order()
        self.book(self.make(config), backoffice, order)
        assert Decimal(str(self.one(backoffice, order)["total"])) == order["totals"]["total"]

    def test_unknown_sku_parks_naming_it(self, config: dict[str, Any],
                                         backoffice: BackOffice) -> None:
        order = self.order(skus=(f"CK-NOPE-{uuid.uuid4().hex[:6]}", SKUS[1]))
        connector = self.make(config)
        if not self.maps_products:  # the back office takes lines as they come
            connector.push(order, push_context(order))
            self.one(backoffice, order)
            return
        with pytest.raises(MissingMapping) as caught:
            connector.push(order, push_context(order))
        assert order["lines"][0]["sku"] in str(caught.value)
        assert backoffice.records(order["external_id"]) == []

    def test_imports_neither_flask_nor_celery(self) -> None:
        module = connector_class(self.kind).__module__
        code = (f"import sys, {module}; bad = [m for m in ('flask', 'celery') if m in sys.modules];"
                " print(','.join(bad))")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=True, env=env).stdout.strip()
        assert out == "", f"{module} imports {out}"
