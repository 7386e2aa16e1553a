"""Reference WSGI apps for tests/bench/ingest.py, served under the broker's gunicorn settings.

`bare`    answers 200 to POST /webhooks/<name> after reading the body: the HTTP + Flask floor.
`durable` does the least a durable webhook receiver must do and nothing else: Standard Webhooks
          HMAC-SHA256 check (base64, compare_digest, timestamp tolerance), `json.loads`, one INSERT
          and COMMIT (psycopg 3, body as a binary parameter), one LPUSH to Redis, then 202.

Settings come from the environment (read lazily, after gunicorn's gevent worker has patched):
BENCH_PG_DSN, BENCH_REDIS_URL, BENCH_SECRET (whsec_...), BENCH_TABLE, BENCH_LIST, BENCH_POOL.
Each worker process keeps at most BENCH_POOL (default 15, the broker's pool_size + max_overflow)
PostgreSQL connections, handed between greenlets through a LIFO queue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import threading
import time
from typing import Any

from flask import Flask, request

TOLERANCE = 300

bare = Flask("bare")


@bare.post("/webhooks/<name>")
def bare_receive(name: str) -> tuple[str, int]:
    request.get_data()
    return "", 200


durable = Flask("durable")


class _State:
    """Per-process connections, created on first use (after fork and after monkey patching)."""

    def __init__(self) -> None:
        import redis

        self.dsn = os.environ["BENCH_PG_DSN"]
        self.table = os.environ.get("BENCH_TABLE", "bench_minimal_events")
        self.list = os.environ.get("BENCH_LIST", "bench:minimal")
        self.key = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
        self.max = int(os.environ.get("BENCH_POOL", "15"))
        self.redis = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        self.idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self.created = 0
        self.lock = threading.Lock()
        self.sql = f"INSERT INTO {self.table} (webhook_id, body) VALUES (%s, %b) RETURNING id"

    def connection(self) -> Any:
        import psycopg

        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            grow = self.created < self.max
            if grow:
                self.created += 1
        if grow:
            try:
                return psycopg.connect(self.dsn)
            except Exception:
                with self.lock:
                    self.created -= 1
                raise
        return self.idle.get(timeout=30)


_state: _State | None = None


def _get_state() -> _State:
    global _state
    if _state is None:
        _state = _State()
    return _state


def _valid(key: bytes, headers: Any, body: bytes) -> bool:
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    offered = headers.get("webhook-signature", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > TOLERANCE:
        return False
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac)
    return any(v.startswith("v1,") and hmac.compare_digest(v[3:].encode(), expected)
               for v in offered.split(" "))


@durable.post("/webhooks/<name>")
def durable_receive(name: str) -> tuple[str, int, dict[str, str]]:
    state = _get_state()
    body = request.get_data()
    if not _valid(state.key, request.headers, body):
        return '{"error":"invalid_signature"}', 401, {"Content-Type": "application/json"}
    try:
        json.loads(body)
    except ValueError:
        return '{"error":"invalid_json"}', 400, {"Content-Type": "application/json"}
    conn = state.connection()
    try:
        row = conn.execute(state.sql, (request.headers["webhook-id"], body)).fetchone()
        conn.commit()
    except Exception:
        conn.close()
        with state.lock:
            state.created -= 1
        raise
    state.idle.put(conn)
    state.redis.lpush(state.list, row[0])
    return f'{{"status":"accepted","event_id":{row[0]}}}', 202, {"Content-Type": "application/json"}
