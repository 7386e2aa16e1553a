"""Back-office credential custody: an admin's one-time OAuth 2.0 consent for a connector.

A real OpenID Connect provider (panva's oidc-provider, tests/idp) is the back office's
authorization server; the back office is the fake REST ERP (tests/fakes/sink.py) acting as a
resource server that accepts only `Authorization: Bearer <JWT>` verified against the provider's
JWKS (RFC 9068: typ at+jwt, issuer, audience, unexpired, no leeway). Access tokens live
ACCESS_TTL seconds, so expiry and refresh happen for real; the provider rotates refresh tokens
and revokes the whole grant when a spent one is replayed, so a double refresh would show.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import requests
from fakes.sink import Sink
from harness import Stack, order, wait_until
from idp.oidc import OidcProvider, node_required
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from sqlalchemy import select, update

from broker.db import Base, utcnow
from broker.models import AuditEntry, Connector, ConnectorGrant, Delivery, DeliveryStatus
from broker.services import custody, delivery
from broker.services.custody import ConsentError, GrantTokenSource, begin_consent, complete_consent
from connectors.errors import ConsentRequired

ERP_RESOURCE = "https://erp.test/api"
AUDIENCE = "erp-api"
ACCESS_TTL = 5
CLIENT_ID = "fobo-broker-erp"
CLIENT_SECRET = "erp-client-secret-canary-5Vq8Lw"
REDIRECT_URI = "http://127.0.0.1:9/console/connectors/erp/consent/callback"
ADMIN = "console:alice@example.test"
ACCOUNTS = {"alice": {"email": "alice@example.test", "email_verified": True, "name": "Alice"}}
CONSOLE_CALLBACK = "http://127.0.0.1:8080/console/connectors/callback"  # the stack's public URL
CLIENTS = [{"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "redirect_uris": [REDIRECT_URI, CONSOLE_CALLBACK],
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic"}]
RESOURCES = {ERP_RESOURCE: {"audience": AUDIENCE, "scope": "orders:write", "alg": "ES256",
                            "accessTokenTTL": ACCESS_TTL}}


# --- the back office: a resource server that takes only the provider's JWTs -----------------

class JwtBackOffice(Sink):
    """The fake REST ERP accepting only RFC 9068 access tokens of `idp` for AUDIENCE."""

    def __init__(self, idp: OidcProvider) -> None:
        self.idp = idp
        self._keys: KeySet | None = None
        self.refused: list[str] = []  # why each refused request was refused
        self.tokens: list[str] = []   # every bearer token presented, in order
        super().__init__()

    def _authorized(self, header: str) -> bool:  # called by Sink under its lock
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        self.tokens.append(token)
        why = self.verify(token)
        if why:
            self.refused.append(why)
        return not why

    def verify(self, token: str) -> str | None:
        """None if the token is a live access token for this back office, else why not."""
        if not token:
            return "no bearer token"
        for attempt in range(2):
            if self._keys is None or attempt:  # an unknown kid: the provider's keys changed
                self._keys = KeySet.import_key_set(self.idp.public_jwks())
            try:
                decoded = jwt.decode(token, self._keys, algorithms=["ES256"])
                break
            except JoseError as exc:
                error = f"{type(exc).__name__}: {exc}"
        else:
            return error
        if decoded.header.get("typ") != "at+jwt":
            return "not an access token"
        try:
            JWTClaimsRegistry(leeway=0, iss={"essential": True, "value": self.idp.issuer},
                              aud={"essential": True, "value": AUDIENCE},
                              exp={"essential": True}).validate(decoded.claims)
        except JoseError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    node_required()
    with OidcProvider(ACCOUNTS, CLIENTS, RESOURCES) as provider:
        yield provider


@pytest.fixture
def backoffice(idp: OidcProvider) -> Iterator[JwtBackOffice]:
    with JwtBackOffice(idp) as fake:
        yield fake


def consent_config(idp: OidcProvider, backoffice: Sink) -> dict[str, Any]:
    meta = idp.discovery()
    return {"url": backoffice.url + "/orders", "timeout": 5,
            "auth": {"type": "oauth2_consent", "authorize_url": meta["authorization_endpoint"],
                     "token_url": meta["token_endpoint"], "client_id": CLIENT_ID,
                     "client_secret": CLIENT_SECRET, "scope": "offline_access orders:write",
                     "resource": ERP_RESOURCE}}


def set_up(stack: Stack, idp: OidcProvider, backoffice: Sink) -> tuple[str, str]:
    """Connector erp (oauth2_consent) fed by the REST source shopfront; (connector id, API token)."""
    stack.cli("connectors", "add", "erp", "--kind", "http", "--config",
              json.dumps(consent_config(idp, backoffice)), "--json")
    token = stack.token("shopfront")
    stack.route("shopfront", "erp")
    with stack.runtime.db.begin() as session:
        connector_id = session.execute(select(Connector.id).where(Connector.name == "erp")).scalar_one()
    return connector_id, token


def post_order(stack: Stack, token: str, external_id: str) -> None:
    response = stack.client.post("/api/v1/orders", json=order(external_id),
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201, response.get_data(as_text=True)


def deliver(stack: Stack, connector_id: str) -> None:
    """What a worker's deliver task does, in this process (so caplog sees every log line)."""
    delivery.run(stack.runtime, connector_id, budget_seconds=10)


