"""The admin REST API: CRUD round trips with their audit entries, write-only secrets, roles,
pagination, order search, operator actions, the OpenAPI document covering every route, and a
schema-driven fuzz run (schemathesis) that finds no server error."""

from __future__ import annotations

import contextlib
import getpass
import json
import re
import time
from typing import Any

import jsonschema
import pytest
import schemathesis
from harness import order
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from sqlalchemy import select, update

from broker.db import new_id, utcnow
from broker.models import Connector, Delivery, DeliveryStatus, IdentityLink, Route, Source
from broker.schemas.order import load_order
from broker.services.intake import normalise_event
from broker.services.orders import apply_version

CANARY_PASSWORD = "canary-admin-api-pw-7Hq2"
CANARY_CREDENTIAL = "cs_canary-admin-api-credential-Zx81"
ADMIN_SCOPE = [{"oauth2": ["admin"]}]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin(stack: Any) -> dict[str, str]:
    return bearer(stack.token("root", "admin"))


def call(stack: Any, method: str, path: str, headers: dict[str, str], expect: int, **kwargs: Any) -> Any:
    response = stack.client.open(path, method=method, headers=headers, **kwargs)
    assert response.status_code == expect, (method, path, response.status_code,
                                            response.get_data(as_text=True))
    return response.get_json(silent=True)


def audit_actions(stack: Any, headers: dict[str, str], target_type: str) -> list[tuple[str, str, str]]:
    entries = call(stack, "GET", f"/api/v1/audit?target_type={target_type}&limit=200", headers, 200)["items"]
    return [(e["action"], e["target"], e["actor"]) for e in reversed(entries)]


def actor_of(stack: Any, headers: dict[str, str]) -> str:
    return call(stack, "GET", "/api/v1/clients/root", headers, 200)["client_id"]


def seed_order(stack: Any, source: str, external_id: str, **changes: Any) -> str:
    with stack.runtime.db.begin() as session:
        row = session.execute(select(Source).where(Source.name == source)).scalar_one()
        return apply_version(session, row, load_order(order(external_id, **changes))).order_id


def set_deliveries(stack: Any, order_id: str, **values: Any) -> list[str]:
    with stack.runtime.db.begin() as session:
        if values:
            session.execute(update(Delivery).where(Delivery.order_id == order_id).values(**values))
        return list(session.execute(select(Delivery.id).where(Delivery.order_id == order_id)).scalars())


# --- the OpenAPI document and the docs page ---------------------------------------------------

def openapi_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_every_route_of_the_app_is_in_the_openapi_document(stack):
    spec = stack.client.get("/api/openapi.json").get_json()
    missing = []
    for rule in stack.app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static") or rule.rule.startswith("/console"):
            continue
        documented = spec["paths"].get(openapi_path(rule.rule), {})
        missing += [f"{method} {rule.rule}" for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
                    if method.lower() not in documented]
    assert missing == []
    # every error answer is documented in the broker's one error shape
    assert spec["components"]["schemas"]["Error"]["properties"]["error"]["$ref"].endswith("ErrorDetail")
    assert set(spec["paths"]["/api/v1/connectors/{name}"]["get"]["responses"]) >= {"200", "401", "403", "404"}


def test_docs_page_is_served_by_the_broker_without_inline_script(stack):
    page = stack.client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/' in attrs and not body.strip() for attrs, body in scripts)
    assert "style=" not in html and "<style" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert all(url.startswith("/api/") for url in assets), assets  # no CDN
    for url in assets:
        assert stack.client.get(url).status_code == 200, url
    bundle = stack.client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert "SwaggerUIBundle" in bundle.get_data(as_text=True)
    assert stack.client.get("/api/docs/assets/index.html").status_code == 404
    assert stack.client.get("/api/docs/assets/..%2f..%2fapp.py").status_code == 404


# --- sources ---------------------------------------------------------------------------------

