"""The authorization server's tokens: RFC 9068 JWTs, JWKS, key rotation, RFC 8414 metadata,
RFC 7662 introspection and RFC 7009 revocation, against the real app and database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness import wait_until
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select, update

from broker.app import build_app
from broker.db import utcnow
from broker.identity.server import digest
from broker.models import AuditEntry, SigningKey, Token
from broker.runtime import Runtime
from broker.settings import ConfigError, load_settings

ORDERS = "/api/v1/orders"


# --- helpers ---------------------------------------------------------------------------

def create_client(stack: Any, name: str, scope: str = "orders:write orders:read") -> dict[str, Any]:
    return stack.cli("clients", "create", name, "--scope", scope, "--json")


def fetch_token(client_app: Any, client: dict[str, Any]) -> str:
    response = client_app.post("/oauth/token", data={"grant_type": "client_credentials"},
                               auth=(client["client_id"], client["client_secret"]))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.json["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return unb64(header), unb64(payload)


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join([b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)])


def our_private_key(stack: Any, kid: str) -> ECKey:
    """The broker's real private key, as only an insider could have it: forging with it
    proves each claim check works on its own, not merely the signature check."""
    with stack.runtime.db.begin() as session:
        row = session.execute(select(SigningKey).where(SigningKey.kid == kid)).scalar_one()
        return ECKey.import_key(stack.runtime.box.decrypt(row.private_encrypted))


def sign(header: dict[str, Any], claims: dict[str, Any], key: Any, alg: str = "ES256") -> str:
    return jwt.encode(header, claims, key, algorithms=[alg])


def api_status(stack: Any, token: str) -> int:
    return stack.client.get(ORDERS, headers=bearer(token)).status_code


def introspect(stack: Any, client: dict[str, Any] | None, token: str, **form: str) -> Any:
    auth = (client["client_id"], client["client_secret"]) if client else None
    return stack.client.post("/oauth/introspect", data={"token": token, **form}, auth=auth)


def revoke(stack: Any, client: dict[str, Any] | None, token: str) -> Any:
    auth = (client["client_id"], client["client_secret"]) if client else None
    return stack.client.post("/oauth/revoke", data={"token": token}, auth=auth)


def jwks(stack: Any) -> dict[str, Any]:
    response = stack.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.json


def kids(stack: Any) -> set[str]:
    return {key["kid"] for key in jwks(stack)["keys"]}


class AttackerJwks:
    """An attacker's JWKS on loopback, counting fetches: the broker must never ask it."""

    def __init__(self, key: ECKey) -> None:
        self.hits = 0
        document = json.dumps({"keys": [key.as_dict(private=False)]}).encode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"

    def close(self) -> None:
        self.server.shutdown()


# --- token shape and JWKS --------------------------------------------------------------

def test_access_token_is_an_rfc9068_jwt_verifiable_with_the_jwks(stack):
    client = create_client(stack, "shape-app", "orders:read")
    token = fetch_token(stack.client, client)
    header, claims = parts(token)
    public_url = stack.settings.public_url

    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": header["kid"]}
    assert claims["iss"] == public_url
    assert claims["aud"] == public_url + "/api"
    assert claims["sub"] == claims["client_id"] == client["client_id"]
    assert claims["scope"] == "orders:read"
    assert claims["exp"] - claims["iat"] == stack.settings.token_ttl
    assert abs(claims["iat"] - time.time()) < 10
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 22

    document = jwks(stack)
    assert [key["kid"] for key in document["keys"]] == [header["kid"]]
    for key in document["keys"]:
        assert key["kty"] == "EC" and key["alg"] == "ES256" and key["use"] == "sig"
        assert "d" not in key, "the JWKS must carry public keys only"
    verified = jwt.decode(token, KeySet.import_key_set(document), algorithms=["ES256"])
    assert verified.claims == claims

    with stack.runtime.db.begin() as session:
        row = session.execute(select(Token).where(Token.token_hash == digest(claims["jti"]))).scalar_one()
        assert row.scope == "orders:read" and not row.revoked
        signing = session.execute(select(SigningKey)).scalar_one()
    assert token not in json.dumps(signing.public_jwk) and "d" not in signing.public_jwk
    assert "\"d\"" not in signing.private_encrypted, "private key must be stored encrypted"
    assert api_status(stack, token) == 200


