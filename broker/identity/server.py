"""OAuth 2.0 authorization server (Authlib): client credentials grant, JWT access tokens
(RFC 9068), introspection (RFC 7662) and revocation (RFC 7009).

Client secrets are random 256-bit values, so one SHA-256 is a sound stored form (a slow
password hash buys nothing against a full-entropy secret); every comparison is constant-time.
Access tokens are self-contained JWTs, but each issued `jti` is recorded (as its SHA-256) in
`tokens` so a token can be revoked and a revoked or deleted client's tokens stop working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Flask
from sqlalchemy import select, update

from broker.db import utcnow
from broker.identity.keys import KeyStore
from broker.identity.tokens import TokenRefused, check, mint
from broker.models import Client, Token

if TYPE_CHECKING:
    from broker.runtime import Runtime

SCOPES = ("orders:write", "orders:read", "admin")
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def new_client_credentials() -> tuple[str, str]:
    return "cl_" + secrets.token_urlsafe(12), "cs_" + secrets.token_urlsafe(32)


@dataclass
class OAuthClient(ClientMixin):
    row: Client

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.scope.split())
        if not scope:
            return self.row.scope
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(digest(client_secret), self.row.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


@dataclass
class AccessToken(TokenMixin):
    """A verified JWT with its `tokens` row and client (views read `client.source_id`)."""

    row: Token
    client: Client
    claims: dict[str, Any] = field(default_factory=dict)

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.client.client_id)

    def get_scope(self) -> str:
        return str(self.claims.get("scope", self.row.scope))

    def get_expires_in(self) -> int:
        return max(0, int((self.row.expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.row.revoked or self.client.revoked


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS


class TokenService:
    """Mints, records, finds and revokes the broker's access tokens."""

    def __init__(self, rt: Runtime) -> None:
        self.db = rt.db
        self.ttl = rt.settings.token_ttl
        self.issuer = rt.settings.public_url
        self.audience = rt.settings.public_url + "/api"
        self.keys = KeyStore(rt.db, rt.box, self.ttl)

    def generate(self, grant_type: str, client: OAuthClient, user: Any = None, scope: str | None = None,
                 expires_in: int | None = None, include_refresh_token: bool = True) -> dict[str, Any]:
        """Authlib's token generator hook: a Bearer token whose value is a signed JWT carrying
        the requested scopes the client is allowed (all of them when none are requested)."""
        granted = client.get_allowed_scope(scope)
        access_token, _ = mint(self.keys, issuer=self.issuer, audience=self.audience,
                               client_id=client.get_client_id(), scope=granted, ttl=self.ttl)
        return {"token_type": "Bearer", "access_token": access_token, "expires_in": self.ttl,
                "scope": granted}

    def save(self, token: dict[str, Any], request: Any) -> None:
        """Record the jti just minted (read back from our own token: no second channel)."""
        payload = token["access_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        with self.db.begin() as session:
            session.add(Token(token_hash=digest(claims["jti"]), client_id=request.client.row.id,
                              scope=claims["scope"], issued_at=_at(claims["iat"]),
                              expires_at=_at(claims["exp"])))

    def find(self, token_string: str) -> AccessToken | None:
        """The verified token with its record, or None (forged, foreign, expired, unknown)."""
        try:
            return self.check(token_string)
        except TokenRefused:
            return None

    def check(self, token_string: str, *, live: bool = False) -> AccessToken:
        """The verified token with its record; TokenRefused says why not. With `live`, a
        revoked or expired record (or client) is refused too."""
        claims = check(self.keys, token_string, issuer=self.issuer, audience=self.audience)
        with self.db.begin() as session:
            row = session.execute(select(Token, Client).join(Client, Client.id == Token.client_id)
                                  .where(Token.token_hash == digest(claims["jti"]))).first()
        if row is None or row[1].client_id != claims["client_id"]:
            raise TokenRefused("unknown_token", f"jti of client {claims['client_id']} was never issued here")
        token = AccessToken(row[0], row[1], claims)
        if live and token.is_revoked():
            raise TokenRefused("revoked", f"client {claims['client_id']}"
                               + (" (the client is revoked)" if token.client.revoked else ""))
        if live and token.is_expired():
            raise TokenRefused("expired", f"client {claims['client_id']}")
        return token

    def revoke(self, token: AccessToken) -> None:
        with self.db.begin() as session:
            session.execute(update(Token).where(Token.id == token.row.id).values(revoked=True))


def _at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class _FindsTokens:
    """Both endpoints authenticate clients the same way and look tokens up in our key set."""

    CLIENT_AUTH_METHODS = AUTH_METHODS

    def __init__(self, tokens: TokenService) -> None:
        super().__init__()
        self.tokens = tokens

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | None:
        return self.tokens.find(token_string)


class BrokerIntrospection(_FindsTokens, IntrospectionEndpoint):
    """RFC 7662. A client may introspect its own tokens; an `admin` client any token.
    Everything else — forged, expired, revoked, unknown, someone else's — is {"active": false}."""

    def check_permission(self, token: AccessToken, client: OAuthClient, request: Any) -> bool:
        return token.check_client(client) or "admin" in client.row.scope.split()

    def introspect_token(self, token: AccessToken) -> dict[str, Any]:
        claims = token.claims
        return {"active": True, "scope": claims["scope"], "client_id": claims["client_id"],
                "sub": claims["sub"], "exp": claims["exp"], "iat": claims["iat"],
                "iss": claims["iss"], "aud": claims["aud"], "jti": claims["jti"],
                "token_type": "Bearer"}


class BrokerRevocation(_FindsTokens, RevocationEndpoint):
    """RFC 7009. Unknown or already invalid tokens answer 200; another client's token is refused."""

    def revoke_token(self, token: AccessToken, request: Any) -> None:
        self.tokens.revoke(token)


def init_oauth(app: Flask, rt: Runtime) -> AuthorizationServer:
    """The authorization server; its TokenService is app.extensions["broker_tokens"]."""
    tokens = TokenService(rt)

    def query_client(client_id: str) -> OAuthClient | None:
        with rt.db.begin() as session:
            row = session.execute(select(Client).where(
                Client.client_id == client_id, Client.revoked.is_(False))).scalar_one_or_none()
        return OAuthClient(row) if row else None

    server = AuthorizationServer(app, query_client=query_client, save_token=tokens.save)
    server.register_token_generator("default", tokens.generate)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(BrokerIntrospection(tokens))
    server.register_endpoint(BrokerRevocation(tokens))
    app.extensions["broker_tokens"] = tokens
    return server