def deliveries(stack: Stack) -> dict[str, Delivery]:
    """external id → its (only) delivery."""
    from broker.models import Order

    with stack.runtime.db.begin() as session:
        rows = session.execute(select(Order.external_id, Delivery).join(
            Delivery, Delivery.order_id == Order.id)).all()
        session.expunge_all()
    return {external_id: row for external_id, row in rows}


def consent(stack: Stack, idp: OidcProvider, login: str = "alice", *,
            keep: dict[str, Any] | None = None) -> dict[str, Any]:
    """The console's part: begin, the admin's browser at the provider, complete."""
    url, pending = begin_consent(stack.runtime.db, stack.runtime.box, "erp", REDIRECT_URI)
    params = sign_in(idp, url, login)
    if keep is not None:
        keep.update(pending=pending, params=params)
    return complete_consent(stack.runtime.db, stack.runtime.box, pending, params, actor=ADMIN)


def sign_in(idp: OidcProvider, url: str, login: str = "alice") -> dict[str, str]:
    with requests.Session() as browser:
        location = idp.sign_in(browser, url, login)
    assert location.startswith(REDIRECT_URI + "?"), location
    return dict(parse_qsl(urlsplit(location).query))


def grant_row(stack: Stack, connector_id: str) -> ConnectorGrant | None:
    with stack.runtime.db.begin() as session:
        grant = session.get(ConnectorGrant, connector_id)
        if grant is not None:
            session.expunge(grant)
        return grant


def stored_tokens(stack: Stack, connector_id: str) -> tuple[str, str]:
    grant = grant_row(stack, connector_id)
    assert grant is not None
    box = stack.runtime.box
    return box.decrypt(grant.access_token_encrypted), box.decrypt(grant.refresh_token_encrypted)


def token_source(stack: Stack, connector_id: str, **kwargs: Any) -> GrantTokenSource:
    with stack.runtime.db.begin() as session:
        row = session.get(Connector, connector_id)
        spec = custody._consent_of(row, stack.runtime.box)
    return GrantTokenSource(stack.runtime.db, stack.runtime.box, connector_id, "erp", spec, **kwargs)


def expire_access_token(stack: Stack, connector_id: str) -> None:
    """Wait until the stored access token has really expired (the back office refuses it)."""
    grant = grant_row(stack, connector_id)
    assert grant is not None and grant.expires_at is not None
    wait_until(lambda: utcnow() > grant.expires_at + timedelta(seconds=1.1),
               timeout=ACCESS_TTL + 5, message="the access token to expire")


def past_half_life(stack: Stack, connector_id: str) -> None:
    """Wait until the grant is due for renewal (half its lifetime, for short-lived tokens)."""
    grant = grant_row(stack, connector_id)
    assert grant is not None and grant.expires_at is not None
    half = grant.granted_at + (grant.expires_at - grant.granted_at) / 2
    if grant.refreshed_at:
        half = grant.refreshed_at + (grant.expires_at - grant.refreshed_at) / 2
    wait_until(lambda: utcnow() > half + timedelta(seconds=0.1), timeout=ACCESS_TTL + 5,
               message="half the token's lifetime")


