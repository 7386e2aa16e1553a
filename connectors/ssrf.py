"""The SSRF guard for every URL an admin configures (connectors, channel APIs, identity issuers).

An admin-set URL must never let the broker reach its own network: loopback services, the
cloud metadata endpoint (169.254.169.254), databases on 10/8 and friends. So each host is
resolved once, EVERY address it resolves to must be public, and the connection then goes to
exactly that checked address while Host, SNI and certificate verification keep the name: a DNS
answer that changes between the check and the connect (rebinding) cannot reach a private address.
Plain http is refused too. Numeric tricks (2130706433, 0x7f000001, 017700000001, 127.1,
::ffff:127.0.0.1, NAT64 64:ff9b::7f00:1) are resolved by getaddrinfo exactly as the OS would
and the result is what gets checked and connected to.

An on-premises back office is reached by listing it in BROKER_ALLOWED_PRIVATE_HOSTS (host
names, addresses, CIDR networks; `http://ENTRY` also allows plain http to it; see
connectors.allowlist): a listed name may resolve to private addresses, an address inside a
listed network may be reached under any name, and every other non-public address stays
refused, at every connection, so DNS rebinding to an unlisted address fails too. The SQL
connector's database host goes through the same check (`check_database_url`, `guard_engine`).

The policy is process-wide (the broker's Runtime sets it from its settings). The test suite's
fakes on 127.0.0.1 turn the guard off with `allow_private=True`
(BROKER_ALLOW_PRIVATE_NETWORKS, for tests only).

This module imports nothing of broker.*: connectors use it directly.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
from collections.abc import Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util import connection as _connection

# The policy lives in connectors.allowlist (cheap to import for the settings and the CLI);
# it is used here and re-exported, so `ssrf.policy(...)` and `ssrf.configure(...)` keep working.
from connectors.allowlist import allowed_hosts, private_allowed
from connectors.allowlist import configure as configure
from connectors.allowlist import policy as policy
from connectors.errors import PermanentError

if TYPE_CHECKING:
    import requests

HINT = ("to reach a system on your own network, add its host name or address to "
        "BROKER_ALLOWED_PRIVATE_HOSTS")
DEFAULT_PORTS = {"http": 80, "https": 443}
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"),)
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never public
_RFC1918 = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(PermanentError):
    """The URL or host may not be reached under the current policy; the message says why."""


class Target(NamedTuple):
    """A checked destination: connect to `addresses` (in order), speak to `host` by name."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]  # empty when private networks are allowed (no pinning needed)

    @property
    def ip(self) -> str | None:
        return self.addresses[0] if self.addresses else None


# --- the policy ----------------------------------------------------------------------------

# --- checks --------------------------------------------------------------------------------

def non_public_reason(address: str | IPAddress) -> str | None:
    """Why an address is not a public internet address (None when it is)."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone (fe80::1%eth0)
    ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            inner = non_public_reason(ip.ipv4_mapped)
            return f"the IPv4-mapped form of {ip.ipv4_mapped}, {inner}" if inner else None
        if ip in _LOCAL_NAT64:
            return "a local-use NAT64 address"
        if any(ip in net for net in _NAT64):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            inner = non_public_reason(embedded)
            return f"a NAT64 address of {embedded}, {inner}" if inner else None
        if ip.sixtofour is not None:
            inner = non_public_reason(ip.sixtofour)
            return f"a 6to4 address of {ip.sixtofour}, {inner}" if inner else None
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip in METADATA:
        return "the cloud metadata address"
    if ip.is_link_local:
        return "a link-local address"
    if isinstance(ip, ipaddress.IPv4Address):
        if any(ip in net for net in _RFC1918):
            return "a private address (RFC 1918)"
        if ip in _CGNAT:
            return "a carrier-grade NAT address (100.64.0.0/10)"
        if ip in _THIS_NETWORK:
            return "a 'this network' address (0.0.0.0/8)"
    else:
        if ip in _UNIQUE_LOCAL:
            return "a unique-local address (fc00::/7)"
        if ip.is_site_local:
            return "a site-local address (fec0::/10)"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or not ip.is_global:
        return "a non-public address"
    return None


def _listed(name: str, address: str) -> bool:
    """Whether the allow-list lets `name` reach this non-public address: a listed name may
    resolve into private space (never to the metadata, unspecified or multicast addresses);
    an address in a listed network may be reached under any name."""
    ip = ipaddress.ip_address(address.split("%")[0])
    named = allowed_hosts().by_name(name)
    if named is not None and named.name is not None and ip not in METADATA \
            and not ip.is_unspecified and not ip.is_multicast:
        return True
    return allowed_hosts().by_address(ip) is not None


def http_allowed(name: str, addresses: tuple[str, ...]) -> bool:
    """Plain http to this host: its allow-list entry says `http://` (by name, or every
    address it resolved to lies in such a network)."""
    named = allowed_hosts().by_name(name)
    if named is not None and named.http:
        return True
    entries = [allowed_hosts().by_address(ipaddress.ip_address(a.split("%")[0])) for a in addresses]
    return bool(entries) and all(e is not None and e.http for e in entries)


def resolve(host: str, port: int, scheme: str = "https") -> Target:
    """Resolve `host` as the OS would and refuse it unless every address is public or
    allow-listed for it.

    Raises Refused, or socket.gaierror when the name does not resolve (a network failure).
    """
    name = host.strip("[]").rstrip(".")
    infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{name} has no address")
    for address in addresses:
        reason = non_public_reason(address)
        if reason and not _listed(name, address):
            said = f"{name} is {reason}" if address == name else \
                f"{name} resolves to {address}, {reason}"
            raise Refused(f"{said}; {HINT}")
    return Target(scheme, name, port, addresses)


def _http_refused(host: str) -> Refused:
    return Refused(f"http://{host} is not allowed: use https, or list the host as "
                   f"http://{host} in BROKER_ALLOWED_PRIVATE_HOSTS")


def check_url(url: str) -> Target:
    """The pinned target of an admin-configured URL; https only unless private networks are allowed.

    Raises Refused (with the host and why), or socket.gaierror when the name does not resolve.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise Refused(f"{url!r} is not a valid URL: {exc}") from None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in DEFAULT_PORTS or not host:
        raise Refused(f"{url!r} is not an http(s) URL with a host")
    port = port or DEFAULT_PORTS[scheme]
    if private_allowed():
        return Target(scheme, host, port, ())
    if scheme != "https" and not any(e.http for e in allowed_hosts().entries):
        raise _http_refused(host)
    target = resolve(host, port, scheme)
    if scheme != "https" and not http_allowed(host, target.addresses):
        raise _http_refused(host)
    return target


