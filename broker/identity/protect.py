"""`require`: the bearer-token guard of API views, answering in the broker's error shape.

A token is either one of ours (broker.identity.server: signature, kid, typ, iss, aud, exp, a
recorded and unrevoked jti, a live client) or an access token of a trusted company issuer
(broker.identity.issuers), whose claims map to a role. The unverified `iss` only picks the
verifier. The view then finds the caller in `g.principal`. A refused token is logged with its
reason (`reason=wrong_audience`, never the token) and the 401 says the reason too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import current_app, g, request

from broker.errors import ApiError
from broker.identity.issuers import IssuerDirectory, IssuerUnavailable, unverified_issuer
from broker.identity.roles import Principal, map_role, role_permissions, scope_permissions
from broker.identity.server import AccessToken, TokenService
from broker.identity.tokens import TokenRefused

log = logging.getLogger(__name__)

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


def authenticate(token_string: str) -> Principal:
    """The principal of a valid bearer token. Raises TokenRefused with the reason, or
    ApiError(503) when the issuer a token names cannot be reached and none of its keys are
    cached."""
    tokens: TokenService = current_app.extensions["broker_tokens"]
    directory: IssuerDirectory = current_app.extensions["broker_issuers"]
    iss = unverified_issuer(token_string)
    if iss is None or iss == tokens.issuer:
        return client_principal(tokens.check(token_string, live=True))
    try:
        issuer, claims = directory.check_access_token(token_string)
    except IssuerUnavailable as exc:
        log.warning("token from a trusted issuer not verifiable: %s", exc)
        raise ApiError(503, "issuer_unavailable", "the identity provider that issued this "
                       "token cannot be reached to verify it; try again shortly",
                       headers={"Retry-After": "30"}) from None
    return issuer_principal(issuer.name, issuer.role_rules, claims)


def refused(exc: TokenRefused, token_string: str) -> ApiError:
    """Log why a token was refused (who it claims to be, never the token) and answer 401
    with the reason, so a wrong audience no longer looks like an expiry."""
    log.warning("bearer token refused: reason=%s %s (iss=%s)", exc.reason, exc.detail,
                unverified_issuer(token_string) or "-", extra={"reason": exc.reason})
    described = REASONS.get(exc.reason, exc.reason.replace("_", " "))
    return ApiError(401, "invalid_token", f"the access token is refused: {described}",
                    headers=_challenge("invalid_token", described))


# What the 401 says for each reason (RFC 6750 error_description): enough for the caller's
# developer to fix the request, nothing about our keys.
REASONS = {"expired": "it has expired", "wrong_audience": "its audience (aud) is not this API",
           "wrong_issuer": "its issuer (iss) is not the one expected",
           "untrusted_issuer": "its issuer is not trusted by this broker",
           "unknown_key": "it is signed with an unknown key", "bad_signature": "its signature is invalid",
           "algorithm_not_allowed": "its algorithm is not allowed", "wrong_type": "its typ is not at+jwt",
           "forbidden_header": "its header names its own key", "revoked": "it has been revoked",
           "unknown_token": "it was not issued by this broker", "malformed": "it is not a JWT",
           "missing_claim": "a required claim is missing", "not_yet_valid": "it is not valid yet"}


def require(permission: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require a valid bearer token whose caller holds `permission` (broker.identity.roles)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            kind, _, token_string = request.headers.get("Authorization", "").partition(" ")
            if kind.lower() != "bearer" or not token_string.strip():
                raise ApiError(401, "unauthorized", "a bearer token is required",
                               headers=_challenge("invalid_request", "missing bearer token"))
            try:
                principal = authenticate(token_string.strip())
            except TokenRefused as exc:
                raise refused(exc, token_string.strip()) from None
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
