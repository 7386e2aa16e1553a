"""Standard Webhooks signatures (RELIABILITY.md T01) and the constant-time compare rule (T10).

Cases follow the spec's reference vector and the reference library's own tests
(standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py).
"""

from __future__ import annotations

import ast
import base64
import json
import re
from pathlib import Path

import pytest

from broker.channels.base import SignatureError
from broker.channels.standard_webhooks import StandardWebhooksChannel, sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TS = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
OTHER_SECRET = "whsec_" + base64.b64encode(b"another key, 24 bytes ok").decode()
ROOT = Path(__file__).resolve().parents[2]


def headers(msg_id: str | None = MSG_ID, ts: object = TS,
            signature: str | None = EXPECTED) -> dict[str, str]:
    out = {"content-type": "application/json"}
    if msg_id is not None:
        out["webhook-id"] = msg_id
    if ts is not None:
        out["webhook-timestamp"] = str(ts)
    if signature is not None:
        out["webhook-signature"] = signature
    return out


def verify(hdrs: dict[str, str], body: bytes = BODY, secrets: list[str] | None = None,
           now: float = TS):
    return StandardWebhooksChannel().verify(hdrs, body, secrets or [SECRET], now=now, tolerance=300)


def test_reference_vector_signs_exactly():
    assert sign(SECRET, MSG_ID, TS, BODY) == EXPECTED


def test_reference_vector_verifies_and_keys_the_event_on_the_message_id():
    envelope = verify(headers())
    assert envelope.event_key == MSG_ID


@pytest.mark.parametrize("missing", ["msg_id", "ts", "signature"])
def test_missing_header_is_rejected(missing):
    with pytest.raises(SignatureError, match="missing"):
        verify(headers(**{missing: None}))


@pytest.mark.parametrize("missing", ["msg_id", "ts", "signature"])
def test_empty_header_is_rejected(missing):
    with pytest.raises(SignatureError):
        verify(headers(**{missing: ""}))


@pytest.mark.parametrize("stamp", ["not-a-number", "1614265330.5", "0x603800f2"])
def test_non_integer_timestamp_is_rejected(stamp):
    with pytest.raises(SignatureError, match="integer"):
        verify(headers(ts=stamp, signature=sign(SECRET, MSG_ID, stamp, BODY)))


def test_timestamp_older_than_tolerance_is_rejected_even_when_correctly_signed():
    stamp = TS - 301
    with pytest.raises(SignatureError, match="too old"):
        verify(headers(ts=stamp, signature=sign(SECRET, MSG_ID, stamp, BODY)))


def test_timestamp_newer_than_tolerance_is_rejected_even_when_correctly_signed():
    stamp = TS + 301
    with pytest.raises(SignatureError, match="too new"):
        verify(headers(ts=stamp, signature=sign(SECRET, MSG_ID, stamp, BODY)))


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_at_the_tolerance_edge_is_accepted(offset):
    stamp = TS + offset
    assert verify(headers(ts=stamp, signature=sign(SECRET, MSG_ID, stamp, BODY))).event_key == MSG_ID


def test_signature_list_with_one_match_among_several_is_accepted():
    forged = "v1," + base64.b64encode(b"\0" * 32).decode()
    other = sign(OTHER_SECRET, MSG_ID, TS, BODY)
    listed = f"{forged} v1a,{EXPECTED.split(',', 1)[1]} {other} {EXPECTED}"
    assert verify(headers(signature=listed)).event_key == MSG_ID


def test_signature_list_with_no_match_is_rejected():
    forged = "v1," + base64.b64encode(b"\0" * 32).decode()
    other = sign(OTHER_SECRET, MSG_ID, TS, BODY)
    with pytest.raises(SignatureError, match="no matching"):
        verify(headers(signature=f"{forged} {other}"))


def test_right_digest_under_an_unknown_version_tag_is_rejected():
    with pytest.raises(SignatureError):
        verify(headers(signature="v2," + EXPECTED.split(",", 1)[1]))


@pytest.mark.parametrize("secret", [SECRET, SECRET.removeprefix("whsec_")])
def test_secret_works_with_and_without_whsec_prefix(secret):
    assert sign(secret, MSG_ID, TS, BODY) == EXPECTED
    assert verify(headers(), secrets=[secret]).event_key == MSG_ID


def test_rotation_accepts_a_signature_made_with_the_second_secret_of_the_source():
    assert verify(headers(), secrets=[OTHER_SECRET, SECRET]).event_key == MSG_ID


def test_signature_of_a_secret_the_source_does_not_hold_is_rejected():
    with pytest.raises(SignatureError):
        verify(headers(), secrets=[OTHER_SECRET])


def test_tampered_body_is_rejected():
    with pytest.raises(SignatureError):
        verify(headers(), body=b'{"test": 2432232315}')


def test_tampered_message_id_is_rejected():
    with pytest.raises(SignatureError):
        verify(headers(msg_id="msg_p5jXN8AQM9LWM0D4loKWxJel"))


def test_reserialised_json_with_same_content_is_rejected():
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert reserialised != BODY and json.loads(reserialised) == json.loads(BODY)
    with pytest.raises(SignatureError):
        verify(headers(), body=reserialised)


def test_oversized_signature_header_is_rejected_without_work():
    with pytest.raises(SignatureError, match="too long"):
        verify(headers(signature=" ".join([EXPECTED] * 200)))


# --- T10: no `==`/`!=` on secret material ------------------------------------------------
# Scans broker/, connectors/ and workers/ (tasks handle ids and secrets too).

SENSITIVE = re.compile(r"signature|secret|token|digest|hash", re.IGNORECASE)


def _names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return []


def _sql_column(node: ast.AST) -> bool:
    """`Model.column`: such a comparison builds a SQL WHERE clause; nothing is compared in Python.

    Looking a token up by its SHA-256 in an index is the intended design (identity/server.py):
    the attacker controls the hash input but cannot choose hash prefixes, so timing tells nothing.
    """
    return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id[:1].isupper())


def equality_on_secrets(source: str, filename: str = "<string>") -> list[str]:
    """`file:line: code` of each ==/!= comparison with a secret-named operand and no literal side."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            if not isinstance(op, ast.Eq | ast.NotEq):
                continue
            pair = operands[index], operands[index + 1]
            if any(isinstance(side, ast.Constant) or _sql_column(side) for side in pair):
                continue
            if any(SENSITIVE.search(name) for side in pair for name in _names(side)):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_secret_comparison_rule_catches_equality_and_allows_literals():
    assert equality_on_secrets("if signature == expected: pass")
    assert equality_on_secrets("ok = row.secret_hash != digest(x)")
    assert equality_on_secrets("ok = a == b.token")
    assert not equality_on_secrets("if token is None or token == '': pass")
    assert not equality_on_secrets("ok = hmac.compare_digest(sig, expected)")
    assert not equality_on_secrets("if a.name == b.name: pass")
    assert not equality_on_secrets("q = select(Token).where(Token.token_hash == digest(raw))")
    assert equality_on_secrets("if self._token == token: pass")


def test_no_equality_comparison_on_secret_values_in_product_code():
    files = sorted(p for d in ("broker", "connectors", "workers") for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 10
    found = [hit for path in files
             for hit in equality_on_secrets(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, "use hmac.compare_digest for secret material:\n" + "\n".join(found)
