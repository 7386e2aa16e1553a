"""What the admin endpoints share: documented security and errors, cursor pagination, and
service errors turned into the one API error shape."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

from flask_smorest import Blueprint
from sqlalchemy.exc import IntegrityError

from broker.api.common import caller_sources
from broker.errors import ApiError
from broker.identity.protect import ROLE_FOR, SCOPE_FOR, require
from broker.schemas.api import MAX_PAGE
from broker.services.operations import NotReplayable
from broker.services.sources import Conflict, NotFound, SetupError

__all__ = ["caller_sources", "decode_cursor", "encode_cursor", "guarded", "limit_of", "offset_page",
           "page", "service_errors"]


def guarded(blp: Blueprint, permission: str, summary: str, *statuses: int,
            description: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Require `permission` (before the arguments are parsed) and document it: summary,
    security, and the error answers (401 and 403 always, plus `statuses`)."""
    who = (f"the role {ROLE_FOR[permission]} or the scope {SCOPE_FOR[permission]}"
           if permission in ROLE_FOR else f"the scope {SCOPE_FOR[permission]}")
    text = f"{description}\n\nNeeds {who}." if description else f"Needs {who}."

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        view = require(permission)(view)
        for status in (401, 403, *statuses):
            view = blp.alt_response(status, response=HTTPStatus(status).name)(view)
        return blp.doc(summary=summary, description=text,
                       security=[{"oauth2": [SCOPE_FOR[permission]]}])(view)

    return decorate


def limit_of(args: dict[str, Any]) -> int:
    return min(args.get("limit") or MAX_PAGE, MAX_PAGE)


def page(items: list[dict[str, Any]], limit: int,
         cursor_of: Callable[[dict[str, Any]], str] = lambda item: item["id"]) -> dict[str, Any]:
    """A page of a list fetched with `limit`: a full page has a next cursor."""
    return {"items": items, "next_cursor": cursor_of(items[-1]) if items and len(items) == limit else None}


def encode_cursor(*values: Any) -> str:
    """An opaque cursor for lists ordered by more than an id."""
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> tuple[Any, ...]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(values, list) and len(values) == len(types) and all(
                type(v) is t for v, t in zip(values, types, strict=True)):
            return tuple(values)
    except (ValueError, binascii.Error):
        pass
    raise ApiError(400, "invalid_cursor", "cursor is not a next_cursor this list returned")


def offset_page(items: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    """A page of a short computed list (groups), with an opaque offset cursor."""
    offset = decode_cursor(args["cursor"], (int,))[0] if args.get("cursor") else 0
    limit = limit_of(args)
    chunk = items[max(offset, 0):max(offset, 0) + limit]
    more = max(offset, 0) + limit < len(items)
    return {"items": chunk, "next_cursor": encode_cursor(max(offset, 0) + limit) if more else None}


@contextmanager
def service_errors() -> Iterator[None]:
    """Service exceptions as API errors: 404 unknown, 409 conflicting, 422 invalid."""
    try:
        yield
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except (Conflict, NotReplayable) as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except SetupError as exc:
        raise ApiError(422, "invalid_setup", str(exc)) from None
    except LookupError as exc:
        raise ApiError(404, "not_found", str(exc).strip("'\"")) from None
    except IntegrityError:
        raise ApiError(409, "conflict", "it exists already or changed meanwhile; reload and "
                       "try again") from None