def check_settings(values: Mapping[str, Any], *, url_keys: tuple[str, ...] | None = None,
                   host_keys: tuple[str, ...] = ("sftp_host",)) -> None:
    """Check the URLs in a config up front (nested mappings too), so a bad one fails at setup.

    `url_keys` limits which keys count as URLs (None: every http(s) string and every database
    URL); a name that does not resolve yet passes here and is checked again at every
    connection. Raises Refused.
    """
    for key, value in values.items():
        if isinstance(value, Mapping):
            check_settings(value, url_keys=url_keys, host_keys=host_keys)
        elif not isinstance(value, str) or not value:
            continue
        elif key in host_keys:
            if private_allowed():
                continue
            try:
                resolve(value, 22, "sftp")
            except OSError:
                continue
        elif (url_keys is None or key in url_keys) and \
                value.lower().startswith(("http://", "https://")):
            concrete = value.replace("{", "").replace("}", "")  # {external_id} placeholders
            try:
                check_url(concrete)
            except OSError:
                continue
        elif url_keys is None and _DATABASE_URL.match(value):
            check_database_url(value)


# --- database hosts (the sql connector) ----------------------------------------------------

_DATABASE_URL = re.compile(r"^(postgres|postgresql|mysql|mariadb|mssql|oracle|cockroachdb)"
                           r"(\+[\w-]+)?://", re.I)
_SOCKET_HOST = "localhost"  # a Unix socket reaches this machine, as localhost would


def database_hosts(url: Any) -> list[str]:
    """Every host a database URL may connect to: the host, libpq's `host`/`hostaddr` query
    parameters (comma lists included); a Unix socket counts as localhost. Empty for SQLite."""
    from sqlalchemy.engine import make_url

    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() == "sqlite":
        return []
    hosts: list[str] = []
    for raw in (url.host, url.query.get("host"), url.query.get("hostaddr"),
                url.query.get("unix_socket")):
        for item in (raw if isinstance(raw, tuple) else [raw]):
            hosts += [h.strip() for h in str(item or "").split(",") if h.strip()]
    if not url.host and "host" not in url.query:  # libpq and PyMySQL then use a local socket
        hosts.append(_SOCKET_HOST)
    return [_SOCKET_HOST if h.startswith("/") else h for h in dict.fromkeys(hosts)]


def check_database_url(url: Any) -> None:
    """Refuse a database URL whose host the guard refuses (the password is never shown).

    A name that does not resolve yet passes; `guard_engine` checks again at each connection.
    """
    if private_allowed():
        return
    try:
        hosts = database_hosts(url)
    except Exception:  # not a URL SQLAlchemy reads: the connector's own validation says so
        return
    for host in hosts:
        try:
            resolve(host, 5432, "database")
        except OSError:
            continue


