"""The SSRF guard (connectors/ssrf.py): what it refuses, what it allows, and that it pins.

Real sockets on loopback throughout; the guard is switched to production mode (private
networks refused) explicitly, since the test session allows them for the fakes.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors import ssrf
from connectors.errors import PermanentError
from connectors.wire import pool


@pytest.fixture
def strict() -> Iterator[None]:
    """Production mode: private networks and plain http refused."""
    with ssrf.policy(allow_private=False):
        yield


class Server:
    """A loopback HTTP(S) server that records every connection's Host header and TLS SNI."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.hosts: list[str] = []
        self.sni: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if context is not None:
            context.sni_callback = lambda sock, name, ctx: self.sni.append(name)  # type: ignore[assignment]
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    """A certificate for DNS name `name` only (no IP address), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / f"{name}.pem", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only shop.example."""
    cert, key = self_signed(tmp_path, "shop.example")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    s = Server(context)
    yield s, cert
    s.close()


# --- what is refused --------------------------------------------------------------------

@pytest.mark.parametrize(("url", "said"), [
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is the cloud metadata address"),
    ("https://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("https://[::1]:8443/", "::1 is a loopback address"),
    ("https://[::ffff:127.0.0.1]/", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("https://[::ffff:169.254.169.254]/", "IPv4-mapped form of 169.254.169.254, the cloud metadata"),
    ("https://[64:ff9b::a9fe:a9fe]/", "a NAT64 address of 169.254.169.254, the cloud metadata"),
    ("https://2130706433/", "2130706433 resolves to 127.0.0.1, a loopback address"),
    ("https://0x7f000001/", "0x7f000001 resolves to 127.0.0.1, a loopback address"),
    ("https://017700000001/", "017700000001 resolves to 127.0.0.1, a loopback address"),
    ("https://127.1/", "127.1 resolves to 127.0.0.1, a loopback address"),
    ("https://localhost:9000/", "localhost resolves to 127.0.0.1, a loopback address"),
    ("https://10.1.2.3/api", "10.1.2.3 is a private address (RFC 1918)"),
    ("https://192.168.0.10/", "a private address (RFC 1918)"),
    ("https://172.31.255.1/", "a private address (RFC 1918)"),
    ("https://100.64.0.1/", "a carrier-grade NAT address"),
    ("https://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("https://0.1.2.3/", "a 'this network' address"),
    ("https://[fe80::1]/", "a link-local address"),
    ("https://[fd12:3456::1]/", "a unique-local address"),
    ("https://224.0.0.1/", "a multicast address"),
    ("https://240.0.0.1/", "a reserved address"),
    ("https://192.0.2.1/", "a non-public address"),
])
def test_non_public_destinations_are_refused_with_the_reason(strict: None, url: str, said: str,
                                                            ) -> None:
    with pytest.raises(ssrf.Refused) as caught:
        ssrf.check_url(url)
    assert said in str(caught.value)
    assert "add its host name or address to BROKER_ALLOWED_PRIVATE_HOSTS" in str(caught.value)
    assert isinstance(caught.value, PermanentError)  # connectors dead-letter, never retry


@pytest.mark.parametrize("url", ["http://example.com/orders", "ftp://example.com/",
                                 "https:///no-host", "https://example.com:99999/"])
def test_plain_http_and_non_urls_are_refused(strict: None, url: str) -> None:
    with pytest.raises(ssrf.Refused):
        ssrf.check_url(url)


def test_every_resolved_address_must_be_public() -> None:
    assert ssrf.non_public_reason("8.8.8.8") is None
    assert ssrf.non_public_reason("2606:4700:4700::1111") is None
    assert ssrf.non_public_reason("64:ff9b::808:808") is None  # NAT64 of a public address
    assert ssrf.non_public_reason("2002:7f00:1::1") == "a 6to4 address of 127.0.0.1, a loopback address"
    assert ssrf.non_public_reason("fe80::1%eth0") == "a link-local address"
    assert ssrf.non_public_reason(ipaddress.ip_address("fd00:ec2::254")) == \
        "the cloud metadata address"


def test_a_public_literal_is_pinned_as_given(strict: None) -> None:
    target = ssrf.check_url("https://8.8.8.8:8443/path")
    assert target == ssrf.Target("https", "8.8.8.8", 8443, ("8.8.8.8",))
    assert target.ip == "8.8.8.8"


def test_urls_in_a_config_are_checked_up_front_even_nested(strict: None) -> None:
    with pytest.raises(ssrf.Refused, match=re.escape("10.0.0.5 is a private address")):
        ssrf.check_settings({"url": "https://8.8.8.8/orders",
                             "auth": {"type": "oauth2", "token_url": "https://10.0.0.5/token"}})
    with pytest.raises(ssrf.Refused, match=re.escape("localhost resolves to 127.0.0.1")):
        ssrf.check_settings({"lookup_url": "https://localhost/orders/{external_id}"})
    with pytest.raises(ssrf.Refused, match=re.escape("127.0.0.1 is a loopback address")):
        ssrf.check_settings({"sftp_host": "127.0.0.1"})
    # Only the listed keys are URLs (a source's notification_url is ours, never fetched).
    ssrf.check_settings({"notification_url": "http://127.0.0.1/webhooks/sq"}, url_keys=("api_url",))
    # A name that does not resolve yet is checked again at every connection, not here.
    ssrf.check_settings({"url": "https://nonexistent.invalid/"})


# --- the pool refuses before any byte is sent -------------------------------------------

def test_the_connector_pool_refuses_loopback_before_connecting(strict: None, server: Server,
                                                               ) -> None:
    http = pool(connect_timeout=2, timeout=2, verify_tls=True)
    for url, said in ((f"https://localhost:{server.port}/", "localhost resolves to 127.0.0.1"),
                      (f"https://2130706433:{server.port}/", "resolves to 127.0.0.1"),
                      (f"http://127.0.0.1:{server.port}/", "http://127.0.0.1 is not allowed")):
        with pytest.raises(ssrf.Refused, match=re.escape(said)):
            http.request("GET", url, redirect=False)
    assert server.hosts == []


def test_requests_sessions_are_guarded_too(strict: None, server: Server) -> None:
    session = ssrf.guarded_session()
    with pytest.raises(ssrf.Refused, match="a loopback address"):
        session.get(f"https://[::ffff:127.0.0.1]:{server.port}/", timeout=2)
    with pytest.raises(ssrf.Refused, match=re.escape("is not allowed: use https")):
        session.get(f"http://127.0.0.1:{server.port}/", timeout=2)
    assert server.hosts == []


def test_a_raw_tcp_connection_is_checked(strict: None, server: Server) -> None:
    with pytest.raises(ssrf.Refused, match=re.escape("localhost resolves to 127.0.0.1")):
        ssrf.connect_tcp("localhost", server.port, 2)


def test_everything_is_allowed_when_private_networks_are_allowed(server: Server) -> None:
    with ssrf.policy(allow_private=True):
        assert ssrf.check_url(f"http://127.0.0.1:{server.port}/") == \
            ssrf.Target("http", "127.0.0.1", server.port, ())
        answer = pool(connect_timeout=2, timeout=2, verify_tls=True).request(
            "GET", f"http://localhost:{server.port}/x", redirect=False)
        assert answer.status == 200
        assert ssrf.guarded_session().get(f"http://127.0.0.1:{server.port}/", timeout=2).text == "ok"
        ssrf.connect_tcp("127.0.0.1", server.port, 2).close()
    assert server.hosts == [f"localhost:{server.port}", f"127.0.0.1:{server.port}"]


def test_the_policy_is_process_wide_and_restorable() -> None:
    previous = ssrf.configure(allow_private=False)
    try:
        assert not ssrf.private_allowed()
        with ssrf.policy(allow_private=True):
            assert ssrf.private_allowed()
        assert not ssrf.private_allowed()
    finally:
        ssrf.configure(allow_private=previous)


# --- pinning ----------------------------------------------------------------------------

def test_a_pinned_connection_goes_to_the_checked_ip_and_speaks_to_the_name(
        strict: None, tls_server: tuple[Server, Path]) -> None:
    """shop.example does not resolve at all: only the pin can bring the request to 127.0.0.1,
    and the certificate (DNS name only, no IP) verifies only because SNI and the hostname
    check use the name, not the address connected to."""
    server, ca = tls_server
    target = ssrf.Target("https", "shop.example", server.port, ("127.0.0.1",))
    with ssrf.pinned_pool(target, cert_reqs="CERT_REQUIRED", ca_certs=str(ca), retries=False,
                          timeout=5) as http:
        answer = http.request("GET", "/", redirect=False)
        connection = http.pool.get(block=False) if http.pool else None
    assert answer.status == 200 and answer.data == b"ok"
    assert server.sni == ["shop.example"]
    assert server.hosts == [f"shop.example:{server.port}"]
    assert connection is not None and connection.connected_to == "127.0.0.1"


def test_a_pinned_connection_still_verifies_the_certificate_against_the_name(
        strict: None, tls_server: tuple[Server, Path]) -> None:
    server, ca = tls_server
    target = ssrf.Target("https", "other.example", server.port, ("127.0.0.1",))
    with ssrf.pinned_pool(target, cert_reqs="CERT_REQUIRED", ca_certs=str(ca), retries=False,
                          timeout=5) as http, pytest.raises(urllib3.exceptions.SSLError):
        http.request("GET", "/", redirect=False)
    assert server.sni == ["other.example"]
    assert server.hosts == []


def test_unresolvable_names_are_a_network_failure_not_a_refusal(strict: None) -> None:
    with pytest.raises(socket.gaierror):
        ssrf.check_url("https://nonexistent.invalid/")
    http = pool(connect_timeout=2, timeout=2, verify_tls=True)
    with pytest.raises(urllib3.exceptions.HTTPError):  # connectors map it to TransientError
        http.request("GET", "https://nonexistent.invalid/", redirect=False)


def test_the_setting_defaults_to_refusing_and_the_runtime_applies_it(tmp_path: Path) -> None:
    from broker.runtime import Runtime
    from broker.settings import ConfigError, load_settings

    base = {"BROKER_DATA_DIR": str(tmp_path), "BROKER_DATABASE_URL": f"sqlite:///{tmp_path}/b.db"}
    assert load_settings(base).allow_private_networks is False
    with pytest.raises(ConfigError, match="BROKER_ALLOW_PRIVATE_NETWORKS"):
        load_settings({**base, "BROKER_ALLOW_PRIVATE_NETWORKS": "maybe"})
    with ssrf.policy(allow_private=True):
        Runtime(load_settings(base)).close()
        assert not ssrf.private_allowed()
        Runtime(load_settings({**base, "BROKER_ALLOW_PRIVATE_NETWORKS": "true"})).close()
        assert ssrf.private_allowed()


# --- the allow-list: on-premises systems by name, address or network -------------------------

class Resolver:
    """A DNS that answers scripted addresses for a few test names (one list per lookup, the
    last one repeating) and asks the real resolver for every other name: a name's answer can
    change between two connections, as in DNS rebinding, without touching the system's DNS."""

    def __init__(self, real: Any, answers: dict[str, list[list[str]]]) -> None:
        self.real, self.answers = real, answers
        self.asked: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        scripted = self.answers.get(str(host))
        if scripted is None:
            return self.real(host, port, *args, **kwargs)
        self.asked.append(str(host))
        addresses = scripted.pop(0) if len(scripted) > 1 else scripted[0]
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, int(port or 0))) for a in addresses]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Any:
    def script(**answers: list[list[str]]) -> Resolver:
        resolver = Resolver(socket.getaddrinfo, {k.replace("_", "."): v for k, v in answers.items()})
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        return resolver
    return script


