"""The contract kit against a live back office, before going live: `broker connectors kit NAME`.

The pytest kit (connectors.testing) reads what the back office holds through a BackOffice of
the test's own; against an admin's ERP the only reader is the connector itself, so these cases
prove what `lookup()` can see: one record per order, found again after a lost answer, kept
(not duplicated) by a retry and by a newer version, a missing SKU parked before anything is
written, a cancellation accepted or refused with a message. Every order is a scratch order
(external id `FOBO-KIT-…`, the admin's own SKUs) and is discarded afterwards as far as the
back office allows (`Connector.discard`), unless the admin asks to keep them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import Connector, PushContext
from connectors.errors import ConnectorError, MissingMapping, PermanentError
from connectors.kit_orders import contract_order, push_context


class KitFailure(Exception):
    """A case found the connector or the back office breaking a promise."""


def expect(condition: object, message: str) -> None:
    if not condition:
        raise KitFailure(message)


@dataclass
class CaseResult:
    case: str
    passed: bool
    detail: str = ""


@dataclass
class LiveKit:
    """Runs the cases with fresh connectors from `make`; remembers every order to discard."""

    make: Callable[[], Connector]
    skus: tuple[str, str]
    currency: str = "USD"
    pushed: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)

    def order(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("currency", self.currency)
        kwargs.setdefault("skus", self.skus)
        external_id = kwargs.pop("external_id", None) or f"FOBO-KIT-{uuid.uuid4().hex[:10]}"
        return contract_order(external_id, **kwargs)

    @contextmanager
    def connector(self) -> Iterator[Connector]:
        connector = self.make()
        try:
            yield connector
        finally:
            connector.close()

    def push(self, order: Mapping[str, Any], **ctx: Any) -> str:
        with self.connector() as connector:
            result = connector.push(order, push_context(order, **ctx))
        self.pushed.append((dict(order), result.reference))
        return result.reference

    def found(self, order: Mapping[str, Any]) -> str | None:
        with self.connector() as connector:
            return connector.lookup(order)

    # --- the cases ----------------------------------------------------------------------------
    def check_ok(self) -> str:
        with self.connector() as connector:
            connector.check()
        return "connection and credentials accepted"

    def push_creates_one_record_found_by_lookup(self) -> str:
        order = self.order()
        reference = self.push(order)
        found = self.found(order)
        expect(found is not None, "lookup() does not find the order just booked")
        expect(found == reference, f"lookup() found {found!r}, push() answered {reference!r}")
        return f"booked as {reference}"

    def push_twice_keeps_one_record(self) -> str:
        order = self.order()
        first = self.push(order)
        second = self.push(order)  # a retry after a lost answer
        expect(first == second, f"a retry booked {second!r} beside {first!r}")
        return f"both pushes answered {first}"

    def newer_version_after_a_lost_answer_keeps_one_record(self) -> str:
        first = self.order()
        reference = self.push(first)
        later = datetime.fromisoformat(str(first["updated_at"])) + timedelta(minutes=3)
        second = self.order(external_id=first["external_id"], quantity=5, updated_at=later)
        try:
            again = self.push(second, action="create", version=2)
        except PermanentError as exc:  # a kind that cannot update says so
            return f"updates refused with a message: {exc}"
        expect(again == self.found(second), "lookup() no longer finds the order")
        return f"version 2 kept on {again} (was {reference})"

    def unknown_sku_parks_before_writing(self) -> str:
        order = self.order(skus=(f"FOBO-KIT-NOPE-{uuid.uuid4().hex[:6]}", self.skus[1]))
        try:
            self.push(order)
        except MissingMapping as exc:
            expect(order["lines"][0]["sku"] in str(exc), f"the message does not name the SKU: {exc}")
            expect(self.found(order) is None, "something was written before parking")
            return "parked naming the SKU, nothing written"
        return "booked: this back office takes lines without a product (no SKU mapping)"

    def cancel_works_or_says_what_to_do(self) -> str:
        order = self.order()
        reference = self.push(order)
        cancelled = {**order, "status": "cancelled"}
        ctx = push_context(cancelled, action="cancel", reference=reference, version=2)
        with self.connector() as connector:
            try:
                connector.cancel(cancelled, ctx)
            except PermanentError as exc:
                expect(str(exc), "say what to do by hand")
                return f"cancel refused with a message: {exc}"
        return f"{reference} cancelled"

    CASES = ("check_ok", "push_creates_one_record_found_by_lookup", "push_twice_keeps_one_record",
             "newer_version_after_a_lost_answer_keeps_one_record", "unknown_sku_parks_before_writing",
             "cancel_works_or_says_what_to_do")

    def run(self) -> list[CaseResult]:
        results = []
        for case in self.CASES:
            try:
                results.append(CaseResult(case, True, getattr(self, case)()))
            except KitFailure as exc:
                results.append(CaseResult(case, False, str(exc)))
            except ConnectorError as exc:
                results.append(CaseResult(case, False, f"{type(exc).__name__}: {exc}"))
        return results

    def clean_up(self) -> list[CaseResult]:
        """Discard every scratch order pushed (once per order, newest content)."""
        latest: dict[str, tuple[dict[str, Any], str | None]] = {}
        for order, reference in self.pushed:
            latest[order["external_id"]] = (order, reference)
        results = []
        for external_id, (order, reference) in latest.items():
            ctx = PushContext(delivery_id=f"kit-{external_id}", action="cancel", attempt=1,
                              idempotency_key=f"{external_id}.kit.discard", reference=reference)
            try:
                with self.connector() as connector:
                    connector.discard({**order, "status": "cancelled",
                                       "updated_at": datetime.now(UTC)}, ctx)
                results.append(CaseResult(f"discard {external_id}", True, reference or ""))
            except ConnectorError as exc:
                results.append(CaseResult(f"discard {external_id}", False,
                                          f"remove {reference or external_id} by hand: {exc}"))
        return results
