"""Discovery documents: the JWK Set (public keys only) and RFC 8414 server metadata."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint

from broker.identity.server import AUTH_METHODS, SCOPES, TokenService

blp = Blueprint("wellknown", __name__, description="Authorization server discovery")

# Verifiers re-fetch on an unknown kid; a minute of caching spares the gateway the rest.
JWKS_MAX_AGE = 60


def server_metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 metadata. No authorization endpoint (client credentials only), hence no
    response types."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "scopes_supported": list(SCOPES),
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "service_documentation": f"{issuer}/api/openapi.json",
    }


@blp.route("/.well-known/jwks.json", methods=["GET"])
@blp.doc(summary="The public keys that sign access tokens (JWK Set, RFC 7517)", security=[])
def jwks() -> ResponseReturnValue:
    tokens: TokenService = current_app.extensions["broker_tokens"]
    response = jsonify(tokens.keys.jwks())
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


@blp.route("/.well-known/oauth-authorization-server", methods=["GET"])
@blp.doc(summary="Authorization server metadata (RFC 8414)", security=[])
def metadata() -> ResponseReturnValue:
    tokens: TokenService = current_app.extensions["broker_tokens"]
    response = jsonify(server_metadata(tokens.issuer))
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
