"""Secrets at rest: MultiFernet with keys from BROKER_SECRET_KEYS (first key encrypts)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

if TYPE_CHECKING:
    from sqlalchemy import Column, Table

    from broker.db import Database


class SecretBoxError(RuntimeError):
    """A stored secret cannot be decrypted with any configured key."""


class SecretBox:
    def __init__(self, keys: tuple[str, ...] | list[str]) -> None:
        self._keys = [Fernet(k) for k in keys]
        self._fernet = MultiFernet(self._keys)

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
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretBoxError("a stored secret cannot be decrypted with any configured key") from None

    def is_current(self, token: str) -> bool:
        """Whether the token is already under the first key, so rotation can leave it alone."""
        try:
            self._keys[0].decrypt(token.encode())
        except InvalidToken:
            return False
        return True


def encrypted_columns() -> list[tuple[Table, Column[Any]]]:
    """Every `*_encrypted` column of every table: a table added later is rotated too."""
    import broker.models  # noqa: F401  (registers every table)
    from broker.db import Base

    return [(table, column) for table in Base.metadata.sorted_tables for column in table.columns
            if column.name.endswith("_encrypted")]


def rotate_stored_secrets(db: Database, box: SecretBox, *, actor: str,
                          batch_size: int = 200) -> list[dict[str, Any]]:
    """Re-encrypt every stored secret under the first key of BROKER_SECRET_KEYS.

    One short transaction per batch (keyset pages by id), so a large installation is never
    locked for long. Idempotent: a value already under the first key is left alone, and each
    write is a compare-and-set, so a value changed meanwhile is skipped, not clobbered (run
    again to pick it up). Returns per column counts: rotated, current, skipped, failed (a
    value no configured key opens) with the ids that failed. The run is audited.
    """
    from sqlalchemy import select, update

    from broker.services import audit

    report = []
    for table, column in encrypted_columns():
        tally: dict[str, Any] = {"column": f"{table.name}.{column.name}", "rotated": 0, "current": 0,
                                 "skipped": 0, "failed": 0, "failed_ids": []}
        # Keyset pages by the primary key: `id`, or e.g. connector_grants.connector_id.
        pk, last = next(iter(table.primary_key.columns)), ""
        while True:
            with db.begin() as session:
                rows = session.execute(select(pk, column).where(column.is_not(None), pk > last)
                                       .order_by(pk).limit(batch_size)).all()
                for row_id, sealed in rows:
                    if not sealed or box.is_current(sealed):
                        tally["current"] += 1
                        continue
                    try:
                        fresh = box.rotate(sealed)
                    except SecretBoxError:
                        tally["failed"] += 1
                        if len(tally["failed_ids"]) < 50:
                            tally["failed_ids"].append(row_id)
                        continue
                    done = session.execute(update(table).where(pk == row_id, column == sealed)
                                           .values({column.name: fresh})).rowcount
                    tally["rotated" if done else "skipped"] += 1
            if len(rows) < batch_size:
                break
            last = rows[-1][0]
        report.append(tally)
    with db.begin() as session:
        audit.record(session, actor=actor, action="keys.rotate_secrets", target_type="secret_keys",
                     target="BROKER_SECRET_KEYS", after={"columns": report})
    return report
