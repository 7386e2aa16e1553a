"""A fake REST back office (ERP) on loopback, for connector tests and delivery benchmarks.

It models an idempotent REST ERP following the Stripe idempotent-requests contract
(https://docs.stripe.com/api/idempotent_requests): the first answer to an `Idempotency-Key` is
stored with a fingerprint of the request, a repeat with the same parameters gets the stored answer
again (marked `Idempotent-Replayed: true`) and creates nothing, a repeat with other parameters is
a 400 `idempotency_error`, and answers to requests that failed validation (4xx) are not stored.
Like most ERPs it does not deduplicate on `external_id` itself: a second `create` makes a second
record, which `creates` counts, so a broker that books twice is caught.

Endpoints:
    POST|PUT /orders                      {"action": create|update|cancel, "order": {...}}
                                          201 + Location on create (update of an unknown order
                                          creates it), 200 on update/cancel, 404 cancel unknown
    POST     /orders/<id>/cancel          cancel by back-office id
    GET      /orders/by-external/<ext_id> 200 record or 404
    OPTIONS  any path                     204 (after the auth check, so check() sees 401)
    POST     /oauth/token                 OAuth 2.0 client credentials (RFC 6749 §4.4, §2.3.1:
                                          client_secret_basic or client_secret_post)

Faults (`script`, `fail_rate`) apply to every request but the token endpoint; `delay` is applied
after the request took effect and before the answer, so a client timeout leaves a booked record
behind, exactly the case idempotency keys exist for; `lose_answers` does it for the next n
writes only (the connection is dropped, or the answer comes after `seconds`). A back office that
ignores idempotency keys is `ignore_idempotency_keys()`. `overlaps` counts requests about one
order that were in progress at the same time (a broker must never push one order twice at once).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

Answer = tuple[int, dict[str, str], bytes]
_BY_EXTERNAL = re.compile(r"/orders/by-external/([^/]+)")
_CANCEL_BY_ID = re.compile(r"/orders/([^/]+)/cancel")


def _json(status: int, doc: Any, headers: Mapping[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(
        doc, default=str).encode()


class Sink:
    """The fake back office; use as a context manager or call start()/stop()."""

    def __init__(self, *, keep_requests: bool = True) -> None:
        self.keep_requests = keep_requests  # benchmarks may turn the request log off
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.reset()

    def reset(self) -> None:
        """Forget records, requests, faults, auth and tokens."""
        with self._cond:
            self._requests: list[tuple[str, str, dict[str, str], bytes]] = []
            self._records: dict[str, dict[str, Any]] = {}
            self._by_id: dict[str, dict[str, Any]] = {}
            self._creates: Counter[str] = Counter()
            self._stored: dict[str, tuple[str, Answer]] = {}
            self._script: deque[Answer] = deque()
            self._fail_p, self._fail_status = 0.0, 503
            self._rng = random.Random()
            self._delay = 0.0
            self._auth: tuple[str, Any] = ("none", None)
            self._clients: dict[str, tuple[str, int]] = {}
            self._tokens: dict[str, float] = {}
            self._token_requests = 0
            self._seq = 0
            self._honour_keys = True
            self._lose: deque[float | None] = deque()  # None: drop the connection
            self._busy: Counter[str] = Counter()
            self._overlaps: Counter[str] = Counter()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Sink:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="sink",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:54321 (no trailing slash)."""
        assert self._server is not None, "start the sink first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- behaviour ------------------------------------------------------------------------------

    def script(self, answers: Iterable[tuple[int, Mapping[str, str], bytes]]) -> None:
        """Queue canned (status, headers, body) answers, one per request, before normal service."""
        with self._cond:
            self._script.extend((s, dict(h), b) for s, h, b in answers)

    def fail_rate(self, p: float, status: int = 503, *, seed: int | None = None) -> None:
        """Answer `status` to a random fraction p of requests (nothing takes effect)."""
        with self._cond:
            self._fail_p, self._fail_status, self._rng = p, status, random.Random(seed)

    def delay(self, seconds: float) -> None:
        """Wait this long before every answer (after the request took effect)."""
        with self._cond:
            self._delay = seconds

    def lose_answers(self, n: int = 1, *, seconds: float | None = None) -> None:
        """The next n writes take effect, then their answer is lost: the connection is dropped
        (seconds=None) or the answer waits `seconds` (longer than the client's read timeout)."""
        with self._cond:
            self._lose.extend([seconds] * n)

    def ignore_idempotency_keys(self) -> None:
        """Behave like a back office without idempotency: every create makes a record."""
        with self._cond:
            self._honour_keys = False

    def require_basic(self, user: str, password: str) -> None:
        with self._cond:
            self._auth = ("basic", base64.b64encode(f"{user}:{password}".encode()).decode())

    def require_bearer(self, token: str) -> None:
        with self._cond:
            self._auth = ("bearer", token)

    def require_oauth(self, client_id: str, client_secret: str, *, expires_in: int = 3600) -> None:
        """Register a client at /oauth/token and accept only tokens issued there."""
        with self._cond:
            self._clients[client_id] = (client_secret, expires_in)
            self._auth = ("oauth2", None)

    def expire_tokens(self) -> None:
        """Invalidate every issued access token, as a server restart or key rotation would."""
        with self._cond:
            self._tokens.clear()

    # -- introspection --------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        """(method, path, headers, body) of every request received, oldest first."""
        with self._cond:
            return list(self._requests)

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """external_id → latest record (id, external_id, status, order, actions)."""
        with self._cond:
            return {k: json.loads(json.dumps(v, default=str)) for k, v in self._records.items()}

    @property
    def creates(self) -> Counter[str]:
        """external_id → records created; anything above 1 is a duplicate booking."""
        with self._cond:
            return Counter(self._creates)

    @property
    def overlaps(self) -> Counter[str]:
        """external_id → requests about it that began while another one was in progress."""
        with self._cond:
            return Counter(self._overlaps)

    @property
    def token_requests(self) -> int:
        with self._cond:
            return self._token_requests

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Block until n distinct records exist; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._records) >= n, timeout)

    # -- the server side ------------------------------------------------------------------------

    def _handle(self, h: _Handler) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        subject = _subject(urlsplit(h.path).path, body)
        with self._cond:
            if subject:
                self._overlaps[subject] += bool(self._busy[subject])
                self._busy[subject] += 1
        released = False

        def release() -> None:  # the request is over for the client: answered, or given up on
            nonlocal released
            if subject and not released:
                released = True
                with self._cond:
                    self._busy[subject] -= 1

        try:
            self._respond(h, body, release)
        finally:
            release()

    def _respond(self, h: _Handler, body: bytes, release: Any) -> None:
        try:
            status, headers, payload = self._answer(h.command, urlsplit(h.path).path, h, body)
        except Exception:
            traceback.print_exc()  # a bug in the sink must be loud
            status, headers, payload = _json(500, {"error": "sink bug"})
        with self._cond:
            delay = self._delay
            write = h.command in ("POST", "PUT") and urlsplit(h.path).path != "/oauth/token"
            lose = self._lose.popleft() if self._lose and write and status < 300 else False
        if lose is not False:
            release()  # the client will not see this answer: its next request is no overlap
        if lose is None:  # the write happened; the connection drops before the answer
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        if lose:
            time.sleep(lose)
        if delay:
            time.sleep(delay)
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(payload)

    def _answer(self, method: str, path: str, h: _Handler, body: bytes) -> Answer:
        with self._cond:
            if self.keep_requests:
                self._requests.append((method, path, dict(h.headers.items()), body))
            if path == "/oauth/token" and method == "POST":
                return self._issue_token(h.headers.get("Authorization") or "", body)
            if self._script:
                return self._script.popleft()
            if self._fail_p and self._rng.random() < self._fail_p:
                return _json(self._fail_status, {"error": "injected fault"})
            if not self._authorized(h.headers.get("Authorization") or ""):
                challenge = "Basic realm=\"sink\"" if self._auth[0] == "basic" else "Bearer"
                return _json(401, {"error": "unauthorized"}, {"WWW-Authenticate": challenge})
            if method == "OPTIONS":
                return 204, {"Allow": "GET, POST, PUT, OPTIONS"}, b""
            key = h.headers.get("Idempotency-Key")
            if method in ("POST", "PUT") and path == "/orders":
                return self._idempotent(key, method, path, body, self._apply)
            if method == "POST" and (m := _CANCEL_BY_ID.fullmatch(path)):
                return self._idempotent(key, method, path, body,
                                        lambda _body: self._cancel_by_id(unquote(m[1])))
            if method in ("GET", "HEAD") and (m := _BY_EXTERNAL.fullmatch(path)):
                record = self._records.get(unquote(m[1]))
                return _json(200, record) if record else _json(404, {"error": "no such order"})
            return _json(404, {"error": f"no route for {method} {path}"})

    def _idempotent(self, key: str | None, method: str, path: str, body: bytes, apply: Any,
                    ) -> Answer:
        if key is None or not self._honour_keys:
            return apply(body)
        fingerprint = hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()
        if key in self._stored:
            first, (status, headers, payload) = self._stored[key]
            if first != fingerprint:
                return _json(400, {"error": {"type": "idempotency_error", "message": (
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.")}})
            return status, {**headers, "Idempotent-Replayed": "true"}, payload
        answer = apply(body)
        if not 400 <= answer[0] < 500:  # Stripe keeps no result for requests that failed validation
            self._stored[key] = (fingerprint, answer)
        return answer

    def _apply(self, body: bytes) -> Answer:
        try:
            doc = json.loads(body)
            action, order = doc["action"], doc["order"]
            external_id = str(order["external_id"])
        except (ValueError, KeyError, TypeError):
            return _json(400, {"error": "expected JSON {action, order: {external_id, ...}}"})
        if action not in ("create", "update", "cancel"):
            return _json(422, {"error": f"unknown action {action!r}"})
        record = self._records.get(external_id)
        if action == "create" or (action == "update" and record is None):
            self._seq += 1
            record = {"id": f"BO-{self._seq}", "external_id": external_id, "status": "open",
                      "order": order, "actions": [action]}
            self._records[external_id] = self._by_id[record["id"]] = record
            self._creates[external_id] += 1
            self._cond.notify_all()
            return _json(201, record, {"Location": f"/orders/{record['id']}"})
        if record is None:
            return _json(404, {"error": f"no order with external_id {external_id}"})
        record["order"] = order
        record["actions"].append(action)
        if action == "cancel":
            record["status"] = "cancelled"
        return _json(200, record)

    def _cancel_by_id(self, record_id: str) -> Answer:
        record = self._by_id.get(record_id)
        if record is None:
            return _json(404, {"error": f"no order {record_id}"})
        record["actions"].append("cancel")
        record["status"] = "cancelled"
        return _json(200, record)

    def _authorized(self, header: str) -> bool:
        kind, expected = self._auth
        if kind == "basic":
            return hmac.compare_digest(header.encode(), f"Basic {expected}".encode())
        if kind == "bearer":
            return hmac.compare_digest(header.encode(), f"Bearer {expected}".encode())
        if kind == "oauth2":
            expires = self._tokens.get(header.removeprefix("Bearer "), 0.0)
            return header.startswith("Bearer ") and expires > time.monotonic()
        return True

    def _issue_token(self, header: str, body: bytes) -> Answer:
        """RFC 6749 §4.4 client credentials; errors as §5.2 describes."""
        self._token_requests += 1
        form = dict(parse_qsl(body.decode("latin-1")))
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if header.startswith("Basic "):
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                pair = ""
            client_id, _, secret = (unquote(p) for p in pair.partition(":"))
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        client = self._clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client[0].encode(), (secret or "").encode()):
            challenge = {"WWW-Authenticate": "Basic realm=\"sink\""} if header else {}
            return _json(401, {"error": "invalid_client"}, {**no_store, **challenge})
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type"}, no_store)
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + client[1]
        return _json(200, {"access_token": token, "token_type": "Bearer",
                           "expires_in": client[1]}, no_store)


def _subject(path: str, body: bytes) -> str | None:
    """The external id a request is about (writes by body, lookups by path)."""
    if m := _BY_EXTERNAL.fullmatch(path):
        return unquote(m[1])
    if path == "/orders" and body:
        try:
            return str(json.loads(body)["order"]["external_id"])
        except (ValueError, KeyError, TypeError):
            return None
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as connection pools expect
    disable_nagle_algorithm = True  # else headers and body meet delayed ACKs: 40 ms per answer
    timeout = 30
    server: _Server

    def do_GET(self) -> None:
        self.server.sink._handle(self)

    do_POST = do_PUT = do_OPTIONS = do_HEAD = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read sink.requests instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, sink: Sink) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.sink = sink

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up before the answer: expected here, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)
