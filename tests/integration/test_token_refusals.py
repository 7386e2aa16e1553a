"""A refused bearer token says why, in the 401 and in the log (`reason=wrong_audience`), and
never shows the token: a wrong audience no longer looks like an expiry. Tokens from a real
OpenID Connect provider (tests/idp) and the broker's own."""

from __future__ import annotations

import logging

import pytest
from harness import Stack
from idp.oidc import OidcProvider
from test_identity_brokering import bearer, corp, idp, machine_token  # noqa: F401  (fixtures)


def _refusal(stack: Stack, token: str, caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    """(the 401's message, the reason logged) for one call with this token."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="broker.identity.protect"):
        response = stack.client.get("/api/v1/orders", headers=bearer(token))
    assert response.status_code == 401, response.get_data(as_text=True)
    records = [r for r in caplog.records if r.name == "broker.identity.protect"]
    assert len(records) == 1
    logged = records[0].getMessage()
    assert token not in logged and token[-20:] not in logged  # never the token, nor its signature
    assert "error_description=" in response.headers["WWW-Authenticate"]
    return response.json["error"]["message"], records[0].reason  # type: ignore[attr-defined]


def test_an_issuer_token_for_another_audience_is_refused_as_such(
        corp: Stack, idp: OidcProvider, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    other = machine_token(idp, "svc-admin", "https://elsewhere.test/")
    message, reason = _refusal(corp, other, caplog)
    assert reason == "wrong_audience"
    assert message == "the access token is refused: its audience (aud) is not this API"
    assert "aud 'someone-else', expected 'fobo-broker'" in caplog.text


def test_a_token_of_a_disabled_issuer_and_garbage_are_refused_with_their_reasons(
        corp: Stack, idp: OidcProvider, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    token = machine_token(idp, "svc-admin")
    assert corp.client.get("/api/v1/orders", headers=bearer(token)).status_code == 200
    corp.cli("issuers", "configure", "corp", "--disable")
    corp.app.extensions["broker_issuers"].invalidate()
    assert _refusal(corp, token, caplog)[1] == "untrusted_issuer"
    assert _refusal(corp, "not-a-jwt-at-all", caplog)[1] == "malformed"


def test_the_brokers_own_tokens_say_revoked_or_tampered(stack: Stack,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    token = stack.token("pos", "orders:read")
    assert stack.client.get("/api/v1/orders", headers=bearer(token)).status_code == 200
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}{'B' if signature[-5] == 'A' else 'A'}AAA"
    assert _refusal(stack, forged, caplog)[1] == "bad_signature"
    stack.cli("clients", "revoke", "pos")
    message, reason = _refusal(stack, token, caplog)
    assert reason == "revoked" and message.endswith("it has been revoked")
