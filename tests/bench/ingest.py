"""Ingest and delivery benchmark: FOBO Broker against two baselines, in one run, on loopback.

    python tests/bench/ingest.py [--seconds 20] [--connections 32] [--orders N]
                                 [--steady-rate R] [--profile] [--keep-logs]

What it measures (wrk replays pre-signed requests from a file, so no Python load generator
competes for the GIL; every server runs under gunicorn --config python:broker.gunicorn_conf
--workers 2 --worker-class gevent, the same seconds and connections):

  bare Flask        POST /webhooks/<name> answers 200 (tests/bench/baselines.py:bare)
  minimal durable   HMAC check, json.loads, one INSERT + COMMIT, one LPUSH (baselines.py:durable)
  broker webhook    `broker serve`, signed 4 KB Standard Webhooks orders, workers stopped
  broker REST       POST /api/v1/orders with a bearer token (shorter run), workers stopped
  delivery backlog  `broker worker --concurrency 2 --beat` books everything accepted above into
                    the fake ERP (tests/fakes/sink.py in its own process): delivered/s, and
                    received-to-booked percentiles (these include the queueing of the backlog)
  delivery steady   workers running while wrk -c4 sends webhooks (as fast as it can, or paced with
                    --steady-rate); received-to-booked percentiles, largest backlog, and how long
                    the backlog took to drain after the load stopped

For each phase it also records where the time went: CPU cores used by the server, the workers,
PostgreSQL, Redis, wrk and everything else on the machine ("other": a shared machine is noisy);
the bench database's backends by state and wait event; sessions and connections the servers opened.
--profile adds py-spy (pip install py-spy) of one gateway worker and of the worker pool.

How to read it: absolute figures drift on a shared 2-core machine (wrk, gunicorn, PostgreSQL and
the workers share the cores); the ratios to the baselines of the same run are the result. The
issue's targets are checked at the end (PASS/MISS). `conns/worker` shows how the kernel spread
wrk's keep-alive connections over the two gunicorn workers; a lopsided split can halve a result.
Peak memory is VmHWM (peak RSS) per process. Needs wrk (`apt-get install -y wrk`), PostgreSQL and
Redis on 127.0.0.1; creates and drops its own database, uses (and flushes) one empty Redis db.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

import psycopg  # noqa: E402
import redis  # noqa: E402
from harness import order  # noqa: E402

from broker.channels.standard_webhooks import sign  # noqa: E402

PG = "postgresql://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
BODY_BYTES = 4096
PLACEHOLDER = "@EXT@"
WRK_THREADS = 2
TARGET_ACCEPT_RATIO = 0.6
TARGET_P99_RATIO = 3.0
TARGET_DELIVERED = 300.0
TARGET_RSS_MB = 150.0
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# --- processes and memory ----------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def children_of(pid: int) -> list[int]:
    return sorted(_children_map().get(pid, []))


def _status_kb(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0])
    return out


class MemorySampler:
    """Peak RSS (VmHWM) of every process below the watched roots, sampled twice a second."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self.peaks: dict[int, tuple[str, int]] = {}   # pid -> (role, peak kB)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self.roots[name] = pid
        self.sample()

    def unwatch(self, name: str) -> None:
        self.sample()
        with self._lock:
            self.roots.pop(name, None)

    def sample(self) -> None:
        children = _children_map()
        with self._lock:
            roots = dict(self.roots)
        for name, root in roots.items():
            todo = [(root, f"{name} master")]
            while todo:
                pid, role = todo.pop()
                kb = _status_kb(pid)
                if kb:
                    with self._lock:
                        old = self.peaks.get(pid, (role, 0))[1]
                        self.peaks[pid] = (role, max(old, kb.get("VmHWM", 0), kb.get("VmRSS", 0)))
                todo += [(c, f"{name} child") for c in children.get(pid, [])]

    def by_role(self, role: str) -> list[tuple[int, float]]:
        with self._lock:
            return sorted((pid, kb / 1024) for pid, (r, kb) in self.peaks.items() if r == role)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.sample()

    def stop(self) -> None:
        self._stop.set()


class Processes:
    """Every child process, each in its own session so its whole group can be stopped."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[Any]] = []

    def start(self, cmd: list[str], env: dict[str, str], log: Path, **kw: Any) -> subprocess.Popen[Any]:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=kw.pop("stdout", out),
                                    stderr=out, start_new_session=True, **kw)
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # the group leader first: a warm shutdown of gunicorn / celery
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (pool children)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout=20)


def connections_per_worker(port: int, workers: list[int]) -> list[int]:
    """Established connections on the listening port held by each gunicorn worker."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "01" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    counts = []
    for pid in workers:
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        n += 1
        counts.append(n)
    return counts


TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each watched process tree, PostgreSQL, Redis, wrk and the machine."""
    procs: dict[int, tuple[str, int, int, int]] = {}  # pid -> (comm, ppid, own ticks, reaped ticks)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            rest = stat.rpartition(")")[2].split()
            procs[int(entry)] = (comm, int(rest[1]), int(rest[11]) + int(rest[12]),
                                 int(rest[13]) + int(rest[14]))
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {}
    for name, root in roots.items():
        ticks, todo = procs.get(root, ("", 0, 0, 0))[3], [root]
        while todo:
            pid = todo.pop()
            ticks += procs.get(pid, ("", 0, 0, 0))[2]
            todo += children.get(pid, [])
        out[name] = ticks / TICK
    out["postgres"] = sum(own + reaped for comm, _, own, reaped in procs.values()
                          if comm == "postgres") / TICK
    out["redis"] = sum(own for comm, _, own, _ in procs.values() if comm.startswith("redis-server")) / TICK
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["wrk"] = usage.ru_utime + usage.ru_stime
    cpu = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    out["machine"] = (sum(cpu[:8]) - cpu[3] - cpu[4]) / TICK
    return out


def connection_counts(database: str) -> dict[str, float]:
    """Sessions opened so far to the bench database, and connections Redis has accepted."""
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        sessions = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                (database,)).fetchone()
    accepted = redis.Redis.from_url(REDIS).info("stats")["total_connections_received"]
    return {"pg sessions": float(sessions[0] if sessions else 0), "redis connections": float(accepted)}



class PgWaits:
    """Backends of the bench database by state and wait event, sampled five times a second."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.counts: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        # Connected to the admin database, so the bench database counts no session of ours.
        with contextlib.suppress(Exception), psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            while not self._stop.wait(0.2):
                rows = conn.execute(
                    "SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) "
                    "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                    "AND state <> 'idle' GROUP BY 1, 2", (self.database,)).fetchall()
                self.samples += 1
                for state, wait, n in rows:
                    key = f"{state} {wait}".replace("idle in transaction", "idle-in-tx")
                    self.counts[key] = self.counts.get(key, 0) + n

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        return {k: v / self.samples for k, v in self.counts.items()} if self.samples else {}


# --- pre-signed requests -----------------------------------------------------------------------

def body_template() -> str:
    """A canonical order padded through metadata to BODY_BYTES, with a placeholder identity."""
    doc = order(PLACEHOLDER, metadata={"pad": ""})
    pad = BODY_BYTES - len(json.dumps(doc)) - len("0000000") - 3
    doc = order(PLACEHOLDER, metadata={"pad": "x" * max(0, pad)})
    text = json.dumps(doc)
    assert "\t" not in text and "\n" not in text
    return text


def write_requests(base: Path, requests: Iterator[tuple[str, list[str], str]]) -> None:
    """Raw HTTP/1.1 requests, dealt round-robin into base.0 .. base.<WRK_THREADS - 1>, NUL-separated."""
    files = [open(f"{base}.{k}", "wb") for k in range(WRK_THREADS)]  # noqa: SIM115
    try:
        for i, (path, headers, body) in enumerate(requests):
            data = body.encode()
            head = "".join(f"{h}\r\n" for h in ["Host: 127.0.0.1", *headers,
                                                 f"Content-Length: {len(data)}"])
            files[i % WRK_THREADS].write(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + data + b"\0")
    finally:
        for f in files:
            f.close()


def write_webhooks(base: Path, secret: str, prefix: str, count: int, source: str = "bench") -> None:
    """Signed Standard Webhooks, each with its own webhook-id and order; timestamp = now."""
    template, ts = body_template(), int(time.time())

    def requests() -> Iterator[tuple[str, list[str], str]]:
        for i in range(count):
            ext = f"{prefix}-{i:07d}"
            body = template.replace(PLACEHOLDER, ext)
            msg_id = f"msg_{ext}"
            yield (f"/webhooks/{source}", ["Content-Type: application/json", f"webhook-id: {msg_id}",
                                           f"webhook-timestamp: {ts}",
                                           f"webhook-signature: {sign(secret, msg_id, ts, body.encode())}"],
                   body)

    write_requests(base, requests())


def write_rest(base: Path, token: str, prefix: str, count: int) -> None:
    """Canonical orders for POST /api/v1/orders, each with its own external_id."""
    template = body_template()
    write_requests(base, (("/api/v1/orders", ["Content-Type: application/json",
                                              f"Authorization: Bearer {token}"],
                           template.replace(PLACEHOLDER, f"{prefix}-{i:07d}")) for i in range(count)))


# --- load ----------------------------------------------------------------------------------------

@dataclass
class Load:
    name: str
    requests: int = 0
    seconds: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    wraps: int = 0
    connections: list[int] = field(default_factory=list)
    accepted_codes: tuple[int, ...] = (200, 201, 202)
    cpu: dict[str, float] = field(default_factory=dict)       # cores used during the load
    pg_waits: dict[str, float] = field(default_factory=dict)  # average backends per state/wait
    opened: dict[str, float] = field(default_factory=dict)    # new PG sessions / Redis connections

    @property
    def accepted(self) -> int:
        return sum(self.statuses.get(code, 0) for code in self.accepted_codes)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def socket_errors(self) -> int:
        return sum(v for k, v in self.errors.items() if k != "status")


def run_wrk(name: str, port: int, requests_file: Path, seconds: int, connections: int,
            during: Callable[[], None] | None = None, rate: float = 0) -> Load:
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "10s",
           "--latency", "-s", str(HERE / "presigned.lua"), f"http://127.0.0.1:{port}", "--",
           str(requests_file), *([str(rate / WRK_THREADS)] if rate else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if during is not None:
        time.sleep(min(seconds / 2, 5) + 1)  # the Lua init reads the file first
        if proc.poll() is None:
            during()
    try:
        out, err = proc.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    values = dict(line.split()[1:3] for line in out.splitlines() if line.startswith("BENCH "))
    if proc.returncode != 0 or "requests" not in values:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.strip()[-2000:]}\n{out[-2000:]}")
    load = Load(name, requests=int(values["requests"]), seconds=int(values["duration_us"]) / 1e6)
    load.statuses = {int(k[7:]): int(v) for k, v in values.items() if k.startswith("status_")}
    load.errors = {k[7:]: int(v) for k, v in values.items() if k.startswith("errors_")}
    load.latency_ms = {k: int(values[k]) / 1000 for k in ("p50", "p90", "p95", "p99", "p99.9", "mean", "max")}
    load.wraps = sum(int(v) for k, v in values.items() if k.startswith("wraps_"))
    return load


# --- the benchmark -------------------------------------------------------------------------------

@dataclass
class Delivery:
    booked: int = 0
    failed: int = 0
    seconds: float = 0.0
    span_rate: float = 0.0
    drained: bool = False
    latency_s: dict[str, float] = field(default_factory=dict)
    max_backlog: int = 0
    load: Load | None = None
    startup_s: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    pg_waits: dict[str, float] = field(default_factory=dict)
    opened: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.booked / self.seconds if self.seconds else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="fobo-bench-"))
        self.procs = Processes()
        self.memory = MemorySampler()
        self.db = "bench_" + secrets.token_hex(5)
        self.dsn = f"{PG}/{self.db}"
        self.redis_db: int | None = None
        self.sink: subprocess.Popen[Any] | None = None
        self.loads: dict[str, Load] = {}
        self.backlog = Delivery()
        self.steady = Delivery()
        self.sink_stats: dict[str, int] = {}
        self.notes: list[str] = []
        self.profiles: list[tuple[str, subprocess.Popen[Any], Path]] = []
        self.cpu_roots: dict[str, subprocess.Popen[Any]] = {}
        self._state_conn: psycopg.Connection[Any] | None = None
        self._state_lock = threading.Lock()
        self.server_info = ""

    # -- setup and teardown --

    def setup(self) -> None:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.db}")
            info = conn.execute("SELECT current_setting('server_version'), current_setting('fsync'), "
                                "current_setting('synchronous_commit')").fetchone()
        self.server_info = f"PostgreSQL {info[0]} (fsync={info[1]}, synchronous_commit={info[2]})"
        before = cpu_snapshot({})["machine"]
        time.sleep(1)
        self.idle_load = cpu_snapshot({})["machine"] - before
        for db in range(15, 0, -1):
            client = redis.Redis.from_url(f"{REDIS}/{db}")
            if client.dbsize() == 0:
                self.redis_db = db
                break
        if self.redis_db is None:
            raise RuntimeError("no empty Redis database (1-15) to use")
        self.memory.start()
        self.sink = self.procs.start([sys.executable, str(HERE / "sink_runner.py")], dict(os.environ),
                                     self.tmp / "sink.log", stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.sink.stdout is not None
        self.sink_url = self.sink.stdout.readline().strip()
        if not self.sink_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"sink did not start: {(self.tmp / 'sink.log').read_text()[-2000:]}")
        self.memory.watch("sink", self.sink.pid)
        self.cpu_roots["sink"] = self.sink

    def cleanup(self) -> None:
        self.memory.stop()
        if self._state_conn is not None:
            self._state_conn.close()
        self.procs.stop_all()
        with contextlib.suppress(Exception), psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        if self.redis_db is not None:
            with contextlib.suppress(Exception):
                redis.Redis.from_url(f"{REDIS}/{self.redis_db}").flushdb()
        if self.args.keep_logs:
            say(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- servers --

    def gunicorn(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> subprocess.Popen[Any]:
        proc = self.procs.start(cmd, env, self.tmp / f"{name}.log")
        wait_for(lambda: proc.poll() is not None or (port_open(port) and len(children_of(proc.pid)) >= 2),
                 60, f"{name} to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {(self.tmp / f'{name}.log').read_text()[-3000:]}")
        self.memory.watch(name, proc.pid)
        return proc

    def measure(self, name: str, proc: subprocess.Popen[Any], port: int, requests_file: Path,
                seconds: int, connections: int, accepted: tuple[int, ...],
                warm_file: Path | None = None, rate: float = 0) -> Load:
        if warm_file is not None and self.args.warmup:
            run_wrk(f"{name} warm-up", port, warm_file, self.args.warmup, connections)
        workers = children_of(proc.pid)
        seen: list[int] = []

        def during() -> None:
            seen.extend(connections_per_worker(port, workers))
            if self.args.profile and name in ("broker webhook", "broker REST"):
                self._profile(f"one gateway worker, {name} phase", workers[0], max(3, seconds // 2 - 1))

        roots = {"server": proc.pid, **{k: p.pid for k, p in self.cpu_roots.items()
                                        if p.poll() is None and p.pid != proc.pid}}
        waits = PgWaits(self.db)
        opened0 = connection_counts(self.db)
        cpu0, wall0 = cpu_snapshot(roots), time.monotonic()
        try:
            load = run_wrk(name, port, requests_file, seconds, connections, during, rate)
        finally:
            pg_waits = waits.stop()
        cpu1, wall = cpu_snapshot(roots), time.monotonic() - wall0
        time.sleep(0.5)  # let exiting backends report
        opened1 = connection_counts(self.db)
        load.cpu = {k: (cpu1[k] - cpu0[k]) / wall for k in cpu0}
        load.opened = {k: opened1[k] - opened0[k] for k in opened0}
        load.connections, load.accepted_codes, load.pg_waits = seen, accepted, pg_waits
        self.loads[name] = load
        say(f"{name}: {load.rate:.0f} accepted/s, statuses {load.statuses}, "
            f"p99 {load.latency_ms['p99']:.1f} ms, conns/worker {seen}")
        return load

    def _profile(self, label: str, pid: int, seconds: int, subprocesses: bool = False) -> None:
        out = self.tmp / f"profile-{len(self.profiles)}.txt"
        cmd = ["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "50", "-f", "raw", "-o",
               str(out), "--nonblocking", *(["--subprocesses"] if subprocesses else [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.profiles.append((label, proc, out))

    def baseline_env(self, port: int, secret: str) -> dict[str, str]:
        metrics = self.tmp / "metrics-baseline"
        metrics.mkdir(exist_ok=True)
        return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "BENCH_PG_DSN": self.dsn,
                "BENCH_REDIS_URL": f"{REDIS}/{self.redis_db}", "BENCH_SECRET": secret}

    def baseline_cmd(self, app: str, port: int) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "--config", "python:broker.gunicorn_conf",
                "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gevent",
                "--pythonpath", str(HERE), f"baselines:{app}"]

    def run_baselines(self) -> None:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        requests_file = self.tmp / "baseline.req"
        write_webhooks(requests_file, secret, "b0", min(self.args.orders, 20_000), source="shop")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_minimal_events (id bigserial PRIMARY KEY, webhook_id text "
                         "NOT NULL, body bytea NOT NULL, received_at timestamptz NOT NULL DEFAULT now())")
        for name, app in (("bare Flask", "bare"), ("minimal durable", "durable")):
            port = free_port()
            proc = self.gunicorn(app, self.baseline_cmd(app, port), self.baseline_env(port, secret), port)
            try:
                load = self.measure(name, proc, port, requests_file, self.args.seconds,
                                    self.args.connections, (200,) if app == "bare" else (202,),
                                    warm_file=requests_file)
            finally:
                self.memory.unwatch(app)
                self.procs.stop(proc)
            if app == "durable":
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    rows = conn.execute("SELECT count(*) FROM bench_minimal_events").fetchone()[0]
                    conn.execute("DROP TABLE bench_minimal_events")
                pushed = redis.Redis.from_url(f"{REDIS}/{self.redis_db}").llen("bench:minimal")
                say(f"minimal durable stored {rows} rows and pushed {pushed} ids "
                    f"(measured 202s: {load.accepted}, plus warm-up)")
                redis.Redis.from_url(f"{REDIS}/{self.redis_db}").flushdb()

    # -- the broker --

    def broker_env(self, port: int) -> dict[str, str]:
        from cryptography.fernet import Fernet

        data = self.tmp / "broker-data"
        data.mkdir(exist_ok=True)
        if not hasattr(self, "_fernet"):
            self._fernet = Fernet.generate_key().decode()
        return {**os.environ, "PYTHONUNBUFFERED": "1",
                "BROKER_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}",
                "BROKER_QUEUE_URL": f"{REDIS}/{self.redis_db}", "BROKER_SECRET_KEYS": self._fernet,
                "BROKER_DATA_DIR": str(data), "BROKER_LOG_LEVEL": "WARNING", "BROKER_LOG_JSON": "false",
                "BROKER_BIND": f"127.0.0.1:{port}",
                "BROKER_ALLOW_PRIVATE_NETWORKS": "true"}  # the fake ERP is on loopback

    def cli(self, env: dict[str, str], *args: str) -> Any:
        result = subprocess.run([sys.executable, "-m", "broker.cli", *args], env=env, cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"broker {' '.join(args)} failed: {result.stderr[-2000:]}")
        return json.loads(result.stdout) if "--json" in args else result.stdout

    def state(self) -> dict[str, int]:
        """Counts that say how far delivery is: every accepted order has one delivery to `erp`."""
        with self._state_lock:
            if self._state_conn is None or self._state_conn.closed:
                self._state_conn = psycopg.connect(self.dsn, autocommit=True)  # one session, reused
            row = self._state_conn.execute("""
                SELECT (SELECT count(*) FROM inbound_events),
                       (SELECT count(*) FROM inbound_events WHERE status IN ('rejected', 'ignored')),
                       (SELECT count(*) FROM orders o JOIN sources s ON s.id = o.source_id
                         WHERE s.kind = 'rest'),
                       (SELECT count(*) FROM deliveries WHERE status = 'booked'),
                       (SELECT count(*) FROM deliveries WHERE status IN ('dead', 'parked'))""").fetchone()
        events, rejected, rest, booked, failed = row
        expected = events - rejected + rest
        return {"expected": expected, "booked": booked, "failed": failed + rejected,
                "backlog": expected - booked - failed}

    def latencies(self, like: str | None) -> dict[str, float]:
        where = "AND o.external_id LIKE %s" if like else ""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(f"""
                SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY s),
                       max(s), min(d0), max(d1)
                  FROM (SELECT extract(epoch FROM d.booked_at - o.received_at) AS s,
                               d.booked_at AS d0, d.booked_at AS d1
                          FROM deliveries d JOIN orders o ON o.id = d.order_id
                         WHERE d.status = 'booked' {where}) t""",
                               (like,) if like else ()).fetchone()
        count, (p50, p95, p99), top, first, last = row[0], row[1] or (0, 0, 0), row[2], row[3], row[4]
        span = (last - first).total_seconds() if first and last else 0.0
        return {"count": count, "p50": p50, "p95": p95, "p99": p99, "max": float(top or 0), "span": span}

    def drain(self, timeout: float, watch: Delivery) -> tuple[bool, float]:
        """Wait until every accepted order is booked (or failed); records CPU and PostgreSQL waits."""
        roots = {k: p.pid for k, p in self.cpu_roots.items() if p.poll() is None}
        waits = PgWaits(self.db)
        opened0 = connection_counts(self.db)
        cpu0, start = cpu_snapshot(roots), time.monotonic()
        drained = False
        try:
            while time.monotonic() - start < timeout:
                state = self.state()
                watch.max_backlog = max(watch.max_backlog, state["backlog"])
                if state["backlog"] <= 0:
                    drained = True
                    break
                time.sleep(0.25)
        finally:
            watch.pg_waits = waits.stop()
        elapsed = time.monotonic() - start
        cpu1 = cpu_snapshot(roots)
        if elapsed >= 2:  # shorter windows say nothing about where the time goes
            watch.cpu = {k: (cpu1[k] - cpu0[k]) / elapsed for k in cpu0 if k != "wrk"}
        opened1 = connection_counts(self.db)
        watch.opened = {k: opened1[k] - opened0[k] for k in opened0}
        return drained, elapsed

    def run_broker(self) -> None:
        args = self.args
        port = free_port()
        env = self.broker_env(port)
        say(f"broker: database {self.db}, Redis db {self.redis_db}, gateway 127.0.0.1:{port}")
        self.cli(env, "db", "upgrade")
        secret = self.cli(env, "sources", "add", "bench", "--kind", "standard-webhooks", "--json")["secret"]
        self.cli(env, "connectors", "add", "erp", "--kind", "http", "--config",
                 json.dumps({"url": f"{self.sink_url}/orders", "timeout": 5}), "--json")
        self.cli(env, "routes", "add", "--source", "bench", "--connector", "erp", "--json")
        client = self.cli(env, "clients", "create", "benchrest", "--json")
        self.cli(env, "routes", "add", "--source", "benchrest", "--connector", "erp", "--json")

        serve = [sys.executable, "-m", "broker.cli", "serve", "--workers", "2", "--worker-class", "gevent"]
        gateway = self.gunicorn("gateway", serve, env, port)

        # phase A: ingest with no workers running
        warm = self.tmp / "warm.req"
        write_webhooks(warm, secret, "w0", 2_000)
        webhooks = self.tmp / "webhooks-a.req"
        write_webhooks(webhooks, secret, "wa", args.orders)
        self.measure("broker webhook", gateway, port, webhooks, args.seconds, args.connections, (202,),
                     warm_file=warm)
        token = self.token(port, client["client_id"], client["client_secret"])
        rest = self.tmp / "rest-a.req"
        write_rest(rest, token, "ra", max(1_000, args.orders // 2))
        rest_warm = self.tmp / "rest-warm.req"
        write_rest(rest_warm, token, "r0", 1_000)
        self.measure("broker REST", gateway, port, rest, args.rest_seconds, args.connections, (201,),
                     warm_file=rest_warm)

        # phase B: the backlog, two worker processes
        before = self.state()
        say(f"phase B: {before['backlog']} orders waiting; starting the worker")
        started = time.monotonic()
        log = self.tmp / "worker.log"
        worker = self.procs.start([sys.executable, "-m", "broker.cli", "worker", "--concurrency", "2",
                                   "--beat"], env, log)
        self.memory.watch("worker", worker.pid)
        self.cpu_roots["workers"] = worker
        self.cpu_roots["gateway"] = gateway
        # Ready = the first booking (celery's "ready." line is INFO; the broker logs at WARNING).
        wait_for(lambda: worker.poll() is not None or self.state()["booked"] > before["booked"], 90,
                 "the worker's first booking", interval=0.1)
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
        self.backlog.startup_s = time.monotonic() - started
        if args.profile:
            self._profile("the celery worker and its pool, backlog phase", worker.pid, 20, subprocesses=True)
        self.backlog.drained, self.backlog.seconds = self.drain(args.drain_timeout, self.backlog)
        after = self.state()
        self.backlog.booked = after["booked"] - before["booked"]
        self.backlog.failed = after["failed"]
        self.backlog.max_backlog = max(self.backlog.max_backlog, before["backlog"])
        self.backlog.latency_s = self.latencies(None)
        span = self.backlog.latency_s["span"]
        self.backlog.span_rate = self.backlog.latency_s["count"] / span if span else 0.0
        say(f"phase B: {self.backlog.booked} booked in {self.backlog.seconds:.1f}s "
            f"(drained: {self.backlog.drained})")

        # phase C: steady state, workers running, a moderate load
        steady = self.tmp / "webhooks-c.req"
        write_webhooks(steady, secret, "wc", max(2_000, args.orders // 2))
        before = self.state()
        samples: list[int] = []
        stop = threading.Event()

        def watch_backlog() -> None:
            while not stop.wait(0.25):
                with contextlib.suppress(Exception):
                    samples.append(self.state()["backlog"])

        watcher = threading.Thread(target=watch_backlog, daemon=True)
        watcher.start()
        try:
            self.steady.load = self.measure("broker steady (workers on)", gateway, port, steady,
                                            args.seconds, args.steady_connections, (202,),
                                            rate=args.steady_rate)
        finally:
            stop.set()
            watcher.join(timeout=10)
        self.steady.max_backlog = max(samples, default=0)
        self.steady.drained, self.steady.seconds = self.drain(args.drain_timeout, self.steady)
        after = self.state()
        self.steady.booked = after["booked"] - before["booked"]
        self.steady.failed = after["failed"]
        self.steady.latency_s = self.latencies("wc-%")
        say(f"phase C: max backlog {self.steady.max_backlog}, drained {self.steady.seconds:.1f}s "
            "after the load stopped")
        self.memory.sample()
        assert self.sink is not None and self.sink.stdin is not None and self.sink.stdout is not None
        self.sink.stdin.write("stats\n")
        self.sink.stdin.flush()
        self.sink_stats = json.loads(self.sink.stdout.readline())
        self.procs.stop(worker)
        self.procs.stop(gateway)

    def token(self, port: int, client_id: str, client_secret: str) -> str:
        basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/oauth/token",
                                         data=b"grant_type=client_credentials",
                                         headers={"Authorization": f"Basic {basic}",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["access_token"]

    # -- report --

    def profile_summary(self, top: int = 12) -> list[str]:
        """Self time (leaf frames) and inclusive time of project and framework frames, per profile."""
        lines: list[str] = []
        for label, proc, path in self.profiles:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
            if not path.exists():
                lines.append(f"py-spy, {label}: no profile written")
                continue
            inclusive: dict[str, int] = {}
            leaf: dict[str, int] = {}
            total = 0
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not count.isdigit():
                    continue
                n, total = int(count), total + int(count)
                # "func (/path/site-packages/pkg/mod.py:12)" -> "func (pkg/mod.py)"
                frames = [re.sub(r":\d+\)$", ")", re.sub(r"\(/.*/(site-packages|python3\.\d+|work/main)/",
                                                          "(", f))
                          for f in stack.split(";") if f.strip() and not f.startswith("process ")]
                if not frames:
                    continue
                leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
                for frame in set(frames):
                    if re.search(r"\((broker|connectors|workers)/", frame):
                        inclusive[frame] = inclusive.get(frame, 0) + n
            if not total:
                continue
            lines += ["", f"py-spy, {label} ({total} samples at 50 Hz):", "  self time (leaf functions):"]
            lines += [f"    {100 * n / total:5.1f}%  {f}"
                      for f, n in sorted(leaf.items(), key=lambda x: -x[1])[:top]]
            lines.append("  inclusive time of project functions (broker, connectors, workers):")
            lines += [f"    {100 * n / total:5.1f}%  {f}"
                      for f, n in sorted(inclusive.items(), key=lambda x: -x[1])[:top * 2]]
        return lines

    def log_problems(self) -> list[str]:
        lines = []
        for name in ("gateway", "worker", "durable", "bare", "sink"):
            path = self.tmp / f"{name}.log"
            if not path.exists():
                continue
            text = path.read_text(errors="replace").splitlines()
            bad = [t for t in text if re.search(r"Traceback|\bERROR\b|\bCRITICAL\b|\bWARNING\b|"
                                                r"\[ERROR\]|\[CRITICAL\]|exception", t, re.I)]
            distinct: dict[str, int] = {}
            for t in bad:
                key = re.sub(r"[0-9a-f]{16,}|\d+", "#", t)[:160]
                distinct[key] = distinct.get(key, 0) + 1
            lines.append(f"  {name} log: {len(text)} lines, {len(bad)} warning/error lines"
                         + ("" if bad else " (clean)"))
            for key, n in sorted(distinct.items(), key=lambda x: -x[1])[:6]:
                lines.append(f"    {n:6d} x {key}")
        return lines

    def report(self) -> str:
        a, L = self.args, self.loads
        out = [f"FOBO Broker ingest benchmark: gunicorn --workers 2 --worker-class gevent "
               f"(python:broker.gunicorn_conf), wrk -t2 -c{a.connections} -d{a.seconds}s "
               f"(REST {a.rest_seconds}s), {BODY_BYTES}-byte signed orders",
               f"{self.server_info}; Redis db {self.redis_db}; {os.cpu_count()} cores, "
               f"{getattr(self, 'idle_load', 0):.2f} busy before the run (other users); "
               f"{a.orders} pre-signed webhooks per phase", ""]
        head = f"{'server':<28}{'accepted/s':>11}{'2xx':>9}{'non-2xx':>9}{'sock err':>9}" \
               f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}  conns/worker"
        out += [head, "-" * len(head)]
        for name, load in L.items():
            ms = load.latency_ms
            ok = sum(n for c, n in load.statuses.items() if 200 <= c < 300)
            extra = f"  wraps={load.wraps}" if load.wraps and "broker" in name else ""
            out.append(f"{name:<28}{load.rate:>11.0f}{ok:>9}{load.non_2xx:>9}{load.socket_errors:>9}"
                       f"{ms['p50']:>9.2f}{ms['p95']:>9.2f}{ms['p99']:>9.2f}{ms['max']:>9.1f}  "
                       f"{'/'.join(map(str, load.connections))}{extra}")
        for name, load in L.items():
            odd = {c: n for c, n in load.statuses.items() if c not in load.accepted_codes}
            if odd:
                out.append(f"  {name}: other statuses {odd}")
        out += ["", "where the time went during each load: CPU cores used (2 = the whole machine), and the "
                "bench database's PostgreSQL backends by state and wait event (average count)"]
        phases: list[tuple[str, dict[str, float], dict[str, float], dict[str, float]]] = [
            (name, load.cpu, load.pg_waits, load.opened) for name, load in L.items()]
        phases += [(name, d.cpu, d.pg_waits, d.opened)
                   for name, d in (("delivery: backlog", self.backlog),
                                   ("delivery: drain after steady", self.steady)) if d.cpu]
        for name, cpu_used, pg_waits, opened in phases:
            ours = {k: v for k, v in cpu_used.items() if k != "machine"}
            other = cpu_used.get("machine", 0) - sum(ours.values())
            cpu = "  ".join(f"{k} {v:.2f}" for k, v in {**ours, "other": other}.items() if v >= 0.005)
            out.append(f"  {name:<29} machine {cpu_used.get('machine', 0):.2f} = {cpu}")
            waits = sorted(pg_waits.items(), key=lambda x: -x[1])[:5]
            if waits:
                out.append(f"  {'':<29} pg: " + ", ".join(f"{k} {v:.1f}" for k, v in waits))
            if opened:
                out.append(f"  {'':<29} opened by the servers: " + ", ".join(
                    f"{k} {v:.0f}" for k, v in opened.items()))
        checks: list[tuple[str, float, str, bool | None]] = []
        bare, minimal = L.get("bare Flask"), L.get("minimal durable")
        hook, rest = L.get("broker webhook"), L.get("broker REST")

        def ratio(x: float, y: float) -> float:
            return x / y if y else float("nan")

        if minimal and hook:
            r = ratio(hook.rate, minimal.rate)
            checks.append(("broker webhook accepted/s / minimal durable", r, f">= {TARGET_ACCEPT_RATIO}",
                           r >= TARGET_ACCEPT_RATIO))
            r = ratio(hook.latency_ms["p99"], minimal.latency_ms["p99"])
            checks.append(("broker webhook p99 / minimal durable p99", r, f"<= {TARGET_P99_RATIO}",
                           r <= TARGET_P99_RATIO))
        if minimal and rest:
            r = ratio(rest.rate, minimal.rate)
            checks.append(("broker REST accepted/s / minimal durable", r, f">= {TARGET_ACCEPT_RATIO}",
                           r >= TARGET_ACCEPT_RATIO))
            r = ratio(rest.latency_ms["p99"], minimal.latency_ms["p99"])
            checks.append(("broker REST p99 / minimal durable p99", r, f"<= {TARGET_P99_RATIO}",
                           r <= TARGET_P99_RATIO))
        if bare and hook:
            checks.append(("broker webhook accepted/s / bare Flask", ratio(hook.rate, bare.rate), "info",
                           None))
            checks.append(("broker webhook p99 / bare Flask p99",
                           ratio(hook.latency_ms["p99"], bare.latency_ms["p99"]), "info", None))
        if bare and minimal:
            checks.append(("minimal durable accepted/s / bare Flask", ratio(minimal.rate, bare.rate),
                           "info", None))
        b, s = self.backlog, self.steady
        out += ["", "ingest ratios (same run)"]
        out += [f"  {n:<48}{v:>8.2f}   target {t:<7} {'' if p is None else verdict(p)}"
                for n, v, t, p in checks]
        out += ["", "delivery into the fake ERP (broker worker --concurrency 2 --beat; the sink runs in "
                "its own process)"]
        if b.seconds:
            ingest_s = sum(x.seconds for k, x in L.items() if k in ("broker webhook", "broker REST"))
            lat = b.latency_s
            out += [f"  backlog phase: {b.booked} orders booked in {b.seconds:.1f}s after the worker's first "
                    f"booking (start-up {b.startup_s:.1f}s){'' if b.drained else ' - NOT DRAINED (timeout)'}",
                    f"    delivered/s {b.rate:.0f} (first to last booked_at: {b.span_rate:.0f}/s)   "
                    f"target >= {TARGET_DELIVERED:.0f}   {verdict(b.rate >= TARGET_DELIVERED)}",
                    f"    backlog of {b.max_backlog} built in {ingest_s:.0f}s of ingest took "
                    f"{b.seconds:.0f}s to deliver "
                    f"({'faster' if b.seconds <= ingest_s else 'slower'} than it arrived)",
                    f"    received->booked, all {lat['count']} orders (includes the backlog queueing): "
                    f"p50 {lat['p50']:.1f}s  p95 {lat['p95']:.1f}s  p99 {lat['p99']:.1f}s  "
                    f"max {lat['max']:.1f}s"]
        if s.load is not None:
            lat = s.latency_s
            ok = s.drained and s.seconds <= s.load.seconds
            paced = f" paced to {a.steady_rate:.0f}/s" if a.steady_rate else ""
            out += [f"  steady phase: wrk -c{a.steady_connections}{paced} for {a.seconds}s with the worker "
                    f"on: {s.load.rate:.0f} accepted/s, p99 ack {s.load.latency_ms['p99']:.1f} ms, "
                    f"{s.booked} booked, largest backlog {s.max_backlog}",
                    f"    received->booked ({lat['count']} orders): p50 {1000 * lat['p50']:.0f} ms  "
                    f"p95 {1000 * lat['p95']:.0f} ms  p99 {1000 * lat['p99']:.0f} ms  "
                    f"max {1000 * lat['max']:.0f} ms",
                    f"    backlog drained {s.seconds:.1f}s after the load stopped"
                    f"{'' if s.drained else ' (NOT drained: timeout)'}   target <= load duration "
                    f"{s.load.seconds:.0f}s   {verdict(ok)}"]
        if self.sink_stats:
            sink = self.sink_stats
            out.append(f"  sink: {sink['records']} orders booked, {sink['creates']} creates, "
                       f"{sink['duplicate_creates']} duplicate creates; failed/dead/rejected "
                       f"in the broker: {max(b.failed, s.failed)}")
        out += ["", "peak memory (VmHWM, MB)"]
        roles = [("gateway child", "broker gateway worker", TARGET_RSS_MB),
                 ("gateway master", "broker gateway master", None),
                 ("worker master", "celery worker main", None), ("worker child", "celery children", None),
                 ("bare child", "bare Flask worker", None), ("durable child", "minimal durable worker", None),
                 ("sink master", "fake ERP sink", None)]
        for role, label, target in roles:
            peaks = self.memory.by_role(role)
            if not peaks:
                continue
            top = max(mb for _, mb in peaks)
            shown = ", ".join(f"{mb:.0f}" for _, mb in peaks[:8]) + (" ..." if len(peaks) > 8 else "")
            line = f"  {label:<24} max {top:6.1f}   ({len(peaks)} processes: {shown})"
            if target is not None:
                line += f"   target <= {target:.0f}   {verdict(top <= target)}"
            out.append(line)
        problems = self.log_problems()
        if problems:
            out += ["", "logs (LOG_LEVEL=WARNING)", *problems]
        out += self.profile_summary()
        if self.notes:
            out += ["", *self.notes]
        return "\n".join(out)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=20, help="length of each measured load")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--orders", type=int, default=None,
                        help="pre-signed webhooks per phase (default: 3000 per second of load)")
    parser.add_argument("--rest-seconds", type=int, default=None, help="REST load (default: seconds / 2)")
    parser.add_argument("--steady-connections", type=int, default=4, help="wrk connections, phase C")
    parser.add_argument("--steady-rate", type=float, default=0,
                        help="pace phase C to this many webhooks/s (default: as fast as wrk can)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load per server")
    parser.add_argument("--drain-timeout", type=float, default=300, help="longest wait for delivery")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy one gateway worker (webhook, REST) and the worker pool (backlog)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.orders = args.orders or 3000 * args.seconds
    args.rest_seconds = args.rest_seconds or max(5, args.seconds // 2)
    if min(args.connections, args.steady_connections) < WRK_THREADS:
        parser.error(f"wrk runs {WRK_THREADS} threads: use at least {WRK_THREADS} connections")
    if args.seconds + args.warmup > 240:
        parser.error("signed timestamps are valid for 300 s: keep --seconds + --warmup under 240")
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    if args.profile and not shutil.which("py-spy"):
        print("--profile needs py-spy: pip install py-spy", file=sys.stderr)
        return 2
    bench = Bench(args)

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    status = 0
    try:
        bench.setup()
        bench.run_baselines()
        bench.run_broker()
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        bench.cleanup()
        return 130
    except Exception as exc:
        say(f"benchmark failed: {type(exc).__name__}: {exc}")
        bench.notes.append(f"FAILED: {type(exc).__name__}: {exc}")
        status = 1
    try:
        text = bench.report()  # reads the logs, so before cleanup
    finally:
        bench.cleanup()
    print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