def test_source_crud_round_trip_is_audited_and_shows_secrets_once(stack, admin):
    bodies: list[str] = []
    created = call(stack, "POST", "/api/v1/sources", admin, 201, json={
        "name": "store", "kind": "woocommerce", "secret": "woo-signing-secret-given",
        "settings": {"store_url": "https://shop.example.com"},
        "credentials": {"consumer_key": "ck_public", "consumer_secret": CANARY_CREDENTIAL}})
    assert created["signing_secret"] is None  # the caller gave it: not echoed
    assert created["credentials"] == ["consumer_key", "consumer_secret"]
    assert created["webhook_url"].endswith("/webhooks/store") and created["signing_secrets"] == 1
    generated = call(stack, "POST", "/api/v1/sources", admin, 201,
                     json={"name": "shop", "kind": "standard-webhooks"})["signing_secret"]
    assert generated.startswith("whsec_")
    call(stack, "POST", "/api/v1/sources", admin, 409, json={"name": "shop", "kind": "standard-webhooks"})
    bad = call(stack, "POST", "/api/v1/sources", admin, 422, json={"name": "x1", "kind": "telex"})
    assert bad["error"]["code"] == "invalid_setup" and "telex" in bad["error"]["message"]

    configured = call(stack, "PATCH", "/api/v1/sources/store", admin, 200, json={
        "settings": {"store_url": "https://new.example.com"}, "credentials": {"consumer_key": ""}})
    assert configured["settings"] == {"store_url": "https://new.example.com"}
    assert configured["credentials"] == ["consumer_secret"]
    rotated = call(stack, "POST", "/api/v1/sources/shop/rotate-secret", admin, 200, json={})
    assert rotated["signing_secret"] not in (generated, None) and rotated["kept_previous"] is True
    status, _ = stack.webhook("shop", rotated["signing_secret"], order("W1"))
    assert status == 202
    assert stack.webhook("shop", generated, order("W2"))[0] == 202  # the previous one still works
    assert call(stack, "GET", "/api/v1/sources/shop", admin, 200)["signing_secrets"] == 2

    call(stack, "PATCH", "/api/v1/sources/shop", admin, 200, json={"enabled": False})
    assert stack.webhook("shop", generated, order("W3"))[0] == 404
    conflict = call(stack, "DELETE", "/api/v1/sources/shop", admin, 409)
    assert "Disable it instead" in conflict["error"]["message"]
    call(stack, "DELETE", "/api/v1/sources/store", admin, 204)
    call(stack, "GET", "/api/v1/sources/store", admin, 404)

    for path in ("/api/v1/sources", "/api/v1/sources/shop", "/api/v1/audit?limit=200"):
        bodies.append(stack.client.get(path, headers=admin).get_data(as_text=True))
    for secret in (CANARY_CREDENTIAL, "woo-signing-secret-given", generated, rotated["signing_secret"]):
        assert all(secret not in body for body in bodies), secret

    actor = actor_of(stack, admin)
    assert audit_actions(stack, admin, "source") == [
        ("source.create", "root", "cli:" + audit_user(stack)),  # made for the admin client by the CLI
        ("source.create", "store", actor), ("source.create", "shop", actor),
        ("source.configure", "store", actor), ("source.rotate_secret", "shop", actor),
        ("source.disable", "shop", actor), ("source.remove", "store", actor)]


def audit_user(stack: Any) -> str:
    return getpass.getuser()


# --- connectors ------------------------------------------------------------------------------

def test_connector_kinds_carry_a_json_schema_with_write_only_secrets(stack, admin):
    kinds = {k["kind"]: k for k in call(stack, "GET", "/api/v1/connector-kinds", admin, 200)["items"]}
    assert {"http", "tryton", "odoo", "erpnext", "sql", "edi"} <= set(kinds)
    http = call(stack, "GET", "/api/v1/connector-kinds/http", admin, 200)
    assert http == kinds["http"] and http["class"] == "connectors.http.HttpConnector"
    schema = http["config_schema"]
    assert schema["type"] == "object" and "url" in schema["required"]
    assert schema["additionalProperties"] is False
    password = schema["properties"]["auth"]["properties"]["password"]
    assert {k: password[k] for k in ("type", "writeOnly", "format")} == {
        "type": "string", "writeOnly": True, "format": "password"}
    # the help the console's form shows, and when the field applies
    assert password["description"] and password["x-shown-when"] == {"type": ["basic"]}
    assert schema["properties"]["url"]["description"].startswith("Where orders are sent")
    assert "auth.password" in http["secrets"]
    for kind in kinds.values():  # every kind's schema is a valid JSON Schema
        jsonschema.Draft202012Validator.check_schema(kind["config_schema"])
    call(stack, "GET", "/api/v1/connector-kinds/telex", admin, 404)


