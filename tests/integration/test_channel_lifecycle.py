"""Channel sources through the pipeline: pings, parked thin events, channel API outages,
scheduled catch-up, ignored topics, and the custody of channel API credentials."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fakes import bigcommerce, shopify, woocommerce
from harness import Stack, wait_until
from sqlalchemy import text

from broker.models import Delivery, DeliveryStatus, EventStatus, InboundEvent, Order
from broker.services.intake import normalise_event


def booked(stack: Stack) -> int:
    return stack.count(Delivery, Delivery.status == DeliveryStatus.BOOKED)


def event_status(stack: Stack) -> list[str]:
    return [e["status"] for e in stack.cli("events", "list", "--json")]


@pytest.fixture
def woo(stack: Stack):
    with woocommerce.FakeWooCommerce() as fake:
        stack.serve()
        driver = woocommerce.Driver(fake)
        yield stack, fake, stack.channel_source(driver, "woo")


def test_woocommerce_creation_ping_is_acknowledged_and_stores_nothing(woo):
    stack, fake, _ = woo
    body, headers = fake.ping(webhook_id=12)
    status, answer = stack.post("/webhooks/woo", body, headers)
    assert (status, answer) == (200, {"status": "ping"})
    # Unsigned JSON is not a ping.
    status, _ = stack.post("/webhooks/woo", b'{"webhook_id": 12}', {"Content-Type": "application/json"})
    assert status == 401
    assert stack.count(InboundEvent) == 0


def test_deletion_before_its_create_is_parked_then_cancels_the_order(woo, sink):
    stack, fake, secret = woo
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("woo", "erp")
    fake.put_order(fake.build_order(501, modified="2026-11-20T09:00:00Z"))
    deleted = fake.webhook("order.deleted", 501, secret)
    assert stack.post("/webhooks/woo", *deleted)[0] == 202
    stack.start_worker()
    wait_until(lambda: event_status(stack) == ["parked"], message="parked deletion")
    parked = stack.cli("events", "list", "--status", "parked", "--json")[0]
    assert parked["waiting_for"] == "501" and "waiting for order 501" in parked["error"]
    assert stack.count(Order) == 0

    assert stack.post("/webhooks/woo", *fake.webhook("order.created", 501, secret))[0] == 202
    wait_until(lambda: set(event_status(stack)) == {"normalised"}, message="release")
    wait_until(lambda: sink.records.get("501", {}).get("order", {}).get("status") == "cancelled",
               message="cancellation delivered")
    assert sink.creates["501"] == 1
    detail = stack.cli("orders", "show", stack.cli("orders", "list", "--json")[0]["id"], "--json")
    assert detail["status"] == "cancelled"


def test_channel_api_outage_defers_enrichment_until_it_recovers(stack: Stack, sink):
    with bigcommerce.FakeBigCommerce() as fake:
        driver = bigcommerce.Driver(fake)
        secret = stack.channel_source(driver, "bc")
        stack.http_connector("erp", sink.url + "/orders")
        stack.route("bc", "erp")
        fake.simple_order(250, date_modified="2026-11-20T10:00:00Z")
        fake.fail(2, status=503)
        body, headers = fake.webhook("store/order/created", 250)
        assert stack.post("/webhooks/bc", body, fake.sign(body, headers, secret=secret))[0] == 202
        stack.start_worker()
        wait_until(lambda: "channel API unavailable" in (stack.cli("events", "list", "--json")[0]
                                                         ["error"] or ""), message="deferral")
        event = stack.cli("events", "show", stack.cli("events", "list", "--json")[0]["id"])
        assert json.loads(event)["next_attempt_at"] and json.loads(event)["status"] == "received"
        wait_until(lambda: booked(stack) == 1, timeout=40, message="booked after the outage")
        # A late wake-up for the handled event must not spend the vendor's rate limit again.
        calls = len(fake.requests)
        late = normalise_event(stack.runtime.db, stack.cli("events", "list", "--json")[0]["id"],
                               box=stack.runtime.box)
        assert late.status == EventStatus.NORMALISED and len(fake.requests) == calls
    assert sink.creates["250"] == 1
    assert sink.records["250"]["order"]["totals"]["total"] == "31.56"


def test_scheduled_catch_up_books_an_order_whose_webhook_never_came(stack: Stack, sink):
    with shopify.FakeShopify() as fake:
        driver = shopify.Driver(fake)
        stack.channel_source(driver, "shopify")
        stack.cli("sources", "configure", "shopify", "--setting", "catchup_interval=1",
                  "--setting", "catchup_lookback=604800")
        stack.http_connector("erp", sink.url + "/orders")
        stack.route("shopify", "erp")
        an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
        driver.order_event("820982911946154500", updated_at=an_hour_ago)  # inside the lookback
        stack.start_worker()
        wait_until(lambda: booked(stack) == 1, timeout=40, message="booked by catch-up")
        source = stack.cli("sources", "list", "--json")[0]
        assert source["catchup_at"] and source["catchup_error"] is None
        assert any(r["path"].endswith("/orders.json") for r in fake.requests)
        assert fake.access_token not in stack.worker_logs()
    assert sink.creates["820982911946154500"] == 1


def test_unknown_topic_is_answered_200_and_recorded_as_ignored(stack: Stack):
    with shopify.FakeShopify() as fake:
        stack.channel_source(shopify.Driver(fake), "shopify", secret=fake.client_secret)
        body, headers = fake.webhook("products/create", {"id": 1, "title": "Widget"})
        status, answer = stack.post("/webhooks/shopify", body, headers)
        assert (status, answer["status"]) == (200, "ignored")
        assert event_status(stack) == [EventStatus.IGNORED]
        assert stack.post("/webhooks/shopify", body, headers)[1]["status"] == "duplicate"


def test_channel_credentials_are_encrypted_write_only_and_never_leak(stack: Stack):
    with shopify.FakeShopify(access_token="shpat_canary_4f1d9e7a") as fake:
        driver = shopify.Driver(fake)
        stack.channel_source(driver, "shopify")
        with stack.runtime.db.engine.connect() as conn:
            raw = json.dumps([list(r) for r in conn.execute(text("SELECT * FROM sources"))],
                             default=str)
        assert "shpat_canary" not in raw
        listed = stack.cli("sources", "configure", "shopify", "--json")
        assert listed["credentials"] == ["access_token"]
        assert "shpat_canary" not in json.dumps(stack.cli("sources", "list", "--json"))

        # A wrong token: the catch-up fails with an actionable message and no secret in it.
        stack.cli("sources", "configure", "shopify", "--credential", "access_token=shpat_wrong_canary")
        result = stack.app.test_cli_runner().invoke(
            args=["broker", "sources", "catch-up", "shopify", "--json"])
        assert result.exit_code == 1
        answer = json.loads(result.output)
        assert "refused the source's API credentials" in answer["error"]
        assert "canary" not in result.output
        assert "canary" not in (stack.cli("sources", "list", "--json")[0]["catchup_error"] or "")


def test_source_setup_refuses_what_it_cannot_use(stack: Stack):
    runner = stack.app.test_cli_runner()
    result = runner.invoke(args=["broker", "sources", "add", "pay", "--kind", "stripe"])
    assert result.exit_code != 0 and "issues the signing secret" in result.output
    result = runner.invoke(args=["broker", "sources", "add", "shop", "--kind", "shopify",
                                 "--secret", "s", "--setting", "shpo=acme.myshopify.com"])
    assert result.exit_code != 0 and "no setting 'shpo'" in result.output
    result = runner.invoke(args=["broker", "sources", "add", "shop", "--kind", "shopify",
                                 "--secret", "s", "--credential", "password=x"])
    assert result.exit_code != 0 and "no credential 'password'" in result.output
    assert stack.count(InboundEvent) == 0 and stack.cli("sources", "list", "--json") == []
