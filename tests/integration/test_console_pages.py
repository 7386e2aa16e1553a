"""The console's pages through Flask's test client: each role sees and may do exactly what it
should (what it may not do is neither offered nor accepted), every POST needs the session's
CSRF token, every page carries the strict CSP and has no inline script or style, connector
forms show schema errors next to their field and keep what was typed, secrets never appear on
any page, and every change is audited under the signed-in person."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from harness import Stack, order
from sqlalchemy import select, update

from broker.console import CSP
from broker.models import AuditEntry, Connector, Delivery, DeliveryStatus, IdentityLink, Source
from broker.services.intake import normalise_event
from broker.services.sources import configure_source
from broker.services.users import create_user

PASSWORD = "console-pages-password-81"
CANARY = "canary-console-secret-5e1b7"  # planted in a connector, a source and its credentials
DEAD_ERROR = "back office answered 422: unknown SKU 'AB-1'"
WEBHOOK_SECRET = "whsec_" + "QUJD" * 8


class Browser:
    """One signed-in person: a test client with its own cookies and the page's CSRF token."""

    def __init__(self, stack: Stack, user: str, role: str) -> None:
        create_user(stack.runtime.db, user, PASSWORD, role=role)
        self.client = stack.app.test_client()
        self.actor = f"user:{user}"
        answer = self.client.post("/console/login", data={
            "username": user, "password": PASSWORD, "csrf_token": self.token("/console/login")})
        assert answer.status_code == 303, answer.get_data(as_text=True)

    def token(self, path: str = "/console/") -> str:
        page = self.client.get(path).get_data(as_text=True)
        return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    def get(self, path: str, status: int = 200) -> str:
        answer = self.client.get(path)
        assert answer.status_code == status, (path, answer.status_code, answer.get_data(as_text=True)[:2000])
        return answer.get_data(as_text=True)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True) -> Any:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token()
        return self.client.post(path, data=form)


@pytest.fixture
def setup(stack: Stack) -> dict[str, Any]:
    """A source, a connector (with a secret), a route, and an order that reached its delivery."""
    stack.app.config["CONSOLE_DASHBOARD_TTL"] = 0
    stack.cli("sources", "add", "shop", "--kind", "standard-webhooks", "--secret", WEBHOOK_SECRET)
    stack.cli("connectors", "add", "erp", "--kind", "http", "--config", json.dumps({
        "url": "https://erp.example.com/orders",
        "auth": {"type": "basic", "username": "broker", "password": CANARY}}))
    stack.route("shop", "erp")
    status, answer = stack.webhook("shop", WEBHOOK_SECRET, order("C-1", note="gift wrap"))
    assert status == 202
    assert normalise_event(stack.runtime.db, answer["event_id"]).status == "normalised"
    with stack.runtime.db.begin() as session:
        delivery = session.execute(select(Delivery)).scalar_one()
        return {"order_id": delivery.order_id, "delivery_id": delivery.id}


def set_delivery(stack: Stack, delivery_id: str, **values: Any) -> None:
    with stack.runtime.db.begin() as session:
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(**values))


def audit_actions(stack: Stack) -> list[tuple[str, str]]:
    with stack.runtime.db.begin() as session:
        entries = session.execute(select(AuditEntry).order_by(AuditEntry.id)).scalars()
        return [(e.action, e.actor) for e in entries]


READ_PAGES = ["/console/", "/console/orders/", "/console/orders/?number=C-1", "/console/dead-letters/",
              "/console/parked", "/console/reviews"]
ADMIN_PAGES = ["/console/sources/", "/console/sources/new", "/console/sources/new?kind=shopify",
               "/console/sources/shop", "/console/connectors/", "/console/connectors/new",
               "/console/connectors/new?kind=http", "/console/connectors/new?kind=sql",
               "/console/connectors/new?kind=tryton", "/console/connectors/erp", "/console/routes/",
               "/console/mappings", "/console/clients/", "/console/audit/"]


