"""`require_scope`: bearer-token guard for API views, answering in the broker's error shape.

The token must be one of our JWT access tokens (signature, alg, kid, typ, iss, aud, exp:
broker.identity.tokens.verify) whose jti is recorded and not revoked, for a live client.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from authlib.oauth2.rfc6750 import BearerTokenValidator
from flask import current_app, g, request

from broker.errors import ApiError
from broker.identity.server import AccessToken, TokenService


class _Validator(BearerTokenValidator):
    def authenticate_token(self, token_string: str) -> AccessToken | None:
        tokens: TokenService = current_app.extensions["broker_tokens"]
        return tokens.find(token_string)


_validator = _Validator()


def _challenge(error: str, description: str, scope: str | None = None) -> dict[str, str]:
    value = f'Bearer error="{error}", error_description="{description}"'
    if scope:
        value += f', scope="{scope}"'
    return {"WWW-Authenticate": value}


def require_scope(scope: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require a valid, unexpired, unrevoked bearer token carrying `scope`."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            auth = request.headers.get("Authorization", "")
            kind, _, token_string = auth.partition(" ")
            if kind.lower() != "bearer" or not token_string:
                raise ApiError(401, "unauthorized", "a bearer token is required",
                               headers=_challenge("invalid_request", "missing bearer token"))
            token = _validator.authenticate_token(token_string.strip())
            if token is None or token.is_expired() or token.is_revoked():
                raise ApiError(401, "invalid_token", "the access token is invalid or expired",
                               headers=_challenge("invalid_token", "invalid or expired"))
            if _validator.scope_insufficient(token.get_scope(), [scope]):
                raise ApiError(403, "insufficient_scope", f"this call needs the scope '{scope}'",
                               headers=_challenge("insufficient_scope", "scope missing", scope))
            g.token = token
            return view(*args, **kwargs)

        return guarded

    return decorate
