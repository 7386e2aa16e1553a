"""Safe defaults behind a proxy (issue 15): abuse limits shared by every gateway process
(RELIABILITY T37), the trusted-proxy setting, the metrics token, the access log, and what the
real HTTP server (gunicorn) answers itself."""

from __future__ import annotations

import http.client
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Stack, order, stop_group, wait_until
from sqlalchemy import select

from broker.app import build_app
from broker.logging import ACCESS_LOGGER, make_handler
from broker.models import LoginThrottle
from broker.services import throttle

REPO = Path(__file__).resolve().parents[2]


def token_request(client: Any, client_id: str, secret: str, address: str,
                  forwarded_for: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/oauth/token", data={"grant_type": "client_credentials"},
                       auth=(client_id, secret), headers=headers,
                       environ_base={"REMOTE_ADDR": address})


def assert_throttled(response: Any) -> dict[str, Any]:
    assert response.status_code == 429, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) > 0
    error = response.json["error"]
    assert error["code"] == "too_many_requests" and "try again in" in error["message"]
    return error


def test_wrong_client_secrets_lock_out_the_address_on_every_gateway(stack):
    """T37: 20 failed client authentications from one address, then 429 — on a second gateway
    process too (the counters are in the database) — while other addresses get their tokens."""
    made = stack.cli("clients", "create", "shopfront", "--scope", "orders:read", "--json")
    client_id, secret = made["client_id"], made["client_secret"]
    attacker, honest = "203.0.113.9", "198.51.100.7"
    for _ in range(throttle.TOKEN_FAILURES.limit):
        assert token_request(stack.client, client_id, "cs_wrong", attacker).status_code == 401
    other_app = build_app(stack.settings, configure_logging=False)
    try:
        other_gateway = other_app.test_client()
        assert_throttled(token_request(other_gateway, client_id, secret, attacker))  # the right secret waits
        assert_throttled(token_request(stack.client, client_id, "cs_wrong", attacker))
        assert token_request(other_gateway, client_id, secret, honest).status_code == 200
    finally:
        other_app.extensions["broker"].close()


def test_forwarded_for_is_ignored_without_trusted_proxies(stack):
    """Without BROKER_TRUSTED_PROXIES a client cannot pick its address with X-Forwarded-For:
    varying it does not escape the lockout of the address it connects from."""
    assert stack.settings.trusted_proxies == 0
    for n in range(throttle.TOKEN_FAILURES.limit):
        response = token_request(stack.client, "cl_nobody", "cs_wrong", "10.0.0.5",
                                 forwarded_for=f"192.0.2.{n}")
        assert response.status_code == 401
    assert_throttled(token_request(stack.client, "cl_nobody", "cs_wrong", "10.0.0.5",
                                   forwarded_for="192.0.2.200"))


def test_behind_a_trusted_proxy_the_sign_in_throttle_locks_only_the_attacker(tmp_path):
    """All requests come from the load balancer (10.0.0.1); with BROKER_TRUSTED_PROXIES=1 the
    address it forwards is the client's, so 20 failures lock the attacker and nobody else."""
    stack = Stack(tmp_path, "sqlite", "embedded", trusted_proxies=1)
    try:
        result = stack.app.test_cli_runner().invoke(args=["broker", "users", "create-admin", "root"])
        password = re.search(r"password \(shown once\): (\S+)", result.output).group(1)  # type: ignore[union-attr]
        proxy, attacker, colleague = "10.0.0.1", "203.0.113.9", "198.51.100.7"

        def sign_in(client: Any, username: str, pw: str, client_address: str) -> Any:
            base = {"REMOTE_ADDR": proxy}
            page = client.get("/console/login", environ_base=base).get_data(as_text=True)
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            return client.post("/console/login", environ_base=base,
                               headers={"X-Forwarded-For": f"{client_address}"},
                               data={"username": username, "password": pw, "csrf_token": token})

        # The attacker's first 19 failures are counted directly (each sign-in costs an Argon2
        # hash); the 20th comes through the proxy and must be counted under the same address.
        for _ in range(throttle.SIGN_IN_ADDRESS.limit - 1):
            throttle.record(stack.runtime.db, throttle.SIGN_IN_ADDRESS, attacker)
        attacking = stack.app.test_client()
        assert sign_in(attacking, "root", "wrong-password-123", attacker).status_code == 401
        locked = sign_in(attacking, "root", password, attacker)
        assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
        assert sign_in(stack.app.test_client(), "root", password, colleague).status_code == 303
        with stack.runtime.db.begin() as session:
            addresses = set(session.execute(select(LoginThrottle.key).where(
                LoginThrottle.key.startswith("addr:"))).scalars())
        assert addresses == {"addr:" + attacker}  # nothing counted against the proxy or the colleague
    finally:
        stack.close()


def test_bulk_replays_are_limited_per_actor(stack):
    headers = {"Authorization": f"Bearer {stack.token('ops', 'admin')}"}
    for _ in range(throttle.BULK_OPERATIONS.limit):
        response = stack.client.post("/api/v1/deliveries/replay", json={"confirm": 0}, headers=headers)
        assert response.status_code == 202, response.get_data(as_text=True)
    dry_run = stack.client.post("/api/v1/deliveries/replay", json={}, headers=headers)
    assert dry_run.status_code == 200  # counting what would be replayed is not limited
    assert_throttled(stack.client.post("/api/v1/deliveries/replay", json={"confirm": 0}, headers=headers))
    other = {"Authorization": f"Bearer {stack.token('ops2', 'admin')}"}
    again = stack.client.post("/api/v1/deliveries/replay", json={"confirm": 0}, headers=other)
    assert again.status_code == 202


