"""OAuth 2.0 authorization server (Authlib): client credentials grant only, for machines.

Client secrets and access tokens are random 256-bit values, so one SHA-256 is a sound
stored form (a slow password hash buys nothing against a full-entropy secret); every
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from flask import Flask
from sqlalchemy import select

from broker.db import Database, utcnow
from broker.models import Client, Token

SCOPES = ("orders:write", "orders:read", "admin")


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
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


@dataclass
class AccessToken(TokenMixin):
    row: Token
    client: Client

    def check_client(self, client: Any) -> bool:
        return client.get_client_id() == self.client.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return max(0, int((self.row.expires_at - utcnow()).total_seconds()))

    def is_expired(self) -> bool:
        return self.row.expires_at <= utcnow()

    def is_revoked(self) -> bool:
        return self.row.revoked or self.client.revoked


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def init_oauth(app: Flask, db: Database, token_ttl: int) -> AuthorizationServer:
    def query_client(client_id: str) -> OAuthClient | None:
        with db.begin() as session:
            row = session.execute(select(Client).where(
                Client.client_id == client_id, Client.revoked.is_(False))).scalar_one_or_none()
        return OAuthClient(row) if row else None

    def save_token(token: dict[str, Any], request: Any) -> None:
        now: datetime = utcnow()
        with db.begin() as session:
            session.add(Token(token_hash=digest(token["access_token"]),
                              client_id=request.client.row.id, scope=token.get("scope", ""),
                              issued_at=now, expires_at=now + timedelta(seconds=token_ttl)))

    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": token_ttl}
    server = AuthorizationServer(app, query_client=query_client, save_token=save_token)
    server.register_grant(ClientCredentialsGrant)
    return server


def find_token(db: Database, token_string: str) -> AccessToken | None:
    with db.begin() as session:
        row = session.execute(select(Token, Client).join(Client, Client.id == Token.client_id)
                              .where(Token.token_hash == digest(token_string))).first()
    return AccessToken(row[0], row[1]) if row else None
