"""Operator commands: connection checks, secret rotation, replay, keys."""

from __future__ import annotations

from cryptography.fernet import Fernet
from harness import order

from broker.models import Delivery, DeliveryStatus, Source
from broker.schemas.order import load_order
from broker.services.orders import apply_version


def _invoke(stack, *args):
    return stack.app.test_cli_runner().invoke(args=["broker", *args])


def test_connectors_check_reports_ok_and_names_an_unreachable_back_office(stack, sink):
    stack.http_connector("erp", sink.url + "/orders")
    stack.http_connector("gone", "http://127.0.0.1:9/orders")
    ok = _invoke(stack, "connectors", "check", "erp")
    assert ok.exit_code == 0 and "erp: ok" in ok.output
    down = _invoke(stack, "connectors", "check", "gone")
    assert down.exit_code != 0 and "TransientError" in down.output and "unreachable" in down.output
    assert _invoke(stack, "connectors", "check", "nope").exit_code != 0


def test_rotated_source_secret_and_previous_one_both_verify(stack):
    old = stack.source("shop")
    new = stack.cli("sources", "rotate-secret", "shop", "--json")["secret"]
    assert new != old
    assert stack.webhook("shop", new, order("K1"))[0] == 202
    assert stack.webhook("shop", old, order("K2"))[0] == 202
    assert stack.webhook("shop", "whsec_" + "A" * 32, order("K3"))[0] == 401


def test_orders_replay_makes_a_dead_delivery_due_again(stack, sink):
    stack.source("shop")
    stack.http_connector("erp", sink.url + "/orders")
    stack.route("shop", "erp")
    with stack.runtime.db.begin() as session:
        source = session.query(Source).filter_by(name="shop").one()
        order_id = apply_version(session, source, load_order(order("P1"))).order_id
        session.query(Delivery).update({"status": DeliveryStatus.DEAD, "attempts": 1,
                                        "last_error": "back office answered 422"})
    result = _invoke(stack, "orders", "replay", order_id)
    assert result.exit_code == 0 and "replayed 1 delivery" in result.output
    with stack.runtime.db.begin() as session:
        delivery = session.query(Delivery).one()
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_error is None
    detail = stack.cli("orders", "show", order_id, "--json")
    assert detail["timeline"][-1]["step"] == "replayed"
    assert _invoke(stack, "orders", "replay", "no-such-order").exit_code != 0


def test_keys_generate_prints_a_fernet_key(stack):
    result = _invoke(stack, "keys", "generate")
    assert result.exit_code == 0
    Fernet(result.output.strip())
