"""Test harness: real databases and queues on loopback, a broker stack per test.

A service that is down makes its tests skip on a developer machine and fail in CI
(CI=true or FOBO_REQUIRE_SERVICES=1), so missing coverage never hides as a skip. (Not a
BROKER_* name: the broker refuses unknown BROKER_* variables, and workers inherit this one.)
"""

from __future__ import annotations

import json
import os
import queue
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, func, make_url, select, text

from broker.app import build_app
from broker.channels.standard_webhooks import sign
from broker.runtime import Runtime
from broker.settings import Settings, load_settings

# The servers the tests use; another PostgreSQL or MariaDB (e.g. one started under faketime to
# run the suite a month ahead) is chosen with FOBO_TEST_PG_URL / FOBO_TEST_MARIADB_URL.
PG_ADMIN = os.environ.get("FOBO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_ADMIN = os.environ.get("FOBO_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS = "redis://127.0.0.1:6379"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"
PORTS = {"postgresql": make_url(PG_ADMIN).port or 5432, "mariadb": make_url(MARIADB_ADMIN).port or 3306,
         "redis": 6379, "rabbitmq": 5672}
STRICT = os.environ.get("CI", "").lower() in ("1", "true") or \
    os.environ.get("FOBO_REQUIRE_SERVICES") == "1"
TEST_KEY = Fernet.generate_key().decode()


def require(service: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", PORTS[service]), timeout=2).close()
    except OSError:
        message = f"{service} is not running on 127.0.0.1:{PORTS[service]}"
        if STRICT:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)


_admins: dict[str, Any] = {}
_drops: queue.Queue[tuple[str, str] | None] = queue.Queue()
_dropper: threading.Thread | None = None


def _admin(url: str) -> Any:
    if url not in _admins:
        _admins[url] = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=2)
    return _admins[url]


def _drop_databases() -> None:
    """Drops databases in the background: a test's teardown need not wait for the server."""
    while (job := _drops.get()) is not None:
        kind, name = job
        admin_url = PG_ADMIN if kind == "postgresql" else MARIADB_ADMIN
        force = " WITH (FORCE)" if kind == "postgresql" else ""
        try:
            with _admin(admin_url).connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
        except Exception as exc:  # a leftover database is untidy, not a failed test
            print(f"could not drop test database {name}: {exc}", file=sys.stderr)


def finish_drops() -> None:
    """Wait for the background drops (once, at the end of the session)."""
    global _dropper
    if _dropper is not None:
        _drops.put(None)
        _dropper.join()
        _dropper = None
    for engine in _admins.values():
        engine.dispose()
    _admins.clear()


def create_database(kind: str) -> tuple[str, Callable[[], None]]:
    """A fresh, empty database; returns its URL and a function that drops it (later, in the
    background)."""
    name = "broker_t_" + secrets.token_hex(5)
    if kind == "sqlite":
        return "", lambda: None
    require(kind)
    admin_url = PG_ADMIN if kind == "postgresql" else MARIADB_ADMIN
    with _admin(admin_url).connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin_url.rsplit("/", 1)[0] + "/" + name

    def drop() -> None:
        global _dropper
        if _dropper is None:
            _dropper = threading.Thread(target=_drop_databases, name="drop-test-databases",
                                        daemon=True)
            _dropper.start()
        _drops.put((kind, name))

    return url, drop


_spare_vhosts: list[str] = []
_used_vhosts: list[str] = []
VHOST_BATCH = 6  # each rabbitmqctl call starts an Erlang VM (~0.6 s): make vhosts in batches


def _rabbitmq_eval(expression: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "eval", expression], check=True, capture_output=True,
                   timeout=120)


def _erlang_binaries(names: list[str]) -> str:
    return "[" + ", ".join(f'<<"{name}">>' for name in names) + "]"


def new_vhost() -> str:
    """A fresh RabbitMQ vhost (guest may use it), from a batch made in one rabbitmqctl call."""
    if not _spare_vhosts:
        names = ["broker_t_" + secrets.token_hex(4) for _ in range(VHOST_BATCH)]
        _rabbitmq_eval(
            "[begin ok = rabbit_vhost:add(V, <<\"fobo-tests\">>), ok = rabbit_auth_backend_internal:"
            "set_permissions(<<\"guest\">>, V, <<\".*\">>, <<\".*\">>, <<\".*\">>, "
            f"<<\"fobo-tests\">>) end || V <- {_erlang_binaries(names)}], ok.")
        _spare_vhosts.extend(names)
    vhost = _spare_vhosts.pop()
    _used_vhosts.append(vhost)
    return vhost


def drop_vhosts() -> None:
    """Delete every vhost this test run made (once, at the end of the session)."""
    names = _used_vhosts + _spare_vhosts
    _used_vhosts.clear()
    _spare_vhosts.clear()
    if names:
        _rabbitmq_eval(f"[rabbit_vhost:delete(V, <<\"fobo-tests\">>) || V <- {_erlang_binaries(names)}], ok.")