def admin_posts(setup: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [("/console/sources/new", {"kind": "standard-webhooks", "name": "forged"}),
            ("/console/sources/shop", {"setting.api_url": "https://evil.example.com"}),
            ("/console/sources/shop/rotate-secret", {"keep_previous": "true"}),
            ("/console/sources/shop/enabled", {"enabled": "false"}),
            ("/console/connectors/new", {"kind": "http", "name": "forged", "url": "https://x.example.com"}),
            ("/console/connectors/erp", {"url": "https://evil.example.com"}),
            ("/console/connectors/erp/check", {}),
            ("/console/connectors/erp/enabled", {"enabled": "false"}),
            ("/console/routes/", {"source": "shop", "connector": "erp", "currency": "EUR"}),
            ("/console/mappings", {"connector": "erp", "kind": "product", "key": "SKU-1", "value": "1"}),
            ("/console/mappings/remove", {"connector": "erp", "kind": "product", "key": "SKU-1"}),
            ("/console/clients/", {"name": "forged", "scope.admin": "true"})]


def operator_posts(setup: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    return [(f"/console/orders/{setup['order_id']}/replay", {}),
            (f"/console/orders/deliveries/{setup['delivery_id']}/replay", {}),
            (f"/console/orders/deliveries/{setup['delivery_id']}/retry", {}),
            ("/console/dead-letters/replay", {"confirm": "0"})]


def test_every_page_has_the_strict_csp_and_no_inline_script_or_style(stack: Stack, setup: dict) -> None:
    admin = Browser(stack, "root", "admin")
    for path in [*READ_PAGES, *ADMIN_PAGES, f"/console/orders/{setup['order_id']}", "/console/login"]:
        answer = admin.client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["Content-Security-Policy"] == CSP
        assert answer.headers["X-Frame-Options"] == "DENY"
        html = answer.get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\ssrc=)", html), path  # only <script src=…>
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html, re.I), path  # no inline style or handler
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path  # nothing from elsewhere
    assert admin.client.get("/console/nowhere").headers["Content-Security-Policy"] == CSP


def test_a_viewer_reads_and_is_offered_no_change_nor_allowed_one(stack: Stack, setup: dict) -> None:
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.DEAD, last_error=DEAD_ERROR)
    viewer = Browser(stack, "vera", "viewer")
    for path in [*READ_PAGES, f"/console/orders/{setup['order_id']}"]:
        html = viewer.get(path)
        forms = re.findall(r'<form method="post" action="([^"]+)"', html)
        assert forms == ["/console/logout"], (path, forms)  # no action but signing out
        for link in ("/console/sources", "/console/connectors", "/console/mappings", "/console/audit"):
            assert f'href="{link}' not in html, (path, link)
    for path in ADMIN_PAGES:
        assert "your role (viewer) may not do this" in viewer.get(path, 403)
    before = audit_actions(stack)
    for path, data in admin_posts(setup) + operator_posts(setup):
        assert viewer.post(path, data).status_code == 403, path
    assert audit_actions(stack) == before  # nothing changed, nothing audited
    with stack.runtime.db.begin() as session:
        assert session.get(Delivery, setup["delivery_id"]).status == DeliveryStatus.DEAD


def test_an_operator_replays_but_does_not_configure(stack: Stack, setup: dict) -> None:
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.DEAD, last_error=DEAD_ERROR)
    operator = Browser(stack, "oscar", "operator")
    journey = operator.get(f"/console/orders/{setup['order_id']}")
    assert f'action="/console/orders/{setup["order_id"]}/replay"' in journey
    assert 'action="/console/dead-letters/replay"' in operator.get("/console/dead-letters/")
    assert "Map it" not in operator.get("/console/parked")
    for path in ADMIN_PAGES:
        operator.get(path, 403)
    for path, data in admin_posts(setup):
        assert operator.post(path, data).status_code == 403, path
    answer = operator.post(f"/console/orders/{setup['order_id']}/replay")
    assert answer.status_code == 303
    assert "1 deliveries are due again" in operator.get(answer.headers["Location"])
    with stack.runtime.db.begin() as session:
        assert session.get(Delivery, setup["delivery_id"]).status == DeliveryStatus.PENDING
    assert ("order.replay", "user:oscar") in audit_actions(stack)


