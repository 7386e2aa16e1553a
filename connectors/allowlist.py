"""BROKER_ALLOWED_PRIVATE_HOSTS: the on-premises systems the SSRF guard lets through by name.

An entry is a host name (`erp.lan`), an address (`10.0.4.20`, `fd00::5`) or a network in CIDR
notation (`10.0.4.0/24`), optionally written `http://ENTRY` to allow plain http to it as well
(https is required otherwise). Entries are separated by commas or spaces. Every port of a
listed host is allowed; a path, a port or credentials in an entry are errors, so nobody
believes they narrowed something they did not.

A listed name may resolve to private addresses (a LAN, loopback), never to the cloud metadata
address; an address outside the public internet that no entry lists stays refused, whatever
name leads to it.

The process-wide policy (this list, and whether the guard is off altogether for the test
suite's fakes) lives here too, and connectors.ssrf enforces it. Kept free of heavy imports:
the settings validate the list and the CLI sets the policy without loading an HTTP stack.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


@dataclass(frozen=True)
class Entry:
    """One allowed host name or network; `http` also allows plain http to it."""

    name: str | None = None
    network: IPNetwork | None = None
    http: bool = False

    def __str__(self) -> str:
        target = self.name or (str(self.network.network_address) if self.network and
                               self.network.num_addresses == 1 else str(self.network))
        return ("http://" if self.http else "") + target

    def covers(self, address: IPAddress) -> bool:
        return self.network is not None and address.version == self.network.version \
            and address in self.network


def normal_name(host: str) -> str:
    """A host name as entries are compared: lower case, without brackets or a final dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def parse_entry(text: str) -> Entry:
    """One entry; ValueError says what is wrong with it."""
    raw = text.strip()
    http = raw.lower().startswith("http://")
    rest = raw[7:] if http else raw[8:] if raw.lower().startswith("https://") else raw
    if not rest or "://" in rest:
        raise ValueError(f"{raw!r} is not a host name, an address or a network (CIDR)")
    if "/" in rest:
        try:
            return Entry(network=ipaddress.ip_network(rest, strict=False), http=http)
        except ValueError:
            raise ValueError(f"{raw!r}: a path or a malformed network; give a host name, an "
                             "address or a network like 10.0.4.0/24") from None
    if "@" in rest:
        raise ValueError(f"{raw!r}: credentials do not belong in the allow-list")
    try:
        address = ipaddress.ip_address(rest.strip("[]"))
    except ValueError:
        name = normal_name(rest)
        if ":" in name:
            raise ValueError(f"{raw!r}: give no port (every port of a listed host is allowed)") from None
        if not _NAME.match(name):
            raise ValueError(f"{raw!r} is not a valid host name") from None
        return Entry(name=name, http=http)
    return Entry(network=ipaddress.ip_network(address), http=http)


def parse_entries(text: str | Iterable[str]) -> tuple[Entry, ...]:
    """Entries of a comma- or space-separated list (or of a list of entries)."""
    items = text.replace(",", " ").split() if isinstance(text, str) else \
        [part for item in text for part in str(item).replace(",", " ").split()]
    return tuple(dict.fromkeys(parse_entry(item) for item in items))


@dataclass(frozen=True)
class AllowList:
    """The parsed allow-list; empty allows nothing."""

    entries: tuple[Entry, ...] = ()

    def by_name(self, host: str) -> Entry | None:
        """The entry that names this host (an address literal counts as a name too)."""
        name = normal_name(host)
        found = next((e for e in self.entries if e.name == name), None)
        if found is None:
            try:
                literal = ipaddress.ip_address(name.split("%")[0])
            except ValueError:
                return None
            found = self.by_address(literal)
        return found

    def by_address(self, address: IPAddress) -> Entry | None:
        """The entry whose network holds this address (an http one first)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        covering = [e for e in self.entries if e.covers(address)]
        return next((e for e in covering if e.http), covering[0] if covering else None)

    def __bool__(self) -> bool:
        return bool(self.entries)


# --- the process-wide policy -----------------------------------------------------------

_lock = threading.Lock()
_allow_private = False
_allowed = AllowList()


def configure(*, allow_private: bool, allowed: Any = None) -> bool:
    """Set the process-wide policy; returns the previous `allow_private` (to restore it).

    `allowed` is the allow-list (entries or their text, see connectors.allowlist); None keeps
    the current one.
    """
    global _allow_private, _allowed
    with _lock:
        previous, _allow_private = _allow_private, bool(allow_private)
        if allowed is not None:
            _allowed = allowed if isinstance(allowed, AllowList) else AllowList(parse_entries(allowed))
    return previous


def private_allowed() -> bool:
    """True when the guard is off: every address and plain http allowed (tests only)."""
    return _allow_private


def allowed_hosts() -> AllowList:
    """The allow-list in force (BROKER_ALLOWED_PRIVATE_HOSTS)."""
    return _allowed


@contextmanager
def policy(*, allow_private: bool, allowed: Any = ()) -> Iterator[None]:
    """The policy for a block (tests), restored afterwards: exactly these allowed hosts (none
    by default, whatever a Runtime configured before)."""
    before = _allowed
    previous = configure(allow_private=allow_private, allowed=allowed)
    try:
        yield
    finally:
        configure(allow_private=previous, allowed=before)