def _claim_redis_db() -> int:
    """A Redis database number no other running stack uses (several test runs may share the
    server): claimed with SET NX in database 0, released when the stack closes."""
    import redis

    admin = redis.Redis.from_url(f"{REDIS}/0")
    for _ in range(600):
        for db in random.sample(range(1, 16), 15):
            if admin.set(f"fobo-tests:db:{db}", os.getpid(), nx=True, ex=3600):
                redis.Redis.from_url(f"{REDIS}/{db}").flushdb()
                return db
        time.sleep(0.5)
    raise RuntimeError("no free Redis database (1-15) for a test stack after 5 minutes")


def release_queue(url: str) -> None:
    if url.startswith("redis://"):
        import redis

        redis.Redis.from_url(f"{REDIS}/0").delete(f"fobo-tests:db:{url.rsplit('/', 1)[1]}")


def queue_url(kind: str, data_dir: Path) -> str:
    if kind == "embedded":
        return f"sqla+sqlite:///{data_dir}/queue.db"
    require(kind)
    if kind == "redis":
        return f"{REDIS}/{_claim_redis_db()}"
    return f"amqp://guest:guest@127.0.0.1:5672/{new_vhost()}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


class Stack:
    """One broker installation: settings, migrated database, app, workers, HTTP gateway."""

    def __init__(self, tmp: Path, database: str, queue: str, *, migrate: bool = True,
                 **overrides: Any) -> None:
        """`migrate=False` leaves the database empty for a test that migrates it itself (e.g.
        with `broker db upgrade` as a process of its own); the app is built all the same."""
        self.tmp = tmp
        self.db_url, self._drop = create_database(database)
        if database == "sqlite":
            self.db_url = f"sqlite:///{tmp}/broker.db"
        self.env = {
            "BROKER_DATA_DIR": str(tmp), "BROKER_DATABASE_URL": self.db_url,
            "BROKER_QUEUE_URL": queue_url(queue, tmp), "BROKER_SECRET_KEYS": TEST_KEY,
            "BROKER_RETRY_BASE": "0.3", "BROKER_RETRY_CAP": "2", "BROKER_SWEEP_INTERVAL": "1",
            "BROKER_LEASE_SECONDS": "8", "BROKER_MAX_ATTEMPTS": "5", "BROKER_LOG_JSON": "true",
            "BROKER_ALLOW_PRIVATE_NETWORKS": "true",  # every fake listens on loopback
        }
        self.env.update({f"BROKER_{k.upper()}": str(v) for k, v in overrides.items()})
        self.settings: Settings = load_settings(self.env)
        if migrate:
            from broker.cli import upgrade_database

            upgrade_database(self.settings)
        self.runtime = Runtime(self.settings)
        self.app = build_app(self.settings, runtime=self.runtime, configure_logging=False)
        self.client = self.app.test_client()
        self.workers: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, Path] = {}
        self._started: dict[int, Callable[[], bool]] = {}
        self._server: Any = None
        self.base_url = ""

    # --- processes -------------------------------------------------------------------
    def start_worker(self, *, beat: bool = True, concurrency: int = 2, queues: str | None = None,
                     wait: bool = True) -> subprocess.Popen[bytes]:
        """A Celery worker; `wait=False` returns at once (several processes then start
        together: `wait_started` each)."""
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency",
               str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
               "--hostname", f"w{len(self.workers)}-{secrets.token_hex(3)}@test"]
        if beat:
            cmd += ["--beat", "--schedule", str(self.tmp / f"beat-{len(self.workers)}")]
        if queues:
            cmd += ["--queues", queues]
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.workers.append(proc)
        self._started[proc.pid] = lambda: b"ready." in Path(log.name).read_bytes()
        self._logs[proc.pid] = Path(log.name)
        if wait:
            self.wait_started(proc)
        return proc

    def wait_started(self, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Until a worker says it is ready, or a gateway answers /healthz."""
        def started() -> bool:
            assert proc.poll() is None, self._logs[proc.pid].read_text()[-3000:]
            return self._started[proc.pid]()

        wait_until(started, timeout=timeout, interval=0.2, message=f"{self._logs[proc.pid].stem} to start")

    def run_broker(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """A `broker` command as its own process (e.g. the migrations' one-shot)."""
        return subprocess.run([sys.executable, "-m", "broker.cli", *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ, **self.env, **env})

    def start_broker(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A long-running `broker` command (serve, worker, beat) as its own process, logging to
        <tmp>/<name>.log and stopped with the stack's workers."""
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", *args], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1", **env})
        self.workers.append(proc)
        self._logs[proc.pid] = Path(log.name)
        self._started[proc.pid] = lambda: True
        return proc

    def start_gateway(self, name: str = "gateway", *,
                      wait: bool = True) -> tuple[str, subprocess.Popen[bytes]]:
        """`broker serve` (gunicorn, one sync worker) on a free port with a data folder of its
        own, as one gateway container or machine would run it: its base URL and process."""
        port = free_port()
        proc = self.start_broker(name, "serve", "--workers", "1", "--worker-class", "sync",
                                 BROKER_BIND=f"127.0.0.1:{port}",
                                 BROKER_DATA_DIR=str(self.tmp / name))
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
                    return response.status == 200
            except OSError:
                return False

        self._started[proc.pid] = up
        if wait:
            self.wait_started(proc)
        return base, proc

    def kill_workers(self, sig: int = signal.SIGKILL) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=8)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        self.workers.clear()

    def serve(self, port: int | None = None) -> str:
        """Run the gateway on a real loopback HTTP server (threaded); pass the port of the
        stack's public_url so the URLs it hands out (webhooks, redirects) point at it."""
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", port or free_port(), self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self._server.server_port}"
        return self.base_url

    def close(self) -> None:
        # SIGKILL: the stack is thrown away, and a graceful stop of the embedded worker takes
        # ~8 s (tests of graceful stops send SIGTERM themselves).
        self.kill_workers(signal.SIGKILL)
        if self._server:
            self._server.shutdown()
        self.runtime.close()
        self._drop()
        release_queue(self.env["BROKER_QUEUE_URL"])

    # --- setup helpers ---------------------------------------------------------------
    def cli(self, *args: str) -> Any:
        result = self.app.test_cli_runner().invoke(args=["broker", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output) if "--json" in args else result.output

    def source(self, name: str = "shop") -> str:
        return self.cli("sources", "add", name, "--kind", "standard-webhooks", "--json")["secret"]

    def channel_source(self, driver: Any, name: str, secret: str | None = None) -> str:
        """A source of the driver's channel kind pointing at its fake; returns the secret."""
        secret = secret or _vendor_secret(driver)
        url = f"{self.base_url or 'http://localhost'}/webhooks/{name}"
        args = ["sources", "add", name, "--kind", driver.kind, "--secret", secret, "--json"]
        for key, value in driver.settings(url).items():
            args += ["--setting", f"{key}={value}"]
        for key, value in driver.credentials().items():
            args += ["--credential", f"{key}={value}"]
        self.cli(*args)
        return secret

    def http_connector(self, name: str, url: str, **config: Any) -> None:
        self.cli("connectors", "add", name, "--kind", "http", "--config",
                 json.dumps({"url": url, "timeout": 5, **config}), "--json")

    def route(self, source: str, connector: str, *extra: str) -> None:
        self.cli("routes", "add", "--source", source, "--connector", connector, *extra, "--json")

    def token(self, name: str = "shopfront", scope: str = "orders:write orders:read") -> str:
        client = self.cli("clients", "create", name, "--scope", scope, "--json")
        response = self.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                    auth=(client["client_id"], client["client_secret"]))
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json["access_token"]

    # --- traffic ---------------------------------------------------------------------
    def webhook(self, source: str, secret: str, order: dict[str, Any], *,
                msg_id: str | None = None, timestamp: int | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, Any]]:
        """Sign and send a Standard Webhooks request (over HTTP when serving)."""
        body = body if body is not None else json.dumps(order).encode()
        msg_id = msg_id or "msg_" + secrets.token_hex(8)
        ts = timestamp if timestamp is not None else int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id,
                   "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)}
        return self.post(f"/webhooks/{source}", body, headers)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if not self.base_url:
            response = self.client.post(path, data=body, headers=headers)
            return response.status_code, response.get_json(silent=True) or {}
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    # --- inspection ------------------------------------------------------------------
    def count(self, model: Any, *where: Any) -> int:
        with self.runtime.db.begin() as session:
            return session.execute(select(func.count()).select_from(model).where(*where)).scalar()

    def row_counts(self) -> dict[str, int]:
        """Rows per table, but the abuse limits' counters (a refused request is counted there
        on purpose: it is bookkeeping, not data the request stored)."""
        from broker.db import Base

        with self.runtime.db.begin() as session:
            return {t.name: session.execute(select(func.count()).select_from(t)).scalar()
                    for t in Base.metadata.sorted_tables if t.name != "login_throttle"}

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.tmp.glob("worker-*.log")))


def _vendor_secret(driver: Any) -> str:
    """A secret as the vendor would issue it (a driver may say how), else a random token."""
    make = getattr(driver, "new_secret", None)
    return make() if make else secrets.token_urlsafe(24)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a process started with start_new_session: `sig`, then SIGKILL if it outstays `timeout`."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def newer(hours: float = 1) -> str:
    """An `updated_at` this many hours after the example order's: marks a newer version of it."""
    from broker.schemas.order import ORDER_EXAMPLE

    base = datetime.fromisoformat(ORDER_EXAMPLE["updated_at"].replace("Z", "+00:00"))
    return (base + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def order(external_id: str, **changes: Any) -> dict[str, Any]:
    """A valid canonical order (the ORDER.md example) with another identity."""
    from broker.schemas.order import ORDER_EXAMPLE

    doc = json.loads(json.dumps(ORDER_EXAMPLE))
    doc.update(external_id=external_id, number=f"#{external_id}")
    doc.update(changes)
    return doc