def test_the_gateway_decrypts_the_signing_key_once_not_per_request(stack):
    client = create_client(stack, "busy-app")
    box = stack.runtime.box
    calls = []
    original = box.decrypt

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    box.decrypt = counting
    try:
        tokens = [fetch_token(stack.client, client) for _ in range(5)]
        for token in tokens:
            assert api_status(stack, token) == 200
    finally:
        del box.decrypt
    assert len(calls) <= 1, f"the private key was decrypted {len(calls)} times"


def test_token_ttl_above_900_seconds_is_refused(tmp_path: Path):
    env = {"BROKER_DATA_DIR": str(tmp_path)}
    assert load_settings({**env, "BROKER_TOKEN_TTL": "900"}).token_ttl == 900
    with pytest.raises(ConfigError, match="BROKER_TOKEN_TTL"):
        load_settings({**env, "BROKER_TOKEN_TTL": "901"})


# --- forged tokens ---------------------------------------------------------------------

def test_forged_tokens_are_all_refused(stack):
    client = create_client(stack, "victim-app")
    admin = create_client(stack, "auditor", "admin")
    token = fetch_token(stack.client, client)
    header, claims = parts(token)
    ours = our_private_key(stack, header["kid"])
    attacker = ECKey.generate_key("P-256", private=True)
    attacker_kid = attacker.thumbprint()
    attacker_jwk = {**attacker.as_dict(private=False), "kid": attacker_kid}
    public_pem = ours.as_pem(private=False)
    now = int(time.time())
    jku = AttackerJwks(attacker)

    def hs256_with_public_key() -> str:
        head = {"alg": "HS256", "typ": "at+jwt", "kid": header["kid"]}
        signing_input = f"{b64(json.dumps(head).encode())}.{b64(json.dumps(claims).encode())}"
        mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def tampered() -> str:
        head, _, signature = token.split(".")
        return f"{head}.{b64(json.dumps({**claims, 'scope': 'orders:write orders:read admin'}).encode())}" \
               f".{signature}"

    # Each forgery keeps the real jti (its row exists), so only the check under test stops it.
    forgeries = {
        "alg none": unsigned({"alg": "none", "typ": "at+jwt", "kid": header["kid"]}, claims),
        "alg none without kid": unsigned({"alg": "none", "typ": "at+jwt"}, claims),
        "HS256 keyed with our public key": hs256_with_public_key(),
        "jwk header with attacker key": sign(
            {"alg": "ES256", "typ": "at+jwt", "kid": attacker_kid, "jwk": attacker_jwk}, claims, attacker),
        "jwk header under our kid": sign(
            {"alg": "ES256", "typ": "at+jwt", "kid": header["kid"], "jwk": attacker_jwk}, claims, attacker),
        "jwk header on a token we signed": sign({**header, "jwk": attacker_jwk}, claims, ours),
        "jku header pointing elsewhere": sign(
            {"alg": "ES256", "typ": "at+jwt", "kid": attacker_kid, "jku": jku.url}, claims, attacker),
        "x5u header pointing elsewhere": sign(
            {"alg": "ES256", "typ": "at+jwt", "kid": attacker_kid, "x5u": jku.url}, claims, attacker),
        "typ JWT": sign({**header, "typ": "JWT"}, claims, ours),
        "no typ": sign({"alg": "ES256", "kid": header["kid"]}, claims, ours),
        "wrong iss": sign(header, {**claims, "iss": "https://evil.example"}, ours),
        "wrong aud": sign(header, {**claims, "aud": "https://other.example/api"}, ours),
        "no aud": sign(header, {k: v for k, v in claims.items() if k != "aud"}, ours),
        "expired": sign(header, {**claims, "iat": now - 2000, "exp": now - 120}, ours),
        "issued in the future": sign(header, {**claims, "iat": now + 600, "exp": now + 900}, ours),
        "unknown kid, attacker key": sign({**header, "kid": attacker_kid}, claims, attacker),
        "unknown kid, our key": sign({**header, "kid": "not-a-key-of-ours"}, claims, ours),
        "tampered payload": tampered(),
        "sub differs from client_id": sign(header, {**claims, "sub": "cl_someone_else"}, ours),
        "garbage": "not.a.jwt",
        "empty segments": "..",
    }
    try:
        # The control: the same re-signing with nothing changed is accepted, so a refusal
        # below is the check under test, not the way the test signs.
        control = sign(header, claims, ours)
        assert api_status(stack, control) == 200
        assert introspect(stack, client, control).json["active"] is True

        let_through = {}
        for name, forged in forgeries.items():
            response = stack.client.get(ORDERS, headers=bearer(forged))
            if response.status_code != 401 or response.json["error"]["code"] != "invalid_token":
                let_through[name] = response.status_code
            answer = introspect(stack, admin, forged)
            if answer.status_code != 200 or answer.json != {"active": False}:
                let_through[name + " (introspection)"] = answer.get_data(as_text=True)
        assert not let_through, f"forged tokens accepted: {let_through}"
        assert jku.hits == 0, "the broker fetched a key from a URL named in a token header"
    finally:
        jku.close()