def test_an_allow_listed_address_passes_and_its_neighbour_is_refused() -> None:
    with ssrf.policy(allow_private=False, allowed="10.1.2.3, 10.0.4.0/24, fd00::5"):
        assert ssrf.check_url("https://10.1.2.3/api").addresses == ("10.1.2.3",)
        assert ssrf.check_url("https://10.0.4.77:8443/").addresses == ("10.0.4.77",)
        assert ssrf.check_url("https://[fd00::5]/").addresses == ("fd00::5",)
        for url, said in (("https://10.1.2.4/api", "10.1.2.4 is a private address (RFC 1918)"),
                          ("https://10.0.5.1/", "10.0.5.1 is a private address"),
                          ("https://[fd00::6]/", "fd00::6 is a unique-local address"),
                          ("https://127.0.0.1/", "127.0.0.1 is a loopback address"),
                          ("https://169.254.169.254/", "the cloud metadata address")):
            with pytest.raises(ssrf.Refused, match=re.escape(said)):
                ssrf.check_url(url)


def test_https_is_still_required_unless_the_entry_says_http() -> None:
    with ssrf.policy(allow_private=False, allowed="localhost"):
        assert ssrf.check_url("https://localhost:9000/").host == "localhost"
        with pytest.raises(ssrf.Refused, match=re.escape(
                "http://localhost is not allowed: use https, or list the host as http://localhost")):
            ssrf.check_url("http://localhost:9000/")
    with ssrf.policy(allow_private=False, allowed="http://localhost, 10.0.4.0/24"):
        assert ssrf.check_url("http://localhost:9000/").scheme == "http"
        with pytest.raises(ssrf.Refused, match="is not allowed: use https"):
            ssrf.check_url("http://10.0.4.5/")  # listed, but for https only
        with pytest.raises(ssrf.Refused, match=re.escape("127.0.0.1 is a loopback address")):
            ssrf.check_url("http://127.0.0.1:9000/")  # what localhost resolves to is not listed


