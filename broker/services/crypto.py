"""Secrets at rest: MultiFernet with keys from BROKER_SECRET_KEYS (first key encrypts)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBoxError(RuntimeError):
    """A stored secret cannot be decrypted with any configured key."""


class SecretBox:
    def __init__(self, keys: tuple[str, ...] | list[str]) -> None:
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    def encrypt(self, value: Any) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def decrypt(self, token: str | None, default: Any = None) -> Any:
        if not token:
            return default
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise SecretBoxError(
                "a stored secret cannot be decrypted: BROKER_SECRET_KEYS lacks the key it was "
                "encrypted with (keep old keys listed after the new one until rotation is done)"
            ) from None

    def rotate(self, token: str) -> str:
        """Re-encrypt under the first key."""
        return self._fernet.rotate(token.encode()).decode()