def test_dead_letters_are_replayed_by_group_with_the_count_confirmed(stack: Stack, setup: dict) -> None:
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.DEAD, last_error=DEAD_ERROR)
    operator = Browser(stack, "oscar", "operator")
    page = operator.get("/console/dead-letters/")
    reason = re.search(r'name="reason" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    assert "unknown SKU &#39;…&#39;" in page  # the order-specific value elided
    group = {"connector": "erp", "reason": reason}
    stale = operator.post("/console/dead-letters/replay", {**group, "confirm": "2"})
    assert "1 dead letters match now, not 2; nothing was replayed" in operator.get(stale.headers["Location"])
    done = operator.post("/console/dead-letters/replay", {**group, "confirm": "1"})
    assert "Replayed 1 dead letters" in operator.get(done.headers["Location"])
    assert ("deliveries.replay", "user:oscar") in audit_actions(stack)


def test_posts_without_this_sessions_csrf_token_are_refused(stack: Stack, setup: dict) -> None:
    admin = Browser(stack, "root", "admin")
    other = Browser(stack, "ana", "admin")
    for path, data in admin_posts(setup) + operator_posts(setup):
        assert admin.post(path, data, csrf=False).status_code == 400, path
        assert admin.client.post(path, data={**data, "csrf_token": other.token()}).status_code == 400, path
    with stack.runtime.db.begin() as session:
        assert session.execute(select(Source.name).order_by(Source.name)).scalars().all() == ["shop"]
    assert [a for a, _ in audit_actions(stack) if not a.startswith(("console.", "user."))] == [
        "source.create", "connector.create", "route.create"]  # the setup's, nothing since


def test_connector_form_shows_each_error_at_its_field_and_keeps_what_was_typed(stack: Stack) -> None:
    admin = Browser(stack, "root", "admin")
    answer = admin.post("/console/connectors/new", {
        "kind": "http", "name": "erp2", "url": "ftp://erp.example.com", "timeout": "soon",
        "headers": "{not json", "auth.type": "basic", "auth.password": CANARY, "verify_tls": "true"})
    assert answer.status_code == 422
    html = answer.get_data(as_text=True)
    for field, message in (("url", "Not a valid URL."), ("timeout", "Not a valid number."),
                           ("headers", "not valid JSON"), ("auth-username", "required for auth type")):
        assert re.search(rf'id="f-{field}"[^>]*aria-describedby="f-{field}-error', html), field
        error = rf'<span class="field-error" id="f-{field}-error">[^<]*{re.escape(message)}'
        assert re.search(error, html), field
    assert 'value="ftp://erp.example.com"' in html and 'value="soon"' in html and "{not json" in html
    assert re.search(r'<option value="basic" selected>', html)
    assert CANARY not in html  # a secret is never echoed, even back to its author
    with stack.runtime.db.begin() as session:
        assert session.execute(select(Connector)).first() is None

    answer = admin.post("/console/connectors/new", {"kind": "http", "name": "New", "url": "https://x.example.com"})
    assert answer.status_code == 422 and "lower-case letters" in answer.get_data(as_text=True)
    answer = admin.post("/console/connectors/new", {"kind": "http", "name": "new", "url": "https://x.example.com"})
    assert answer.status_code == 422 and "reserved by the console" in answer.get_data(as_text=True)


def test_connector_secrets_are_write_only_and_kept_when_left_empty(stack: Stack) -> None:
    admin = Browser(stack, "root", "admin")
    created = admin.post("/console/connectors/new", {
        "kind": "http", "name": "erp", "url": "https://erp.example.com/orders",
        "headers": '{"X-Tenant": "7"}', "auth.type": "basic", "auth.username": "broker",
        "auth.password": CANARY, "verify_tls": "true"})
    assert created.status_code == 303, created.get_data(as_text=True)
    page = admin.get("/console/connectors/erp")
    assert CANARY not in page and "A value is stored; leave empty to keep it." in page
    assert '"X-Tenant": "7"' in page.replace("&#34;", '"')
    # change the URL, leave the password empty: it stays
    saved = admin.post("/console/connectors/erp", {
        "url": "https://erp2.example.com/orders", "auth.type": "basic", "auth.username": "broker",
        "auth.password": "", "verify_tls": "true"})
    assert saved.status_code == 303, saved.get_data(as_text=True)
    with stack.runtime.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == "erp")).scalar_one()
        assert row.config["url"] == "https://erp2.example.com/orders" and row.config["verify_tls"] is True
        assert stack.runtime.box.decrypt(row.secrets_encrypted, {}) == {"auth.password": CANARY}
        update_entry = session.execute(select(AuditEntry).where(
            AuditEntry.action == "connector.update")).scalar_one()
    assert update_entry.actor == "user:root" and update_entry.after["changed"] == []