def test_connector_crud_and_check_keep_secrets_write_only(stack, admin, sink):
    sink.require_basic("broker", CANARY_PASSWORD)
    config = {"url": sink.url + "/orders", "timeout": 5,
              "auth": {"type": "basic", "username": "broker", "password": CANARY_PASSWORD}}
    created = call(stack, "POST", "/api/v1/connectors", admin, 201,
                   json={"name": "erp", "kind": "http", "config": config})
    assert created["secrets"] == ["auth.password"]
    assert created["config"]["auth"] == {"type": "basic", "username": "broker"}
    assert created["queue"] == "connector.erp" and created["enabled"] is True
    invalid = call(stack, "POST", "/api/v1/connectors", admin, 422,
                   json={"name": "erp2", "kind": "http", "config": {"url": "ftp://x", "colour": 1}})
    assert "colour" in invalid["error"]["message"]
    call(stack, "POST", "/api/v1/connectors", admin, 409,
         json={"name": "erp", "kind": "http", "config": config})

    checked = call(stack, "POST", "/api/v1/connectors/erp/check", admin, 200)
    assert checked.pop("warnings")[0].startswith("connector 'erp' has no lookup_url")  # at-least-once
    assert checked == {"name": "erp", "ok": True, "error": None, "consent": None}
    # a secret left out keeps the stored one
    updated = call(stack, "PUT", "/api/v1/connectors/erp", admin, 200, json={"config": {
        "url": sink.url + "/orders", "timeout": 7, "auth": {"type": "basic", "username": "broker"}}})
    assert updated["config"]["timeout"] == 7 and updated["secrets"] == ["auth.password"]
    assert call(stack, "POST", "/api/v1/connectors/erp/check", admin, 200)["ok"] is True
    call(stack, "PUT", "/api/v1/connectors/erp", admin, 200, json={"config": {
        "url": sink.url + "/orders", "auth": {"type": "basic", "username": "broker", "password": "wrong"}}})
    failed = call(stack, "POST", "/api/v1/connectors/erp/check", admin, 200)
    assert failed["ok"] is False and "401" in failed["error"]
    call(stack, "PUT", "/api/v1/connectors/erp", admin, 200, json={"enabled": False})
    call(stack, "POST", "/api/v1/connectors/nope/check", admin, 404)

    listed = stack.client.get("/api/v1/connectors", headers=admin).get_data(as_text=True)
    assert CANARY_PASSWORD not in listed and "wrong" not in listed
    call(stack, "DELETE", "/api/v1/connectors/erp", admin, 204)
    call(stack, "GET", "/api/v1/connectors/erp", admin, 404)
    actor = actor_of(stack, admin)
    assert audit_actions(stack, admin, "connector") == [
        ("connector.create", "erp", actor), ("connector.update", "erp", actor),
        ("connector.update", "erp", actor), ("connector.disable", "erp", actor),
        ("connector.remove", "erp", actor)]
    assert CANARY_PASSWORD not in stack.client.get("/api/v1/audit?limit=200", headers=admin).get_data(
        as_text=True)


def test_a_connector_with_deliveries_cannot_be_removed(stack, admin, sink):
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    seed_order(stack, "shop", "A1")
    conflict = call(stack, "DELETE", "/api/v1/connectors/erp", admin, 409)
    assert "Disable it instead" in conflict["error"]["message"]


# --- routes and clients ------------------------------------------------------------------------

def test_route_crud_round_trip_is_audited(stack, admin, sink):
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    route = call(stack, "POST", "/api/v1/routes", admin, 201,
                 json={"source": "shop", "connector": "erp", "filters": {"currency": ["EUR"]}})
    assert (route["source"], route["connector"], route["filters"]) == ("shop", "erp", {"currency": ["EUR"]})
    call(stack, "POST", "/api/v1/routes", admin, 409, json={"source": "shop", "connector": "erp"})
    missing = call(stack, "POST", "/api/v1/routes", admin, 422, json={"source": "shop", "connector": "nope"})
    assert "no connector named 'nope'" in missing["error"]["message"]
    bad = call(stack, "POST", "/api/v1/routes", admin, 422,
               json={"source": "shop", "connector": "erp", "filters": {"colour": ["red"]}})
    assert bad["error"]["fields"] == {"filters.colour": ["Unknown field."]}
    updated = call(stack, "PUT", f"/api/v1/routes/{route['id']}", admin, 200,
                   json={"filters": {"tags": ["vip"]}})
    assert updated["filters"] == {"tags": ["vip"]}
    assert [r["id"] for r in call(stack, "GET", "/api/v1/routes", admin, 200)["items"]] == [route["id"]]
    call(stack, "DELETE", f"/api/v1/routes/{route['id']}", admin, 204)
    call(stack, "GET", f"/api/v1/routes/{route['id']}", admin, 404)
    actor = actor_of(stack, admin)
    assert audit_actions(stack, admin, "route") == [
        ("route.create", "shop->erp", actor), ("route.update", "shop->erp", actor),
        ("route.remove", "shop->erp", actor)]


