"""The SSRF guard end to end: a production broker (BROKER_ALLOW_PRIVATE_NETWORKS=false) never
reaches loopback through a connector, a channel API or SFTP, and no client follows a redirect.

The fakes listen on 127.0.0.1, exactly the kind of address the guard must refuse.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fakes.sftp import FakeSftpServer
from fakes.sink import Sink
from harness import Stack, order, wait_until
from sqlalchemy import select

from broker.channels.api import ChannelApi
from broker.channels.base import PayloadError
from broker.models import Delivery, DeliveryStatus
from broker.schemas.order import load_order
from broker.services.setup import upsert_connector
from connectors import ssrf
from connectors.base import PushContext
from connectors.edi import EdiConnector
from connectors.errors import PermanentError
from connectors.http import HttpConnector

HINT = "BROKER_ALLOWED_PRIVATE_HOSTS"


class Recorder:
    """A loopback HTTP server that answers `status` (+ Location) and records each path."""

    def __init__(self, status: int = 200, location: str | None = None) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.paths.append(self.path)
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = do_OPTIONS = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def inner() -> Iterator[Recorder]:
    """The 'internal service' a redirect or a bad URL points at; it must see no request."""
    server = Recorder()
    yield server
    server.close()


@pytest.fixture
def strict_stack(tmp_path: Path) -> Iterator[Stack]:
    """A broker configured as in production (gateway in-process, workers as subprocesses)."""
    stack = Stack(tmp_path, "sqlite", "embedded", allow_private_networks="false")
    try:
        yield stack
    finally:
        stack.close()


def _cli(stack: Stack, *args: str) -> tuple[int, str]:
    result = stack.app.test_cli_runner().invoke(args=["broker", *args])
    return result.exit_code, result.output


def test_setup_refuses_private_urls_up_front(strict_stack: Stack, sink: Sink) -> None:
    port = sink.url.rsplit(":", 1)[1]
    assert not ssrf.private_allowed()  # the Runtime applied the setting
    for url, said in ((sink.url + "/orders", "http://127.0.0.1 is not allowed: use https"),
                      (f"https://localhost:{port}/orders",
                       "localhost resolves to 127.0.0.1, a loopback address"),
                      ("https://169.254.169.254/latest", "the cloud metadata address")):
        code, output = _cli(strict_stack, "connectors", "add", "erp", "--kind", "http",
                            "--config", json.dumps({"url": url}))
        assert code != 0 and said in output and HINT in output, output
    code, output = _cli(strict_stack, "connectors", "add", "erp", "--kind", "http", "--config",
                        json.dumps({"url": "https://8.8.8.8/orders", "auth": {
                            "type": "oauth2", "token_url": "https://2130706433/token",
                            "client_id": "c", "client_secret": "s"}}))
    assert code != 0 and "2130706433 resolves to 127.0.0.1" in output, output
    code, output = _cli(strict_stack, "sources", "add", "woo", "--kind", "woocommerce",
                        "--setting", "store_url=https://[::ffff:127.0.0.1]/",
                        "--credential", "consumer_key=ck", "--credential", "consumer_secret=cs")
    assert code != 0 and "IPv4-mapped form of 127.0.0.1" in output, output
    assert strict_stack.cli("connectors", "list", "--json") == []
    assert strict_stack.cli("sources", "list", "--json") == []
    assert sink.requests == []


def test_a_stored_private_url_dead_letters_without_reaching_it(strict_stack: Stack, sink: Sink,
                                                               ) -> None:
    """A URL stored before the guard (or a name re-pointed since) is refused at connect time."""
    stack = strict_stack
    upsert_connector(stack.runtime.db, stack.runtime.box, "erp", "http",
                     {"url": f"https://localhost:{sink.url.rsplit(':', 1)[1]}/orders", "timeout": 5})
    code, output = _cli(stack, "connectors", "check", "erp")
    assert code != 0 and "Refused: localhost resolves to 127.0.0.1, a loopback address" in output
    secret = stack.source("shop")
    stack.route("shop", "erp")
    stack.start_worker()  # inherits BROKER_ALLOW_PRIVATE_NETWORKS=false
    status, _ = stack.webhook("shop", secret, order("7001"))
    assert status == 202
    wait_until(lambda: stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 1,
               message="dead-lettered delivery")
    with stack.runtime.db.begin() as session:
        delivery = session.execute(select(Delivery)).scalar_one()
        assert delivery.attempts == 1  # permanent: never retried
        assert "localhost resolves to 127.0.0.1, a loopback address" in (delivery.last_error or "")
    assert sink.requests == []


def test_channel_api_refuses_private_addresses(inner: Recorder) -> None:
    port = inner.url.rsplit(":", 1)[1]
    with ssrf.policy(allow_private=False):
        for base, said in ((f"https://localhost:{port}", "localhost resolves to 127.0.0.1"),
                           (f"https://0x7f000001:{port}", "0x7f000001 resolves to 127.0.0.1"),
                           (inner.url, "http://127.0.0.1 is not allowed: use https")):
            with pytest.raises(PayloadError) as caught:
                ChannelApi(base).get("/wp-json/wc/v3/orders/1")
            assert said in str(caught.value) and HINT in str(caught.value)
        # An absolute URL from a vendor's answer (e.g. a next page link) is checked the same.
        with pytest.raises(PayloadError, match="the cloud metadata address"):
            ChannelApi("https://api.example.com").get("https://169.254.169.254/latest/meta-data/")
    assert inner.paths == []


def test_no_client_follows_a_redirect_into_private_space(inner: Recorder) -> None:
    """Even with private networks allowed (so the redirect itself can be served from loopback),
    a 302 to an internal address is reported, never followed."""
    outer = Recorder(302, location=inner.url + "/latest/meta-data/")
    try:
        with pytest.raises(PayloadError, match="answered 302"):
            ChannelApi(outer.url).get("/orders")
        connector = HttpConnector({"url": outer.url + "/orders", "timeout": 5}, name="erp")
        ctx = PushContext(delivery_id="d1", idempotency_key="k1", action="create", attempt=1)
        with pytest.raises(PermanentError, match="redirects are not followed"):
            connector.push(load_order(order("7002")), ctx)
        connector.close()
        assert outer.paths == ["/orders", "/orders"]
    finally:
        outer.close()
    assert inner.paths == []


def test_sftp_host_is_checked_before_the_tcp_connection(tmp_path: Path) -> None:
    with FakeSftpServer(tmp_path / "root", users={"u": "pw"}) as server:
        (tmp_path / "root" / "out").mkdir()
        config = {"format": "csv", "sftp_host": "localhost", "sftp_port": server.port,
                  "sftp_user": "u", "sftp_password": "pw", "sftp_host_key": server.host_key_line,
                  "sftp_path": "/out", "timeout": 5}
        connector = EdiConnector(EdiConnector.Config().load(config), name="partner")
        try:
            with ssrf.policy(allow_private=False), \
                    pytest.raises(ssrf.Refused, match=r"localhost resolves to 127\.0\.0\.1"):
                connector.check()
            assert server.logins == []
            connector.check()  # the session allows private networks: the same config works
            assert server.logins == ["u"]
        finally:
            connector.close()
