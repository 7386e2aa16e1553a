"""Identity brokering against a REAL OpenID Connect provider (panva's oidc-provider from npm,
tests/idp): a company issuer's access tokens on the API with roles from its claims, console
sign-in through it (authorization code + PKCE S256, state, nonce, issuer, exact redirect URI),
the local bootstrap admin with a throttle, sessions and CSRF."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from harness import Stack, order
from idp.oidc import OidcProvider, node_required
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select, update

from broker.models import AuditEntry, ConsoleSession

API = "https://broker.test/api"
AUDIENCE = "fobo-broker"
PUBLIC_URL = "http://127.0.0.1:8080"
CALLBACK = PUBLIC_URL + "/console/auth/callback"
CONSOLE = {"client_id": "broker-console", "client_secret": "console-secret-Xk3"}
MACHINES = {name: f"{name}-secret" for name in ("svc-viewer", "svc-operator", "svc-admin", "svc-none")}
ACCOUNTS = {
    "alice": {"email": "alice@corp.test", "email_verified": True, "name": "Alice",
              "groups": ["broker-admins"]},
    "oscar": {"email": "oscar@corp.test", "email_verified": True, "name": "Oscar",
              "groups": ["warehouse", "broker-operators"]},
    "vera": {"email": "vera@corp.test", "email_verified": True, "name": "Vera",
             "groups": ["broker-viewers"]},
    "bob": {"email": "bob@corp.test", "email_verified": True, "name": "Bob", "groups": ["sales"]},
}
CLIENTS = [
    {**CONSOLE, "redirect_uris": [CALLBACK], "grant_types": ["authorization_code"],
     "response_types": ["code"]},
    *({"client_id": name, "client_secret": secret, "redirect_uris": [],
       "grant_types": ["client_credentials"], "response_types": []}
      for name, secret in MACHINES.items()),
]
RESOURCES = {
    API: {"audience": AUDIENCE, "scope": "broker", "alg": "ES256"},
    "https://elsewhere.test/": {"audience": "someone-else", "scope": "other", "alg": "RS256"},
}
RULES = ["admin=groups:broker-admins", "operator=groups:broker-operators",
         "viewer=groups:broker-viewers", "viewer=client_id:svc-viewer",
         "operator=client_id:svc-operator", "admin=client_id:svc-admin"]


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    node_required()
    with OidcProvider(ACCOUNTS, CLIENTS, RESOURCES) as provider:
        yield provider


@pytest.fixture
def corp(tmp_path: Any, idp: OidcProvider) -> Iterator[Stack]:
    """The embedded broker trusting the provider as issuer `corp`, with console sign-in."""
    stack = Stack(tmp_path, "sqlite", "embedded", public_url=PUBLIC_URL)
    args = ["issuers", "add", "corp", "--issuer", idp.issuer, "--audience", AUDIENCE,
            "--client-id", CONSOLE["client_id"], "--client-secret", CONSOLE["client_secret"],
            "--scopes", "openid email profile groups"]
    for rule in RULES:
        args += ["--role", rule]
    stack.cli(*args)
    try:
        yield stack
    finally:
        stack.close()


def machine_token(idp: OidcProvider, name: str, resource: str = API) -> str:
    return str(idp.client_credentials_token(name, MACHINES[name], resource)["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def header_of(token: str) -> dict[str, Any]:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def submit_order(stack: Stack) -> str:
    """An order from the REST source, via a broker client (orders:write)."""
    stack.source("shop")
    client = stack.cli("clients", "create", "shop-client", "--source", "shop", "--scope",
                       "orders:write", "--json")
    token = stack.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(client["client_id"], client["client_secret"])).json
    response = stack.client.post("/api/v1/orders", json=order("A-1"),
                                 headers=bearer(token["access_token"]))
    assert response.status_code == 201, response.json
    return str(response.json["id"])


# --- a company issuer's access tokens on the API ------------------------------------------

def test_issuer_tokens_get_the_role_their_claims_map_to(corp: Stack, idp: OidcProvider) -> None:
    order_id = submit_order(corp)
    viewer, operator, admin = (machine_token(idp, n) for n in ("svc-viewer", "svc-operator",
                                                                "svc-admin"))
    assert header_of(viewer)["typ"] == "at+jwt" and claims_of(viewer)["iss"] == idp.issuer

    # viewer: reads every source's orders, may not replay or read the audit log
    listed = corp.client.get("/api/v1/orders", headers=bearer(viewer))
    assert listed.status_code == 200 and [o["id"] for o in listed.json["items"]] == [order_id]
    assert corp.client.get(f"/api/v1/orders/{order_id}", headers=bearer(viewer)).status_code == 200
    refused = corp.client.post(f"/api/v1/orders/{order_id}/replay", headers=bearer(viewer))
    assert refused.status_code == 403
    assert "needs the role 'operator'; yours is 'viewer'" in refused.json["error"]["message"]
    assert corp.client.get("/api/v1/audit", headers=bearer(viewer)).status_code == 403
    # nobody from the IdP submits orders: that takes a broker client bound to a source
    posted = corp.client.post("/api/v1/orders", json=order("A-2"), headers=bearer(admin))
    assert posted.status_code == 403

    # operator: replays (recorded under its issuer and subject), still no audit log
    replayed = corp.client.post(f"/api/v1/orders/{order_id}/replay", headers=bearer(operator))
    assert replayed.status_code == 202, replayed.json
    assert corp.client.get("/api/v1/audit", headers=bearer(operator)).status_code == 403

    # admin: reads the audit log, where the replay names the operator's identity
    audit = corp.client.get("/api/v1/audit?action=order.replay", headers=bearer(admin))
    assert audit.status_code == 200
    assert [e["actor"] for e in audit.json["items"]] == ["corp:svc-operator"]


def test_no_matching_rule_means_no_access(corp: Stack, idp: OidcProvider) -> None:
    response = corp.client.get("/api/v1/orders", headers=bearer(machine_token(idp, "svc-none")))
    assert response.status_code == 403
    assert "maps to no broker role" in response.json["error"]["message"]


def test_tokens_for_another_audience_or_issuer_are_refused(corp: Stack, idp: OidcProvider) -> None:
    other_audience = machine_token(idp, "svc-admin", "https://elsewhere.test/")
    assert corp.client.get("/api/v1/orders", headers=bearer(other_audience)).status_code == 401
    token = machine_token(idp, "svc-admin")
    corp.cli("issuers", "configure", "corp", "--disable")
    corp.app.extensions["broker_issuers"].invalidate()
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 401


def test_algorithm_and_type_allow_lists(corp: Stack, idp: OidcProvider) -> None:
    token = machine_token(idp, "svc-admin")  # ES256, typ at+jwt
    directory = corp.app.extensions["broker_issuers"]
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 200
    corp.cli("issuers", "configure", "corp", "--alg", "RS256")
    directory.invalidate()
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 401
    corp.cli("issuers", "configure", "corp", "--alg", "ES256", "--token-type", "JWT")
    directory.invalidate()
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 401
    corp.cli("issuers", "configure", "corp", "--token-type", "at+jwt")
    directory.invalidate()
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 200


def _resign(token: str, header: dict[str, Any], key: Any, alg: str) -> str:
    return jws.serialize_compact({**header, "alg": alg}, json.dumps(claims_of(token)).encode(),
                                 key, algorithms=[alg])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256(token: str, header: dict[str, Any], secret: bytes) -> str:
    signing_input = (f"{_b64(json.dumps({**header, 'alg': 'HS256'}).encode())}."
                     f"{_b64(json.dumps(claims_of(token)).encode())}")
    return f"{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def test_forged_issuer_tokens_are_refused(corp: Stack, idp: OidcProvider) -> None:
    """Keys come only from the issuer's own JWKS: nothing in the token picks them."""
    genuine = machine_token(idp, "svc-admin")
    header = header_of(genuine)
    attacker = ECKey.generate_key("P-256", parameters={"kid": header["kid"]}, private=True)
    public = next(k for k in idp.public_jwks()["keys"] if k["kty"] == "RSA")
    rsa_public_pem = RSAKey.import_key(public).as_pem(private=False)
    head, body, _ = genuine.split(".")
    unsigned = base64.urlsafe_b64encode(json.dumps({**header, "alg": "none"}).encode()
                                        ).rstrip(b"=").decode()
    forged = {
        "alg none": f"{unsigned}.{body}.",
        "attacker key, same kid": _resign(genuine, header, attacker, "ES256"),
        "embedded jwk": _resign(genuine, {**header, "jwk": attacker.as_dict(private=False)},
                                attacker, "ES256"),
        "jku": _resign(genuine, {**header, "jku": "http://127.0.0.1:9/jwks"}, attacker, "ES256"),
        "HS256 with the issuer's public key": _hs256(genuine, {**header, "kid": public["kid"]},
                                                     rsa_public_pem),
        "unknown kid": _resign(genuine, {**header, "kid": "nope"}, attacker, "ES256"),
        "tampered claims": f"{head}.{base64.urlsafe_b64encode(json.dumps({**claims_of(genuine), 'client_id': 'svc-x'}).encode()).rstrip(b'=').decode()}.{genuine.split('.')[2]}",  # noqa: E501
    }
    for name, token in forged.items():
        response = corp.client.get("/api/v1/orders", headers=bearer(token))
        assert response.status_code == 401, name
    assert corp.client.get("/api/v1/orders", headers=bearer(genuine)).status_code == 200