def test_client_secret_is_shown_once_and_revoking_stops_its_tokens(stack, admin):
    created = call(stack, "POST", "/api/v1/clients", admin, 201,
                   json={"name": "reporting", "scope": "orders:read"})
    secret = created["client_secret"]
    assert created["source"] == "reporting" and created["token_url"].endswith("/oauth/token")
    token = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(created["client_id"], secret)).get_json()["access_token"]
    call(stack, "GET", "/api/v1/orders", bearer(token), 200)
    call(stack, "POST", "/api/v1/clients", admin, 409, json={"name": "reporting"})
    call(stack, "POST", "/api/v1/clients", admin, 422, json={"name": "x2", "scope": "root"})
    listed = stack.client.get("/api/v1/clients", headers=admin).get_data(as_text=True)
    assert secret not in listed and "secret" not in listed and "hash" not in listed
    assert call(stack, "POST", "/api/v1/clients/reporting/revoke", admin, 200)["revoked"] is True
    call(stack, "GET", "/api/v1/orders", bearer(token), 401)
    actor = actor_of(stack, admin)
    assert audit_actions(stack, admin, "client")[-2:] == [
        ("client.create", "reporting", actor), ("client.revoke", "reporting", actor)]


# --- roles -----------------------------------------------------------------------------------

def test_admin_and_operator_routes_refuse_other_callers(stack, admin):
    reader = bearer(stack.token("reader", "orders:read"))
    spec = stack.client.get("/api/openapi.json").get_json()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or operation.get("security") != ADMIN_SCOPE:
                continue
            url = re.sub(r"{[^}]+}", "x", path)
            anonymous = stack.client.open(url, method=method.upper())
            assert anonymous.status_code == 401, (method, path)
            denied = stack.client.open(url, method=method.upper(), headers=reader, json={})
            assert denied.status_code == 403, (method, path, denied.get_data(as_text=True))
            assert denied.get_json()["error"]["code"] == "insufficient_scope"
            checked += 1
    assert checked >= 30
    # a reader reads deliveries and groups, of its own source only
    call(stack, "GET", "/api/v1/deliveries", reader, 200)
    call(stack, "GET", "/api/v1/dead-letters", reader, 200)
    call(stack, "GET", "/api/v1/parked", reader, 200)


# --- pagination ------------------------------------------------------------------------------

