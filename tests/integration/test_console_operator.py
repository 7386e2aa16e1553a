"""The console as an operator's day needs it: one colour-coded status per order with its
back-office references, a failing back office on the dashboard with when it started and where
to act, repeated errors folded in the journey, the latest orders to click into, rejected
events listed per source with their reasons and a reprocess button, and connector forms that
show only the fields of the chosen auth type, with human labels and help."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

from harness import Stack, order
from sqlalchemy import select, update
from test_console_pages import CANARY, WEBHOOK_SECRET, Browser, set_delivery, setup  # noqa: F401

from broker.db import utcnow
from broker.models import Connector, Delivery, DeliveryAttempt, DeliveryStatus, InboundEvent, Source
from broker.services import timeline
from broker.services.intake import store_event


def _fail(stack: Stack, delivery_id: str, order_id: str, times: int, error: str) -> None:
    """The worker's record of `times` failed attempts of one delivery, a minute apart."""
    start = utcnow() - timedelta(minutes=times)
    with stack.runtime.db.begin() as session:
        for n in range(1, times + 1):
            at = start + timedelta(minutes=n - 1)
            session.add(DeliveryAttempt(delivery_id=delivery_id, number=n, outcome="retry", error=error,
                                        started_at=at, duration_ms=30))
            timeline.record(session, order_id, "retry", f"attempt {n} failed, next in {5 * n}s: {error}",
                            delivery_id=delivery_id)
        session.execute(update(Delivery).where(Delivery.id == delivery_id).values(
            attempts=times, last_error=error, updated_at=utcnow(),
            next_attempt_at=utcnow() + timedelta(minutes=5)))


def test_a_failing_back_office_shows_on_the_dashboard_with_since_when_and_where_to_act(
        stack: Stack, setup: dict[str, Any]) -> None:  # noqa: F811
    error = "back office unreachable: connection refused by erp.example.com:443"
    _fail(stack, setup["delivery_id"], setup["order_id"], 8, error)
    viewer = Browser(stack, "vera", "viewer")
    page = viewer.get("/console/")
    problem = re.search(r'<li class="bad">(.*?)</li>', page, re.S).group(1)  # type: ignore[union-attr]
    assert "erp keeps failing: 1 delivery retrying" in problem and error in problem
    assert "since" in problem and "Orders waiting" in problem
    assert "test the connection" not in problem  # a viewer is not offered the admin's page
    admin = Browser(stack, "root", "admin")
    assert "Connector erp: test the connection" in admin.get("/console/")
    # the latest orders, with their status, to click into
    recent = page[page.index('id="h-recent"'):page.index("All orders")]
    assert f'href="/console/orders/{setup["order_id"]}">#C-1</a>' in recent
    assert '<span class="badge tone-warn">waiting</span>' in recent  # retrying: amber, not calm blue


def test_the_journey_says_retrying_and_folds_the_same_error(stack: Stack, setup: dict[str, Any]) -> None:  # noqa: F811
    error = "back office answered 503: maintenance"
    _fail(stack, setup["delivery_id"], setup["order_id"], 8, error)
    page = Browser(stack, "vera", "viewer").get(f"/console/orders/{setup['order_id']}")
    assert '<span class="badge tone-warn">retrying</span>' in page
    # the status line, the last error, one folded attempts row, one folded timeline entry
    assert page.count(error) == 4
    assert re.search(r"<strong>retry</strong> attempt 8 failed, next in 40s: [^<]*maintenance "
                     r'<span class="repeat">\u00d78 since \d{4}-\d\d-\d\d \d\d:\d\d UTC</span>', page)
    assert re.search(r'<th scope="row">1\u20138</th>', page)


def test_orders_list_shows_the_status_and_the_reference(stack: Stack, setup: dict[str, Any]) -> None:  # noqa: F811
    set_delivery(stack, setup["delivery_id"], status=DeliveryStatus.BOOKED, reference="SO-00042",
                 booked_at=utcnow())
    viewer = Browser(stack, "vera", "viewer")
    page = viewer.get("/console/orders/")
    row = re.search(r"<tr>\s*<th scope=\"row\"><a [^>]*>#C-1</a></th>(.*?)</tr>", page, re.S).group(1)  # type: ignore
    assert '<span class="badge tone-ok">booked</span>' in row and "SO-00042" in row
    assert "#C-1" in viewer.get("/console/orders/?state=booked")
    assert "#C-1" not in viewer.get("/console/orders/?state=dead")
    assert "No orders found." in viewer.get("/console/orders/?state=dead")
    journey = viewer.get(f"/console/orders/{setup['order_id']}")
    assert re.search(r'<dt>Status</dt><dd><span class="badge tone-ok">booked</span>', journey)
    assert '<code class="reference">SO-00042</code>' in journey