def visible_text(stack: Stack, caplog: pytest.LogCaptureFixture) -> str:
    """Everything an operator or auditor can read: logs, audit log, CLI, orders, errors, rows."""
    parts = [caplog.text, json.dumps(stack.cli("audit", "list", "--json")),
             json.dumps(stack.cli("connectors", "list", "--json")),
             stack.app.test_cli_runner().invoke(args=["broker", "connectors", "check", "erp"]).output]
    for item in stack.cli("orders", "list", "--json"):
        parts.append(json.dumps(stack.cli("orders", "show", item["id"], "--json")))
    with stack.runtime.db.begin() as session:  # every row of every table, as stored
        for table in Base.metadata.sorted_tables:
            parts += [" ".join(map(str, row)) for row in session.execute(select(table))]
    return "\n".join(parts)


def assert_hidden(values: list[str], where: str) -> None:
    for value in filter(None, values):
        assert value not in where, f"a secret value ({value[:6]}…) is visible"


# --- (a) + (b): parked before the consent, booked after it -----------------------------------

def test_delivery_parks_until_an_admin_consents_then_books_with_encrypted_tokens_kept(
        stack, idp, backoffice, caplog):
    caplog.set_level(logging.DEBUG)
    connector_id, api = set_up(stack, idp, backoffice)
    assert stack.cli("connectors", "list", "--json")[0]["consent"]["state"] == "needed"

    post_order(stack, api, "C1")
    deliver(stack, connector_id)
    parked = deliveries(stack)["C1"]
    assert parked.status == DeliveryStatus.PARKED, parked.last_error
    assert (parked.parked_reason, parked.parked_kind, parked.parked_key) == (
        "consent required", "consent", "erp")
    assert "Console → Connectors → erp → Connect" in parked.last_error
    assert backoffice.requests == []  # nothing was sent without a token
    checked = stack.app.test_cli_runner().invoke(args=["broker", "connectors", "check", "erp"])
    assert checked.exit_code != 0 and "consent needed" in checked.output
    assert "an admin must connect connector 'erp'" in checked.output

    audit_before = stack.count(AuditEntry)
    kept: dict[str, Any] = {}
    result = consent(stack, idp, keep=kept)
    assert result["status"] == "ok" and result["granted_by"] == ADMIN and result["refreshable"]
    assert result["scope"] == "orders:write" and result["expires_at"]
    assert result["resumed"] == 1 and result["wake"] == [(connector_id, "connector.erp")]
    access, refresh = stored_tokens(stack, connector_id)
    assert access.count(".") == 2 and refresh and backoffice.verify(access) is None

    grant = grant_row(stack, connector_id)
    for token in (access, refresh):
        assert token not in grant.access_token_encrypted + grant.refresh_token_encrypted
    with stack.runtime.db.begin() as session:
        entries = session.execute(select(AuditEntry).where(
            AuditEntry.action == "connector.consent")).scalars().all()
    assert stack.count(AuditEntry) == audit_before + 1 and len(entries) == 1
    assert (entries[0].actor, entries[0].target_type, entries[0].target) == (ADMIN, "connector", "erp")
    assert entries[0].after["scope"] == "orders:write" and entries[0].after["resumed"] == 1
    assert entries[0].before is None

    resumed = deliveries(stack)["C1"]
    assert resumed.status == DeliveryStatus.PENDING and resumed.parked_reason is None
    deliver(stack, connector_id)
    booked = deliveries(stack)["C1"]
    assert booked.status == DeliveryStatus.BOOKED, booked.last_error
    assert backoffice.creates["C1"] == 1 and backoffice.refused == []
    assert backoffice.tokens == [access]
    listed = stack.cli("connectors", "list", "--json")[0]["consent"]
    assert listed["state"] == "ok" and listed["grant"]["granted_by"] == ADMIN
    assert listed["summary"].startswith("ok (expires ")
    assert "erp: consent ok" in stack.cli("connectors", "check", "erp")

    secrets = [access, refresh, CLIENT_SECRET, kept["params"]["code"],
               kept["pending"]["code_verifier"]]
    assert_hidden(secrets, visible_text(stack, caplog))