def test_pages_are_capped_and_cursors_walk_every_item_once(db_stack, sink):
    stack, admin = db_stack, bearer(db_stack.token("root", "admin"))
    stack.http_connector("erp", sink.url + "/orders")
    now = utcnow()
    with stack.runtime.db.begin() as session:
        connector_id = session.execute(select(Connector.id).where(Connector.name == "erp")).scalar_one()
        session.add_all([IdentityLink(id=new_id(), connector_id=connector_id, kind="product",
                                      key=f"SKU-{i:03d}", value=str(i), origin="admin", created_at=now,
                                      updated_at=now) for i in range(205)])
    first = call(stack, "GET", "/api/v1/mappings?limit=1000", admin, 200)
    assert len(first["items"]) == 200 and first["next_cursor"]
    rest = call(stack, "GET", f"/api/v1/mappings?limit=1000&cursor={first['next_cursor']}", admin, 200)
    assert [m["key"] for m in rest["items"]] == [f"SKU-{i}" for i in range(200, 205)]
    assert rest["next_cursor"] is None
    keys, cursor = [], ""
    while True:
        page = call(stack, "GET", f"/api/v1/mappings?limit=60&cursor={cursor}", admin, 200)
        keys += [m["key"] for m in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert keys == [f"SKU-{i:03d}" for i in range(205)]
    for name in ("s1", "s2", "s3"):
        stack.source(name)
    names, cursor = [], ""
    while True:
        page = call(stack, "GET", f"/api/v1/sources?limit=2&cursor={cursor}", admin, 200)
        names += [s["name"] for s in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert names == ["root", "s1", "s2", "s3"]
    too_small = call(stack, "GET", "/api/v1/sources?limit=0", admin, 422)
    assert too_small["error"]["code"] == "invalid_request" and "limit" in too_small["error"]["fields"]
    garbage = call(stack, "GET", "/api/v1/mappings?cursor=garbage", admin, 400)
    assert garbage["error"]["code"] == "invalid_cursor"


def test_a_nul_character_in_the_url_is_refused_before_any_database_sees_it(db_stack):
    admin = bearer(db_stack.token("root", "admin"))
    for url in ("/api/v1/sources/a%00b", "/api/v1/audit?action=a%00", "/api/v1/orders/%00"):
        refused = call(db_stack, "GET", url, admin, 400)
        assert refused["error"]["code"] == "invalid_request"
    assert db_stack.client.post("/webhooks/shop%00").status_code == 400


# --- orders ----------------------------------------------------------------------------------

def test_orders_are_found_by_each_search_criterion(db_stack, sink):
    stack, admin = db_stack, bearer(db_stack.token("root", "admin"))
    stack.source("shop")
    stack.source("other")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    a = seed_order(stack, "shop", "EXT-A", customer={"email": "zoe@example.com"})
    b = seed_order(stack, "shop", "EXT-B", status="cancelled")
    c = seed_order(stack, "other", "EXT-C")
    set_deliveries(stack, a, status=DeliveryStatus.BOOKED, reference="SO-0042 / INV-7")
    set_deliveries(stack, b, status=DeliveryStatus.DEAD, last_error="boom")
    later = utcnow()
    time.sleep(0.01)
    d = seed_order(stack, "other", "EXT-D")

    def found(query: str, headers: dict[str, str] = admin) -> list[str]:
        return [o["id"] for o in call(stack, "GET", f"/api/v1/orders?{query}", headers, 200)["items"]]

    assert found("") == [d, c, b, a]
    assert found("number=%23EXT-A") == [a] and found("number=EXT-A") == [a]
    assert found("external_id=EXT-B") == [b]
    assert found("email=zoe@example.com") == [a] and found("email=ZOE@EXAMPLE.COM") == [a]
    assert found("reference=SO-0042%20/%20INV-7") == [a]
    assert found("status=cancelled") == [b]
    assert found("delivery_status=dead") == [b]
    assert found("source=other") == [d, c]
    assert found(f"received_from={later.isoformat().replace('+00:00', 'Z')}") == [d]
    assert found(f"received_to={later.isoformat().replace('+00:00', '%2B00:00')}") == [c, b, a]
    assert found("source=shop&status=open") == [a]
    assert found("limit=2")[:2] == [d, c]
    bad = call(stack, "GET", "/api/v1/orders?received_from=yesterday&status=lost", admin, 422)
    assert set(bad["error"]["fields"]) == {"received_from", "status"}
    # a client bound to a source finds only that source's orders
    with stack.runtime.db.begin() as session:
        other_id = session.execute(select(Source.id).where(Source.name == "other")).scalar_one()
    client = call(stack, "POST", "/api/v1/clients", admin, 201,
                  json={"name": "other-reader", "scope": "orders:read", "source": "other"})
    token = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"])).get_json()["access_token"]
    assert found("", bearer(token)) == [d, c] and found("number=%23EXT-A", bearer(token)) == []
    call(stack, "GET", f"/api/v1/orders/{a}", bearer(token), 404)
    assert other_id


def test_order_detail_shows_raw_payloads_without_secrets(stack, admin):
    secret = stack.source("shop")
    doc = order("P1", metadata={"api_token": "tok-canary-Hh3", "gift": "yes"})
    status, answer = stack.webhook("shop", secret, doc)
    assert status == 202
    assert normalise_event(stack.runtime.db, answer["event_id"]).status == "normalised"
    order_id = call(stack, "GET", "/api/v1/orders?external_id=P1", admin, 200)["items"][0]["id"]
    plain = call(stack, "GET", f"/api/v1/orders/{order_id}", admin, 200)
    assert "events" not in plain and plain["versions"] and plain["timeline"]
    detail = call(stack, "GET", f"/api/v1/orders/{order_id}?payloads=true", admin, 200)
    [event] = detail["events"]
    assert event["id"] == answer["event_id"] and event["status"] == "normalised"
    assert event["body"]["external_id"] == "P1" and event["body"]["metadata"]["gift"] == "yes"
    assert event["body"]["metadata"]["api_token"] == "***"
    assert "webhook-id" in event["headers"]
    assert "tok-canary-Hh3" not in json.dumps(detail["events"])
    assert secret not in json.dumps(detail)


# --- deliveries, dead letters, parked ----------------------------------------------------------

def test_dead_letters_group_by_reason_and_bulk_replay_needs_the_confirmed_count(db_stack, sink):
    stack, admin = db_stack, bearer(db_stack.token("root", "admin"))
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    orders = [seed_order(stack, "shop", f"D{i}") for i in range(5)]
    for i, order_id in enumerate(orders[:3]):
        set_deliveries(stack, order_id, status=DeliveryStatus.DEAD,
                       last_error=f"back office answered 422: unknown SKU 'AB-{i}'")
    set_deliveries(stack, orders[3], status=DeliveryStatus.DEAD,
                   last_error="gave up after 5 attempts; last error: timed out")
    groups = call(stack, "GET", "/api/v1/dead-letters", admin, 200)["items"]
    assert [(g["connector"], g["error_class"], g["count"]) for g in groups] == [
        ("erp", "permanent", 3), ("erp", "retries_exhausted", 1)]
    assert groups[0]["message"] == "back office answered 422: unknown SKU '…'"
    assert groups[0]["oldest"] <= groups[0]["newest"]
    reason = groups[0]["reason"]

    dry = call(stack, "POST", "/api/v1/deliveries/replay", admin, 200, json={"reason": reason})
    assert dry == {"matched": 3, "replayed": 0, "dry_run": True}
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 4
    wrong = call(stack, "POST", "/api/v1/deliveries/replay", admin, 409,
                 json={"reason": reason, "confirm": 4})
    assert wrong["error"]["code"] == "confirmation_mismatch" and "confirm 3" in wrong["error"]["message"]
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 4
    done = call(stack, "POST", "/api/v1/deliveries/replay", admin, 202,
                json={"reason": reason, "connector": "erp", "confirm": 3})
    assert done == {"matched": 3, "replayed": 3, "dry_run": False}
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 1
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.PENDING) == 4
    bulk = [e for e in call(stack, "GET", "/api/v1/audit?action=deliveries.replay", admin, 200)["items"]]
    assert len(bulk) == 1 and bulk[0]["after"] == {"replayed": 3}
    assert bulk[0]["before"]["selection"] == {"connector": "erp", "reason": reason}

    # one at a time: replay a dead one, retry a pending one
    [dead] = set_deliveries(stack, orders[3])
    replayed = call(stack, "POST", f"/api/v1/deliveries/{dead}/replay", admin, 202)
    assert replayed["status"] == "pending" and replayed["attempts"] == 0
    again = call(stack, "POST", f"/api/v1/deliveries/{dead}/replay", admin, 409)
    assert "only dead or parked" in again["error"]["message"]
    [waiting] = set_deliveries(stack, orders[4], attempts=2, last_error="503",
                               next_attempt_at=utcnow().replace(year=2099))
    retried = call(stack, "POST", f"/api/v1/deliveries/{waiting}/retry", admin, 202)
    assert retried["next_attempt_at"] < "2099" and retried["attempts"] == 2
    viewer = bearer(stack.token("viewer", "orders:read"))
    call(stack, "POST", f"/api/v1/deliveries/{dead}/replay", viewer, 403)
    call(stack, "POST", "/api/v1/deliveries/nope/retry", admin, 404)
    detail = call(stack, "GET", f"/api/v1/deliveries/{dead}", admin, 200)
    assert detail["connector"] == "erp" and detail["attempt_log"] == []
    listed = call(stack, "GET", "/api/v1/deliveries?status=pending&connector=erp", admin, 200)["items"]
    assert len(listed) == 5
    timeline = call(stack, "GET", f"/api/v1/orders/{orders[3]}", admin, 200)["timeline"]
    assert timeline[-1]["step"] == "replayed"
    actions = [a for a, _, _ in audit_actions(stack, admin, "delivery")]
    assert actions == ["deliveries.replay", "delivery.replay", "delivery.retry"]


def test_parked_deliveries_group_by_what_they_wait_for_and_a_mapping_resumes_them(stack, admin, sink):
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    parked = [seed_order(stack, "shop", f"P{i}") for i in range(2)]
    for order_id in parked:
        set_deliveries(stack, order_id, status=DeliveryStatus.PARKED, parked_reason="missing mapping",
                       parked_kind="product", parked_key="SKU-001", last_error="SKU-001 has no product")
    groups = call(stack, "GET", "/api/v1/parked", admin, 200)["items"]
    assert groups == [{"connector": "erp", "reason": "missing mapping", "kind": "product",
                       "key": "SKU-001", "deliveries": 2, "message": "SKU-001 has no product"}]
    call(stack, "POST", "/api/v1/mappings", admin, 404,
         json={"connector": "nope", "kind": "product", "key": "SKU-001", "value": "42"})
    invalid = call(stack, "POST", "/api/v1/mappings", admin, 422,
                   json={"connector": "erp", "kind": "colour", "key": "", "value": "42"})
    assert set(invalid["error"]["fields"]) == {"kind", "key"}
    mapping = call(stack, "POST", "/api/v1/mappings", admin, 201,
                   json={"connector": "erp", "kind": "product", "key": "SKU-001", "value": "42"})
    assert mapping["resumed"] == 2 and mapping["origin"] == "admin"
    assert call(stack, "GET", "/api/v1/parked", admin, 200)["items"] == []
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.PENDING) == 2
    assert call(stack, "GET", f"/api/v1/mappings/{mapping['id']}", admin, 200)["value"] == "42"
    listed = call(stack, "GET", "/api/v1/mappings?connector=erp&kind=product", admin, 200)["items"]
    assert [m["key"] for m in listed] == ["SKU-001"]
    call(stack, "DELETE", f"/api/v1/mappings/{mapping['id']}", admin, 204)
    call(stack, "DELETE", f"/api/v1/mappings/{mapping['id']}", admin, 404)
    actor = actor_of(stack, admin)
    assert audit_actions(stack, admin, "mapping") == [
        ("mapping.add", "erp/product/SKU-001", actor), ("mapping.remove", "erp/product/SKU-001", actor)]