def test_a_listed_name_reaches_a_real_loopback_server_and_the_address_alone_does_not(
        server: Server) -> None:
    http = pool(connect_timeout=2, timeout=2, verify_tls=True)
    with ssrf.policy(allow_private=False, allowed="http://localhost"):
        answer = http.request("GET", f"http://localhost:{server.port}/x", redirect=False)
        assert answer.status == 200
        with pytest.raises(ssrf.Refused, match=re.escape("127.0.0.1 is a loopback address")):
            http.request("GET", f"http://127.0.0.1:{server.port}/x", redirect=False)
    assert server.hosts == [f"localhost:{server.port}"]


def test_a_listed_name_may_resolve_into_private_space_but_never_to_the_metadata_address(dns: Any) -> None:
    dns(erp_lan=[["10.9.9.9"]], meta_lan=[["169.254.169.254"]])
    with ssrf.policy(allow_private=False, allowed="erp.lan, meta.lan"):
        assert ssrf.check_url("https://erp.lan/").addresses == ("10.9.9.9",)
        with pytest.raises(ssrf.Refused, match=re.escape("meta.lan resolves to 169.254.169.254, the cloud")):
            ssrf.check_url("https://meta.lan/")


def test_dns_rebinding_to_an_unlisted_private_address_is_refused_at_the_next_connection(
        dns: Any, server: Server) -> None:
    """rebind.test answers 127.0.0.1 (listed) first, then 127.0.0.2 (loopback, not listed): the
    first request goes through, the connection after it is refused before any byte is sent."""
    resolver = dns(rebind_test=[["127.0.0.1"], ["127.0.0.2"]])
    with ssrf.policy(allow_private=False, allowed="http://127.0.0.1"):
        ssrf.check_url(f"http://rebind.test:{server.port}/")  # at setup: 127.0.0.1, allowed
        http = pool(connect_timeout=2, timeout=2, verify_tls=True)
        with pytest.raises(ssrf.Refused, match=re.escape(
                "rebind.test resolves to 127.0.0.2, a loopback address")):
            http.request("GET", f"http://rebind.test:{server.port}/", redirect=False)
    assert resolver.asked == ["rebind.test", "rebind.test"]
    assert server.hosts == []


