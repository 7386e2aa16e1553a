"""The test OpenID Connect provider (tests/idp): a real oidc-provider on loopback behaves as the
broker's tests will rely on — discovery, RFC 9068 access tokens, code flow with PKCE S256,
groups in tokens, refresh token rotation and key rotation on restart."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from idp.oidc import OidcProvider
from joserfc import jwt
from joserfc.jwk import KeySet

API = "https://broker.test/api"
REPORTS = "https://reports.test/"
REDIRECT_URI = "http://127.0.0.1:9/callback"
WEB = {"client_id": "web", "client_secret": "web-secret"}
SVC = {"client_id": "svc", "client_secret": "svc-secret"}
ACCOUNTS = {
    "alice": {"email": "alice@example.test", "email_verified": True, "name": "Alice",
              "groups": ["broker-admins"]},
    "bob": {"email": "bob@example.test", "email_verified": True, "name": "Bob", "groups": []},
}
CLIENTS = [
    {**WEB, "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "refresh_token"],
     "response_types": ["code"]},
    {**SVC, "redirect_uris": [], "grant_types": ["client_credentials"], "response_types": []},
]
RESOURCES = {
    API: {"audience": "fobo-broker", "scope": "orders:read orders:write", "alg": "ES256"},
    REPORTS: {"audience": "reports", "scope": "reports:read", "alg": "RS256", "accessTokenTTL": 120},
}


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    if not (shutil.which("node") and shutil.which("npm")):
        if os.environ.get("CI"):
            pytest.fail("node and npm are required for the OIDC provider tests")
        pytest.skip("node/npm not installed: the OIDC test provider needs Node.js")
    with OidcProvider(ACCOUNTS, CLIENTS, RESOURCES) as provider:
        yield provider


def verify(idp: OidcProvider, token: str, typ: str | None = None) -> jwt.Token:
    """Decode with the provider's published JWKS; check the header typ when given."""
    decoded = jwt.decode(token, KeySet.import_key_set(idp.public_jwks()), algorithms=["ES256", "RS256"])
    if typ is not None:
        assert decoded.header["typ"] == typ
    return decoded


def authorize_url(idp: OidcProvider, pkce: bool = True, **extra: str) -> tuple[str, dict[str, str]]:
    """An authorization URL for the web client, plus the secrets the client keeps."""
    kept = {"state": secrets.token_urlsafe(16), "nonce": secrets.token_urlsafe(16),
            "verifier": secrets.token_urlsafe(48)}
    params = {"client_id": WEB["client_id"], "response_type": "code", "redirect_uri": REDIRECT_URI,
              "scope": "openid email profile groups offline_access orders:read", "resource": API,
              "prompt": "consent", "state": kept["state"], "nonce": kept["nonce"], **extra}
    if pkce:
        digest = hashlib.sha256(kept["verifier"].encode()).digest()
        params |= {"code_challenge": base64.urlsafe_b64encode(digest).rstrip(b"=").decode(),
                   "code_challenge_method": "S256"}
    return f"{idp.discovery()['authorization_endpoint']}?{urlencode(params)}", kept


def sign_in(idp: OidcProvider, login: str, **kwargs: Any) -> tuple[dict[str, str], dict[str, str]]:
    url, kept = authorize_url(idp, **kwargs)
    with requests.Session() as browser:
        location = idp.sign_in(browser, url, login)
    assert location.startswith(REDIRECT_URI + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}, kept


def exchange(idp: OidcProvider, code: str, verifier: str | None) -> requests.Response:
    params = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    if verifier is not None:
        params["code_verifier"] = verifier
    return idp.token_request(WEB["client_id"], WEB["client_secret"], **params)


def test_discovery(idp: OidcProvider) -> None:
    meta = idp.discovery()
    assert meta["issuer"] == idp.issuer == f"http://127.0.0.1:{idp.port}"
    assert meta["jwks_uri"].startswith(idp.issuer)
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(meta["grant_types_supported"])
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert {"revocation_endpoint", "introspection_endpoint"} <= set(meta)


@pytest.mark.parametrize(("resource", "alg", "ttl"), [(API, "ES256", 300), (REPORTS, "RS256", 120)])
def test_client_credentials_token_is_an_rfc9068_jwt(idp: OidcProvider, resource: str, alg: str,
                                                    ttl: int) -> None:
    scope = RESOURCES[resource]["scope"].split()[0]
    body = idp.client_credentials_token(SVC["client_id"], SVC["client_secret"], resource, scope)
    assert body["token_type"] == "Bearer" and body["expires_in"] == ttl
    token = verify(idp, body["access_token"], typ="at+jwt")
    assert token.header["alg"] == alg
    assert token.header["kid"] in {key["kid"] for key in idp.public_jwks()["keys"]}
    claims = token.claims
    assert claims["aud"] == RESOURCES[resource]["audience"]
    assert claims["iss"] == idp.issuer and claims["client_id"] == claims["sub"] == "svc"
    assert claims["scope"] == scope and "groups" not in claims


