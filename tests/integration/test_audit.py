"""The audit log (who changed what, when, before/after; never a secret) and re-encryption of
every stored secret under a new BROKER_SECRET_KEYS key."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from flask import g
from harness import TEST_KEY, order, wait_until
from sqlalchemy import select

from broker.app import build_app
from broker.db import utcnow
from broker.models import AuditEntry, Connector, Delivery, DeliveryStatus, SigningKey, Source
from broker.runtime import Runtime
from broker.schemas.order import load_order
from broker.services import audit
from broker.services.intake import normalise_event, store_event
from broker.services.orders import apply_version
from broker.settings import load_settings

ACTOR = f"cli:{getpass.getuser()}"
CANARY_PASSWORD = "canary-pw-Hq7Zx2Lm9"
CANARY_PASSWORD_2 = "canary-pw-second-Pv4Kc8"
CANARY_CREDENTIAL = "cs_canary-credential-Wd3Rt6"
CANARY_YAML_TOKEN = "canary-yaml-token-Bn5Yj1"


def run(stack: Any, *args: str) -> Any:
    return stack.app.test_cli_runner().invoke(args=["broker", *args])


def entries(stack: Any, *args: str) -> list[dict[str, Any]]:
    return stack.cli("audit", "list", "--limit", "200", *args, "--json")


def one(stack: Any, action: str, target: str | None = None) -> dict[str, Any]:
    found = [e for e in entries(stack, "--action", action)
             if target is None or e["target"] == target]
    assert len(found) == 1, (action, target, found)
    return found[0]


def audit_text(stack: Any) -> str:
    """Every stored audit entry, every column, as text (for leak checks)."""
    with stack.runtime.db.begin() as session:
        rows = session.execute(select(AuditEntry.__table__)).all()
    assert rows, "the audit log is empty: a leak check over nothing proves nothing"
    return "\n".join(str(value) for row in rows for value in row)


def woo_source(stack: Any, name: str = "store") -> str:
    stack.cli("sources", "add", name, "--kind", "woocommerce", "--secret", "woo-signing-secret-1",
              "--setting", "store_url=https://shop.example.com",
              "--credential", "consumer_key=ck_public_part",
              "--credential", f"consumer_secret={CANARY_CREDENTIAL}", "--json")
    return "woo-signing-secret-1"


def admin_token(stack: Any, name: str = "auditor") -> str:
    return stack.token(name, "admin")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- what is recorded ---------------------------------------------------------------------

def test_every_admin_change_is_recorded_with_actor_time_and_before_after(stack, sink):
    started = utcnow() - timedelta(seconds=1)
    stack.cli("sources", "add", "shop", "--kind", "standard-webhooks", "--json")
    woo_source(stack)
    stack.cli("sources", "configure", "store", "--setting", "store_url=https://new.example.com",
              "--credential", "consumer_secret=cs_another_value", "--json")
    stack.cli("sources", "rotate-secret", "shop", "--json")
    stack.http_connector("erp", sink.url + "/orders",
                         auth={"type": "basic", "username": "broker", "password": CANARY_PASSWORD})
    stack.http_connector("erp", sink.url + "/orders", timeout=7,
                         auth={"type": "basic", "username": "broker", "password": CANARY_PASSWORD_2})
    stack.route("shop", "erp")
    stack.route("shop", "erp", "--currency", "USD")
    stack.cli("clients", "create", "shopfront", "--scope", "orders:write", "--json")
    stack.cli("mappings", "add", "erp", "product", "SKU-1", "4711", "--json")
    stack.cli("mappings", "remove", "erp", "product", "SKU-1")

    with stack.runtime.db.begin() as session:
        source = session.execute(select(Source).where(Source.name == "shop")).scalar_one()
        order_id = apply_version(session, source, load_order(order("A1"))).order_id
        session.query(Delivery).update({"status": DeliveryStatus.DEAD, "attempts": 1})
    stack.cli("orders", "replay", order_id)

    secret = stack.cli("sources", "rotate-secret", "shop", "--json")["secret"]
    bad = order("A2")
    bad["lines"][0]["quantity"] = "0"
    assert stack.webhook("shop", secret, bad)[0] == 422  # refused at the gateway; one stored before:
    with stack.runtime.db.begin() as session:
        source_id = session.execute(select(Source.id).where(Source.name == "shop")).scalar_one()
    event_id = store_event(stack.runtime.db, source_id, "msg_a2", "order",
                           {"content-type": "application/json"}, json.dumps(bad).encode())[1]
    assert normalise_event(stack.runtime.db, event_id).status == "rejected"
    stack.cli("events", "reprocess", event_id, "--json")

    listed = entries(stack)
    assert all(e["actor"] == ACTOR and e["request_id"] is None for e in listed)
    times = [e["at"] for e in listed]
    assert times == sorted(times, reverse=True)  # newest first
    assert all(e["at"].endswith("Z") and e["at"] >= started.isoformat()[:19] for e in listed)

    created = one(stack, "source.create", "store")
    assert created["before"] is None
    assert created["after"]["kind"] == "woocommerce"
    assert created["after"]["credentials"] == {"consumer_key": "***", "consumer_secret": "***"}
    assert created["after"]["signing_secrets"] == ["***"]

    configured = one(stack, "source.configure", "store")
    assert configured["before"]["settings"] == {"store_url": "https://shop.example.com"}
    assert configured["after"]["settings"] == {"store_url": "https://new.example.com"}
    assert configured["after"]["changed"] == ["consumer_secret"]

    rotations = [e for e in entries(stack, "--action", "source.rotate_secret")]
    assert [(e["before"]["signing_secrets"], e["after"]["signing_secrets"]) for e in rotations] == [
        (["***", "***"], ["***", "***", "***"]), (["***"], ["***", "***"])]

    connector = one(stack, "connector.create", "erp")
    assert connector["after"]["config"]["url"] == sink.url + "/orders"
    assert connector["after"]["config"]["auth"] == {"type": "basic", "username": "broker"}
    assert connector["after"]["secrets"] == {"auth.password": "***"}
    updated = one(stack, "connector.update", "erp")
    assert (updated["before"]["config"]["timeout"], updated["after"]["config"]["timeout"]) == (5, 7)
    assert updated["after"]["changed"] == ["auth.password"]

    assert one(stack, "route.create", "shop->erp")["after"] == {"filters": {}}
    route = one(stack, "route.update", "shop->erp")
    assert (route["before"], route["after"]) == ({"filters": {}}, {"filters": {"currency": ["USD"]}})

    client = one(stack, "client.create", "shopfront")
    assert client["after"]["scope"] == "orders:write" and client["after"]["client_secret"] == "***"
    assert one(stack, "source.create", "shopfront")["after"]["kind"] == "rest"  # made for it

    assert one(stack, "mapping.add", "erp/product/SKU-1")["after"]["value"] == "4711"
    removed = one(stack, "mapping.remove", "erp/product/SKU-1")
    assert removed["before"]["value"] == "4711" and removed["after"] is None

    replay = one(stack, "order.replay", order_id)
    assert list(replay["before"]["deliveries"].values()) == ["dead"]
    assert list(replay["after"]["deliveries"].values()) == ["pending"]

    reprocess = one(stack, "event.reprocess", event_id)
    assert reprocess["before"]["status"] == "rejected" and reprocess["after"]["status"] == "rejected"
    assert "lines.0.quantity" in reprocess["after"]["error"]

    table = stack.cli("audit", "list", "--target", "erp")
    assert "connector.update" in table and "connector.create" in table and ACTOR in table
    assert "source.create" not in table


def test_config_apply_records_each_change_once_and_a_second_apply_records_nothing(
        stack, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("WMS_TOKEN", CANARY_YAML_TOKEN)
    path = tmp_path / "broker.yaml"
    path.write_text("""