# --- schema-driven fuzzing -------------------------------------------------------------------

FUZZ_EXAMPLES = 6


def test_schema_driven_requests_to_every_endpoint_never_get_a_server_error(stack, sink):
    """Every operation of /api/openapi.json, with data that fits its schema and data that does
    not (schemathesis), as an admin: any status but 5xx."""
    headers = bearer(stack.token("schemathesis-admin", "admin"))
    stack.cli("clients", "create", "victim", "--scope", "orders:read", "--json")
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    order_id = seed_order(stack, "shop", "F1")
    [delivery_id] = set_deliveries(stack, order_id, status=DeliveryStatus.DEAD, last_error="boom")
    stack.cli("mappings", "add", "erp", "product", "SKU-1", "1", "--json")
    with stack.runtime.db.begin() as session:
        mapping_id = session.execute(select(IdentityLink.id)).scalar_one()
        route_id = session.execute(select(Route.id)).scalar_one()
    known = {"/api/v1/clients/": {"name": "victim"}, "/api/v1/sources/": {"name": "shop"},
             "/api/v1/connectors/": {"name": "erp"}, "/api/v1/connector-kinds/": {"kind": "http"},
             "/api/v1/orders/": {"order_id": order_id}, "/api/v1/deliveries/": {"delivery_id": delivery_id},
             "/api/v1/routes/": {"route_id": route_id}, "/api/v1/mappings/": {"mapping_id": mapping_id},
             "/webhooks/": {"source_name": "shop"}}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", stack.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        real = next((v for prefix, v in known.items() if operation.path.startswith(prefix)
                     and "{" in operation.path), None)
        strategies = [operation.as_strategy(GenerationMode.NEGATIVE), operation.as_strategy()]
        if real:  # and once on a resource that exists
            strategies.append(operation.as_strategy(path_parameters=real))
        for strategy in strategies:
            _fuzz(strategy, operation.label, headers, failures)
    assert operations >= 40
    assert failures == [], "\n".join(failures)


def _fuzz(strategy: Any, label: str, headers: dict[str, str], failures: list[str]) -> None:
    @settings(max_examples=FUZZ_EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code} {response.text[:300]}\n"
                            f"  {case.as_curl_command()}")

    with contextlib.suppress(Unsatisfiable):  # negative data for an operation without input
        run()