def test_optional_sections_are_left_out_when_empty(stack: Stack) -> None:
    admin = Browser(stack, "root", "admin")
    answer = admin.post("/console/connectors/new", {
        "kind": "sql", "name": "legacy", "url": "sqlite:////tmp/legacy-does-not-matter.db",
        "header.table": "h", "header.key_column": "ext", "header.key": "external_id",
        "header.columns": '{"total": "totals.total"}', "lines.table": "l", "lines.header_column": "hid",
        "lines.columns": '{"sku": "sku"}', "connect_timeout": "10", "timeout": "30"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    with stack.runtime.db.begin() as session:
        config = session.execute(select(Connector.config).where(Connector.name == "legacy")).scalar_one()
    assert config["products"] is None and config["status"] is None and config["header"]["columns"] == {
        "total": "totals.total"}
    answer = admin.post("/console/connectors/new", {
        "kind": "sql", "name": "legacy2", "url": "sqlite:////tmp/x.db", "header.table": "h",
        "header.key_column": "ext", "lines.table": "l", "lines.header_column": "hid", "products.table": "p"})
    html = answer.get_data(as_text=True)
    assert answer.status_code == 422 and 'id="f-products-sku_column-error"' in html  # a started section


def test_secrets_never_appear_on_any_page(stack: Stack, setup: dict) -> None:
    admin = Browser(stack, "root", "admin")
    created = admin.post("/console/sources/new", {"kind": "shopify", "name": "store", "secret": CANARY,
                                                   "setting.shop": "acme.myshopify.com",
                                                   "credential.access_token": CANARY + "-token"})
    assert created.status_code == 200
    assert CANARY not in created.get_data(as_text=True)  # a pasted secret is not shown back either
    configure_source(stack.runtime.db, stack.runtime.box, "shop", settings={})
    client = admin.post("/console/clients/", {"name": "shopfront", "scope.orders:write": "true"})
    client_secret = re.search(r'id="client-secret" value="([^"]+)"', client.get_data(as_text=True)).group(1)
    rotated = admin.post("/console/sources/shop/rotate-secret", {"keep_previous": "true"})
    new_secret = re.search(r'id="signing-secret" value="([^"]+)"', rotated.get_data(as_text=True)).group(1)
    pages = [*READ_PAGES, *ADMIN_PAGES, "/console/sources/store", f"/console/orders/{setup['order_id']}",
             "/console/clients/"]
    for path in pages:
        html = admin.get(path)
        for secret in (CANARY, client_secret, new_secret, "QUJD" * 8):
            assert secret not in html, (path, secret[:8])
    store = admin.get("/console/sources/store")
    assert "A value is stored; leave empty to keep it." in store and "Remove the stored access_token" in store


def test_admin_changes_go_through_the_services_and_are_audited_as_the_person(stack: Stack) -> None:
    admin = Browser(stack, "root", "admin")
    created = admin.post("/console/sources/new", {"kind": "standard-webhooks", "name": "shop"})
    html = created.get_data(as_text=True)
    assert 'value="http://127.0.0.1:8080/webhooks/shop"' in html and 'id="signing-secret"' in html
    assert admin.post("/console/connectors/new", {"kind": "http", "name": "erp",
                                                  "url": "https://erp.example.com/o"}).status_code == 303
    assert admin.post("/console/routes/", {"source": "shop", "connector": "erp", "currency": "EUR, USD"}
                      ).status_code == 303
    assert "currency: EUR, USD" in admin.get("/console/routes/")
    assert admin.post("/console/mappings", {"connector": "erp", "kind": "product", "key": "SKU-9",
                                            "value": "P-9"}).status_code == 303
    assert admin.post("/console/sources/shop", {"setting.api_url": "https://api.example.com"}
                      ).status_code == 303
    assert admin.post("/console/sources/shop/enabled", {"enabled": "false"}).status_code == 303
    assert admin.post("/console/connectors/erp/enabled", {"enabled": "false"}).status_code == 303
    assert admin.post("/console/clients/", {"name": "app", "scope.orders:read": "true"}).status_code == 200
    assert admin.post("/console/clients/app/revoke").status_code == 303
    mine = [action for action, actor in audit_actions(stack) if actor == "user:root"]
    assert mine == ["console.sign_in", "source.create", "connector.create", "route.create", "mapping.add",
                    "source.configure", "source.disable", "connector.disable", "source.create",
                    "client.create", "client.revoke"]
    audit = admin.get("/console/audit/?actor=user:root&action=mapping.add")
    assert "erp/product/SKU-9" in audit and "route.create" not in audit


def test_adding_the_missing_mapping_resumes_the_parked_delivery(stack: Stack, setup: dict) -> None:
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.PARKED, parked_reason="missing mapping",
                 parked_kind="product", parked_key="SKU-001",
                 last_error="missing mapping: SKU SKU-001 has no product in erp")
    viewer = Browser(stack, "vera", "viewer")
    assert "SKU SKU-001 has no product in erp" in viewer.get("/console/parked")
    assert re.search(r'<span class="stat bad">1</span> parked deliveries', viewer.get("/console/"))
    admin = Browser(stack, "root", "admin")
    page = admin.get("/console/parked")
    assert 'name="key" value="SKU-001"' in page and "Map it" in page
    answer = admin.post("/console/mappings", {"connector": "erp", "kind": "product", "key": "SKU-001",
                                              "value": "P-1", "next": "/console/parked"})
    assert answer.headers["Location"] == "/console/parked"
    assert "1 parked deliveries resume" in admin.get("/console/parked")
    with stack.runtime.db.begin() as session:
        assert session.get(Delivery, setup["delivery_id"]).status == DeliveryStatus.PENDING
        assert session.execute(select(IdentityLink.value)).scalar_one() == "P-1"
    refused = admin.post("/console/mappings", {"connector": "erp", "kind": "nonsense", "key": "k",
                                               "value": "v", "next": "https://evil.example.com/"})
    assert refused.headers["Location"] == "/console/mappings"  # never an open redirect
    assert "Not mapped: unknown mapping kind" in admin.get("/console/mappings")


def test_identity_reviews_have_their_own_queue(stack: Stack, setup: dict) -> None:
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.PARKED, parked_reason="identity review",
                 parked_kind="customer", parked_key="customer:shopify:s-9",
                 last_error="identity review: 2 customers match ana@example.com")
    admin = Browser(stack, "root", "admin")
    assert "customer:shopify:s-9" in admin.get("/console/reviews")
    assert "customer:shopify:s-9" not in admin.get("/console/parked")
    answer = admin.post("/console/mappings", {"connector": "erp", "kind": "customer",
                                              "key": "customer:shopify:s-9", "value": "C-42",
                                              "next": "/console/reviews"})
    assert "No customer waits for review." in admin.get(answer.headers["Location"])