def test_metrics_need_the_token_when_one_is_set(tmp_path):
    token = secrets.token_hex(16)
    stack = Stack(tmp_path, "sqlite", "embedded", metrics_token=token)
    try:
        for headers in ({}, {"Authorization": "Bearer " + "x" * 32}, {"Authorization": token}):
            refused = stack.client.get("/metrics", headers=headers)
            assert refused.status_code == 401 and refused.json["error"]["code"] == "unauthorized"
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert token not in refused.get_data(as_text=True)
        allowed = stack.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200 and b"broker_orders_received_total" in allowed.data
    finally:
        stack.close()


@pytest.fixture
def access_log() -> Any:
    """The access log as the production handler writes it (JSON lines), one dict per line."""
    stream = io.StringIO()
    handler = make_handler(True, stream)
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)


def test_access_log_has_one_json_line_per_request_without_secrets(stack, access_log):
    stack.source("shop")
    forged = stack.client.post("/webhooks/shop", data=json.dumps(order("A-1")), headers={
        "content-type": "application/json", "webhook-id": "msg_1", "webhook-timestamp": "1",
        "webhook-signature": "v1,Zm9yZ2Vk"})
    assert forged.status_code == 401
    stack.client.get("/api/v1/orders?email=ana%40example.com&secret=hunter2-canary",
                     headers={"Authorization": "Bearer canary-bearer-token"})
    lines = access_log()
    assert len(lines) == 2, lines
    webhook, search = lines
    assert webhook["logger"] == ACCESS_LOGGER and webhook["level"] == "INFO"
    assert (webhook["method"], webhook["path"], webhook["status"]) == ("POST", "/webhooks/shop", 401)
    assert webhook["request_id"] == forged.headers["X-Request-Id"]
    assert webhook["remote_addr"] == "127.0.0.1" and webhook["duration_ms"] >= 0
    assert (search["path"], search["status"]) == ("/api/v1/orders", 401)
    text = json.dumps(lines)
    for secret in ("hunter2-canary", "ana%40example.com", "ana@example.com", "canary-bearer-token",
                   "Zm9yZ2Vk"):
        assert secret not in text


# --- the real HTTP server ----------------------------------------------------------------

def _port_in_range() -> int:
    """A free port of this test's range (21000-21999), so parallel helpers never collide."""
    for _ in range(200):
        port = 21000 + secrets.randbelow(1000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 21000-21999")


def test_gunicorn_answers_in_json_and_refuses_long_chunked_bodies(stack):
    """Through gunicorn, as deployed: a request line over its limit gets our JSON 414 (not an
    HTML page), a chunked body over the size limit 413 with nothing stored (correctly signed or
    not), and the access log shows a 401 on a webhook."""
    from broker.channels.standard_webhooks import sign
    from broker.models import InboundEvent

    secret = stack.source("shop")
    port = _port_in_range()
    log_path = stack.tmp / "gateway.log"
    with open(log_path, "wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:broker.gunicorn_conf", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--worker-class", "gthread", "broker.wsgi:app"],
            cwd=REPO, env={**os.environ, **stack.env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                assert gateway.poll() is None, log_path.read_text()
                return False

        wait_until(answers, timeout=60, message="gunicorn listening")

        def request(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                    chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
                response = conn.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            finally:
                conn.close()

        status, headers, body = request("GET", "/api/v1/orders?number=" + "9" * 9000)
        assert status == 414 and headers["Content-Type"] == "application/json", body
        assert json.loads(body)["error"]["code"] == "uri_too_long"

        limit = stack.settings.max_body_bytes
        big = json.dumps(order("G-BIG", metadata={"pad": "x" * (limit + 10)})).encode()
        msg_id, ts = "msg_" + secrets.token_hex(6), str(int(time.time()))
        signed = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": ts,
                  "webhook-signature": sign(secret, msg_id, int(ts), big)}

        def chunks(data: bytes) -> Any:
            for start in range(0, len(data), 64 * 1024):
                yield data[start:start + 64 * 1024]

        status, _, body = request("POST", "/webhooks/shop", chunks(big), signed, chunked=True)
        assert status == 413, body
        assert json.loads(body)["error"]["code"] == "request_entity_too_large"
        forged = {**signed, "webhook-signature": "v1,Zm9yZ2Vk"}
        status, _, body = request("POST", "/webhooks/shop", chunks(big), forged, chunked=True)
        assert status == 413, body
        assert stack.count(InboundEvent) == 0

        small = json.dumps(order("G-1")).encode()
        status, _, body = request("POST", "/webhooks/shop", chunks(small), forged, chunked=True)
        assert status == 401, body
        wait_until(lambda: '"status": 401' in log_path.read_text(), timeout=10, message="access log line")
        entries = [json.loads(line) for line in log_path.read_text().splitlines()
                   if line.startswith("{") and '"logger": "broker.access"' in line]
        assert any(e.get("path") == "/webhooks/shop" and e.get("status") == 401 for e in entries), entries
        assert any(e.get("status") == 414 for e in entries), entries
    finally:
        stop_group(gateway)