def test_a_name_resolving_to_a_listed_network_passes_and_is_pinned(dns: Any, server: Server) -> None:
    dns(shop_lan=[["127.0.0.1"]])
    with ssrf.policy(allow_private=False, allowed="http://127.0.0.0/30"):
        answer = pool(connect_timeout=2, timeout=2, verify_tls=True).request(
            "GET", f"http://shop.lan:{server.port}/", redirect=False)
    assert answer.status == 200
    assert server.hosts == [f"shop.lan:{server.port}"]


def test_database_hosts_go_through_the_same_guard() -> None:
    with ssrf.policy(allow_private=False):
        for url, said in (
                ("postgresql+psycopg://app:pw-canary-1@127.0.0.1:5432/erp", "127.0.0.1 is a loopback"),
                ("mysql+pymysql://app:pw-canary-1@10.0.0.5/erp", "10.0.0.5 is a private address"),
                ("postgresql+psycopg://app:pw-canary-1@db.example.com/erp?hostaddr=127.0.0.1",
                 "127.0.0.1 is a loopback"),
                ("postgresql+psycopg://app:pw-canary-1@/erp", "localhost resolves to")):  # Unix socket
            with pytest.raises(ssrf.Refused, match=re.escape(said)) as caught:
                ssrf.check_settings({"url": url})
            assert "pw-canary-1" not in str(caught.value)
        ssrf.check_settings({"url": "sqlite:////var/lib/legacy/orders.db"})  # a file, no network
    with ssrf.policy(allow_private=False, allowed="127.0.0.1, localhost"):
        ssrf.check_database_url("postgresql+psycopg://app:pw@127.0.0.1:5432/erp")
        ssrf.check_database_url("postgresql+psycopg://app:pw@/erp")