sources:
  - {name: webshop, kind: standard-webhooks}
  - {name: portal, kind: rest}
connectors:
  - name: wms
    kind: http
    config: {url: "https://wms.example.com/orders", auth: {type: bearer, token: "${WMS_TOKEN}"}}
routes:
  - {source: webshop, connector: wms, filters: {country: [DE]}}
""")
    stack.cli("config", "apply", str(path), "--json")
    assert sorted((e["action"], e["target"]) for e in entries(stack)) == [
        ("connector.create", "wms"), ("route.create", "webshop->wms"),
        ("source.create", "portal"), ("source.create", "webshop")]
    stack.cli("config", "apply", str(path), "--json")
    assert len(entries(stack)) == 4  # nothing changed, nothing recorded

    monkeypatch.setenv("WMS_TOKEN", CANARY_YAML_TOKEN + "-rotated")
    stack.cli("config", "apply", str(path), "--json")
    changed = one(stack, "connector.update", "wms")
    assert changed["after"]["changed"] == ["auth.token"]
    assert changed["before"]["config"] == changed["after"]["config"]
    assert CANARY_YAML_TOKEN not in audit_text(stack)


def test_a_failed_command_leaves_no_audit_entry(stack):
    stack.source("shop")
    assert run(stack, "sources", "add", "shop", "--kind", "standard-webhooks").exit_code != 0
    assert run(stack, "routes", "add", "--source", "shop", "--connector", "nope").exit_code != 0
    assert run(stack, "mappings", "remove", "nope", "product", "X").exit_code != 0
    assert [e["action"] for e in entries(stack)] == ["source.create"]


def test_an_entry_made_during_a_request_carries_its_request_id_and_rolls_back_with_the_change(stack):
    with stack.app.test_request_context("/"):
        g.request_id = "req-audit-1"
        with stack.runtime.db.begin() as session:
            audit.record(session, actor="cl_abc", action="client.revoke", target_type="client",
                         target="x", before={"revoked": False}, after={"revoked": True})
    try:
        with stack.runtime.db.begin() as session:
            audit.record(session, actor="cl_abc", action="client.revoke", target_type="client",
                         target="y")
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    listed = entries(stack)
    assert [(e["target"], e["request_id"], e["actor"]) for e in listed] == [
        ("x", "req-audit-1", "cl_abc")]


# --- secrets never appear -------------------------------------------------------------------

def test_canary_secrets_never_appear_in_the_audit_log_its_api_or_the_cli(stack, sink):
    shop_secret = stack.source("shop")
    woo_source(stack)
    stack.cli("sources", "configure", "store", "--credential", f"consumer_key={CANARY_CREDENTIAL}k")
    rotated = stack.cli("sources", "rotate-secret", "shop", "--json")["secret"]
    stack.http_connector("erp", sink.url + "/orders",
                         auth={"type": "basic", "username": "broker", "password": CANARY_PASSWORD},
                         headers={"X-Api-Key": CANARY_PASSWORD_2})
    client = stack.cli("clients", "create", "auditor", "--scope", "admin", "--json")
    stack.cli("keys", "rotate-secrets", "--json")
    canaries = [shop_secret, rotated, "woo-signing-secret-1", CANARY_CREDENTIAL, CANARY_PASSWORD,
                CANARY_PASSWORD_2, client["client_secret"]]

    token = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"])).json["access_token"]
    api = stack.client.get("/api/v1/audit?limit=200", headers=bearer(token))
    assert api.status_code == 200 and len(api.json["items"]) == len(entries(stack)) >= 8
    outputs = [audit_text(stack), api.get_data(as_text=True),
               stack.cli("audit", "list", "--limit", "200"),
               json.dumps(stack.cli("audit", "list", "--limit", "200", "--json"))]
    header = one(stack, "connector.create", "erp")["after"]["config"]["headers"]
    assert header == {"X-Api-Key": "***"}  # a secret-looking key is scrubbed even in public config
    for canary in canaries:
        for text in outputs:
            assert canary not in text, canary


def test_scrub_hides_values_under_secret_keys_and_keeps_their_names():
    scrubbed = audit.scrub({"settings": {"shop": "a"}, "credentials": {"api_key": "v", "n": {"x": 1}},
                            "password": "p", "token": None, "ok": True, "tags": {"b", "a"}})
    assert scrubbed == {"settings": {"shop": "a"}, "credentials": {"api_key": "***", "n": {"x": "***"}},
                        "password": "***", "token": None, "ok": True, "tags": ["a", "b"]}


# --- the API: scope, filters, pagination, errors -------------------------------------------

def test_audit_api_needs_a_token_with_the_admin_scope(stack):
    stack.source("shop")
    orders_only = stack.token("shopfront", "orders:write orders:read")
    missing = stack.client.get("/api/v1/audit")
    assert missing.status_code == 401 and missing.json["error"]["code"] == "unauthorized"
    forbidden = stack.client.get("/api/v1/audit", headers=bearer(orders_only))
    assert forbidden.status_code == 403
    assert forbidden.json["error"]["code"] == "insufficient_scope"
    assert 'scope="admin"' in forbidden.headers["WWW-Authenticate"]
    allowed = stack.client.get("/api/v1/audit", headers=bearer(admin_token(stack)))
    assert allowed.status_code == 200
    assert {e["action"] for e in allowed.json["items"]} >= {"source.create", "client.create"}


def test_audit_api_pages_with_a_cursor_and_filters(db_stack):
    stack = db_stack
    stack.source("shop")
    stack.http_connector("erp", "http://127.0.0.1:9/orders")
    for i in range(7):
        stack.cli("mappings", "add", "erp", "product", f"SKU-{i}", str(i), "--json")
    token = admin_token(stack)

    pages, cursor = [], None
    while True:
        url = "/api/v1/audit?action=mapping.add&limit=3" + (f"&cursor={cursor}" if cursor else "")
        body = stack.client.get(url, headers=bearer(token)).json
        pages.append([e["target"] for e in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [t for page in pages for t in page] == [f"erp/product/SKU-{i}" for i in reversed(range(7))]

    def items(query: str) -> list[dict[str, Any]]:
        response = stack.client.get("/api/v1/audit?" + query, headers=bearer(token))
        assert response.status_code == 200, response.json
        return response.json["items"]

    assert [e["target"] for e in items("target_type=connector")] == ["erp"]
    assert [e["target"] for e in items("target=erp/product/SKU-3")] == ["erp/product/SKU-3"]
    # shop, erp, 7 mappings, the admin client and the REST source made for it
    assert len(items(f"actor={ACTOR}&limit=200")) == 11
    assert items("actor=cli:someone-else") == []
    assert items("since=2999-01-01T00:00:00Z") == []
    assert len(items("since=2000-01-01T00:00:00Z&limit=200")) == 11

    for query, code in (("limit=abc", "invalid_limit"), ("limit=0", "invalid_limit"),
                        ("since=yesterday", "invalid_since")):
        response = stack.client.get("/api/v1/audit?" + query, headers=bearer(token))
        assert response.status_code == 400 and response.json["error"]["code"] == code
        assert set(response.json["error"]) >= {"code", "message", "request_id"}


def test_audit_page_size_is_capped(stack):
    with stack.runtime.db.begin() as session:
        for i in range(audit.MAX_PAGE + 5):
            audit.record(session, actor="cli:bulk", action="mapping.add", target_type="mapping",
                         target=f"m{i}")
    body = stack.client.get("/api/v1/audit?limit=100000", headers=bearer(admin_token(stack))).json
    assert len(body["items"]) == audit.MAX_PAGE and body["next_cursor"]
    rest = stack.client.get(f"/api/v1/audit?limit=100000&cursor={body['next_cursor']}",
                            headers=bearer(admin_token(stack, "auditor2"))).json
    # the 5 oldest bulk entries and the first admin client with its source (auditor2 came later)
    assert len(rest["items"]) == 7 and rest["next_cursor"] is None


# --- re-encryption under a new key ----------------------------------------------------------

def rekey(stack: Any, *keys: str) -> None:
    """Restart the stack's gateway and CLI with another BROKER_SECRET_KEYS."""
    stack.env["BROKER_SECRET_KEYS"] = ",".join(keys)
    stack.runtime.close()
    stack.settings = load_settings(stack.env)
    stack.runtime = Runtime(stack.settings)
    stack.app = build_app(stack.settings, runtime=stack.runtime, configure_logging=False)
    stack.client = stack.app.test_client()