def test_order_search_and_pages(stack: Stack, setup: dict) -> None:
    for n in range(2, 5):
        _, answer = stack.webhook("shop", WEBHOOK_SECRET, order(f"C-{n}", customer={
            "external_id": f"c{n}", "email": f"buyer{n}@example.com", "email_verified": True}))
        normalise_event(stack.runtime.db, answer["event_id"])
    viewer = Browser(stack, "vera", "viewer")
    first = viewer.get("/console/orders/?limit=3")
    assert first.count('<th scope="row"><a href="/console/orders/') == 3
    assert "#C-4" in first and "#C-1" not in first
    next_url = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")  # type: ignore
    second = viewer.get(next_url)
    assert second.count('<th scope="row"><a href="/console/orders/') == 1 and "#C-1" in second
    assert "First page" in second
    assert "#C-3" in viewer.get("/console/orders/?email=buyer3@example.com")
    assert "#C-3" not in viewer.get("/console/orders/?email=buyer2@example.com")
    assert "#C-2" in viewer.get("/console/orders/?number=C-2")
    bad = viewer.get("/console/orders/?received_from=yesterday")
    assert 'id="q-received_from-error">a date like 2025-01-31' in bad and "Correct the search above." in bad
    journey = viewer.get(f"/console/orders/{setup['order_id']}")
    assert "gift wrap" in journey and "webhook-signature" not in journey.lower()
    viewer.get("/console/orders/nope", 404)


