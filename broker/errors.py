"""One JSON error shape everywhere: {"error": {"code", "message", "fields"?, "request_id"?}}.

An unexpected error is a 500 with a request id; the traceback goes to the log only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, g, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *,
                 fields: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields, self.headers = fields, headers or {}


def error_response(status: int, code: str, message: str, *,
                   fields: dict[str, list[str]] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    request_id = getattr(g, "request_id", None)
    if request_id:
        body["request_id"] = request_id
    response = jsonify({"error": body})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _console_page(status: int, message: str) -> Response | None:
    """Console pages answer errors as pages, in the console's layout."""
    if not request.path.startswith("/console"):
        return None
    response = Response(render_template("console/error.html", status=status, message=message),
                        status=status, mimetype="text/html")
    return response


def _field_errors(messages: Any) -> dict[str, list[str]]:
    """webargs' {"query": {"limit": [...]}, "json": {"config": {"url": [...]}}} as
    {"limit": [...], "config.url": [...]}: a field path, like the canonical order's errors."""
    from broker.schemas.order import flatten_errors

    fields: dict[str, list[str]] = {}
    for location in messages.values() if isinstance(messages, dict) else [messages]:
        for path, texts in flatten_errors(location).items():
            fields.setdefault(path, []).extend(texts)
    return fields


def init_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, fields=exc.fields,
                              headers=exc.headers)

    from broker.services.throttle import Throttled

    @app.errorhandler(Throttled)
    def _throttled(exc: Throttled) -> Response:
        headers = {"Retry-After": str(exc.retry_after)}
        page = _console_page(429, str(exc))
        if page is not None:
            page.headers.update(headers)
            return page
        return error_response(429, "too_many_requests", str(exc), headers=headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        message = {413: "the request body is larger than this endpoint accepts",
                   405: "method not allowed on this URL",
                   404: "no such resource"}.get(exc.code or 500, exc.description or exc.name)
        allowed = getattr(exc, "valid_methods", None)
        messages = (getattr(exc, "data", None) or {}).get("messages")
        if messages is not None:  # webargs (flask-smorest @blp.arguments): paths within each location
            fields = _field_errors(messages)
            if exc.code == 400:
                return error_response(400, "invalid_json", "the body is not valid JSON", fields=fields)
            return error_response(exc.code or 422, "invalid_request", "the request is invalid; see fields",
                                  fields=fields)
        page = _console_page(exc.code or 500, message)
        if page is not None:
            return page
        return error_response(exc.code or 500, _slug(exc.name), message,
                              headers={"Allow": ", ".join(allowed)} if allowed else None)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        page = _console_page(500, "an unexpected error occurred; quote the request id "
                             f"{g.get('request_id', '')} to your operator")
        if page is not None:
            return page
        return error_response(500, "internal_error",
                              "an unexpected error occurred; quote the request id to your operator")