# --- (c): refreshed before it is needed, no 401 round trip -------------------------------------

def test_an_expired_access_token_is_refreshed_before_the_push(stack, idp, backoffice, caplog):
    caplog.set_level(logging.DEBUG)
    connector_id, api = set_up(stack, idp, backoffice)
    consent(stack, idp)
    first_access, first_refresh = stored_tokens(stack, connector_id)
    post_order(stack, api, "R1")
    deliver(stack, connector_id)
    assert deliveries(stack)["R1"].status == DeliveryStatus.BOOKED

    expire_access_token(stack, connector_id)
    assert backoffice.verify(first_access) is not None  # the back office refuses it now
    post_order(stack, api, "R2")
    deliver(stack, connector_id)
    assert deliveries(stack)["R2"].status == DeliveryStatus.BOOKED, deliveries(stack)["R2"].last_error
    assert backoffice.refused == []  # no 401: the token was renewed before the call
    assert len(backoffice.tokens) == 2 and backoffice.tokens[0] == first_access

    second_access, second_refresh = stored_tokens(stack, connector_id)
    assert backoffice.tokens[1] == second_access != first_access
    assert second_refresh != first_refresh  # rotated by the provider, the new one kept
    grant = grant_row(stack, connector_id)
    assert grant.status == "ok" and grant.refreshed_at is not None and grant.last_error is None
    # The spent refresh token is gone for good: replaying it is refused (and revokes the grant).
    replay = idp.token_request(CLIENT_ID, CLIENT_SECRET, grant_type="refresh_token",
                               refresh_token=first_refresh)
    assert replay.status_code == 400
    assert_hidden([first_access, first_refresh, second_access, second_refresh, CLIENT_SECRET],
                  visible_text(stack, caplog))


def test_a_token_the_back_office_refuses_is_replaced_once_and_retried(stack, idp, backoffice):
    """The back office answers 401 to a token still valid by the clock (e.g. it rotated its
    keys): the connector asks for another with refused=token and retries once."""
    connector_id, api = set_up(stack, idp, backoffice)
    consent(stack, idp)
    stale, _ = stored_tokens(stack, connector_id)
    backoffice.script([(401, {"WWW-Authenticate": "Bearer error=\"invalid_token\""}, b"{}")])
    post_order(stack, api, "U1")
    deliver(stack, connector_id)
    assert deliveries(stack)["U1"].status == DeliveryStatus.BOOKED, deliveries(stack)["U1"].last_error
    fresh, _ = stored_tokens(stack, connector_id)
    assert fresh != stale and backoffice.tokens == [fresh]  # the scripted 401 bypassed _authorized
    source = token_source(stack, connector_id)
    assert source.access_token(refused=stale) == fresh and source.refreshes == 0  # already moved on


# --- (d): racing refreshes spend the refresh token once ---------------------------------------

