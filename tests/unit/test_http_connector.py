"""The built-in http connector against a real HTTP back office on loopback (tests/fakes/sink.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import pytest
from marshmallow import ValidationError

from broker.schemas.order import load_order
from connectors.base import PushContext
from connectors.config import split_secrets
from connectors.errors import PermanentError, TransientError
from connectors.http import HttpConfig, HttpConnector
from tests.fakes.sink import Sink

SECRET = "s3cr3t-Pa55"


def make_order(external_id: str = "5001", number: str = "#1042") -> dict[str, Any]:
    return load_order({
        "external_id": external_id, "number": number, "currency": "USD",
        "placed_at": "2026-11-20T14:03:00Z",
        "lines": [{"sku": "AB-1", "name": "Blue Widget", "quantity": "2", "unit_price": "12.50"}],
        "totals": {"subtotal": "25.00", "total": "25.00"},
    })


def ctx(key: str = "key-1", action: str = "create", **kw: Any) -> PushContext:
    return PushContext(delivery_id="dlv-1", idempotency_key=key, action=action, attempt=1, **kw)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


@pytest.fixture
def connect(sink: Sink) -> Iterator[Callable[..., HttpConnector]]:
    made: list[HttpConnector] = []

    def make(**config: Any) -> HttpConnector:
        config.setdefault("url", f"{sink.url}/orders")
        connector = HttpConnector(HttpConfig().load(config), name="erp")
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- booking and idempotency -----------------------------------------------------------------

def test_create_books_the_order_and_returns_the_back_office_id(sink, connect):
    result = connect().push(make_order(), ctx())
    assert result.reference == "BO-1"
    assert result.details == {"status": 201}
    record = sink.records["5001"]
    assert record["order"]["lines"][0]["unit_price"] == "12.50"
    assert record["actions"] == ["create"]


def test_request_carries_idempotency_broker_and_configured_headers(sink, connect):
    connect(headers={"X-Tenant": "acme"}).push(make_order(), ctx(key="k-7"))
    method, path, headers, body = sink.requests[-1]
    assert (method, path) == ("POST", "/orders")
    assert headers["Idempotency-Key"] == "k-7"
    assert headers["X-Broker-Action"] == "create"
    assert headers["X-Broker-Delivery"] == "dlv-1"
    assert headers["User-Agent"] == "fobo-broker/0.1"
    assert headers["X-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["action"] == "create"


def test_repeat_with_the_same_idempotency_key_books_once(sink, connect):
    connector = connect()
    first = connector.push(make_order(), ctx(key="k-1"))
    second = connector.push(make_order(), ctx(key="k-1"))
    assert first.reference == second.reference == "BO-1"
    assert sink.creates == {"5001": 1}


def test_put_method_is_honoured(sink, connect):
    connect(method="PUT").push(make_order(), ctx())
    assert sink.requests[-1][0] == "PUT"


def test_update_with_a_new_key_updates_the_same_record(sink, connect):
    connector = connect()
    connector.push(make_order(), ctx(key="v1"))
    result = connector.push(make_order(), ctx(key="v2", action="update", reference="BO-1"))
    assert result.reference == "BO-1"
    assert sink.creates == {"5001": 1}
    assert sink.records["5001"]["actions"] == ["create", "update"]


def test_cancel_posts_action_cancel_to_the_order_url(sink, connect):
    connector = connect()
    connector.push(make_order(), ctx(key="v1"))
    result = connector.cancel(make_order(), ctx(key="v2", action="cancel"))
    assert result.reference == "BO-1"
    assert sink.records["5001"]["status"] == "cancelled"
    assert sink.requests[-1][2]["X-Broker-Action"] == "cancel"


def test_cancel_url_takes_the_back_office_reference(sink, connect):
    connector = connect(cancel_url=f"{sink.url}/orders/{{reference}}/cancel")
    connector.push(make_order(), ctx(key="v1"))
    connector.cancel(make_order(), ctx(key="v2", action="cancel", reference="BO-1"))
    assert sink.requests[-1][1] == "/orders/BO-1/cancel"
    assert sink.records["5001"]["status"] == "cancelled"


def test_cancel_url_without_a_known_reference_is_permanent(sink, connect):
    connector = connect(cancel_url=f"{sink.url}/orders/{{reference}}/cancel")
    with pytest.raises(PermanentError, match="reference of order #1042"):
        connector.cancel(make_order(), ctx(action="cancel"))


# -- status mapping --------------------------------------------------------------------------

def test_503_with_retry_after_seconds_is_transient_with_retry_after(sink, connect):
    sink.script([(503, {"Retry-After": "7"}, b"busy")])
    with pytest.raises(TransientError, match="503 Service Unavailable") as err:
        connect().push(make_order(), ctx())
    assert err.value.retry_after == 7
    assert sink.records == {}


def test_retry_after_as_http_date_becomes_seconds(sink, connect):
    sink.script([(503, {"Retry-After": formatdate(time.time() + 120, usegmt=True)}, b"")])
    with pytest.raises(TransientError) as err:
        connect().push(make_order(), ctx())
    assert 100 < err.value.retry_after <= 120


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502])
def test_retryable_statuses_are_transient(sink, connect, status):
    sink.script([(status, {}, b"later")])
    with pytest.raises(TransientError, match=str(status)):
        connect().push(make_order(), ctx())


def test_transient_failure_then_success_books_once(sink, connect):
    sink.script([(503, {}, b"busy")])
    connector = connect()
    with pytest.raises(TransientError):
        connector.push(make_order(), ctx())
    assert connector.push(make_order(), ctx()).reference == "BO-1"
    assert sink.creates == {"5001": 1}


def test_422_is_permanent_naming_status_order_and_body_but_not_the_secret(sink, connect):
    sink.require_bearer(SECRET)
    sink.script([(422, {}, b'{"error":"unknown SKU AB-1", "echo": "Bearer ' + SECRET.encode()
                  + b'"}')])
    with pytest.raises(PermanentError) as err:
        connect(auth={"type": "bearer", "token": SECRET}).push(make_order(), ctx())
    message = str(err.value)
    assert "422 Unprocessable Entity for order #1042" in message
    assert "unknown SKU AB-1" in message
    assert "fix the order or the connector config" in message
    assert SECRET not in message
    assert "***" in message


def test_body_snippet_is_capped_at_300_characters(sink, connect):
    sink.script([(400, {}, b"x" * 5000)])
    with pytest.raises(PermanentError) as err:
        connect().push(make_order(), ctx())
    assert "x" * 300 in str(err.value)
    assert "x" * 301 not in str(err.value)


def test_redirect_is_not_followed_and_is_permanent(sink, connect):
    sink.script([(301, {"Location": "https://elsewhere.example/orders"}, b"")])
    with pytest.raises(PermanentError, match=r"https://elsewhere\.example/orders"):
        connect().push(make_order(), ctx())
    assert len(sink.requests) == 1


def test_oversized_success_answer_is_permanent(sink, connect):
    sink.script([(200, {}, b'{"id": "' + b"9" * 2000 + b'"}')])
    with pytest.raises(PermanentError, match="max_response_bytes"):
        connect(max_response_bytes=1000).push(make_order(), ctx())


# -- authentication --------------------------------------------------------------------------

def test_basic_auth_succeeds(sink, connect):
    sink.require_basic("broker", SECRET)
    connector = connect(auth={"type": "basic", "username": "broker", "password": SECRET})
    assert connector.push(make_order(), ctx()).reference == "BO-1"


def test_wrong_basic_password_is_permanent_about_credentials_without_the_password(sink, connect):
    sink.require_basic("broker", "right-password")
    connector = connect(auth={"type": "basic", "username": "broker", "password": SECRET})
    with pytest.raises(PermanentError) as err:
        connector.push(make_order(), ctx())
    assert "401" in str(err.value)
    assert "credentials" in str(err.value)
    assert SECRET not in str(err.value)
    assert sink.records == {}


def test_bearer_auth_succeeds(sink, connect):
    sink.require_bearer(SECRET)
    connector = connect(auth={"type": "bearer", "token": SECRET})
    assert connector.push(make_order(), ctx()).reference == "BO-1"


def oauth(sink: Sink, secret: str = SECRET) -> dict[str, Any]:
    return {"type": "oauth2", "token_url": f"{sink.url}/oauth/token", "client_id": "broker",
            "client_secret": secret, "scope": "orders"}


def test_oauth2_token_is_fetched_once_and_reused(sink, connect):
    sink.require_oauth("broker", SECRET)
    connector = connect(auth=oauth(sink))
    connector.push(make_order("1"), ctx(key="a"))
    connector.push(make_order("2"), ctx(key="b"))
    assert sink.creates == {"1": 1, "2": 1}
    assert sink.token_requests == 1


def test_oauth2_refetches_the_token_once_after_a_401(sink, connect):
    sink.require_oauth("broker", SECRET)
    connector = connect(auth=oauth(sink))
    connector.push(make_order("1"), ctx(key="a"))
    sink.expire_tokens()
    assert connector.push(make_order("2"), ctx(key="b")).reference == "BO-2"
    assert sink.token_requests == 2


def test_oauth2_token_is_renewed_before_it_expires(sink, connect):
    sink.require_oauth("broker", SECRET, expires_in=60)
    connector = connect(auth=oauth(sink))
    connector.push(make_order("1"), ctx(key="a"))
    connector.push(make_order("2"), ctx(key="b"))
    assert sink.token_requests == 1  # cached
    start = time.monotonic()
    connector.clock = lambda: start + 31  # a 60 s token is renewed 30 s before it expires
    connector.push(make_order("3"), ctx(key="c"))
    assert sink.token_requests == 2
    assert sink.creates == {"1": 1, "2": 1, "3": 1}


def test_oauth2_wrong_client_secret_is_permanent_about_credentials(sink, connect):
    sink.require_oauth("broker", "the-real-secret")
    with pytest.raises(PermanentError) as err:
        connect(auth=oauth(sink)).push(make_order(), ctx())
    assert "credentials" in str(err.value)
    assert SECRET not in str(err.value)


# -- body and reference ----------------------------------------------------------------------

def test_template_renders_the_body(sink, connect):
    template = ('{"action": "{{ action }}", "key": "{{ idempotency_key }}", "order": '
                '{"external_id": {{ order.external_id | tojson }}, '
                '"total": "{{ order.totals.total }}", "note": {{ order.note | default("-") | tojson }}}}')
    result = connect(template=template).push(make_order(), ctx(key="k-9"))
    body = json.loads(sink.requests[-1][3])
    assert body == {"action": "create", "key": "k-9",
                    "order": {"external_id": "5001", "total": "25.00", "note": "-"}}
    assert result.reference == "BO-1"


def test_template_typo_is_permanent(sink, connect):
    with pytest.raises(PermanentError, match="template"):
        connect(template="{{ order.totals.totl }}").push(make_order(), ctx())
    assert sink.requests == []


def test_template_cannot_reach_python_internals(sink, connect):
    connector = connect(template="{{ order.__class__.__mro__ }}")
    with pytest.raises(PermanentError, match="template"):
        connector.push(make_order(), ctx())


def test_reference_comes_from_a_nested_json_field(sink, connect):
    sink.script([(201, {}, b'{"data": {"order": {"number": 778}}}')])
    assert connect(reference_field="data.order.number").push(make_order(), ctx()).reference \
        == "778"


def test_reference_falls_back_to_the_location_header(sink, connect):
    result = connect(reference_field="data.number").push(make_order(), ctx())
    assert result.reference == "BO-1"  # from Location: /orders/BO-1


def test_reference_falls_back_to_the_idempotency_key(sink, connect):
    sink.script([(200, {}, b"OK")])
    assert connect().push(make_order(), ctx(key="k-42")).reference == "k-42"


# -- lookup ----------------------------------------------------------------------------------

def lookup_url(sink: Sink) -> str:
    return f"{sink.url}/orders/by-external/{{external_id}}"


def test_lookup_finds_a_booked_order(sink, connect):
    connector = connect(lookup_url=lookup_url(sink))
    connector.push(make_order(), ctx())
    assert connector.lookup(make_order()) == "BO-1"


def test_lookup_returns_none_for_an_unknown_order(sink, connect):
    assert connect(lookup_url=lookup_url(sink)).lookup(make_order("nope")) is None


def test_lookup_without_lookup_url_returns_none(sink, connect):
    assert connect().lookup(make_order()) is None
    assert sink.requests == []


def test_lookup_escapes_the_external_id(sink, connect):
    connect(lookup_url=lookup_url(sink)).lookup(make_order("a/b c"))
    assert sink.requests[-1][1] == "/orders/by-external/a%2Fb%20c"


def test_create_of_an_order_already_booked_under_another_key_books_nothing(sink, connect):
    connector = connect(lookup_url=lookup_url(sink))
    connector.push(make_order(), ctx(key="first"))
    result = connector.push(make_order(), ctx(key="lost-and-regenerated"))
    assert result.reference == "BO-1"
    assert sink.creates == {"5001": 1}


# -- transport failures ----------------------------------------------------------------------

def test_unreachable_back_office_is_transient(connect):
    url = f"http://127.0.0.1:{free_port()}/orders"
    with pytest.raises(TransientError, match=r"back office at http://127\.0\.0\.1:\d+ unreachable"):
        connect(url=url).push(make_order(), ctx())


def test_timeout_is_transient_and_the_retry_books_once(sink, connect):
    sink.delay(1.0)
    connector = connect(timeout=0.2)
    with pytest.raises(TransientError, match=r"no answer within 0\.2s"):
        connector.push(make_order(), ctx())
    sink.delay(0)
    assert connector.push(make_order(), ctx()).reference == "BO-1"
    assert sink.creates == {"5001": 1}


# -- check -----------------------------------------------------------------------------------

def test_check_passes_when_the_back_office_answers(sink, connect):
    sink.require_basic("broker", SECRET)
    connect(auth={"type": "basic", "username": "broker", "password": SECRET}).check()
    assert sink.requests[-1][0] == "OPTIONS"
    assert sink.records == {}


def test_check_with_wrong_credentials_is_permanent(sink, connect):
    sink.require_bearer("other")
    with pytest.raises(PermanentError, match="credentials"):
        connect(auth={"type": "bearer", "token": SECRET}).check()


def test_check_of_an_unreachable_back_office_is_transient(connect):
    with pytest.raises(TransientError, match="unreachable"):
        connect(url=f"http://127.0.0.1:{free_port()}/orders").check()


def test_check_uses_lookup_url_when_configured(sink, connect):
    connect(lookup_url=lookup_url(sink)).check()
    assert sink.requests[-1][:2] == ("GET", "/orders/by-external/fobo-broker-check")


# -- config ----------------------------------------------------------------------------------

def test_config_defaults():
    config = HttpConfig().load({"url": "https://erp.example.com/api/orders"})
    assert config["method"] == "POST"
    assert config["timeout"] == 10 and config["connect_timeout"] == 5
    assert config["auth"] == {"type": "none"}
    assert config["idempotency_header"] == "Idempotency-Key"
    assert config["reference_field"] == "id"
    assert config["verify_tls"] is True
    assert config["max_response_bytes"] == 1 << 20


def test_unknown_config_key_is_rejected_with_its_name():
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com", "timout": 3})
    assert "timout" in err.value.messages


def test_unknown_auth_key_is_rejected_with_its_path():
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com",
                           "auth": {"type": "basic", "username": "u", "password": "p", "pw": 1}})
    assert "pw" in err.value.messages["auth"]


@pytest.mark.parametrize(("auth", "field"), [
    ({"type": "basic", "username": "u"}, "password"),
    ({"type": "bearer"}, "token"),
    ({"type": "oauth2", "client_id": "c", "client_secret": "s"}, "token_url"),
    ({"type": "bearer", "token": "t", "password": "p"}, "password"),
    ({"type": "kerberos"}, "type"),
])
def test_auth_fields_must_match_the_auth_type(auth, field):
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com", "auth": auth})
    assert field in err.value.messages["auth"]


def test_authorization_in_headers_is_rejected_pointing_to_auth():
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com",
                           "headers": {"authorization": "Bearer x"}})
    assert "under 'auth'" in str(err.value.messages["headers"])


@pytest.mark.parametrize("url", ["ftp://erp.example.com", "not a url",
                                 "https://user:pw@erp.example.com/orders"])
def test_bad_urls_are_rejected(url):
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": url})
    assert "url" in err.value.messages


def test_lookup_url_needs_the_external_id_placeholder():
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com",
                           "lookup_url": "https://erp.example.com/orders"})
    assert "{external_id}" in str(err.value.messages["lookup_url"])


def test_template_syntax_error_is_rejected_with_its_line():
    with pytest.raises(ValidationError) as err:
        HttpConfig().load({"url": "https://erp.example.com", "template": "{\n{{ order }"})
    assert "line 2" in str(err.value.messages["template"])


def test_split_secrets_pulls_out_every_auth_secret():
    schema = HttpConfig()
    for auth, path in [({"type": "basic", "username": "u", "password": SECRET}, "auth.password"),
                       ({"type": "bearer", "token": SECRET}, "auth.token"),
                       ({"type": "oauth2", "token_url": "https://idp.example.com/token",
                         "client_id": "c", "client_secret": SECRET}, "auth.client_secret")]:
        config = schema.load({"url": "https://erp.example.com", "auth": auth})
        public, secrets = split_secrets(schema, config)
        assert secrets == {path: SECRET}
        assert SECRET not in json.dumps(public)


def test_invalid_raw_config_makes_the_connector_fail_permanently():
    with pytest.raises(PermanentError, match="invalid config"):
        HttpConnector({"url": "https://erp.example.com", "methd": "POST"}, name="erp")
