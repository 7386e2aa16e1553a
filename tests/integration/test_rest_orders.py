"""REST intake for digital teams: create, read back, versions, Idempotency-Key, BOLA, OAuth.

RELIABILITY.md T14 (Idempotency-Key) and T31 (BOLA), on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from harness import order
from sqlalchemy import select, update

from broker.db import Base, utcnow
from broker.models import Order, OrderVersion, Token

PARALLEL = 20


def create_client(stack: Any, name: str, scope: str, source: str | None = None) -> dict[str, Any]:
    args = ["clients", "create", name, "--scope", scope, "--json"]
    if source:
        args[-1:-1] = ["--source", source]
    return stack.cli(*args)


def fetch_token(stack: Any, client: dict[str, Any]) -> str:
    response = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                 auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["access_token"]


def bearer(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


@pytest.fixture
def shopfront(db_stack):
    """(stack, writer token, reader token): both clients on the REST source 'shopfront',
    which is routed to an http connector (no worker runs, so deliveries stay pending)."""
    writer = fetch_token(db_stack, create_client(db_stack, "shopfront", "orders:write orders:read"))
    reader = fetch_token(db_stack, create_client(db_stack, "dashboard", "orders:read",
                                                 source="shopfront"))
    db_stack.http_connector("erp", "http://127.0.0.1:9/orders")
    db_stack.route("shopfront", "erp")
    return db_stack, writer, reader


def post(client: Any, token: str, doc: dict[str, Any], key: str | None = None) -> Any:
    headers = bearer(token)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/v1/orders", json=doc, headers=headers)


def test_valid_order_is_created_with_location_and_self_link(shopfront):
    stack, writer, _ = shopfront
    response = post(stack.client, writer, order("1001"))
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.json
    assert body["id"] and body["version"] == 1 and body["created"] is True
    assert body["links"]["self"] == f"/api/v1/orders/{body['id']}"
    assert response.headers["Location"].endswith(body["links"]["self"])
    assert stack.count(Order) == 1


def test_created_order_reads_back_with_versions_deliveries_and_timeline(shopfront):
    stack, writer, reader = shopfront
    created = post(stack.client, writer, order("1002")).json
    response = stack.client.get(created["links"]["self"], headers=bearer(reader))
    assert response.status_code == 200, response.get_data(as_text=True)
    detail = response.json
    assert detail["id"] == created["id"] and detail["external_id"] == "1002"
    assert detail["source"] == "shopfront" and detail["total"] == "29.06"
    assert [(v["version"], v["applied"]) for v in detail["versions"]] == [(1, True)]
    assert [(d["connector"], d["status"], d["action"]) for d in detail["deliveries"]] == [
        ("erp", "pending", "create")]
    assert [t["step"] for t in detail["timeline"]] == ["received", "normalised", "queued"]
    assert detail["order"]["totals"]["total"] == "29.06"


def test_same_idempotency_key_and_body_replays_the_first_answer(shopfront):
    stack, writer, _ = shopfront
    first = post(stack.client, writer, order("1003"), key="key-1003")
    second = post(stack.client, writer, order("1003"), key="key-1003")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    assert second.status_code == first.status_code
    assert second.get_data() == first.get_data()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Location"] == first.headers["Location"]
    assert stack.count(Order) == 1 and stack.count(OrderVersion) == 1


def test_same_idempotency_key_with_another_body_is_422_and_changes_nothing(shopfront):
    stack, writer, _ = shopfront
    assert post(stack.client, writer, order("1004"), key="key-1004").status_code == 201
    before = stack.row_counts()
    response = post(stack.client, writer, order("1004", note="ring twice"), key="key-1004")
    assert response.status_code == 422, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == "idempotency_key_reused"
    assert "same parameters" in error["message"]
    assert stack.row_counts() == before


def test_parallel_requests_with_one_idempotency_key_create_one_order(shopfront):
    stack, writer, _ = shopfront
    doc = order("1005")
    answers: list[tuple[int, Any, str | None]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(PARALLEL)

    def call() -> None:
        try:
            client = stack.app.test_client()
            start.wait(timeout=30)
            response = post(client, writer, doc, key="key-parallel")
            answers.append((response.status_code, response.get_json(silent=True),
                            response.headers.get("Idempotent-Replayed")))
        except BaseException as exc:  # surfaced below with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(PARALLEL)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(answers) == PARALLEL
    assert {(status, json.dumps(body, sort_keys=True)) for status, body, _ in answers} == {
        (201, json.dumps(answers[0][1], sort_keys=True))}, answers
    assert sum(replayed is None for _, _, replayed in answers) == 1
    assert stack.count(Order) == 1 and stack.count(OrderVersion) == 1


def test_same_order_again_without_key_is_a_duplicate_with_no_new_version(shopfront):
    stack, writer, _ = shopfront
    first = post(stack.client, writer, order("1006")).json
    before = stack.row_counts()
    response = post(stack.client, writer, order("1006"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["duplicate"] is True and response.json["created"] is False
    assert response.json["id"] == first["id"] and response.json["version"] == 1
    assert stack.row_counts() == before


def test_later_update_is_version_two_and_older_one_is_recorded_not_applied(shopfront):
    stack, writer, reader = shopfront
    created = post(stack.client, writer, order("1007", updated_at="2026-11-20T14:05:00Z")).json

    cancelled = post(stack.client, writer, order("1007", status="cancelled",
                                                 updated_at="2026-11-20T15:00:00Z"))
    assert cancelled.status_code == 200, cancelled.get_data(as_text=True)
    assert cancelled.json["version"] == 2 and cancelled.json["stale"] is False
    assert cancelled.json["id"] == created["id"]

    late = post(stack.client, writer, order("1007", note="edited in between",
                                            updated_at="2026-11-20T14:30:00Z"))
    assert late.status_code == 200, late.get_data(as_text=True)
    assert late.json["version"] == 3 and late.json["stale"] is True

    detail = stack.client.get(created["links"]["self"], headers=bearer(reader)).json
    assert detail["status"] == "cancelled"
    assert [(v["version"], v["applied"]) for v in detail["versions"]] == [
        (1, True), (2, True), (3, False)]
    assert detail["order"]["status"] == "cancelled"
    assert "stale" in [t["step"] for t in detail["timeline"]]
    with stack.runtime.db.begin() as session:
        row = session.execute(select(Order).where(Order.id == created["id"])).scalar_one()
        stale = session.execute(select(OrderVersion).where(
            OrderVersion.order_id == row.id, OrderVersion.version == 3)).scalar_one()
        assert row.status == "cancelled" and row.current_version == 3
        assert stale.applied is False and stale.data["note"] == "edited in between"


def test_a_client_cannot_read_another_clients_order(shopfront):
    stack, writer, _ = shopfront
    created = post(stack.client, writer, order("1008")).json
    other = fetch_token(stack, create_client(stack, "partner", "orders:write orders:read"))
    response = stack.client.get(created["links"]["self"], headers=bearer(other))
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "not_found"
    listed = stack.client.get("/api/v1/orders", headers=bearer(other))
    assert listed.status_code == 200 and listed.json["items"] == []
    # the owner still sees it, so the 404 is about visibility, not existence
    assert stack.client.get(created["links"]["self"], headers=bearer(writer)).status_code == 200


# --- OAuth token endpoint --------------------------------------------------------------

def test_token_endpoint_accepts_http_basic_client_authentication(db_stack):
    client = create_client(db_stack, "basic-app", "orders:read")
    response = db_stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                    auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["token_type"].lower() == "bearer"
    assert response.json["scope"] == "orders:read" and response.json["expires_in"] > 0
    listed = db_stack.client.get("/api/v1/orders", headers=bearer(response.json["access_token"]))
    assert listed.status_code == 200


def test_token_endpoint_accepts_client_secret_post(db_stack):
    client = create_client(db_stack, "post-app", "orders:read")
    response = db_stack.client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client["client_id"],
        "client_secret": client["client_secret"]})
    assert response.status_code == 200, response.get_data(as_text=True)
    listed = db_stack.client.get("/api/v1/orders", headers=bearer(response.json["access_token"]))
    assert listed.status_code == 200


def test_token_endpoint_refuses_a_wrong_secret_with_invalid_client(db_stack):
    client = create_client(db_stack, "wrong-app", "orders:read")
    before = db_stack.row_counts()
    response = db_stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                    auth=(client["client_id"], client["client_secret"] + "x"))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"] == "invalid_client"
    assert "access_token" not in response.json
    assert db_stack.row_counts() == before


def test_token_endpoint_refuses_an_unsupported_grant_type(db_stack):
    client = create_client(db_stack, "grant-app", "orders:read")
    before = db_stack.row_counts()
    response = db_stack.client.post("/oauth/token", data={"grant_type": "password",
                                                          "username": "u", "password": "p"},
                                    auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"] == "unsupported_grant_type"
    assert db_stack.row_counts() == before


def test_client_secret_and_access_token_are_not_stored_in_plaintext(db_stack):
    client = create_client(db_stack, "stored-app", "orders:read")
    token = fetch_token(db_stack, client)
    secret = client["client_secret"]
    needles = [secret, token, base64.b64encode(secret.encode()).decode()]
    with db_stack.runtime.db.begin() as session:
        for table in Base.metadata.sorted_tables:
            for row in session.execute(select(table)):
                for value in row:
                    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
                    for needle in needles:
                        assert needle not in text, f"plaintext credential in table {table.name}"
    assert db_stack.count(Token) == 1


def test_expired_token_is_refused(db_stack):
    client = create_client(db_stack, "expiring-app", "orders:read")
    token = fetch_token(db_stack, client)
    assert db_stack.client.get("/api/v1/orders", headers=bearer(token)).status_code == 200
    with db_stack.runtime.db.begin() as session:
        session.execute(update(Token).values(expires_at=utcnow() - timedelta(seconds=1)))
    response = db_stack.client.get("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