def guard_engine(engine: Any) -> None:
    """Check the database host before every new connection of a SQLAlchemy engine, and pin
    the connection to the checked address where the driver allows it (libpq's `hostaddr`, so
    TLS still verifies the name; PyMySQL's `host` unless TLS is configured)."""
    from sqlalchemy import event

    if engine.url.get_backend_name() == "sqlite":
        return

    @event.listens_for(engine, "do_connect")
    def _checked(dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if private_allowed():
            return
        try:
            targets = [resolve(h, int(cparams.get("port") or 0) or 5432, "database")
                       for h in database_hosts(engine.url)]
        except socket.gaierror:
            return  # the driver resolves it itself and reports the failure (a retry)
        if len(targets) != 1 or not targets[0].addresses:
            return
        address = targets[0].addresses[0]
        backend = engine.url.get_backend_name()
        if backend == "postgresql" and "hostaddr" not in cparams and cparams.get("host") \
                and not str(cparams["host"]).startswith("/"):
            cparams["hostaddr"] = address
        elif backend in ("mysql", "mariadb") and cparams.get("host") and not cparams.get("ssl") \
                and not cparams.get("unix_socket"):
            cparams["host"] = address


# --- pinned connections --------------------------------------------------------------------

class _Pinned:
    """Connects to the checked address; Host, SNI and certificate checks keep the name."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any
    scheme = "https"

    def __init__(self, *args: Any, pin: Target | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pin = pin
        self.connected_to: str | None = None

    def _addresses(self) -> tuple[str, ...] | None:
        if self.pin is not None and self.pin.addresses:
            addresses = self.pin.addresses
        elif private_allowed():
            return None  # urllib3's own resolution: localhost may be ::1 or 127.0.0.1
        else:
            try:
                addresses = resolve(self.host, self.port, self.scheme).addresses
            except socket.gaierror as exc:
                raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
        if self.scheme == "http" and not private_allowed() and not http_allowed(self.host, addresses):
            raise _http_refused(self.host)
        return addresses

    def _new_conn(self) -> socket.socket:
        addresses = self._addresses()
        if addresses is None:
            sock = super()._new_conn()  # type: ignore[misc]
            self.connected_to = sock.getpeername()[0]
            return sock
        error: OSError | None = None
        for address in addresses:
            try:
                sock = _connection.create_connection(
                    (address, self.port), self.timeout, source_address=self.source_address,
                    socket_options=self.socket_options)
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {self.host} ({address}) timed "
                                          f"out. (connect timeout={self.timeout})") from exc
            except OSError as exc:
                error = exc
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            self.connected_to = address
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection to {self.host} "  # type: ignore[arg-type]
                                       f"({', '.join(addresses)}): {error}") from error


class PinnedHTTPConnection(_Pinned, HTTPConnection):
    scheme = "http"

    def _new_conn(self) -> socket.socket:
        if not private_allowed() and not any(e.http for e in allowed_hosts().entries):
            raise _http_refused(self.host)
        return super()._new_conn()


class PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    scheme = "https"


class PinnedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = PinnedHTTPConnection


class PinnedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = PinnedHTTPSConnection


class GuardedPoolManager(urllib3.PoolManager):
    """A PoolManager whose every new connection is checked and pinned (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool_classes_by_scheme = {"http": PinnedHTTPConnectionPool,
                                       "https": PinnedHTTPSConnectionPool}


def pinned_pool(target: Target, **kwargs: Any) -> HTTPConnectionPool:
    """A connection pool for one checked target: connections go to its address, by its name."""
    cls = PinnedHTTPSConnectionPool if target.scheme == "https" else PinnedHTTPConnectionPool
    return cls(target.host, target.port, pin=target, **kwargs)


@cache
def _adapter_class() -> type:
    """GuardedAdapter, built on first use: listing connector kinds need not import requests."""
    from requests.adapters import HTTPAdapter

    class GuardedAdapter(HTTPAdapter):
        """A requests transport adapter over GuardedPoolManager."""

        def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                             **pool_kwargs: Any) -> None:
            self._pool_connections, self._pool_maxsize = connections, maxsize
            self._pool_block = block
            self.poolmanager = GuardedPoolManager(num_pools=connections, maxsize=maxsize,
                                                  block=block, **pool_kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            raise Refused("proxies are not used for admin-configured URLs (the proxy would "
                          "resolve the host unchecked)")

    return GuardedAdapter


def guard_session(session: requests.Session) -> requests.Session:
    """Mount the guarded adapter on a requests session (also an Authlib OAuth2Session)."""
    session.trust_env = False  # env proxies would resolve the host unchecked
    adapter = _adapter_class()
    session.mount("https://", adapter())
    session.mount("http://", adapter())
    return session


def guarded_session() -> requests.Session:
    """A requests session whose every connection is checked and pinned."""
    import requests

    return guard_session(requests.Session())


def connect_tcp(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP socket to a checked, pinned address of `host` (for non-HTTP protocols: SFTP).

    Raises Refused, or OSError when unreachable.
    """
    if private_allowed():
        return socket.create_connection((host, port), timeout=timeout)
    error: OSError | None = None
    addresses = resolve(host, port, "tcp").addresses
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except TimeoutError:
            raise
        except OSError as exc:
            error = exc
    raise error or OSError(f"no address of {host} answered")
