"""Who is calling and what they may do: one `Principal` for API clients, company-IdP tokens
and console users alike, so every permission check reads the same way.

Permissions are named for what they allow. Machine clients get them from OAuth scopes;
people (and IdP tokens) from roles, each role including the ones below it. Anything not
granted is denied: a token whose claims match no role rule gets no role and no access.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ROLES = ("viewer", "operator", "admin")  # ascending: each includes what the previous may do
PERMISSIONS = {
    "orders:read": "viewer",   # read orders, deliveries, health
    "operate": "operator",     # replay and retry deliveries, resolve parked orders
    "admin": "admin",          # change configuration, keys, clients, issuers, consent
}
# What each OAuth scope of a machine client allows (`admin` includes operating).
SCOPE_PERMISSIONS = {"orders:write": {"orders:write"}, "orders:read": {"orders:read"},
                     "admin": {"orders:read", "operate", "admin"}}


def role_permissions(role: str | None) -> frozenset[str]:
    if role not in ROLES:
        return frozenset()
    rank = ROLES.index(role)
    return frozenset(p for p, needs in PERMISSIONS.items() if ROLES.index(needs) <= rank)


def scope_permissions(scope: str) -> frozenset[str]:
    return frozenset(p for s in scope.split() for p in SCOPE_PERMISSIONS.get(s, ()))


def highest(roles: Iterable[str]) -> str | None:
    ranked = [ROLES.index(r) for r in roles if r in ROLES]
    return ROLES[max(ranked)] if ranked else None


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):  # e.g. realm_access.roles (Keycloak)
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _matches(value: Any, expected: str, claim: str) -> bool:
    if isinstance(value, list):
        return expected in (str(v) for v in value)
    if isinstance(value, str) and claim.rsplit(".", 1)[-1] in ("scope", "scp"):
        return expected in value.split()
    if isinstance(value, bool):
        return expected == str(value).lower()
    return value is not None and str(value) == expected


def map_role(claims: Mapping[str, Any], rules: Iterable[Mapping[str, str]]) -> str | None:
    """The highest role whose rule matches the claims; None (no access) when none does."""
    return highest(rule["role"] for rule in rules
                   if _matches(_claim(claims, rule["claim"]), rule["value"], rule["claim"]))


def parse_rule(text: str) -> dict[str, str]:
    """`ROLE=CLAIM:VALUE`, e.g. `admin=groups:broker-admins` or `viewer=scope:broker.read`."""
    role, sep, rest = text.partition("=")
    claim, sep2, value = rest.partition(":")
    role, claim, value = role.strip(), claim.strip(), value.strip()
    if not (sep and sep2 and claim and value) or role not in ROLES:
        raise ValueError(f"role rule {text!r}: expected ROLE=CLAIM:VALUE with ROLE one of "
                         f"{', '.join(ROLES)}, e.g. admin=groups:broker-admins")
    return {"role": role, "claim": claim, "value": value}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `actor` is what the audit log records."""

    actor: str
    display: str
    permissions: frozenset[str]
    role: str | None = None
    source_ids: frozenset[str] | None = None  # None: every source; a client: its own only
    client: Any = None  # the Client row of a broker-issued token
    claims: Mapping[str, Any] = field(default_factory=dict)

    def can(self, permission: str) -> bool:
        return permission in self.permissions
