"""Helpers shared by the API views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from broker.errors import ApiError
from broker.services.intake import parse_json


def runtime() -> Any:
    return current_app.extensions["broker"]


def caller_sources() -> set[str] | None:
    """The sources whose orders the authenticated caller may see (None: all of them)."""
    sources = g.principal.source_ids
    return None if sources is None else set(sources)


def read_body(limit: int) -> bytes:
    """The request body if it has at most `limit` bytes, else 413 — also for a chunked body
    without Content-Length, which Werkzeug cuts at its limit without a word: one byte more
    than allowed is read, and its arrival means the body is too large."""
    request.max_content_length = limit + 1
    body = request.get_data(cache=True)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def read_json_body(limit: int | None = None,
                   parse: Callable[[bytes], Any] = parse_json) -> tuple[bytes, Any]:
    """The raw body (bounded) and its JSON, with exact decimals; 413/415/400 otherwise."""
    body = read_body(limit) if limit else request.get_data(cache=True)
    if not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"send JSON (Content-Type: application/json), not {request.mimetype or 'nothing'}")
    try:
        return body, parse(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