def test_rejected_events_are_listed_per_source_and_reprocessed_after_the_fix(
        stack: Stack, setup: dict[str, Any]) -> None:  # noqa: F811
    from broker.services.intake import normalise_event

    bad = order("C-9")
    bad["lines"][0]["quantity"] = "0"
    with stack.runtime.db.begin() as session:
        source_id = session.execute(select(Source.id).where(Source.name == "shop")).scalar_one()
    _, event_id = store_event(stack.runtime.db, source_id, "msg_c9", "order",
                              {"content-type": "application/json"}, json.dumps(bad).encode())
    assert normalise_event(stack.runtime.db, event_id).status == "rejected"
    admin = Browser(stack, "root", "admin")
    dashboard = admin.get("/console/")
    assert "shop: 1 event rejected" in dashboard and 'href="/console/sources/shop#rejected"' in dashboard
    page = admin.get("/console/sources/shop")
    section = page[page.index('id="rejected"'):]
    assert "msg_c9" in section and "lines.0.quantity" in section and ">Reprocess</button>" in section
    # still broken: it stays rejected, and says so
    answer = admin.post(f"/console/sources/shop/events/{event_id}/reprocess")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/console/sources/shop#rejected")
    assert "is still rejected: lines.0.quantity" in admin.get("/console/sources/shop")
    with stack.runtime.db.begin() as session:  # the sender's data fixed (here: the stored body)
        session.execute(update(InboundEvent).where(InboundEvent.id == event_id).values(
            body=json.dumps(order("C-9")).encode()))
    admin.post(f"/console/sources/shop/events/{event_id}/reprocess")
    after = admin.get("/console/sources/shop")
    assert f"Event {event_id} reprocessed: 1 order version(s) accepted." in after
    assert 'id="rejected"' not in after
    viewer = Browser(stack, "vera", "viewer")
    assert viewer.post(f"/console/sources/shop/events/{event_id}/reprocess").status_code == 403


def test_connector_form_shows_the_fields_of_the_chosen_auth_type_with_labels_and_help(stack: Stack) -> None:
    admin = Browser(stack, "root", "admin")
    page = admin.get("/console/connectors/new?kind=http")
    assert '<label for="f-url">URL <span class="req">(required)</span></label>' in page
    assert "Where orders are sent" in page and "Verify TLS certificates" in page
    assert re.search(r'<div class="field"\s+data-when="f-auth-type" data-when-values="basic">\s*'
                     r'<label for="f-auth-password">Password</label>', page)
    assert 'data-when-values="oauth2 oauth2_consent"' in page
    assert "Only for type basic." in page  # without script, each field says where it belongs
    assert re.search(r'<details class="more">\s*<summary>More settings', page)  # folded, nothing set
    # a password typed for "basic", then the type switched to "bearer": only the token is kept
    answer = admin.post("/console/connectors/new", {
        "kind": "http", "name": "erp3", "url": "https://erp.example.com/orders", "auth.type": "bearer",
        "auth.token": CANARY, "auth.username": "left-over", "auth.password": "left-over-pw",
        "verify_tls": "true"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    with stack.runtime.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == "erp3")).scalar_one()
        assert row.config["auth"] == {"type": "bearer"}
        assert stack.runtime.box.decrypt(row.secrets_encrypted, {}) == {"auth.token": CANARY}
    # switching an existing connector from bearer to basic drops the stored token
    answer = admin.post("/console/connectors/erp3", {
        "url": "https://erp.example.com/orders", "auth.type": "basic", "auth.username": "broker",
        "auth.password": "pw-basic-1", "verify_tls": "true"})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    with stack.runtime.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == "erp3")).scalar_one()
        assert stack.runtime.box.decrypt(row.secrets_encrypted, {}) == {"auth.password": "pw-basic-1"}
    edit = admin.get("/console/connectors/erp3")
    assert re.search(r'<details class="more">', edit)  # defaults only: still folded


def test_the_brokers_address_leads_to_the_console(stack: Stack) -> None:
    answer = stack.client.get("/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/console/"
    assert stack.client.get("/console/").headers["Location"].startswith("/console/login")