def test_bad_allow_list_entries_stop_the_start_naming_the_variable(tmp_path: Path) -> None:
    from broker.settings import ConfigError, load_settings

    base = {"BROKER_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)}
    for entry, said in (("erp.lan:8069", "give no port"), ("https://erp.lan/api", "a path"),
                        ("user@erp.lan", "credentials"), ("10.0.0.0/33", "malformed network")):
        with pytest.raises(ConfigError, match=re.escape(said)) as caught:
            load_settings({**base, "BROKER_ALLOWED_PRIVATE_HOSTS": entry}, create_key=False)
        assert "BROKER_ALLOWED_PRIVATE_HOSTS" in str(caught.value)
    settings = load_settings({**base, "BROKER_ALLOWED_PRIVATE_HOSTS": "ERP.lan., http://10.0.4.0/24"},
                             create_key=False)
    assert settings.allowed_private_hosts == ("erp.lan", "http://10.0.4.0/24")


def test_the_runtime_applies_the_allow_list(tmp_path: Path) -> None:
    from broker.runtime import Runtime
    from broker.settings import load_settings

    settings = load_settings({"BROKER_DATA_DIR": str(tmp_path), "HOME": str(tmp_path),
                              "BROKER_ALLOWED_PRIVATE_HOSTS": "10.0.4.0/24"})
    with ssrf.policy(allow_private=True):
        Runtime(settings).close()
        assert not ssrf.private_allowed()
        assert ssrf.check_url("https://10.0.4.20/").addresses == ("10.0.4.20",)
        with pytest.raises(ssrf.Refused):
            ssrf.check_url("https://10.0.5.20/")
