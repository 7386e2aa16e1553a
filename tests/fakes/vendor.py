"""Shared plumbing of the fake channel APIs: a Flask app on a loopback thread, with faults.

Each fake (shopify.py, woocommerce.py, ...) subclasses FakeVendor, declares its routes on
`self.app` in `routes()`, and says in `authorized()` how the vendor authenticates and in
`error()` how it shapes an error body. Faults apply to API requests only:
`throttle(n, retry_after)` answers the next n with 429 + Retry-After, `fail(n, status)` with
`status`. Every request is logged in `requests` (method, path, query, headers).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request, Response, jsonify, request
from werkzeug.serving import make_server


class FakeVendor:
    name = "vendor"

    def __init__(self) -> None:
        self.app = Flask(f"fake-{self.name}")
        self.requests: list[dict[str, Any]] = []
        self._faults: list[tuple[int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self.url = ""
        self.app.before_request(self._before)
        self.routes()

    # --- to override ----------------------------------------------------------------
    def routes(self) -> None:
        """Declare the vendor's API routes on self.app."""

    def authorized(self, req: Request) -> bool:
        return True

    def error(self, status: int, message: str) -> Response:
        response = jsonify({"error": message})
        response.status_code = status
        return response

    # --- faults ---------------------------------------------------------------------
    def throttle(self, times: int = 1, retry_after: str = "1",
                 headers: Mapping[str, str] | None = None) -> None:
        """429 for the next `times` requests, with Retry-After or the vendor's own headers."""
        with self._lock:
            self._faults += [(429, dict(headers or {"Retry-After": retry_after}))] * times

    def fail(self, times: int = 1, status: int = 503) -> None:
        with self._lock:
            self._faults += [(status, {})] * times

    def _before(self) -> Response | None:
        self.requests.append({"method": request.method, "path": request.path,
                              "query": request.args.to_dict(flat=False),
                              "headers": dict(request.headers)})
        with self._lock:
            fault = self._faults.pop(0) if self._faults else None
        if fault:
            response = self.error(fault[0], "injected fault")
            response.headers.update(fault[1])
            return response
        if not self.authorized(request):
            return self.error(401, "invalid credentials")
        return None

    def api_requests(self, path_part: str = "") -> list[dict[str, Any]]:
        return [r for r in self.requests if path_part in r["path"]]

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> FakeVendor:
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeVendor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def header(headers: Mapping[str, str], name: str) -> str:
    """Case-insensitive header lookup."""
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")