def test_client_credentials_defaults_to_the_first_resource(idp: OidcProvider) -> None:
    response = idp.token_request(SVC["client_id"], SVC["client_secret"], grant_type="client_credentials",
                                 scope="orders:write")
    assert response.status_code == 200, response.text
    assert verify(idp, response.json()["access_token"], typ="at+jwt").claims["aud"] == "fobo-broker"


def test_code_flow_with_pkce_groups_and_refresh_rotation(idp: OidcProvider) -> None:
    params, kept = sign_in(idp, "alice")
    assert params["state"] == kept["state"] and params["iss"] == idp.issuer and params["code"]

    response = exchange(idp, params["code"], kept["verifier"])
    assert response.status_code == 200, response.text
    body = response.json()
    id_token = verify(idp, body["id_token"]).claims
    assert id_token["aud"] == "web" and id_token["sub"] == "alice" and id_token["nonce"] == kept["nonce"]
    assert id_token["groups"] == ["broker-admins"] and id_token["email"] == "alice@example.test"
    access = verify(idp, body["access_token"], typ="at+jwt").claims
    assert access["aud"] == "fobo-broker" and access["sub"] == "alice" and access["scope"] == "orders:read"
    assert access["groups"] == ["broker-admins"] and access["email"] == "alice@example.test"
    first = body["refresh_token"]

    refreshed = idp.token_request(WEB["client_id"], WEB["client_secret"], grant_type="refresh_token",
                                  refresh_token=first)
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()["refresh_token"]
    assert second != first
    assert verify(idp, refreshed.json()["access_token"], typ="at+jwt").claims["groups"] == ["broker-admins"]

    replay = idp.token_request(WEB["client_id"], WEB["client_secret"], grant_type="refresh_token",
                               refresh_token=first)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # Reusing a rotated refresh token revokes the whole grant, the new token included.
    again = idp.token_request(WEB["client_id"], WEB["client_secret"], grant_type="refresh_token",
                              refresh_token=second)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_refresh_token_only_with_offline_access(idp: OidcProvider) -> None:
    params, kept = sign_in(idp, "bob", scope="openid groups orders:read", prompt="login")
    body = exchange(idp, params["code"], kept["verifier"]).json()
    assert "refresh_token" not in body
    assert verify(idp, body["id_token"]).claims["groups"] == []


def test_code_exchange_without_verifier_is_refused(idp: OidcProvider) -> None:
    params, kept = sign_in(idp, "alice")
    response = exchange(idp, params["code"], None)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"
    wrong = exchange(idp, params["code"], secrets.token_urlsafe(48))
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # The refusals did not consume the code: only the verifier was wrong.
    assert exchange(idp, params["code"], kept["verifier"]).status_code == 200


def test_authorization_without_code_challenge_is_refused(idp: OidcProvider) -> None:
    params, kept = sign_in(idp, "alice", pkce=False)
    assert params["error"] == "invalid_request" and "PKCE" in params["error_description"]
    assert params["state"] == kept["state"] and "code" not in params
    plain, _ = sign_in(idp, "alice", pkce=False, code_challenge=kept["verifier"],
                       code_challenge_method="plain")
    assert plain["error"] == "invalid_request" and "code_challenge_method" in plain["error_description"]


def test_unknown_account_is_denied(idp: OidcProvider) -> None:
    params, _ = sign_in(idp, "mallory")
    assert params["error"] == "access_denied" and "code" not in params


def test_revoked_refresh_token_is_inactive(idp: OidcProvider) -> None:
    params, kept = sign_in(idp, "alice")
    refresh = exchange(idp, params["code"], kept["verifier"]).json()["refresh_token"]
    assert idp.introspect(refresh, WEB["client_id"], WEB["client_secret"])["active"] is True
    idp.revoke(refresh, WEB["client_id"], WEB["client_secret"], "refresh_token")
    assert idp.introspect(refresh, WEB["client_id"], WEB["client_secret"])["active"] is False
    response = idp.token_request(WEB["client_id"], WEB["client_secret"], grant_type="refresh_token",
                                 refresh_token=refresh)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_jwt_access_tokens_cannot_be_revoked(idp: OidcProvider) -> None:
    """oidc-provider refuses to revoke or introspect structured (JWT) tokens: they live until exp."""
    token = idp.client_credentials_token(SVC["client_id"], SVC["client_secret"], API)["access_token"]
    with pytest.raises(RuntimeError, match="unsupported_token_type"):
        idp.revoke(token, SVC["client_id"], SVC["client_secret"], "access_token")


def test_restart_rotates_keys(idp: OidcProvider) -> None:
    before = {key["kid"] for key in idp.public_jwks()["keys"]}
    issuer = idp.issuer
    idp.restart(rotate_keys=True)
    after = {key["kid"] for key in idp.public_jwks()["keys"]}
    assert idp.issuer == issuer and len(after) == 2 and not before & after
    idp.restart()
    assert {key["kid"] for key in idp.public_jwks()["keys"]} == after
