"""A Standard Webhooks body is a canonical order, so the gateway validates it like a REST order:
a valid-JSON but invalid order is a 422 naming each field path, nothing is stored, and the
sender learns it at once instead of a 202 followed by a rejection only the broker's logs show.
The signature is still checked first, over the raw bytes, and a valid order is acknowledged
only after its raw event is committed.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from harness import order
from test_intake_errors import FORGED, assert_error, send

from broker import metrics
from broker.models import InboundEvent


@pytest.fixture
def shop(stack: Any) -> tuple[Any, str]:
    return stack, stack.source("shop")


def _invalid(stack: Any, secret: str, doc: dict[str, Any]) -> dict[str, list[str]]:
    before = stack.row_counts()
    status, text = send(stack, "shop", json.dumps(doc).encode(), secret=secret)
    error = assert_error(status, text, 422, "invalid_order")
    assert "nothing was stored" in error["message"]
    assert stack.row_counts() == before
    return error["fields"]


@pytest.mark.parametrize(("change", "path", "said"), [
    (lambda d: d.pop("currency"), "currency", "Missing data"),
    (lambda d: d["lines"][0].update(quantity="two"), "lines.0.quantity", "decimal"),
    (lambda d: d["totals"].update(total="999.99"), "totals.total", ""),
    (lambda d: d.update(colour="blue"), "colour", "Unknown field"),
])
def test_an_invalid_canonical_order_is_422_with_its_field_path_and_stores_nothing(
        shop: tuple[Any, str], change: Any, path: str, said: str) -> None:
    stack, secret = shop
    doc = order("V-1")
    change(doc)
    fields = _invalid(stack, secret, doc)
    assert path in fields, fields
    assert said.lower() in " ".join(fields[path]).lower()


def test_a_body_that_is_no_order_object_is_422(shop: tuple[Any, str]) -> None:
    stack, secret = shop
    status, text = send(stack, "shop", b"[1, 2]", secret=secret)
    error = assert_error(status, text, 422, "invalid_order")
    assert error["fields"] == {"_schema": ["the body must be a JSON object holding one canonical order"]}
    assert stack.count(InboundEvent) == 0


def test_the_signature_is_checked_before_the_order(shop: tuple[Any, str]) -> None:
    stack, _ = shop
    doc = order("V-2")
    doc.pop("currency")
    status, text = send(stack, "shop", json.dumps(doc).encode(), signature=FORGED)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.count(InboundEvent) == 0


def test_a_valid_order_is_stored_before_the_202_and_counted(shop: tuple[Any, str]) -> None:
    stack, secret = shop
    before = metrics.ORDERS_RECEIVED.labels(source="shop", outcome="invalid")._value.get()
    doc = order("V-3")
    doc.pop("currency")
    _invalid(stack, secret, doc)
    assert metrics.ORDERS_RECEIVED.labels(source="shop", outcome="invalid")._value.get() == before + 1
    status, body = stack.webhook("shop", secret, order("V-3"))
    assert status == 202
    with stack.runtime.db.begin() as session:
        event = session.get(InboundEvent, body["event_id"])
        assert event is not None and event.status == "received"
