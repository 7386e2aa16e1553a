"""`require`: the bearer-token guard of API views, answering in the broker's error shape.

A token is either one of ours (broker.identity.server: signature, kid, typ, iss, aud, exp, a
recorded and unrevoked jti, a live client) or an access token of a trusted company issuer
(broker.identity.issuers), whose claims map to a role. The unverified `iss` only picks the
verifier. The view then finds the caller in `g.principal`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from broker.errors import ApiError
from broker.identity.issuers import IssuerDirectory, IssuerUnavailable, unverified_issuer
from broker.identity.roles import Principal, map_role, role_permissions, scope_permissions
from broker.identity.server import AccessToken, TokenService

# The scope a client needs for each permission, named in 403 answers and challenges.
SCOPE_FOR = {"orders:write": "orders:write", "orders:read": "orders:read", "operate": "admin",
             "admin": "admin"}
ROLE_FOR = {"orders:read": "viewer", "operate": "operator", "admin": "admin"}


def _challenge(error: str, description: str, scope: str | None = None) -> dict[str, str]:
    value = f'Bearer error="{error}", error_description="{description}"'
    if scope:
        value += f', scope="{scope}"'
    return {"WWW-Authenticate": value}


def client_principal(token: AccessToken) -> Principal:
    """A broker client: permissions from its scopes; orders of its own source only, or of
    every source for an `admin` client."""
    client, permissions = token.client, scope_permissions(token.get_scope())
    sources = None if "admin" in permissions else frozenset(
        [client.source_id] if client.source_id else [])
    return Principal(actor=client.client_id, display=client.name, permissions=permissions,
                     source_ids=sources, client=client, claims=token.claims)


def issuer_principal(issuer_name: str, rules: Any, claims: dict[str, Any]) -> Principal:
    """A person or service of a company IdP: permissions from the role its claims map to."""
    role = map_role(claims, rules)
    who = claims.get("email") or claims.get("preferred_username") or claims["sub"]
    return Principal(actor=f"{issuer_name}:{claims['sub']}", display=str(who),
                     permissions=role_permissions(role), role=role, claims=claims)


def authenticate(token_string: str) -> Principal | None:
    """The principal of a valid bearer token, else None. Raises ApiError(503) when the
    issuer a token names cannot be reached and none of its keys are cached."""
    tokens: TokenService = current_app.extensions["broker_tokens"]
    directory: IssuerDirectory = current_app.extensions["broker_issuers"]
    iss = unverified_issuer(token_string)
    if iss is None or iss == tokens.issuer:
        token = tokens.find(token_string)
        if token is None or token.is_expired() or token.is_revoked():
            return None
        return client_principal(token)
    try:
        found = directory.verify_access_token(token_string)
    except IssuerUnavailable as exc:
        current_app.logger.warning("token from a trusted issuer not verifiable: %s", exc)
        raise ApiError(503, "issuer_unavailable", "the identity provider that issued this "
                       "token cannot be reached to verify it; try again shortly",
                       headers={"Retry-After": "30"}) from None
    if found is None:
        return None
    issuer, claims = found
    return issuer_principal(issuer.name, issuer.role_rules, claims)


def require(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require a valid bearer token whose caller holds `permission` (broker.identity.roles)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            kind, _, token_string = request.headers.get("Authorization", "").partition(" ")
            if kind.lower() != "bearer" or not token_string.strip():
                raise ApiError(401, "unauthorized", "a bearer token is required",
                               headers=_challenge("invalid_request", "missing bearer token"))
            principal = authenticate(token_string.strip())
            if principal is None:
                raise ApiError(401, "invalid_token", "the access token is invalid or expired",
                               headers=_challenge("invalid_token", "invalid or expired"))
            if not principal.can(permission):
                scope = SCOPE_FOR[permission]
                if principal.client is not None:
                    message = f"this call needs the scope '{scope}'"
                elif permission not in ROLE_FOR:
                    message = "only a broker API client bound to a source may do this"
                elif principal.role is None:
                    message = ("your identity provider's token maps to no broker role; an "
                               "admin adds a role rule with `broker issuers configure`")
                else:
                    message = (f"this call needs the role '{ROLE_FOR[permission]}'; "
                               f"yours is '{principal.role}'")
                raise ApiError(403, "insufficient_scope", message,
                               headers=_challenge("insufficient_scope", "not permitted", scope))
            g.principal = principal
            return view(*args, **kwargs)

        return guarded

    return decorate
