"""What the console pages share: the actor, waking connectors, page sizes and cursors, and the
template filters that show times and durations the same way on every page."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, g, request
from sqlalchemy import select

from broker.console.auth import runtime

PAGE = 50       # rows per page unless the URL asks for another `limit`
MAX_PAGE = 200  # never more, whatever the URL says

__all__ = ["MAX_PAGE", "PAGE", "actor", "bp", "decode_cursor", "encode_cursor", "names", "page_limit",
           "runtime", "wake"]

# Registered by init_console: no routes, only the filters every console template uses.
bp = Blueprint("console_common", __name__)


def actor() -> str:
    """Who the audit log names for a change made in this request."""
    return str(g.user.actor)


def wake(connectors: Sequence[tuple[str, str]]) -> None:
    """After the commit: tell the workers of these connectors there is work (the sweeper would
    find it anyway)."""
    if connectors:
        runtime().publisher.wake(list(connectors))


def names(session: Any, model: Any, *where: Any) -> list[str]:
    """Names for a form's select (sources, connectors): the first 500 by name."""
    query = select(model.name).where(*where).order_by(model.name).limit(500)
    return list(session.execute(query).scalars())


def page_limit() -> int:
    try:
        limit = int(request.args.get("limit", PAGE))
    except ValueError:
        return PAGE
    return max(1, min(limit, MAX_PAGE))


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for lists ordered by more than an id."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, size: int) -> tuple[Any, ...] | None:
    """The values of a cursor this console made; None for a missing or foreign one (first page)."""
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        return None
    if isinstance(values, list) and len(values) == size and all(isinstance(v, str | int) for v in values):
        return tuple(values)
    return None


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """A time as people read it in a table: UTC, to the second."""
    moment = _as_datetime(value)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)
