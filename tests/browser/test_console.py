"""The web console in a real headless Chromium (Debian's, driven by Playwright): an IT admin
signs in, creates a source and copies its webhook URL, creates a connector through the form
generated from its schema (a validation error shown inline, then fixed, then 'Test
connection'), routes the source to it, sends a webhook and follows the order's journey,
replays a dead letter, maps a missing SKU so the parked order books; a viewer is offered no
admin action and is refused one it forges.

The tests run in order against one broker (embedded SQLite, served on loopback, one worker)
and one fake back office, like one admin's afternoon. Every page visited is saved as a
screenshot under $FOBO_SCREENSHOTS (default tests/browser/screenshots/). Without
/usr/bin/chromium the suite is skipped, and fails in CI.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fakes.sink import Sink
from harness import STRICT, Stack, free_port, order, wait_until

from broker.channels.standard_webhooks import sign
from broker.models import Delivery, DeliveryStatus, Order
from broker.services.users import create_user

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("FOBO_SCREENSHOTS") or Path(__file__).parent / "screenshots")
PASSWORDS = {"root": "root-password-4f9c2a", "vera": "viewer-password-77d1", "oscar": "operator-pass-2b8e"}
SECRET_CANARY = "basic-pw-canary-9d3f1e"

if not Path(CHROMIUM).exists():
    if STRICT or os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (required in CI)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


class Console:
    """The broker, its fake back offices, the browser, and what the steps hand each other."""

    def __init__(self, stack: Stack, sink: Sink, legacy: Path, browser: Any) -> None:
        self.stack, self.sink, self.legacy, self.browser = stack, sink, legacy, browser
        self.base = stack.base_url
        self.state: dict[str, Any] = {}
        self.shots = 0

    def start_worker(self) -> None:
        """One worker, started when the first order must book (connectors created later are
        picked up by the running worker; tests/integration/test_pipeline.py proves that)."""
        if not self.stack.workers:
            self.stack.start_worker(concurrency=2)

    def page(self, user: str = "root") -> Any:
        """A fresh browser (own cookies, clipboard allowed) signed in as `user`."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=self.base)
        page = context.new_page()
        page.set_default_timeout(15_000)
        violations: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text)
                if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
        page.on("dialog", lambda dialog: dialog.accept())  # data-confirm dialogs: the admin says yes
        page.csp_violations = violations  # type: ignore[attr-defined]
        self.sign_in(page, user)
        return page

    def sign_in(self, page: Any, user: str) -> None:
        page.goto(self.base + "/console/login")
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(PASSWORDS[user])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.base + "/console/")

    def shot(self, page: Any, name: str) -> None:
        self.shots += 1
        page.screenshot(path=str(SHOTS / f"{self.shots:02d}-{name}.png"), full_page=True)
        assert not page.csp_violations, page.csp_violations  # no inline script or style anywhere

    def webhook(self, url: str, secret: str, doc: dict[str, Any]) -> int:
        body = json.dumps(doc).encode()
        msg_id, ts = "msg_" + doc["external_id"], int(time.time())
        request = urllib.request.Request(url, data=body, headers={
            "content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": sign(secret, msg_id, ts, body)})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    def order_id(self, external_id: str) -> str | None:
        from sqlalchemy import select

        with self.stack.runtime.db.begin() as session:
            return session.execute(select(Order.id).where(Order.external_id == external_id)).scalar()

    def delivery(self, external_id: str) -> tuple[str, str | None] | None:
        from sqlalchemy import select

        with self.stack.runtime.db.begin() as session:
            row = session.execute(select(Delivery.status, Delivery.last_error)
                                  .join(Order, Order.id == Delivery.order_id)
                                  .where(Order.external_id == external_id)).first()
        return None if row is None else (row[0], row[1])

    @contextlib.contextmanager
    def workers_paused_between_attempts(self, external_id: str) -> Iterator[None]:
        """Freeze the workers (SIGSTOP) at a moment the order's delivery is not in flight, so
        pages show it waiting to retry however long they take to load; SIGCONT afterwards."""
        groups = [os.getpgid(proc.pid) for proc in self.stack.workers]

        def paused_between() -> bool:
            for group in groups:
                os.killpg(group, signal.SIGSTOP)
            if (self.delivery(external_id) or ("",))[0] != DeliveryStatus.LEASED:
                return True
            for group in groups:
                os.killpg(group, signal.SIGCONT)
            return False

        wait_until(paused_between, timeout=60, message="a moment between attempts")
        try:
            yield
        finally:
            for group in groups:
                os.killpg(group, signal.SIGCONT)

    def wait_for(self, external_id: str, status: str) -> None:
        """Until the order's delivery has `status`; a timeout says where it was instead."""
        try:
            wait_until(lambda: (self.delivery(external_id) or ("",))[0] == status, timeout=30)
        except AssertionError:
            raise AssertionError(f"{external_id} is {self.delivery(external_id)}, not {status}; worker log:\n"
                                 + self.stack.worker_logs()[-3000:]) from None