def stored_tokens(stack: Any) -> list[str]:
    with stack.runtime.db.begin() as session:
        values = [*session.execute(select(Source.secrets_encrypted)).scalars(),
                  *session.execute(select(Source.credentials_encrypted)).scalars(),
                  *session.execute(select(Connector.secrets_encrypted)).scalars(),
                  *session.execute(select(SigningKey.private_encrypted)).scalars()]
    return [v for v in values if v]


def opens_with(key: str, tokens: list[str]) -> int:
    opened = 0
    for token in tokens:
        try:
            Fernet(key).decrypt(token.encode())
            opened += 1
        except InvalidToken:
            pass
    return opened


def test_rotate_secrets_lets_the_old_key_go_and_everything_still_works(db_stack, sink):
    stack = db_stack  # SQLite, PostgreSQL and MariaDB: the compare-and-set update is SQL
    shop_secret = stack.source("shop")
    woo_source(stack)
    stack.http_connector("erp", sink.url + "/orders",
                         auth={"type": "basic", "username": "broker", "password": CANARY_PASSWORD})
    stack.route("shop", "erp")
    with stack.runtime.db.begin() as session:
        session.add(SigningKey(kid="k1", alg="ES256", public_jwk={"kty": "EC"},
                               private_encrypted=stack.runtime.box.encrypt({"d": "private-part"})))
    sink.require_basic("broker", CANARY_PASSWORD)
    tokens = stored_tokens(stack)
    assert len(tokens) == 5 and opens_with(TEST_KEY, tokens) == 5

    new_key = Fernet.generate_key().decode()
    rekey(stack, new_key, TEST_KEY)
    assert opens_with(new_key, stored_tokens(stack)) == 0  # without rotation, dropping TEST_KEY breaks all
    report = {r["column"]: r for r in stack.cli("keys", "rotate-secrets", "--batch-size", "1", "--json")}
    assert {c: (r["rotated"], r["current"], r["failed"]) for c, r in report.items()
            if r["rotated"] or r["current"] or r["failed"]} == {  # columns with no value left out
        "sources.secrets_encrypted": (2, 0, 0), "sources.credentials_encrypted": (1, 0, 0),
        "connectors.secrets_encrypted": (1, 0, 0), "signing_keys.private_encrypted": (1, 0, 0)}
    assert opens_with(new_key, stored_tokens(stack)) == 5

    again = stack.cli("keys", "rotate-secrets")  # idempotent: nothing left to do
    assert "sources.secrets_encrypted: 0 rotated, 2 already current" in again
    entry = entries(stack, "--action", "keys.rotate_secrets")
    assert [e["actor"] for e in entry] == [ACTOR, ACTOR]
    assert {c["column"]: c["rotated"] for c in entry[1]["after"]["columns"]}[
        "sources.credentials_encrypted"] == 1

    rekey(stack, new_key)  # the old key is gone
    with stack.runtime.db.begin() as session:
        store = session.execute(select(Source).where(Source.name == "store")).scalar_one()
        key = session.execute(select(SigningKey)).scalar_one()
        assert stack.runtime.box.decrypt(store.credentials_encrypted)["consumer_secret"] == CANARY_CREDENTIAL
        assert stack.runtime.box.decrypt(key.private_encrypted) == {"d": "private-part"}
    assert "erp: ok" in stack.cli("connectors", "check", "erp")
    status, body = stack.webhook("shop", shop_secret, order("R1"))
    assert status == 202, body
    stack.start_worker()  # a worker with only the new key decrypts the connector's password
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED) == 1,
               message="the order booked with the re-encrypted password")
    assert len(sink.records) == 1


def test_rotate_secrets_names_rows_no_configured_key_opens_and_fails(stack):
    stack.source("shop")
    rekey(stack, Fernet.generate_key().decode())  # the key that encrypted it is lost
    result = run(stack, "keys", "rotate-secrets")
    assert result.exit_code != 0
    assert "sources.secrets_encrypted: 0 rotated, 0 already current, 1 FAILED" in result.output