# --- rotation --------------------------------------------------------------------------

def test_rotation_keeps_old_tokens_valid_until_their_key_is_unpublished(db_stack):
    stack = db_stack
    client = create_client(stack, "rotating-app")
    old_token = fetch_token(stack.client, client)
    old_kid = parts(old_token)[0]["kid"]

    # A second gateway process on the same database (its own key cache).
    other_rt = Runtime(stack.settings)
    other = build_app(stack.settings, runtime=other_rt, configure_logging=False).test_client()
    try:
        assert parts(fetch_token(other, client))[0]["kid"] == old_kid

        before = utcnow()
        report = stack.cli("keys", "rotate", "--json")
        new_kid = report["kid"]
        assert new_kid != old_kid and report["retired"] == [old_kid]
        publish_until = datetime.fromisoformat(report["publish_until"])
        assert publish_until >= before + timedelta(seconds=stack.settings.token_ttl)

        assert api_status(stack, old_token) == 200, "a token signed before the rotation still works"
        assert kids(stack) == {old_kid, new_kid}
        new_token = fetch_token(stack.client, client)
        assert parts(new_token)[0]["kid"] == new_kid
        assert api_status(stack, new_token) == 200

        # The other gateway accepts the new kid at once and signs with it within seconds.
        assert other.get(ORDERS, headers=bearer(new_token)).status_code == 200
        wait_until(lambda: parts(fetch_token(other, client))[0]["kid"] == new_kid, timeout=15,
                   message="second gateway picks up the rotated key")

        with stack.runtime.db.begin() as session:
            audit = session.execute(select(AuditEntry).where(
                AuditEntry.action == "signing_key.rotate")).scalar_one()
            assert audit.target == new_kid and audit.actor.startswith("cli:")

        # Once the old key's last token has expired, it leaves the JWKS and its tokens die.
        with stack.runtime.db.begin() as session:
            session.execute(update(SigningKey).where(SigningKey.kid == old_kid)
                            .values(publish_until=utcnow() - timedelta(seconds=1)))
        wait_until(lambda: kids(stack) == {new_kid}, timeout=15, message="old key unpublished")
        assert api_status(stack, old_token) == 401
        assert api_status(stack, new_token) == 200

        # The next rotation deletes the unpublished key's row (and its private half).
        report = stack.cli("keys", "rotate", "--json")
        assert report["dropped"] == 1 and report["retired"] == [new_kid]
        with stack.runtime.db.begin() as session:
            left = set(session.execute(select(SigningKey.kid)).scalars())
        assert left == {new_kid, report["kid"]}
    finally:
        other_rt.close()


# --- introspection ---------------------------------------------------------------------