def legacy_database(path: Path) -> Path:
    """A legacy order-capture database whose product table lacks the SKU the order brings."""
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE products (id INTEGER PRIMARY KEY, code VARCHAR(64) NOT NULL,
              CONSTRAINT uq_products_code UNIQUE (code));
            CREATE TABLE orders_header (id INTEGER PRIMARY KEY AUTOINCREMENT,
              external_ref VARCHAR(255) NOT NULL, order_no VARCHAR(64), currency CHAR(3) NOT NULL,
              grand_total VARCHAR(20) NOT NULL, CONSTRAINT uq_orders_header_ref UNIQUE (external_ref));
            CREATE TABLE orders_line (id INTEGER PRIMARY KEY AUTOINCREMENT,
              header_id INTEGER NOT NULL REFERENCES orders_header (id), line_no INTEGER NOT NULL,
              product_id INTEGER REFERENCES products (id), sku VARCHAR(64), qty VARCHAR(20) NOT NULL,
              unit_price VARCHAR(20) NOT NULL, line_total VARCHAR(20) NOT NULL);
            INSERT INTO products (id, code) VALUES (1, 'SKU-001'), (42, 'WIDGET-2025');
        """)
    return path


def legacy_config(path: Path) -> dict[str, Any]:
    return {"url": f"sqlite:///{path}",
            "header": {"table": "orders_header", "key_column": "external_ref",
                       "columns": {"order_no": "number", "currency": "currency",
                                   "grand_total": "totals.total"}},
            "lines": {"table": "orders_line", "header_column": "header_id",
                      "columns": {"line_no": "line_number", "product_id": "product_id", "sku": "sku",
                                  "qty": "quantity", "unit_price": "unit_price", "line_total": "total"}},
            "products": {"table": "products", "sku_column": "code", "id_column": "id"}}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for stale in SHOTS.glob("[0-9][0-9]-*.png"):  # this suite's own, from an earlier run
        stale.unlink()
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    # max_attempts: a back office that is down keeps its deliveries retrying (not dead) for the
    # problems-panel step, whatever the machine's speed
    stack = Stack(tmp, "sqlite", "embedded", public_url=f"http://127.0.0.1:{port}", max_attempts="40")
    stack.app.config["CONSOLE_DASHBOARD_TTL"] = 0  # the dashboard shows each step's effect at once
    stack.serve(port)
    for user, role in (("root", "admin"), ("vera", "viewer"), ("oscar", "operator")):
        create_user(stack.runtime.db, user, PASSWORDS[user], role=role)
    sink = Sink().start()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # The legacy back office (for the missing-SKU step) is set up through the CLI before
            # the worker starts; the console creates the other connector.
            legacy = legacy_database(tmp / "legacy.db")
            secret = stack.source("legacy-shop")
            stack.cli("connectors", "add", "legacy", "--kind", "sql", "--config",
                      json.dumps(legacy_config(legacy)), "--json")
            stack.route("legacy-shop", "legacy")
            console = Console(stack, sink, legacy, browser)
            console.state["legacy_secret"] = secret
            yield console
        finally:
            browser.close()
            sink.stop()
            stack.close()


def test_admin_signs_in_and_sees_the_dashboard(console: Console) -> None:
    context = console.browser.new_context()
    page = context.new_page()
    page.csp_violations = []
    response = page.goto(console.base + "/console/")  # not signed in: to the sign-in page
    assert page.url.startswith(console.base + "/console/login")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.get_by_label("User name").fill("root")
    page.get_by_label("Password").fill("not-the-password-1")
    page.get_by_role("button", name="Sign in").click()
    assert "wrong user name or password" in page.locator("#login-error").inner_text()
    console.shot(page, "sign-in-refused")
    context.close()

    page = console.page("root")
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    sync_api.expect(page.get_by_role("navigation", name="Console").get_by_role("link")).to_have_text([
        "Dashboard", "Orders", "Dead letters", "Parked", "Identity review", "Sources", "Connectors", "Routes",
        "Mappings", "API clients", "Audit log"])
    assert page.locator("svg.chart[role=img]").count() == 1
    console.shot(page, "dashboard-empty")
    page.keyboard.press("Tab")  # keyboard users get the skip link first
    sync_api.expect(page.locator("a.skip")).to_be_focused()


def test_admin_creates_a_source_and_copies_its_webhook_url(console: Console) -> None:
    page = console.page()
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Sources").click()
    console.shot(page, "sources-empty")
    page.get_by_role("link", name="New source").click()
    console.shot(page, "source-kind")
    page.get_by_label("Kind of channel").select_option("standard-webhooks")
    page.get_by_role("button", name="Continue").click()
    console.shot(page, "source-new")
    page.get_by_label("Name (required)").fill("shop")
    page.get_by_role("button", name="Create source").click()
    sync_api.expect(page.get_by_role("status").first).to_contain_text("Source shop created")
    url = page.get_by_label("Webhook URL").input_value()
    assert url == console.base + "/webhooks/shop"
    secret = page.get_by_label(re.compile("Signing secret")).input_value()
    assert secret.startswith("whsec_")
    page.get_by_role("button", name="Copy").first.click()
    sync_api.expect(page.locator("#webhook-url-status")).to_have_text("Copied to the clipboard.")
    assert page.evaluate("navigator.clipboard.readText()") == url
    console.shot(page, "source-created")
    console.state.update(webhook_url=url, secret=secret)

    page.get_by_role("link", name="Continue to the source").click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_contain_text("Source shop")
    assert secret not in page.content()  # shown once, never again
    console.shot(page, "source")


def test_connector_form_shows_errors_inline_then_tests_the_connection(console: Console) -> None:
    page = console.page()
    page.goto(console.base + "/console/connectors/")
    console.shot(page, "connectors")
    page.get_by_role("link", name="New connector").click()
    console.shot(page, "connector-kind")
    page.get_by_label("Kind of back office").select_option("http")
    page.get_by_role("button", name="Continue").click()
    console.shot(page, "connector-new")
    page.get_by_label("Name (required)").fill("erp")
    page.get_by_label("URL (required)").fill("erp.example.com/orders")  # no scheme: not a URL
    page.locator("details.more > summary").click()  # the optional settings, folded
    page.get_by_label("Read timeout (s)").fill("soon")
    auth = page.get_by_role("group", name="Authentication")
    auth.get_by_label("Type").select_option("basic")
    auth.get_by_label("Password").fill(SECRET_CANARY)  # and no user name
    page.get_by_role("button", name="Create connector").click()

    url_field = page.locator("#f-url")
    sync_api.expect(url_field).to_have_attribute("aria-invalid", "true")
    sync_api.expect(page.locator("#f-url-error")).to_have_text("Not a valid URL.")
    assert "f-url-error" in url_field.get_attribute("aria-describedby")
    sync_api.expect(page.locator("#f-timeout-error")).to_have_text("Not a valid number.")
    sync_api.expect(page.locator("#f-auth-username-error")).to_contain_text("required for auth type 'basic'")
    sync_api.expect(url_field).to_have_value("erp.example.com/orders")  # what was typed is kept
    sync_api.expect(page.get_by_label("Name (required)")).to_have_value("erp")
    assert SECRET_CANARY not in page.content()  # but never a secret
    sync_api.expect(page.locator("#form-errors")).to_be_visible()
    console.shot(page, "connector-invalid")

    sync_api.expect(page.locator("details.more")).to_have_attribute("open", "")  # an error inside
    url_field.fill(console.sink.url + "/orders")
    page.get_by_label("Read timeout (s)").fill("5")
    auth.get_by_label("Type").select_option("none")
    page.get_by_role("button", name="Create connector").click()
    sync_api.expect(page.get_by_role("status").first).to_have_text("Connector erp created.")
    console.shot(page, "connector-created")
    page.get_by_role("button", name="Test connection").click()
    sync_api.expect(page.get_by_role("status").first).to_contain_text("Connection test of erp passed")
    console.shot(page, "connector-tested")


def test_route_then_webhook_then_the_orders_journey(console: Console) -> None:
    page = console.page()
    page.goto(console.base + "/console/routes/")
    page.get_by_label("Source").select_option("shop")
    page.get_by_label("Connector").select_option("erp")
    page.get_by_role("button", name="Add route").click()
    sync_api.expect(page.get_by_role("status").first).to_have_text("Orders of shop now go to erp.")
    console.shot(page, "routes")

    console.start_worker()
    assert console.webhook(console.state["webhook_url"], console.state["secret"], order("J-1")) == 202
    console.wait_for("J-1", DeliveryStatus.BOOKED)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Orders").click()
    page.get_by_label("Order number").fill("J-1")
    page.get_by_role("button", name="Search").click()
    console.shot(page, "orders-search")
    page.get_by_role("link", name="#J-1").click()
    sync_api.expect(page.get_by_role("heading", level=1)).to_have_text("Order #J-1")
    delivery = page.locator("article.delivery")
    sync_api.expect(delivery.get_by_role("heading")).to_contain_text("erp · version 1 · create · booked")
    reference = console.sink.records["J-1"]["id"]
    sync_api.expect(delivery.locator("code.reference")).to_have_text(reference)
    status = page.locator("dl.facts").first
    sync_api.expect(status.locator(".badge.tone-ok")).to_have_text("booked")
    sync_api.expect(status).to_contain_text(reference)
    sync_api.expect(delivery.get_by_role("table")).to_contain_text("booked")
    timeline = page.locator("ol.timeline").inner_text()
    assert "received" in timeline and "booked" in timeline
    page.locator("summary", has_text="Webhook").first.click()
    sync_api.expect(page.locator("details[open] pre", has_text='"external_id": "J-1"')).to_be_visible()
    console.shot(page, "order-journey")


def test_operator_replays_a_dead_letter(console: Console) -> None:
    console.sink.script([(422, {"Content-Type": "application/json"}, b'{"error": "unknown SKU SKU-001"}')])
    assert console.webhook(console.state["webhook_url"], console.state["secret"], order("D-1")) == 202
    console.wait_for("D-1", DeliveryStatus.DEAD)

    page = console.page("oscar")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Dead letters").click()
    groups = page.get_by_role("table", name="By connector and reason, biggest first")
    group = groups.get_by_role("row", name=re.compile("422"))
    sync_api.expect(group).to_contain_text("erp")
    console.shot(page, "dead-letters")
    group.get_by_role("button", name="Replay 1").click()
    sync_api.expect(page.get_by_role("status").first).to_have_text(
        "Replayed 1 dead letters; they are due again.")
    console.wait_for("D-1", DeliveryStatus.BOOKED)
    page.goto(console.base + f"/console/orders/{console.order_id('D-1')}")
    sync_api.expect(page.locator("article.delivery").get_by_role("heading")).to_contain_text("booked")
    sync_api.expect(page.locator("ol.timeline")).to_contain_text("delivery replayed by user:oscar")
    console.shot(page, "dead-letter-replayed")


def test_admin_maps_a_missing_sku_and_the_parked_order_books(console: Console) -> None:
    secret = console.state["legacy_secret"]
    line = {"sku": "SKU-NEW", "name": "Widget 2025", "quantity": "1", "unit_price": "15.00"}
    doc = order("P-1", lines=[line],
                totals={"subtotal": "15.00", "total": "15.00"}, shipping=[], discounts=[], payment=None)
    assert console.webhook(console.base + "/webhooks/legacy-shop", secret, doc) == 202
    console.wait_for("P-1", DeliveryStatus.PARKED)

    page = console.page()
    sync_api.expect(page.get_by_role("link", name=re.compile("1 parked deliveries"))).to_be_visible()
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Parked").click()
    gap = page.get_by_role("row", name=re.compile("SKU-NEW"))
    sync_api.expect(gap).to_contain_text("SKU SKU-NEW has no product in legacy")
    console.shot(page, "parked")
    gap.get_by_label("legacy product id for SKU-NEW").fill("42")
    gap.get_by_role("button", name="Map it").click()
    sync_api.expect(page.get_by_role("status").first).to_have_text(
        "Mapped product SKU-NEW to 42 in legacy; 1 parked deliveries resume.")
    console.wait_for("P-1", DeliveryStatus.BOOKED)
    with sqlite3.connect(console.legacy) as db:
        assert db.execute("SELECT product_id FROM orders_line").fetchall() == [(42,)]
    console.shot(page, "parked-resolved")
    page.goto(console.base + f"/console/orders/{console.order_id('P-1')}")
    sync_api.expect(page.locator("article.delivery").get_by_role("heading")).to_contain_text("booked")
    sync_api.expect(page.locator("ol.timeline")).to_contain_text("product SKU-NEW mapped to 42 in legacy")
    console.shot(page, "parked-order-booked")
    page.goto(console.base + "/console/mappings")
    sync_api.expect(page.get_by_role("row", name=re.compile("SKU-NEW"))).to_contain_text("admin")
    console.shot(page, "mappings")
    page.goto(console.base + "/console/")
    sync_api.expect(page.locator(".stats")).to_contain_text("3 orders received in 7 days")
    console.shot(page, "dashboard")


class Upstream:
    """A REST back office that can be down (nothing listens on its port) and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: ThreadingHTTPServer | None = None
        self.orders: list[str] = []

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                doc = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                outer.orders.append(doc["order"]["external_id"])
                body = json.dumps({"id": f"WMS-{len(outer.orders)}"}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


def test_a_back_office_that_is_down_shows_in_needs_attention_until_it_is_back(console: Console) -> None:
    from sqlalchemy import select

    upstream = Upstream()
    secret = console.stack.source("pos")
    console.stack.http_connector("wms", f"http://127.0.0.1:{upstream.port}/orders", timeout=2,
                                 connect_timeout=1)
    console.stack.route("pos", "wms")
    console.start_worker()
    assert console.webhook(console.base + "/webhooks/pos", secret, order("W-1")) == 202

    def attempts() -> int:
        with console.stack.runtime.db.begin() as session:
            return session.execute(select(Delivery.attempts).join(Order, Order.id == Delivery.order_id)
                                   .where(Order.external_id == "W-1")).scalar() or 0

    wait_until(lambda: attempts() >= 3, timeout=60, message="three failed attempts")
    with console.workers_paused_between_attempts("W-1"):
        page, latest = look_at_a_back_office_that_is_down(console)

    upstream.start()  # the back office is back: the next retry books it
    try:
        console.wait_for("W-1", DeliveryStatus.BOOKED)
        page.goto(console.base + "/console/")
        sync_api.expect(page.locator(".problems li", has_text="wms")).to_have_count(0)
        sync_api.expect(latest.get_by_role("row", name=re.compile("#W-1"))).to_contain_text("WMS-1")
        console.shot(page, "dashboard-back-office-back")
    finally:
        upstream.stop()
    assert upstream.orders == ["W-1"]


def look_at_a_back_office_that_is_down(console: Console) -> tuple[Any, Any]:
    """The dashboard's problem, the waiting orders and the journey of a retrying delivery."""
    page = console.page("oscar")
    problem = page.locator(".problems li.bad", has_text="wms keeps failing")
    sync_api.expect(problem).to_contain_text("1 delivery retrying")
    sync_api.expect(problem).to_contain_text("since")
    sync_api.expect(problem).to_contain_text("127.0.0.1")  # the last error names the address
    latest = page.get_by_role("region", name="Latest orders")
    sync_api.expect(latest.get_by_role("row", name=re.compile("#W-1"))).to_contain_text("waiting")
    console.shot(page, "dashboard-back-office-down")
    problem.get_by_role("link", name="Orders waiting").click()
    sync_api.expect(page.get_by_role("row", name=re.compile("#W-1"))).to_contain_text("retrying after")
    console.shot(page, "orders-waiting")
    page.get_by_role("link", name="#W-1").click()
    delivery = page.locator("article.delivery")
    sync_api.expect(delivery.get_by_role("heading")).to_contain_text("retrying")
    sync_api.expect(delivery.get_by_role("heading").locator(".badge.tone-warn")).to_have_text("retrying")
    sync_api.expect(page.locator("ol.timeline .repeat").first).to_contain_text("since")
    console.shot(page, "journey-retrying")
    return page, latest


def test_a_rejected_event_is_reprocessed_after_the_fix(console: Console) -> None:
    """A Shopify refund webhook carries no order; without the shop's API token the broker cannot
    fetch it, so the event is rejected. The admin finds it from the dashboard, adds the token in
    the source's settings and reprocesses it: the order is booked."""
    from fakes.shopify import FakeShopify, fixture

    with FakeShopify() as shop:
        shop.add_order(fixture("order_edited_partially_refunded.json"))
        console.stack.cli("sources", "add", "shopify", "--kind", "shopify", "--secret", shop.client_secret,
                          "--setting", f"shop={shop.shop}", "--setting", f"api_url={shop.api_url}")
        console.stack.route("shopify", "erp")
        body, headers = shop.webhook("refunds/create", fixture("refund_create.json"))
        request = urllib.request.Request(console.base + "/webhooks/shopify", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 202
        page = console.page()
        problem = page.locator(".problems li", has_text="shopify: 1 event rejected")
        for _ in range(60):  # the worker normalises it within a sweep
            if problem.count():
                break
            time.sleep(0.5)
            page.reload()
        sync_api.expect(problem).to_be_visible()
        console.shot(page, "dashboard-rejected-event")
        problem.get_by_role("link", name="Source shopify").click()
        rejected = page.get_by_role("region", name="Rejected events")
        sync_api.expect(rejected).to_contain_text("refunds/create")
        sync_api.expect(rejected).to_contain_text("no Shopify access_token")
        console.shot(page, "source-rejected-events")

        page.get_by_label(re.compile("access_token")).fill(shop.access_token)
        page.get_by_role("button", name="Save settings").click()
        sync_api.expect(page.get_by_role("status").first).to_have_text("Source shopify saved.")
        page.get_by_role("region", name="Rejected events").get_by_role("button", name="Reprocess").click()
        sync_api.expect(page.get_by_role("status").first).to_contain_text("1 order version(s) accepted")
        sync_api.expect(page.get_by_role("region", name="Rejected events")).to_have_count(0)
        console.shot(page, "source-event-reprocessed")
        external_id = str(fixture("order_edited_partially_refunded.json")["id"])
        console.wait_for(external_id, DeliveryStatus.BOOKED)
    assert shop.access_token not in page.content()


def test_a_connector_form_follows_its_auth_type(console: Console) -> None:
    page = console.page()
    page.goto(console.base + "/console/connectors/new?kind=http")
    form = page.locator("form.config")
    height = form.evaluate("f => f.getBoundingClientRect().height")
    assert height < 1200, height  # was 2,600 px with every auth field and every option shown
    sync_api.expect(page.get_by_text("Where orders are sent")).to_be_visible()  # help from the schema
    auth = page.get_by_role("group", name="Authentication")
    for hidden in ("User name", "Password", "Client ID", "Token URL"):
        sync_api.expect(auth.get_by_label(hidden, exact=True)).to_be_hidden()
    console.shot(page, "connector-form-auth-none")
    auth.get_by_label("Type").select_option("basic")
    sync_api.expect(auth.get_by_label("User name")).to_be_visible()
    sync_api.expect(auth.get_by_label("Password")).to_be_visible()
    sync_api.expect(auth.get_by_label("Client ID")).to_be_hidden()
    auth.get_by_label("User name").fill("left-over")
    console.shot(page, "connector-form-auth-basic")
    auth.get_by_label("Type").select_option("oauth2_consent")
    for shown in ("Token URL", "Authorization URL", "Client ID", "Client secret", "Scope"):
        sync_api.expect(auth.get_by_label(shown, exact=True)).to_be_visible()
    sync_api.expect(auth.get_by_label("User name")).to_be_hidden()
    console.shot(page, "connector-form-auth-consent")
    auth.get_by_label("Type").select_option("bearer")
    auth.get_by_label("Token", exact=True).fill("bearer-token-for-the-form-7c")
    page.get_by_label("Name (required)").fill("form-erp")
    page.get_by_label("URL (required)").fill(console.sink.url + "/orders")
    page.get_by_role("button", name="Create connector").click()
    sync_api.expect(page.get_by_role("status").first).to_have_text("Connector form-erp created.")
    sync_api.expect(page.get_by_role("group", name="Authentication").get_by_label("Token", exact=True)
                    ).to_be_visible()  # an edit shows the stored choice's fields
    console.shot(page, "connector-form-saved")
    with console.stack.runtime.db.begin() as session:
        from sqlalchemy import select

        from broker.models import Connector

        row = session.execute(select(Connector).where(Connector.name == "form-erp")).scalar_one()
        assert row.config["auth"] == {"type": "bearer"}  # the user name typed under basic is gone


def test_admin_pages_for_clients_and_audit(console: Console) -> None:
    page = console.page()
    page.goto(console.base + "/console/clients/")
    console.shot(page, "clients")
    page.get_by_label("Name").fill("shopfront")
    page.get_by_role("button", name="Create client").click()
    secret = page.get_by_label(re.compile("Client secret")).input_value()
    assert len(secret) > 20
    console.shot(page, "client-created")
    page.goto(console.base + "/console/audit/")
    for action in ("client.create", "mapping.add", "deliveries.replay", "route.create", "connector.create",
                   "source.create"):
        sync_api.expect(page.locator("table")).to_contain_text(action)
    sync_api.expect(page.get_by_role("row", name=re.compile("mapping.add"))).to_contain_text("user:root")
    assert secret not in page.content() and console.state["secret"] not in page.content()
    console.shot(page, "audit")
    page.goto(console.base + "/console/reviews")
    console.shot(page, "identity-review")


def test_a_viewer_is_offered_no_admin_action_and_is_refused_one(console: Console) -> None:
    page = console.page("vera")
    nav = page.get_by_role("navigation", name="Console")
    sync_api.expect(nav.get_by_role("link")).to_have_text(
        ["Dashboard", "Orders", "Dead letters", "Parked", "Identity review"])
    assert page.get_by_role("link", name="erp").count() == 0  # no link to the connector's config
    console.shot(page, "viewer-dashboard")
    page.goto(console.base + f"/console/orders/{console.order_id('D-1')}")
    assert page.get_by_role("button", name=re.compile("Replay")).count() == 0
    console.shot(page, "viewer-order")
    for path in ("/console/sources/", "/console/connectors/erp", "/console/mappings", "/console/audit/"):
        response = page.goto(console.base + path)
        assert response.status == 403, path
    sync_api.expect(page.get_by_role("alert")).to_contain_text("your role (viewer) may not do this")
    console.shot(page, "viewer-refused")
    # A forged request with the viewer's own CSRF token is refused too, and changes nothing.
    page.goto(console.base + "/console/")
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(console.base + "/console/mappings", form={
        "csrf_token": token, "connector": "legacy", "kind": "product", "key": "X-1", "value": "1"})
    assert answer.status == 403
    answer = page.request.post(console.base + f"/console/orders/{console.order_id('D-1')}/replay",
                               form={"csrf_token": token})
    assert answer.status == 403


def test_sign_in_through_the_company_identity_provider(console: Console) -> None:
    """A real OpenID Connect provider (tests/idp) on loopback: the browser follows the broker's
    authorization request (PKCE), signs in on the provider's own form, and comes back signed in
    with the role its groups map to."""
    from idp.oidc import OidcProvider, node_required

    node_required()
    callback = console.base + "/console/auth/callback"
    accounts = {"olivia": {"email": "olivia@corp.test", "email_verified": True, "name": "Olivia",
                           "groups": ["order-desk"]}}
    clients = [{"client_id": "broker-console", "client_secret": "console-secret-5Tq",
                "redirect_uris": [callback], "grant_types": ["authorization_code"],
                "response_types": ["code"]}]
    resources = {"https://broker.test/api": {"audience": "fobo-broker", "scope": "broker", "alg": "ES256"}}
    with OidcProvider(accounts, clients, resources) as idp:
        console.stack.cli("issuers", "add", "corp", "--issuer", idp.issuer, "--audience", "fobo-broker",
                          "--client-id", "broker-console", "--client-secret", "console-secret-5Tq",
                          "--scopes", "openid email profile groups",
                          "--role", "operator=groups:order-desk")
        console.stack.app.extensions["broker_issuers"].invalidate()
        page = console.browser.new_context().new_page()
        page.csp_violations = []
        page.goto(console.base + "/console/login")
        page.get_by_role("link", name="Sign in with corp").click()
        page.wait_for_url(idp.issuer + "/**")
        page.locator("input[name=login]").fill("olivia")
        page.locator("input[name=password]").fill("any")
        page.locator("button[type=submit]").first.click()
        for _ in range(3):  # the provider may ask to confirm the consent
            if page.url.startswith(console.base):
                break
            buttons = page.locator("button[type=submit]")
            if buttons.count():
                buttons.first.click()
            page.wait_for_load_state()
        page.wait_for_url(console.base + "/console/")
        sync_api.expect(page.locator(".who")).to_contain_text("olivia@corp.test")
        sync_api.expect(page.locator(".who")).to_contain_text("operator")
        console.shot(page, "signed-in-through-idp")
        assert page.get_by_role("link", name="Connectors").count() == 0  # operators don't configure
