"""Bad input gets a clear error and changes nothing (DESIGN invariant 4; RELIABILITY T08, T09).

Every case runs on SQLite, PostgreSQL and MariaDB: the status, the one error shape, no
traceback in the body, and the row counts of every table unchanged.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import time
from typing import Any

import pytest
from harness import order

from broker.channels.standard_webhooks import sign
from broker.models import InboundEvent

FORGED = "v1," + base64.b64encode(b"\x00" * 32).decode()


def assert_error(status: int, body_text: str, expected_status: int, code: str | None = None) -> dict:
    """The response is the broker's error shape with no traceback; returns the error object."""
    assert status == expected_status, body_text
    assert "Traceback" not in body_text and 'File "' not in body_text, body_text
    error = json.loads(body_text)["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


def send(stack: Any, source: str, body: bytes, *, secret: str | None = None,
         signature: str | None = None, timestamp: int | None = None,
         msg_id: str | None = None, content_type: str = "application/json") -> tuple[int, str]:
    """Post a Standard Webhooks request signed with `secret` (or carrying `signature`)."""
    msg_id = msg_id or "msg_" + secrets.token_hex(8)
    ts = int(time.time()) if timestamp is None else timestamp
    if signature is None:
        assert secret is not None
        signature = sign(secret, msg_id, ts, body)
    response = stack.client.post(f"/webhooks/{source}", data=body, headers={
        "content-type": content_type, "webhook-id": msg_id, "webhook-timestamp": str(ts),
        "webhook-signature": signature})
    return response.status_code, response.get_data(as_text=True)


@pytest.fixture
def shop(db_stack):
    """(stack, signing secret) of a Standard Webhooks source named 'shop'."""
    return db_stack, db_stack.source("shop")


def body_of(external_id: str = "E-1") -> bytes:
    return json.dumps(order(external_id)).encode()


# --- webhooks --------------------------------------------------------------------------

def test_forged_signature_is_401_and_stores_nothing(shop):
    stack, _ = shop
    before = stack.row_counts()
    status, text = send(stack, "shop", body_of(), signature=FORGED)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.row_counts() == before


def test_signature_made_with_another_secret_is_401_and_stores_nothing(shop):
    stack, _ = shop
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    before = stack.row_counts()
    status, text = send(stack, "shop", body_of(), secret=other)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.row_counts() == before


def test_stale_timestamp_is_401_and_stores_nothing(shop):
    stack, secret = shop
    before = stack.row_counts()
    status, text = send(stack, "shop", body_of(), secret=secret,
                        timestamp=math.floor(time.time()) - 301)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.row_counts() == before


def test_future_timestamp_is_401_and_stores_nothing(shop):
    stack, secret = shop
    before = stack.row_counts()
    # rounded up, so the request is still more than 300 s ahead when the view reads the clock
    status, text = send(stack, "shop", body_of(), secret=secret,
                        timestamp=math.ceil(time.time()) + 301)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.row_counts() == before


def test_unknown_source_is_404_and_stores_nothing(shop):
    stack, secret = shop
    before = stack.row_counts()
    status, text = send(stack, "no-such-shop", body_of(), secret=secret)
    assert_error(status, text, 404, "unknown_source")
    assert stack.row_counts() == before


def test_body_over_the_limit_is_413_and_stores_nothing(shop):
    stack, secret = shop
    assert stack.settings.max_body_bytes == 1024 * 1024
    big = json.dumps(order("E-BIG", note=None, metadata={"pad": "x" * (2 * 1024 * 1024)})).encode()
    before = stack.row_counts()
    status, text = send(stack, "shop", big, secret=secret)
    assert_error(status, text, 413)
    assert stack.row_counts() == before


def test_malformed_json_correctly_signed_is_400_and_stores_nothing(shop):
    stack, secret = shop
    before = stack.row_counts()
    status, text = send(stack, "shop", b'{"external_id": "E-1", "lines": [', secret=secret)
    assert_error(status, text, 400, "invalid_json")
    assert stack.row_counts() == before


def test_wrong_content_type_correctly_signed_is_415_and_stores_nothing(shop):
    stack, secret = shop
    before = stack.row_counts()
    status, text = send(stack, "shop", body_of(), secret=secret, content_type="text/plain")
    error = assert_error(status, text, 415, "unsupported_media_type")
    assert "text/plain" in error["message"]
    assert stack.row_counts() == before


def test_duplicate_webhook_id_is_acknowledged_once_and_stored_once(shop):
    stack, secret = shop
    body = body_of("E-DUP")
    ts = int(time.time())
    first = send(stack, "shop", body, secret=secret, msg_id="msg_dup_1", timestamp=ts)
    assert first[0] == 202, first[1]
    assert json.loads(first[1])["status"] == "accepted"
    before = stack.row_counts()
    status, text = send(stack, "shop", body, secret=secret, msg_id="msg_dup_1", timestamp=ts)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["status"] == "duplicate"
    assert answer["event_id"] == json.loads(first[1])["event_id"]
    assert stack.count(InboundEvent) == 1
    assert stack.row_counts() == before


def test_replay_after_the_tolerance_is_401_and_stores_nothing(shop):
    stack, secret = shop
    body = body_of("E-REPLAY")
    ts = math.floor(time.time()) - 301  # a captured delivery resent once it is too old
    before = stack.row_counts()
    status, text = send(stack, "shop", body, secret=secret, msg_id="msg_replayed", timestamp=ts)
    assert_error(status, text, 401, "invalid_signature")
    assert stack.row_counts() == before


# --- REST ------------------------------------------------------------------------------

@pytest.fixture
def rest(db_stack):
    """(stack, orders:write token, orders:read-only token), created before any snapshot."""
    write = db_stack.token("shopfront", "orders:write orders:read")
    read = db_stack.token("reporting", "orders:read")
    return db_stack, write, read


def post_order(stack: Any, payload: bytes, token: str | None = None,
               content_type: str = "application/json") -> Any:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return stack.client.post("/api/v1/orders", data=payload, headers=headers)


def four_line_order(external_id: str = "R-4") -> dict[str, Any]:
    lines = [{"sku": f"SKU-{i}", "quantity": "1", "unit_price": "10.00"} for i in range(4)]
    return {"external_id": external_id, "currency": "USD", "lines": lines,
            "totals": {"subtotal": "40.00", "total": "40.00"}}


def test_rest_order_without_token_is_401_with_a_bearer_challenge(rest):
    stack, _, _ = rest
    before = stack.row_counts()
    response = post_order(stack, json.dumps(order("R-1")).encode())
    assert_error(response.status_code, response.get_data(as_text=True), 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stack.row_counts() == before


def test_rest_order_with_garbage_token_is_401(rest):
    stack, _, _ = rest
    before = stack.row_counts()
    response = post_order(stack, json.dumps(order("R-1")).encode(), token="not-a-token-" + "x" * 40)
    assert_error(response.status_code, response.get_data(as_text=True), 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert stack.row_counts() == before


def test_rest_order_with_read_only_token_is_403(rest):
    stack, _, read = rest
    before = stack.row_counts()
    response = post_order(stack, json.dumps(order("R-1")).encode(), token=read)
    assert_error(response.status_code, response.get_data(as_text=True), 403, "insufficient_scope")
    assert 'scope="orders:write"' in response.headers["WWW-Authenticate"]
    assert stack.row_counts() == before


def test_rest_error_deep_in_a_line_is_422_naming_its_path(rest):
    stack, write, _ = rest
    doc = four_line_order()
    doc["lines"][3]["unit_price"] = "ten dollars"
    before = stack.row_counts()
    response = post_order(stack, json.dumps(doc).encode(), token=write)
    error = assert_error(response.status_code, response.get_data(as_text=True), 422, "invalid_order")
    assert list(error["fields"]) == ["lines.3.unit_price"], error
    assert stack.row_counts() == before


def test_rest_unknown_field_is_422_naming_its_path(rest):
    stack, write, _ = rest
    doc = four_line_order()
    doc["lines"][2]["colour"] = "blue"
    before = stack.row_counts()
    response = post_order(stack, json.dumps(doc).encode(), token=write)
    error = assert_error(response.status_code, response.get_data(as_text=True), 422, "invalid_order")
    assert "lines.2.colour" in error["fields"], error
    assert stack.row_counts() == before


def test_rest_totals_mismatch_is_422_naming_the_total(rest):
    stack, write, _ = rest
    doc = four_line_order()
    doc["totals"]["total"] = "41.00"
    before = stack.row_counts()
    response = post_order(stack, json.dumps(doc).encode(), token=write)
    error = assert_error(response.status_code, response.get_data(as_text=True), 422, "invalid_order")
    assert "totals.total" in error["fields"], error
    assert "40.00" in " ".join(error["fields"]["totals.total"])
    assert stack.row_counts() == before


def test_rest_malformed_json_is_400(rest):
    stack, write, _ = rest
    before = stack.row_counts()
    response = post_order(stack, b'{"external_id": "R-1",,}', token=write)
    assert_error(response.status_code, response.get_data(as_text=True), 400, "invalid_json")
    assert stack.row_counts() == before


def test_rest_wrong_content_type_is_415(rest):
    stack, write, _ = rest
    before = stack.row_counts()
    response = post_order(stack, json.dumps(order("R-1")).encode(), token=write,
                          content_type="application/x-www-form-urlencoded")
    assert_error(response.status_code, response.get_data(as_text=True), 415, "unsupported_media_type")
    assert stack.row_counts() == before


# --- NUL characters (PostgreSQL stores none in text or JSON) ----------------------------

def test_rest_order_with_a_nul_character_is_422_naming_the_field(rest):
    stack, write, _ = rest
    doc = four_line_order("R-NUL")
    doc["number"] = "#10\x0042"
    doc["lines"][2]["name"] = "Blue\x00Widget"
    before = stack.row_counts()
    response = post_order(stack, json.dumps(doc).encode(), token=write)
    error = assert_error(response.status_code, response.get_data(as_text=True), 422, "invalid_order")
    assert set(error["fields"]) == {"number", "lines.2.name"}, error
    assert stack.row_counts() == before


def test_signed_webhook_with_a_nul_character_is_422_and_stores_nothing(shop):
    stack, secret = shop
    doc = order("E-NUL")
    doc["customer"]["first_name"] = "A\x00na"
    before = stack.row_counts()
    status, text = send(stack, "shop", json.dumps(doc).encode(), secret=secret)
    error = assert_error(status, text, 422, "invalid_order")
    assert list(error["fields"]) == ["customer.first_name"], error
    assert stack.row_counts() == before


def test_stored_event_with_a_nul_character_is_rejected_alone_by_its_batch(shop):
    """A channel's event the gateway cannot judge (vendor payloads are mapped by a worker) is
    rejected with the field path at normalisation; the others of its batch are booked."""
    from sqlalchemy import select

    from broker.models import Source
    from broker.services.intake import normalise_pending, store_event

    stack, secret = shop
    for external_id in ("E-OK1", "E-OK2"):
        assert send(stack, "shop", body_of(external_id), secret=secret)[0] == 202
    with stack.runtime.db.begin() as session:
        source_id = session.execute(select(Source.id).where(Source.name == "shop")).scalar_one()
    _, bad_id = store_event(stack.runtime.db, source_id, "msg_nul", "order", {},
                            json.dumps(order("E-NUL", number="#1\x00")).encode())
    results = normalise_pending(stack.runtime.db, limit=10)
    assert sorted(r.status for r in results) == ["normalised", "normalised", "rejected"]
    with stack.runtime.db.begin() as session:
        bad = session.get(InboundEvent, bad_id)
        assert bad.status == "rejected" and bad.attempts == 1
        assert bad.error.startswith("number: Must not contain a NUL"), bad.error
    assert stack.row_counts()["orders"] == 2


# --- bodies without Content-Length (chunked) ----------------------------------------------

def send_chunked(stack: Any, source: str, body: bytes, secret: str) -> tuple[int, str]:
    """A signed webhook whose body comes as a stream without Content-Length, as a server
    hands a chunked request to the app (wsgi.input_terminated)."""
    import io

    msg_id, ts = "msg_" + secrets.token_hex(8), int(time.time())
    response = stack.client.post(
        f"/webhooks/{source}", input_stream=io.BytesIO(body),
        environ_overrides={"wsgi.input_terminated": True},
        headers={"content-type": "application/json", "transfer-encoding": "chunked", "webhook-id": msg_id,
                 "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)})
    assert response.request.content_length is None  # chunked: the length is unknown
    return response.status_code, response.get_data(as_text=True)


def test_chunked_body_over_the_limit_is_413_and_stores_nothing(shop):
    """Werkzeug stops such a stream at the limit silently: it must not be stored cut short
    (nor judged on its first MiB's signature, which a correctly signed body would fail)."""
    stack, secret = shop
    limit = stack.settings.max_body_bytes
    big = json.dumps(order("E-CHUNK", metadata={"pad": "x" * (limit + 10)})).encode()
    before = stack.row_counts()
    status, text = send_chunked(stack, "shop", big, secret)
    assert_error(status, text, 413)
    # exactly one byte over, too
    doc = order("E-EDGE")
    edge = json.dumps(doc).encode()
    doc["note"] = "x" * (limit + 1 - len(edge) + len(doc["note"]))
    edge = json.dumps(doc).encode()
    assert len(edge) == limit + 1
    assert_error(*send_chunked(stack, "shop", edge, secret), 413)
    assert stack.row_counts() == before
    status, text = send_chunked(stack, "shop", body_of("E-SMALL"), secret)
    assert status == 202, text
