"""The audit log: who changed what, when, with before/after — never a secret.

An entry is written in the same transaction as the change it describes, so a change without
its entry (or an entry for a change that was rolled back) cannot exist. Callers pass
before/after built from public fields and the *names* of secrets; `record` scrubs them once
more (values under secret-looking keys, and any value the process knows to be a secret), so
one careless caller cannot leak a password into a table auditors read.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.logging import redact
from broker.models import AuditEntry

REDACTED = "***"
SYSTEM = "system"  # the actor of a service call nobody named (tests, internal callers)
MAX_PAGE = 200
SECRET_KEY = re.compile(r"(secret|password|passwd|passphrase|token|credential|api[_-]?key|private"
                        r"|authorization|signature|cookie)", re.I)


def scrub(value: Any, *, hide: bool = False) -> Any:
    """A JSON-safe copy with secrets replaced by "***"; dict keys (secret names) are kept."""
    if isinstance(value, dict):
        return {str(k): scrub(v, hide=hide or bool(SECRET_KEY.search(str(k)))) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        items = sorted(value, key=str) if isinstance(value, set) else value
        return [scrub(v, hide=hide) for v in items]
    if hide and value is not None and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


def secret_names(values: dict[str, Any] | None) -> dict[str, str]:
    """What an entry may say about stored secrets: their names, each value shown as "***"."""
    return {name: REDACTED for name in sorted(values or {}) if values[name] not in (None, "")}


def changed_names(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Names of the secrets added, changed or removed between two decrypted mappings."""
    old, new = old or {}, new or {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def current_request_id() -> str | None:
    """The gateway's request id when called within a request (the CLI and workers have none).

    Read from the request, not the log context variable: that one outlives its request in a
    thread that later runs a CLI command.
    """
    from flask import g, has_request_context  # lazily: workers use this module without Flask

    if has_request_context():
        return g.get("request_id") or None
    return None


def record(session: Session, *, actor: str, action: str, target_type: str, target: str | None,
           before: dict[str, Any] | None = None, after: dict[str, Any] | None = None) -> AuditEntry:
    """Add one entry to `session`; it commits (or rolls back) with the change itself."""
    entry = AuditEntry(actor=actor[:255], action=action[:64], target_type=target_type[:32],
                       target=target[:255] if target is not None else None,
                       request_id=current_request_id(),
                       before=scrub(before) if before is not None else None,
                       after=scrub(after) if after is not None else None)
    session.add(entry)
    return entry


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def entry_dict(entry: AuditEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": _iso(entry.at), "actor": entry.actor, "action": entry.action,
            "target_type": entry.target_type, "target": entry.target,
            "request_id": entry.request_id, "before": entry.before, "after": entry.after}


def list_entries(session: Session, *, action: str | None = None, target_type: str | None = None,
                 target: str | None = None, actor: str | None = None, since: datetime | None = None,
                 before: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first; `before` is the cursor (an entry id: ids are time-ordered)."""
    query = select(AuditEntry)
    for column, wanted in ((AuditEntry.action, action), (AuditEntry.target_type, target_type),
                           (AuditEntry.target, target), (AuditEntry.actor, actor)):
        if wanted:
            query = query.where(column == wanted)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if before:
        query = query.where(AuditEntry.id < before)
    rows = session.execute(query.order_by(AuditEntry.id.desc()).limit(max(1, min(limit, MAX_PAGE))))
    return [entry_dict(e) for e in rows.scalars()]
