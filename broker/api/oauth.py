"""The authorization server's endpoints: token (RFC 6749 §4.4), introspection (RFC 7662) and
revocation (RFC 7009). Errors follow RFC 6749 §5.2 (`{"error": "invalid_client", ...}`), as
OAuth client libraries expect, rather than the broker's API error shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response, current_app, request
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker.api.common import runtime
from broker.services import throttle

blp = Blueprint("oauth", __name__, description="OAuth 2.0 authorization server")


def _form(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    credentials = {"client_id": {"type": "string"}, "client_secret": {"type": "string"}}
    return {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": required, "properties": {**properties, **credentials}}}}}


_TOKEN = {"token": {"type": "string"}, "token_type_hint": {"type": "string", "enum": ["access_token"]}}
_CLIENT_AUTH = {"401": {"description": "client authentication failed (invalid_client)"},
                "429": {"description": "too many requests or failed client authentications from "
                                       "this address; wait `Retry-After` seconds"}}


def _throttled(respond: Callable[[], Response]) -> Response:
    """Every client-authenticated endpoint: at most TOKEN_REQUESTS per client address, and
    TOKEN_FAILURES failed authentications lock the address out (429 with Retry-After), so
    guessing client secrets is slow and a flood cannot mint tokens without end."""
    db, address = runtime().db, request.remote_addr or "unknown"
    throttle.admit(db, throttle.TOKEN_REQUESTS, address, "requests to the OAuth endpoints",
                   locked_by=[throttle.TOKEN_FAILURES.key(address)])
    response = respond()
    if response.status_code == 401:
        throttle.record(db, throttle.TOKEN_FAILURES, address)
    return response


@blp.route("/oauth/token", methods=["POST"])
@blp.doc(summary="Issue an access token (client_credentials; HTTP Basic or form credentials)",
         description="The access token is a JWT (RFC 9068, ES256) verifiable with /.well-known/jwks.json.",
         security=[], requestBody=_form(["grant_type"], {
             "grant_type": {"type": "string", "enum": ["client_credentials"]}, "scope": {"type": "string"}}),
         responses=_CLIENT_AUTH)
def issue_token() -> ResponseReturnValue:
    return _throttled(current_app.extensions["broker_oauth"].create_token_response)


@blp.route("/oauth/introspect", methods=["POST"])
@blp.doc(summary="Introspect an access token (RFC 7662; client-authenticated)",
         description="A client may introspect its own tokens, an `admin` client any token. An "
                     "invalid, expired, revoked, unknown or foreign token is `{\"active\": false}`.",
         security=[], requestBody=_form(["token"], _TOKEN),
         responses={"200": {"description": "`{\"active\": true, scope, client_id, sub, exp, iat, iss, "
                                           "aud, jti, token_type}` or `{\"active\": false}`"},
                    **_CLIENT_AUTH})
def introspect_token() -> ResponseReturnValue:
    server = current_app.extensions["broker_oauth"]
    return _throttled(lambda: server.create_endpoint_response("introspection"))


@blp.route("/oauth/revoke", methods=["POST"])
@blp.doc(summary="Revoke an access token (RFC 7009; client-authenticated)",
         description="200 also for unknown or already invalid tokens; a client may revoke only its own "
                     "tokens (400 invalid_grant for another client's).",
         security=[], requestBody=_form(["token"], _TOKEN),
         responses={"200": {"description": "revoked, or nothing to revoke"}, **_CLIENT_AUTH})
def revoke_token() -> ResponseReturnValue:
    server = current_app.extensions["broker_oauth"]
    return _throttled(lambda: server.create_endpoint_response("revocation"))