def test_issuer_key_rotation_is_picked_up_on_an_unknown_kid(corp: Stack, idp: OidcProvider) -> None:
    before = machine_token(idp, "svc-admin")
    assert corp.client.get("/api/v1/orders", headers=bearer(before)).status_code == 200
    idp.restart(rotate_keys=True)
    after = machine_token(idp, "svc-admin")
    assert header_of(after)["kid"] != header_of(before)["kid"]
    assert corp.client.get("/api/v1/orders", headers=bearer(after)).status_code == 200
    assert corp.client.get("/api/v1/orders", headers=bearer(before)).status_code == 401


def test_an_unreachable_issuer_is_a_503_not_a_crash(corp: Stack) -> None:
    corp.cli("issuers", "add", "gone", "--issuer", "http://127.0.0.1:9", "--audience", AUDIENCE,
             "--role", "admin=groups:x")
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k"},
                       {"iss": "http://127.0.0.1:9", "aud": AUDIENCE, "sub": "x", "exp": 2**31},
                       ECKey.generate_key("P-256", private=True))
    response = corp.client.get("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert "Traceback" not in response.get_data(as_text=True)


# --- console sign-in through the company IdP ------------------------------------------------

def session_cookie(stack: Stack) -> str | None:
    cookie = stack.client.get_cookie("broker-session")
    return cookie.value if cookie else None


def start_sign_in(stack: Stack) -> str:
    response = stack.client.get("/console/login/corp")
    assert response.status_code == 303
    return str(response.headers["Location"])


def finish(stack: Stack, idp: OidcProvider, authorize_url: str, login: str) -> Any:
    with requests.Session() as browser:
        location = idp.sign_in(browser, authorize_url, login)
    assert location.startswith(CALLBACK + "?"), location
    parts = urlsplit(location)
    return stack.client.get(f"{parts.path}?{parts.query}")


def test_sign_in_with_pkce_state_and_nonce(corp: Stack, idp: OidcProvider) -> None:
    url = start_sign_in(corp)
    params = parse_qs(urlsplit(url).query)
    assert params["code_challenge_method"] == ["S256"] and len(params["code_challenge"][0]) == 43
    assert params["redirect_uri"] == [CALLBACK] and params["state"] and params["nonce"]
    assert url.startswith(idp.discovery()["authorization_endpoint"])
    pre_login = session_cookie(corp)
    response = finish(corp, idp, url, "alice")
    assert response.status_code == 303 and response.headers["Location"] == "/console/"
    assert session_cookie(corp) not in (None, pre_login)  # rotated at sign-in
    home = corp.client.get("/console/")
    assert home.status_code == 200
    page = home.get_data(as_text=True)
    assert "alice@corp.test" in page and ">admin<" in page
    with corp.runtime.db.begin() as session:
        actors = session.execute(select(AuditEntry.actor).where(
            AuditEntry.action == "console.sign_in")).scalars().all()
        stored = session.execute(select(ConsoleSession.id_hash)).scalars().all()
    assert actors == ["corp:alice"]
    assert session_cookie(corp) not in stored  # only the SHA-256 of the id is kept


def test_callback_with_another_browsers_state_is_refused(corp: Stack, idp: OidcProvider) -> None:
    victim_url = start_sign_in(corp)
    with requests.Session() as browser:
        location = idp.sign_in(browser, victim_url, "alice")
    attacker = corp.app.test_client()  # a different browser, its own sign-in started
    assert attacker.get("/console/login/corp").status_code == 303
    parts = urlsplit(location)
    refused = attacker.get(f"{parts.path}?{parts.query}")
    assert refused.status_code == 400 and "state mismatch" in refused.get_data(as_text=True)
    assert attacker.get("/console/").status_code == 302  # not signed in


def test_tampered_state_code_issuer_and_replayed_code(corp: Stack, idp: OidcProvider) -> None:
    def callback_with(**changes: str) -> Any:
        url = start_sign_in(corp)
        with requests.Session() as browser:
            location = idp.sign_in(browser, url, "alice")
        parts = urlsplit(location)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
        return corp.client.get(f"{parts.path}?{urlencode(query)}"), location

    assert callback_with(state="forged")[0].status_code == 400
    assert callback_with(iss="https://evil.test")[0].status_code == 400
    assert callback_with(code="forged-code")[0].status_code == 400
    response, location = callback_with()
    assert response.status_code == 303
    corp.client.post("/console/logout", data={"csrf_token": csrf(corp)})
    # the same answer again, in a session whose own sign-in is pending: refused
    start_sign_in(corp)
    parts = urlsplit(location)
    assert corp.client.get(f"{parts.path}?{parts.query}").status_code == 400
    assert corp.client.get("/console/").status_code == 302


def _tamper_pending(stack: Stack, **changes: str) -> None:
    with stack.runtime.db.begin() as session:
        row = next(r for r in session.execute(select(ConsoleSession)).scalars() if "oidc" in r.data)
        data = dict(row.data)
        data["oidc"] = {**data["oidc"], **changes}
        session.execute(update(ConsoleSession).where(ConsoleSession.id_hash == row.id_hash)
                        .values(data=data))


def test_wrong_nonce_or_pkce_verifier_is_refused(corp: Stack, idp: OidcProvider) -> None:
    url = start_sign_in(corp)
    _tamper_pending(corp, nonce="another-nonce")
    response = finish(corp, idp, url, "alice")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "could not be verified" in response.get_data(as_text=True)
    corp.client.delete_cookie("broker-session")
    url = start_sign_in(corp)
    _tamper_pending(corp, verifier="x" * 64)
    response = finish(corp, idp, url, "alice")
    assert response.status_code == 400 and "did not complete" in response.get_data(as_text=True)
    assert corp.client.get("/console/").status_code == 302


def test_the_provider_refuses_another_redirect_uri_or_no_pkce(corp: Stack, idp: OidcProvider) -> None:
    url = start_sign_in(corp)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    evil = urlunsplit(parts._replace(query=urlencode({**query, "redirect_uri": CALLBACK + "x"})))
    answer = requests.get(evil, allow_redirects=False, timeout=10)
    assert answer.status_code == 400 and "redirect_uri" in answer.text  # never redirected
    del query["code_challenge"], query["code_challenge_method"]
    answer = requests.get(urlunsplit(parts._replace(query=urlencode(query))),
                          allow_redirects=False, timeout=10)
    location = answer.headers.get("Location", "")
    assert answer.status_code in (302, 303) and "error=invalid_request" in location


@pytest.mark.parametrize(("login", "role"), [("oscar", "operator"), ("vera", "viewer")])
def test_groups_map_to_roles_and_deny_by_default(corp: Stack, idp: OidcProvider, login: str,
                                                 role: str) -> None:
    assert finish(corp, idp, start_sign_in(corp), login).status_code == 303
    assert f">{role}<" in corp.client.get("/console/").get_data(as_text=True)
    corp.cli("connectors", "add", "erp", "--kind", "http", "--config",
             json.dumps({"url": "https://erp.example.com/orders"}))
    assert corp.client.get("/console/connectors/erp/connect").status_code == 403  # admin only


def test_no_role_means_no_session(corp: Stack, idp: OidcProvider) -> None:
    response = finish(corp, idp, start_sign_in(corp), "bob")
    assert response.status_code == 403 and "no broker role" in response.get_data(as_text=True)
    assert corp.client.get("/console/").status_code == 302


# --- the local bootstrap admin, sessions and CSRF -------------------------------------------

def csrf(stack: Stack, client: Any = None) -> str:
    page = (client or stack.client).get("/console/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


def login(stack: Stack, username: str, password: str, token: str | None = None) -> Any:
    return stack.client.post("/console/login", data={
        "username": username, "password": password,
        "csrf_token": csrf(stack) if token is None else token})


@pytest.fixture
def local(stack: Stack) -> tuple[Stack, str]:
    result = stack.app.test_cli_runner().invoke(args=["broker", "users", "create-admin", "root"])
    assert result.exit_code == 0, result.output
    password = re.search(r"password \(shown once\): (\S+)", result.output).group(1)  # type: ignore[union-attr]
    return stack, password


def test_bootstrap_admin_signs_in_with_csrf_and_rotation(local: tuple[Stack, str]) -> None:
    stack, password = local
    assert stack.client.get("/console/").status_code == 302
    assert login(stack, "root", password, token="").status_code == 400  # no CSRF token
    assert login(stack, "root", "wrong-password-123").status_code == 401
    token = csrf(stack)
    before = session_cookie(stack)
    signed_in = login(stack, "root", password, token=token)
    assert signed_in.status_code == 303 and session_cookie(stack) != before
    home = stack.client.get("/console/")
    assert home.status_code == 200 and "root" in home.get_data(as_text=True)
    assert "Content-Security-Policy" in home.headers
    assert "script-src 'self'" in home.headers["Content-Security-Policy"]
    cookie = next(h for h in home.headers.getlist("Set-Cookie") or signed_in.headers.getlist(
        "Set-Cookie") if h.startswith("broker-session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # the old pre-login token is void after rotation; sign-out needs the new one
    assert stack.client.post("/console/logout", data={"csrf_token": token}).status_code == 400
    page = home.get_data(as_text=True)
    fresh = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert stack.client.post("/console/logout", data={"csrf_token": fresh}).status_code == 303
    assert stack.client.get("/console/").status_code == 302
    with stack.runtime.db.begin() as session:
        hashes = session.execute(select(AuditEntry.after).where(
            AuditEntry.action == "user.create")).scalars().all()
    assert password not in json.dumps(hashes)


def test_failed_sign_ins_are_throttled(local: tuple[Stack, str]) -> None:
    stack, password = local
    for _ in range(5):
        assert login(stack, "root", "wrong-password-123").status_code == 401
    locked = login(stack, "root", password)  # even the right password waits now
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "too many failed sign-ins" in locked.get_data(as_text=True)


def test_secure_cookie_on_https(tmp_path: Any) -> None:
    stack = Stack(tmp_path, "sqlite", "embedded", public_url="https://broker.example.com")
    try:
        response = stack.client.get("/console/login", base_url="https://broker.example.com")
        cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-broker-session=") and "Secure" in cookie
        assert "Path=/" in cookie and "Domain" not in cookie
        assert "Strict-Transport-Security" in response.headers
    finally:
        stack.close()


def test_next_is_never_an_open_redirect(local: tuple[Stack, str]) -> None:
    stack, password = local
    stack.client.get("/console/login?next=https://evil.test/")
    response = login(stack, "root", password)
    assert response.headers["Location"] == "/console/"


def test_issuer_urls_go_through_the_ssrf_guard(corp: Stack, idp: OidcProvider) -> None:
    from broker.identity.issuers import IssuerUnavailable, discover
    from broker.services.issuers import upsert_issuer
    from broker.services.sources import SetupError
    from connectors import ssrf

    result = corp.app.test_cli_runner().invoke(args=["broker", "issuers", "check", "corp"])
    assert result.exit_code == 0 and "signing key(s)" in result.output, result.output
    with ssrf.policy(allow_private=False):
        for url in ("https://169.254.169.254", "https://127.0.0.1:8443", "https://[::ffff:10.0.0.1]",
                    "https://2130706433"):
            with pytest.raises(SetupError, match="BROKER_ALLOWED_PRIVATE_HOSTS"):
                upsert_issuer(corp.runtime.db, corp.runtime.box, "meta", issuer=url, audience="x")
        with pytest.raises(IssuerUnavailable):
            discover(idp.issuer)  # loopback, plain http: refused before connecting
        token = machine_token(idp, "svc-admin")
        corp.app.extensions["broker_issuers"].invalidate()
        assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 503
