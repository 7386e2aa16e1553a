"""An HTTP proxy on loopback that can hold an answer after the upstream has acted on it.

This is how the tests kill a worker "between the back-office write and the acknowledgement"
for any HTTP back office, real (trytond) or fake: `hold_after(marker, seconds)` lets the next
request whose body contains `marker` reach the upstream, which commits it, and then keeps the
answer from the client for `seconds` — long enough to kill -9 the worker waiting for it.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length", "host"}


class HoldingProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self._marker: bytes | None = None
        self._seconds = 0.0
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def hold_after(self, marker: bytes, seconds: float) -> None:
        with self._lock:
            self._marker, self._seconds = marker, seconds
            self.held.clear()

    def _should_hold(self, body: bytes) -> float:
        with self._lock:
            if self._marker is not None and self._marker in body:
                self._marker = None
                return self._seconds
        return 0.0

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            conn.request(method, self.prefix + path, body=body or None,
                         headers={k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP})
            answer = conn.getresponse()
            return answer.status, answer.getheaders(), answer.read()
        finally:
            conn.close()

    def start(self) -> HoldingProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, payload = proxy.forward(self.command, self.path,
                                                         dict(self.headers), body)
                hold = proxy._should_hold(body)
                if hold:
                    proxy.held.set()
                    time.sleep(hold)
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> HoldingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
