"""Standard Webhooks 1.0 whose payload is a canonical order.

Spec: https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md
— signature = base64(HMAC-SHA256(secret, "{webhook-id}.{webhook-timestamp}.{body}")), header
`webhook-signature` holds space-separated `v1,<sig>` entries (several during rotation), the
secret is `whsec_` + base64 bytes, and the timestamp must be within the tolerance both ways.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Mapping
from typing import Any

from broker.channels.base import Channel, Envelope, PayloadError, SignatureError

MAX_SIGNATURE_HEADER = 4096


def decode_secret(secret: str) -> bytes:
    """Key bytes of a `whsec_` secret (the prefix is optional, as in the reference libraries)."""
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is 'whsec_' + base64") from None


def sign(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The `v1,<base64>` signature of a message (used by tests, benchmarks and the README)."""
    mac = hmac.new(decode_secret(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class StandardWebhooksChannel(Channel):
    kind = "standard-webhooks"
    kept_headers = ("content-type", "webhook-id", "webhook-timestamp")

    def verify(self, headers: Mapping[str, str], body: bytes, secrets: list[str],
               now: float, tolerance: int) -> Envelope:
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        if not msg_id or not stamp or not signatures:
            raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
        if len(signatures) > MAX_SIGNATURE_HEADER or len(msg_id) > 255:
            raise SignatureError("signature headers too long")
        try:
            timestamp = int(stamp)
        except ValueError:
            raise SignatureError("webhook-timestamp is not an integer") from None
        if timestamp < now - tolerance:
            raise SignatureError("message timestamp too old")
        if timestamp > now + tolerance:
            raise SignatureError("message timestamp too new")
        signed = f"{msg_id}.{timestamp}.".encode() + body
        offered = [s.partition(",") for s in signatures.split(" ")]
        for secret in secrets:
            expected = base64.b64encode(
                hmac.new(decode_secret(secret), signed, hashlib.sha256).digest()).decode()
            for version, _, value in offered:
                if version == "v1" and hmac.compare_digest(value.encode(), expected.encode()):
                    return Envelope(event_key=msg_id, topic="order")
        raise SignatureError("no matching signature")

    def to_orders(self, topic: str | None, payload: Any) -> list[dict[str, Any]]:
        if not isinstance(payload, dict):
            raise PayloadError("payload must be a JSON object holding one canonical order")
        return [payload]

    def new_secret(self) -> str:
        return "whsec_" + base64.b64encode(_secrets.token_bytes(24)).decode()