def test_racing_refreshes_make_one_token_request_and_both_get_a_working_token(
        db_stack, idp, backoffice):
    stack = db_stack
    connector_id, _ = set_up(stack, idp, backoffice)
    consent(stack, idp)
    _, first_refresh = stored_tokens(stack, connector_id)
    with stack.runtime.db.begin() as session:  # due now: both sources must renew
        session.execute(update(ConnectorGrant).where(ConnectorGrant.connector_id == connector_id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    both_due = threading.Barrier(2)

    class Racing(GrantTokenSource):
        """Both sources have found the token due before either takes the refresh lock."""

        def _refresh(self, refused: str | None, **kwargs: Any) -> str:
            both_due.wait(timeout=10)
            return super()._refresh(refused, **kwargs)

    spec = token_source(stack, connector_id).spec
    sources = [Racing(stack.runtime.db, stack.runtime.box, connector_id, "erp", spec)
               for _ in range(2)]
    start = threading.Barrier(len(sources))
    got: list[str] = []
    errors: list[BaseException] = []

    def take(source: GrantTokenSource) -> None:
        try:
            start.wait(timeout=10)
            got.append(source.access_token())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sum(s.refreshes for s in sources) == 1
    assert len(got) == 2 and got[0] == got[1] and backoffice.verify(got[0]) is None
    access, refresh = stored_tokens(stack, connector_id)
    assert access == got[0] and refresh != first_refresh
    # The stored (rotated) refresh token is the live one: had two refreshes spent the first,
    # the provider would have revoked the whole grant and this would fail.
    third = token_source(stack, connector_id)
    renewed = third.access_token(refused=access)
    assert third.refreshes == 1 and renewed != access and backoffice.verify(renewed) is None
    assert grant_row(stack, connector_id).status == "ok"


# --- (e): a refused refresh parks and shows on health until a new consent ----------------------

def test_a_revoked_refresh_token_shows_on_health_parks_deliveries_and_a_new_consent_resumes(
        stack, idp, backoffice, caplog):
    caplog.set_level(logging.DEBUG)
    connector_id, api = set_up(stack, idp, backoffice)
    consent(stack, idp)
    first_access, refresh = stored_tokens(stack, connector_id)
    idp.revoke(refresh, CLIENT_ID, CLIENT_SECRET, "refresh_token")

    # The sweeper finds out before any order needs the token.
    past_half_life(stack, connector_id)
    assert custody.refresh_due(stack.runtime.db, stack.runtime.box, within_seconds=300) == 0
    grant = grant_row(stack, connector_id)
    assert grant.status == "refresh_failed" and "invalid_grant" in grant.last_error
    assert "Console → Connectors → erp → Connect" in grant.last_error
    health = stack.cli("connectors", "list", "--json")[0]["consent"]
    assert health["state"] == "refresh_failed" and health["grant"]["last_error"] == grant.last_error
    assert health["summary"].startswith("refresh failed: ")
    listed = stack.cli("connectors", "list")
    assert "refresh failed: refresh refused" in listed

    expire_access_token(stack, connector_id)
    post_order(stack, api, "E1")
    deliver(stack, connector_id)
    parked = deliveries(stack)["E1"]
    assert parked.status == DeliveryStatus.PARKED, parked.last_error
    assert (parked.parked_reason, parked.parked_kind, parked.parked_key) == (
        "consent required", "consent", "erp")
    assert "invalid_grant" in parked.last_error and backoffice.requests == []
    assert stack.count(Delivery, Delivery.status == DeliveryStatus.DEAD) == 0

    result = consent(stack, idp)
    assert result["resumed"] == 1 and result["status"] == "ok" and result["last_error"] is None
    deliver(stack, connector_id)
    assert deliveries(stack)["E1"].status == DeliveryStatus.BOOKED
    assert stack.cli("connectors", "list", "--json")[0]["consent"]["state"] == "ok"
    with stack.runtime.db.begin() as session:
        entry = session.execute(select(AuditEntry).where(AuditEntry.action == "connector.consent")
                                .order_by(AuditEntry.id.desc()).limit(1)).scalar_one()
    assert entry.before["status"] == "refresh_failed" and entry.after["status"] == "ok"
    second_access, second_refresh = stored_tokens(stack, connector_id)
    assert_hidden([first_access, refresh, second_access, second_refresh, CLIENT_SECRET],
                  visible_text(stack, caplog))


def test_a_provider_that_forgot_the_grant_parks_the_next_push(stack, backoffice):
    """The authorization server restarted with fresh state (its grants gone): the refresh that
    the next push needs is refused, the delivery parks, nothing is dead-lettered."""
    node_required()
    with OidcProvider(ACCOUNTS, CLIENTS, RESOURCES) as forgetful:
        backoffice.idp = forgetful
        connector_id, api = set_up(stack, forgetful, backoffice)
        consent(stack, forgetful)
        forgetful.restart()
        expire_access_token(stack, connector_id)
        post_order(stack, api, "F1")
        deliver(stack, connector_id)
        parked = deliveries(stack)["F1"]
        assert parked.status == DeliveryStatus.PARKED and parked.parked_kind == "consent"
        assert grant_row(stack, connector_id).status == "refresh_failed"
        consent(stack, forgetful)
        deliver(stack, connector_id)
        assert deliveries(stack)["F1"].status == DeliveryStatus.BOOKED


def test_an_unreachable_token_endpoint_retries_without_failing_the_grant(stack, idp, backoffice):
    connector_id, api = set_up(stack, idp, backoffice)
    consent(stack, idp)
    expire_access_token(stack, connector_id)
    with stack.runtime.db.begin() as session:  # the IdP moved away (closed port)
        row = session.execute(select(Connector).where(Connector.name == "erp")).scalar_one()
        row.config = {**row.config, "auth": {**row.config["auth"],
                                             "token_url": "http://127.0.0.1:9/token"}}
    post_order(stack, api, "T1")
    deliver(stack, connector_id)
    waiting = deliveries(stack)["T1"]
    assert waiting.status == DeliveryStatus.PENDING and waiting.attempts == 1  # retried later
    assert "could not refresh its access token" in waiting.last_error
    grant = grant_row(stack, connector_id)
    assert grant.status == "ok" and "refresh failed, will retry" in grant.last_error
    assert "last refresh attempt failed" in stack.cli("connectors", "list", "--json")[0]["consent"]["summary"]


# --- (f): bad callbacks are refused clearly and change nothing ----------------------------------

def test_tampered_state_expired_consent_and_denied_access_are_refused_and_change_nothing(
        stack, idp, backoffice):
    connector_id, api = set_up(stack, idp, backoffice)
    post_order(stack, api, "D1")
    deliver(stack, connector_id)
    assert deliveries(stack)["D1"].status == DeliveryStatus.PARKED
    db, box = stack.runtime.db, stack.runtime.box
    before = stack.row_counts()

    url, pending = begin_consent(db, box, "erp", REDIRECT_URI)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"] == REDIRECT_URI
    assert query["state"] == pending["state"] and pending["code_verifier"] not in url
    assert query["resource"] == ERP_RESOURCE and query["prompt"] == "consent"
    params = sign_in(idp, url)
    with pytest.raises(ConsentError, match="state mismatch"):
        complete_consent(db, box, pending, {**params, "state": pending["state"][:-2] + "xx"}, ADMIN)
    with pytest.raises(ConsentError, match="more than 10 minutes ago"):
        stale = {**pending, "started_at": (utcnow() - timedelta(minutes=11)).isoformat()}
        complete_consent(db, box, stale, params, ADMIN)
    with pytest.raises(ConsentError, match="refused the authorization code") as refused:
        complete_consent(db, box, {**pending, "code_verifier": "x" * 64}, params, ADMIN)
    assert "invalid_grant" in str(refused.value)
    assert params["code"] not in str(refused.value) and CLIENT_SECRET not in str(refused.value)
    with pytest.raises(ConsentError, match="no consent is in progress"):
        complete_consent(db, box, {}, params, ADMIN)

    other_url, other = begin_consent(db, box, "erp", REDIRECT_URI)
    denied = sign_in(idp, other_url, login="mallory")  # not an account: the provider denies access
    with pytest.raises(ConsentError, match=r"did not grant access .*access_denied"):
        complete_consent(db, box, other, denied, ADMIN)

    assert stack.row_counts() == before
    assert grant_row(stack, connector_id) is None
    assert deliveries(stack)["D1"].status == DeliveryStatus.PARKED
    # The genuine answer still completes: the refusals above did not spend the code.
    assert complete_consent(db, box, pending, params, ADMIN)["resumed"] == 1


def test_consent_is_refused_for_unknown_connectors_and_other_auth_types(stack, sink):
    stack.http_connector("plain", sink.url + "/orders")
    with pytest.raises(ConsentError, match="no connector named 'nope'"):
        begin_consent(stack.runtime.db, stack.runtime.box, "nope", REDIRECT_URI)
    with pytest.raises(ConsentError, match=r"does not use an OAuth 2\.0 consent"):
        begin_consent(stack.runtime.db, stack.runtime.box, "plain", REDIRECT_URI)
    with pytest.raises(ConsentError, match="absolute http"):
        begin_consent(stack.runtime.db, stack.runtime.box, "plain", "/relative")
    assert stack.cli("connectors", "list", "--json")[0]["consent"] is None


def test_no_grant_means_consent_required(stack, idp, backoffice):
    connector_id, _ = set_up(stack, idp, backoffice)
    with pytest.raises(ConsentRequired) as caught:
        token_source(stack, connector_id).access_token()
    assert (caught.value.reason, caught.value.kind, caught.value.key) == (
        "consent required", "consent", "erp")


# --- the CLI: print the URL, paste the address back -------------------------------------------

def test_cli_consent_prints_the_url_and_completes_from_the_pasted_address(stack, idp, backoffice):
    connector_id, api = set_up(stack, idp, backoffice)
    post_order(stack, api, "K1")
    deliver(stack, connector_id)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from broker.cli import main; main()", "connectors", "consent", "erp",
         "--redirect-uri", REDIRECT_URI, "--json"],
        env={**os.environ, **stack.env}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stderr is not None and proc.stdin is not None
        line = ""
        while "/auth?" not in line:
            line = proc.stderr.readline()
            assert line, "the CLI ended before printing the authorization URL"
        location = ""
        with requests.Session() as browser:
            location = idp.sign_in(browser, line.strip(), "alice")
        out, err = proc.communicate(location + "\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["status"] == "ok" and result["resumed"] == 1 and "wake" not in result
    assert result["granted_by"].startswith("cli:")
    access, refresh = stored_tokens(stack, connector_id)
    assert_hidden([access, refresh, CLIENT_SECRET], out + err)
    assert deliveries(stack)["K1"].status == DeliveryStatus.PENDING
    deliver(stack, connector_id)
    assert deliveries(stack)["K1"].status == DeliveryStatus.BOOKED


# --- the sweeper keeps an idle grant fresh -------------------------------------------------------

def test_refresh_due_renews_an_idle_grant_before_it_expires(stack, idp, backoffice):
    connector_id, _ = set_up(stack, idp, backoffice)
    consent(stack, idp)
    access, refresh = stored_tokens(stack, connector_id)
    db, box = stack.runtime.db, stack.runtime.box
    assert custody.refresh_due(db, box, within_seconds=0) == 0  # not due yet
    past_half_life(stack, connector_id)  # a token shorter than the window: renewed half-way
    assert custody.refresh_due(db, box, within_seconds=300) == 1
    fresh_access, fresh_refresh = stored_tokens(stack, connector_id)
    assert fresh_access != access and fresh_refresh != refresh
    assert backoffice.verify(fresh_access) is None
    assert custody.refresh_due(db, box, within_seconds=300) == 0  # just renewed: not yet


def test_http_connector_without_a_token_source_asks_for_the_consent(sink):
    from connectors.http import HttpConnector
    from connectors.testing import contract_order, push_context

    auth = {"type": "oauth2_consent", "authorize_url": "https://idp.example.com/authorize",
            "token_url": "https://idp.example.com/token", "client_id": "broker",
            "client_secret": CLIENT_SECRET, "scope": "offline_access orders:write",
            "resource": ERP_RESOURCE, "authorize_params": {"access_type": "offline"}}
    connector = HttpConnector({"url": sink.url + "/orders", "auth": auth}, name="erp")
    spec = connector.consent()
    assert spec is not None and spec.client_secret == CLIENT_SECRET
    assert dict(spec.extra) == {"access_type": "offline", "resource": ERP_RESOURCE}
    assert CLIENT_SECRET not in repr(spec)
    order_doc = contract_order()
    with pytest.raises(ConsentRequired, match="Console → Connectors → erp → Connect") as caught:
        connector.push(order_doc, push_context(order_doc))
    assert (caught.value.kind, caught.value.key) == ("consent", "erp") and sink.requests == []


def test_workers_book_with_the_consent_and_the_sweeper_keeps_an_idle_grant_fresh(
        stack, idp, backoffice):
    connector_id, api = set_up(stack, idp, backoffice)
    post_order(stack, api, "W1")
    stack.start_worker()  # with beat: the sweep runs every second
    wait_until(lambda: deliveries(stack)["W1"].status == DeliveryStatus.PARKED,
               message="the delivery parked for the consent")
    result = consent(stack, idp)
    stack.runtime.publisher.wake(result["wake"])  # what the console does after completing
    wait_until(lambda: deliveries(stack)["W1"].status == DeliveryStatus.BOOKED,
               message="the resumed delivery booked by the worker")
    first_access, first_refresh = stored_tokens(stack, connector_id)
    # No traffic: the sweeper renews the grant before it expires, more than once.
    wait_until(lambda: (grant_row(stack, connector_id).refreshed_at is not None
                        and stored_tokens(stack, connector_id)[1] != first_refresh),
               timeout=ACCESS_TTL * 2 + 5, message="the sweeper's refresh")
    second_refresh = stored_tokens(stack, connector_id)[1]
    wait_until(lambda: stored_tokens(stack, connector_id)[1] != second_refresh,
               timeout=ACCESS_TTL * 2 + 5, message="a second refresh by the sweeper")
    grant = grant_row(stack, connector_id)
    assert grant.status == "ok" and grant.last_error is None
    post_order(stack, api, "W2")
    wait_until(lambda: deliveries(stack)["W2"].status == DeliveryStatus.BOOKED,
               message="a later order booked with the renewed token")
    assert backoffice.refused == []
    access, refresh = stored_tokens(stack, connector_id)
    logs = stack.worker_logs()
    assert "refreshed the OAuth 2.0 access token of connector erp" in logs
    assert_hidden([first_access, first_refresh, second_refresh, access, refresh, CLIENT_SECRET,
                   *backoffice.tokens], logs)


# --- the console: an admin connects the connector -------------------------------------------

def console_sign_in(stack: Stack, role: str) -> None:
    """A local console user with `role`, signed in in stack.client."""
    import re

    result = stack.app.test_cli_runner().invoke(
        args=["broker", "users", "create-admin", role, "--role", role])
    assert result.exit_code == 0, result.output
    password = result.output.split("password (shown once): ")[1].strip()
    page = stack.client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    answer = stack.client.post("/console/login", data={"username": role, "password": password,
                                                       "csrf_token": csrf})
    assert answer.status_code == 303, answer.get_data(as_text=True)


def test_an_admin_connects_from_the_console_and_parked_orders_book(
        stack: Stack, idp: OidcProvider, backoffice: JwtBackOffice) -> None:
    connector_id, token = set_up(stack, idp, backoffice)
    post_order(stack, token, "C-1")
    deliver(stack, connector_id)
    assert deliveries(stack)["C-1"].status == DeliveryStatus.PARKED
    console_sign_in(stack, "viewer")
    page = stack.client.get("/console/").get_data(as_text=True)
    assert "needed" in page and "/console/connectors/erp/connect" not in page  # not offered
    assert stack.client.get("/console/connectors/erp/connect").status_code == 403
    stack.client.delete_cookie("broker-session")

    console_sign_in(stack, "admin")
    page = stack.client.get("/console/").get_data(as_text=True)
    assert "/console/connectors/erp/connect" in page
    start = stack.client.get("/console/connectors/erp/connect")
    assert start.status_code == 303
    location = start.headers["Location"]
    assert location.startswith(idp.discovery()["authorization_endpoint"])
    assert parse_qs(urlsplit(location).query)["redirect_uri"] == [CONSOLE_CALLBACK]
    with requests.Session() as browser:
        back = idp.sign_in(browser, location, "alice")
    assert back.startswith(CONSOLE_CALLBACK + "?"), back
    parts = urlsplit(back)
    done = stack.client.get(f"{parts.path}?{parts.query}", follow_redirects=True)
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and "Connector erp is connected; 1 parked deliveries resume" in text
    assert "ok (expires" in text
    deliver(stack, connector_id)
    assert deliveries(stack)["C-1"].status == DeliveryStatus.BOOKED
    with stack.runtime.db.begin() as session:
        actors = session.execute(select(AuditEntry.actor).where(
            AuditEntry.action == "connector.consent")).scalars().all()
    assert actors == ["user:admin"]
    # the same answer again is refused: the pending consent was used up
    again = stack.client.get(f"{parts.path}?{parts.query}", follow_redirects=True)
    assert "has expired or was started in another browser" in again.get_data(as_text=True)
