"""T36: canary secrets planted in every secret field never show up in logs, answers or errors."""

from __future__ import annotations

import json

from harness import order, wait_until

from broker.models import Connector, Delivery, DeliveryStatus, Source, TrustedIssuer, User

CANARY_PASSWORD = "canary-pw-7Qx9Lm2Vb4"
CANARY_TOKEN = "canary-token-Zr8Kd3Wq1"
CANARY_CHANNEL = "shpat_canary_Hq4Ty7Np2"
CANARY_ISSUER = "canary-oidc-secret-Mn5Pq8"
CANARY_ADMIN = "canary-admin-password-Jt6Rw3"


def test_canary_secrets_stay_out_of_logs_answers_errors_and_task_arguments(stack, sink):
    secret = stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders",
                         auth={"type": "basic", "username": "broker", "password": CANARY_PASSWORD})
    stack.http_connector("wms", sink.url + "/orders",
                         auth={"type": "bearer", "token": CANARY_TOKEN})
    stack.route("shop", "erp")
    stack.route("shop", "wms")
    sink.require_basic("broker", "another-password")  # both connectors fail with 401 → dead
    client = stack.cli("clients", "create", "shopfront", "--json")
    stack.cli("sources", "add", "shopify", "--kind", "shopify", "--secret", "shpss_canary_Vb8Xc1",
              "--setting", "shop=acme.myshopify.com",
              "--credential", f"access_token={CANARY_CHANNEL}")
    stack.cli("issuers", "add", "corp", "--issuer", "https://login.example.com",
              "--audience", "fobo", "--client-id", "broker", "--client-secret", CANARY_ISSUER)
    created = stack.app.test_cli_runner().invoke(
        args=["broker", "users", "create-admin", "root", "--password-stdin"], input=CANARY_ADMIN + "\n")
    assert created.exit_code == 0, created.output
    page = stack.client.get("/console/login").get_data(True)
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    refused = stack.client.post("/console/login", data={  # a wrong password: refused, not echoed
        "username": "root", "password": CANARY_ADMIN + "x", "csrf_token": csrf})
    assert refused.status_code == 401
    stack.start_worker()
    stack.webhook("shop", secret, order("S1"))
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 2,
               message="two dead letters")
    order_id = stack.cli("orders", "list", "--json")[0]["id"]
    canaries = [CANARY_PASSWORD, CANARY_TOKEN, CANARY_CHANNEL, "shpss_canary_Vb8Xc1", secret,
                client["client_secret"], CANARY_ISSUER, CANARY_ADMIN]

    token = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"])).json
    answers = [
        stack.client.get(f"/api/v1/orders/{order_id}",
                         headers={"Authorization": f"Bearer {token['access_token']}"}).get_data(True),
        stack.client.get("/metrics").get_data(True),
        json.dumps(stack.cli("orders", "show", order_id, "--json")),
        json.dumps(stack.cli("connectors", "list", "--json")),
        json.dumps(stack.cli("sources", "list", "--json")),
        stack.worker_logs(),
        json.dumps(stack.cli("audit", "list", "--json")),
        json.dumps(stack.cli("events", "list", "--json")),
        json.dumps(stack.cli("issuers", "list", "--json")),
        json.dumps(stack.cli("users", "list", "--json"), default=str),
        refused.get_data(True),
        stack.client.get("/.well-known/jwks.json").get_data(True),
        *(f.read_bytes().decode("latin-1") for f in stack.tmp.glob("queue.db*")),  # task messages
    ]
    with stack.runtime.db.begin() as session:
        stored = [c.secrets_encrypted for c in session.query(Connector)]
        stored += [s.secrets_encrypted for s in session.query(Source)]
        stored += [s.credentials_encrypted for s in session.query(Source)]
        errors = [d.last_error for d in session.query(Delivery)]
        config = [json.dumps(c.config) for c in session.query(Connector)]
        stored += [i.client_secret_encrypted for i in session.query(TrustedIssuer)]
        stored += [u.password_hash for u in session.query(User)]
    assert all("401" in e and "credentials" in e for e in errors), errors
    for canary in canaries:
        for text in filter(None, [*answers, *errors, *config, *stored]):
            assert canary not in text