def test_introspection_reports_active_tokens_and_nothing_else(stack):
    owner = create_client(stack, "intro-app", "orders:read")
    stranger = create_client(stack, "stranger-app", "orders:read")
    admin = create_client(stack, "intro-admin", "admin")
    token = fetch_token(stack.client, owner)
    _, claims = parts(token)

    response = introspect(stack, owner, token)
    assert response.status_code == 200
    assert response.json == {"active": True, "scope": "orders:read", "client_id": owner["client_id"],
                             "sub": owner["client_id"], "exp": claims["exp"], "iat": claims["iat"],
                             "iss": stack.settings.public_url, "aud": stack.settings.public_url + "/api",
                             "jti": claims["jti"], "token_type": "Bearer"}
    assert response.headers["Cache-Control"] == "no-store"
    # client_secret_post works too, and an admin client may introspect anyone's token.
    form = introspect(stack, None, token, client_id=owner["client_id"], client_secret=owner["client_secret"])
    assert form.json["active"] is True
    assert introspect(stack, admin, token).json["active"] is True
    # Another client learns nothing about a token that is not its own.
    assert introspect(stack, stranger, token).json == {"active": False}

    for junk in ("garbage", "a.b.c", "x" * 9000, token[:-4] + "AAAA"):
        assert introspect(stack, admin, junk).json == {"active": False}

    expired = fetch_token(stack.client, owner)
    with stack.runtime.db.begin() as session:
        session.execute(update(Token).where(Token.token_hash == digest(parts(expired)[1]["jti"]))
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    assert introspect(stack, owner, expired).json == {"active": False}

    unknown = fetch_token(stack.client, owner)
    with stack.runtime.db.begin() as session:
        session.execute(Token.__table__.delete().where(
            Token.token_hash == digest(parts(unknown)[1]["jti"])))
    assert introspect(stack, owner, unknown).json == {"active": False}
    assert api_status(stack, unknown) == 401


def test_introspection_requires_client_authentication(stack):
    owner = create_client(stack, "auth-app", "orders:read")
    token = fetch_token(stack.client, owner)
    anonymous = introspect(stack, None, token)
    assert anonymous.status_code == 401 and anonymous.json["error"] == "invalid_client"
    assert "active" not in anonymous.json
    wrong = stack.client.post("/oauth/introspect", data={"token": token},
                              auth=(owner["client_id"], owner["client_secret"] + "x"))
    assert wrong.status_code == 401 and "active" not in wrong.json
    bearer_only = stack.client.post("/oauth/introspect", data={"token": token}, headers=bearer(token))
    assert bearer_only.status_code == 401


# --- revocation ------------------------------------------------------------------------

def test_revocation_by_owner_only_and_revoked_tokens_are_refused(db_stack):
    stack = db_stack
    owner = create_client(stack, "revoking-app")
    other = create_client(stack, "other-app")
    token = fetch_token(stack.client, owner)
    sibling = fetch_token(stack.client, owner)
    assert api_status(stack, token) == 200

    refused = revoke(stack, other, token)
    assert refused.status_code == 400 and refused.json["error"] == "invalid_grant"
    assert api_status(stack, token) == 200, "another client must not be able to revoke a token"

    assert revoke(stack, None, token).status_code == 401
    assert api_status(stack, token) == 200

    response = revoke(stack, owner, token)
    assert response.status_code == 200
    refused_api = stack.client.get(ORDERS, headers=bearer(token))
    assert refused_api.status_code == 401 and refused_api.json["error"]["code"] == "invalid_token"
    assert introspect(stack, owner, token).json == {"active": False}
    assert api_status(stack, sibling) == 200, "revoking one token leaves the client's others alone"
    with stack.runtime.db.begin() as session:
        assert session.execute(select(Token.revoked).where(
            Token.token_hash == digest(parts(token)[1]["jti"]))).scalar_one() is True

    assert revoke(stack, owner, token).status_code == 200, "revoking twice is fine"
    assert revoke(stack, owner, "unknown-token").status_code == 200
    assert revoke(stack, owner, "a.b.c").status_code == 200


# --- discovery -------------------------------------------------------------------------

def test_authorization_server_metadata(stack):
    response = stack.client.get("/.well-known/oauth-authorization-server")
    assert response.status_code == 200
    meta = response.json
    issuer = stack.settings.public_url
    assert meta["issuer"] == issuer
    assert meta["token_endpoint"] == issuer + "/oauth/token"
    assert meta["jwks_uri"] == issuer + "/.well-known/jwks.json"
    assert meta["introspection_endpoint"] == issuer + "/oauth/introspect"
    assert meta["revocation_endpoint"] == issuer + "/oauth/revoke"
    assert meta["grant_types_supported"] == ["client_credentials"]
    assert meta["scopes_supported"] == ["orders:write", "orders:read", "admin"]
    for name in ("token", "introspection", "revocation"):
        methods = meta[f"{name}_endpoint_auth_methods_supported"]
        assert methods == ["client_secret_basic", "client_secret_post"]

    # Every advertised endpoint is served at the advertised path.
    client = create_client(stack, "discovery-app", "orders:read")
    issued = stack.client.post(meta["token_endpoint"].removeprefix(issuer),
                               data={"grant_type": "client_credentials"},
                               auth=(client["client_id"], client["client_secret"]))
    token = issued.json["access_token"]
    assert stack.client.get(meta["jwks_uri"].removeprefix(issuer)).json["keys"]
    assert introspect(stack, client, token).json["active"] is True
    assert stack.client.post(meta["revocation_endpoint"].removeprefix(issuer), data={"token": token},
                             auth=(client["client_id"], client["client_secret"])).status_code == 200

    paths = stack.client.get("/api/openapi.json").json["paths"]
    for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke", "/.well-known/jwks.json",
                 "/.well-known/oauth-authorization-server"):
        assert path in paths, f"{path} missing from the OpenAPI document"