def test_dashboard_shows_the_kpis_and_is_cached_per_process(stack: Stack, setup: dict) -> None:
    viewer = Browser(stack, "vera", "viewer")
    page = viewer.get("/console/")
    assert re.search(r'<span class="stat">1</span> orders received today', page)
    assert '<svg class="chart"' in page and 'role="img"' in page
    assert re.search(r"<th scope=\"row\">shopify</th><td class=\"num\">1</td>", page)
    stack.app.config["CONSOLE_DASHBOARD_TTL"] = 30
    viewer.get("/console/")  # computed and kept
    _, answer = stack.webhook("shop", WEBHOOK_SECRET, order("C-2"))
    normalise_event(stack.runtime.db, answer["event_id"])
    assert re.search(r'<span class="stat">1</span> orders received today', viewer.get("/console/"))
    stack.app.config["CONSOLE_DASHBOARD_TTL"] = 0
    assert re.search(r'<span class="stat">2</span> orders received today', viewer.get("/console/"))


def test_http_connector_without_lookup_url_is_said_to_be_at_least_once(stack: Stack) -> None:
    """Where an admin configures it — `connectors add`, `check`, the API's check, the console's
    form and its connection test — not only in the README."""
    runner = stack.app.test_cli_runner()
    config = {"url": "https://erp.example.com/orders"}
    added = runner.invoke(args=["broker", "connectors", "add", "erp", "--kind", "http", "--config",
                                json.dumps(config)])
    assert added.exit_code == 0, added.output
    assert "warning: connector 'erp' has no lookup_url" in added.output
    assert "at-least-once" in added.output and "Idempotency-Key" in added.output
    as_json = stack.cli("connectors", "add", "erp", "--kind", "http", "--config", json.dumps(config),
                        "--json")
    assert len(as_json["warnings"]) == 1 and "at-least-once" in as_json["warnings"][0]

    admin = Browser(stack, "root", "admin")
    page = admin.get("/console/connectors/erp")
    assert re.search(r'<p class="flash warning" role="note">Warning: connector (&#39;|\')erp(&#39;|\') has '
                     r'no lookup_url', page), page
    assert "a back office that ignores it needs a Lookup URL" in page  # the idempotency header's help
    assert "(at-least-once)" in page  # the Lookup URL's help text
    token = stack.token("cfg", "admin")
    checked = stack.client.post("/api/v1/connectors/erp/check", headers={"Authorization": f"Bearer {token}"})
    assert checked.status_code == 200 and "at-least-once" in checked.json["warnings"][0]

    safe = {**config, "lookup_url": "https://erp.example.com/orders?external_id={external_id}"}
    quiet = runner.invoke(args=["broker", "connectors", "add", "erp", "--kind", "http", "--config",
                                json.dumps(safe)])
    assert quiet.exit_code == 0 and "warning" not in quiet.output, quiet.output
    assert "flash warning" not in admin.get("/console/connectors/erp")
