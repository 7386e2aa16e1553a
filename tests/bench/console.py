"""Console page latency with 100,000 orders in the database: prints figures, asserts nothing.

    python tests/bench/console.py [--orders 100000] [--requests 40] [--database sqlite|postgresql]

Seeds the orders of the last 30 days in bulk (each with its version, webhook event, delivery,
attempt and three timeline steps; 3 % dead letters, 1 % parked, 1 % pending, 2 % replayed by
a person), serves the gateway on loopback (werkzeug, threaded, as `stack.serve()`), signs in
as an admin and times GET requests one after another, each page --requests times, against
GET /healthz of the same run as the baseline. The dashboard is timed twice: computed on every
request (CONSOLE_DASHBOARD_TTL=0), and as served (figures cached for 30 s per process).
PostgreSQL needs a server on 127.0.0.1:5432 (see tests/harness.py).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parent)]

import requests  # noqa: E402
from harness import Stack, order  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from broker.models import (  # noqa: E402
    Connector,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    InboundEvent,
    Order,
    OrderVersion,
    Source,
    TimelineEntry,
)
from broker.services.users import create_user  # noqa: E402
from connectors import ssrf  # noqa: E402

PASSWORD = "bench-console-password-1"
BATCH = 5000
CHANNELS = ("shopify", "woocommerce", "stripe")


def id_at(moment: datetime) -> str:
    """A broker id (time-ordered: milliseconds first) for a row made at `moment`."""
    return f"{int(moment.timestamp() * 1000):012x}{secrets.token_hex(10)}"


def seed(stack: Stack, count: int) -> dict[str, Any]:
    """Bulk-insert `count` orders with their journeys; returns ids and keys to look up."""
    rng = random.Random(7)
    db = stack.runtime.db
    secret = stack.source("shop")
    for name in ("woo", "pay"):
        stack.source(name)
    stack.http_connector("erp", "http://127.0.0.1:9/orders")
    stack.http_connector("wms", "http://127.0.0.1:9/wms")
    with db.begin() as session:
        sources = session.execute(select(Source.id)).scalars().all()
        connectors = session.execute(select(Connector.id)).scalars().all()
    template = order("template")
    now = datetime.now(UTC)
    started = time.monotonic()
    sample: dict[str, Any] = {}
    for start in range(0, count, BATCH):
        rows: dict[Any, list[dict[str, Any]]] = {m: [] for m in (
            InboundEvent, Order, OrderVersion, Delivery, DeliveryAttempt, TimelineEntry)}
        for n in range(start, min(start + BATCH, count)):
            received = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
            channel = CHANNELS[n % 3]
            external, email = f"B-{n}", f"buyer{n % 20000}@example.com"
            doc = {**template, "external_id": external, "number": f"#{external}", "channel": channel,
                   "customer": {**template["customer"], "email": email}}
            order_id, event_id, version_id, delivery_id = (id_at(received) for _ in range(4))
            roll = rng.random()
            status = (DeliveryStatus.DEAD if roll < 0.03 else DeliveryStatus.PARKED if roll < 0.04
                      else DeliveryStatus.PENDING if roll < 0.05 else DeliveryStatus.BOOKED)
            booked_at = received + timedelta(seconds=rng.lognormvariate(0.3, 0.8))
            body = json.dumps(doc).encode()
            rows[InboundEvent].append({
                "id": event_id, "source_id": sources[n % 3], "event_key": f"msg_{n}",
                "topic": "order.created", "headers": {"content-type": "application/json"}, "body": body,
                "status": "normalised", "order_id": order_id, "attempts": 1, "received_at": received,
                "processed_at": received})
            rows[Order].append({
                "id": order_id, "source_id": sources[n % 3], "external_id": external,
                "number": f"#{external}", "channel": channel, "email": email, "status": "open",
                "currency": "USD", "total": "29.06", "current_version": 1, "received_at": received,
                "updated_at": received})
            rows[OrderVersion].append({
                "id": version_id, "order_id": order_id, "version": 1, "digest": secrets.token_hex(32),
                "data": doc, "applied": True, "inbound_event_id": event_id, "created_at": received})
            error = {DeliveryStatus.DEAD: f"back office answered 422 for order #{external}: unknown SKU "
                                          f"'SKU-{n % 50}'",
                     DeliveryStatus.PARKED: f"missing mapping: SKU SKU-{n % 40} has no product in erp",
                     }.get(status)
            rows[Delivery].append({
                "id": delivery_id, "order_id": order_id, "order_version_id": version_id,
                "connector_id": connectors[n % 2], "action": "create", "status": status,
                "attempts": 1, "next_attempt_at": received, "last_error": error,
                "reference": f"SO-{n:06d}" if status == DeliveryStatus.BOOKED else None,
                "created_at": received, "updated_at": booked_at,
                "booked_at": booked_at if status == DeliveryStatus.BOOKED else None,
                "parked_reason": "missing mapping" if status == DeliveryStatus.PARKED else None,
                "parked_kind": "product" if status == DeliveryStatus.PARKED else None,
                "parked_key": f"SKU-{n % 40}" if status == DeliveryStatus.PARKED else None})
            rows[DeliveryAttempt].append({
                "id": id_at(received), "delivery_id": delivery_id, "number": 1,
                "outcome": "booked" if status == DeliveryStatus.BOOKED else "dead" if error else "retry",
                "error": error, "reference": f"SO-{n:06d}" if status == DeliveryStatus.BOOKED else None,
                "started_at": received, "duration_ms": 40})
            steps = [("received", received), ("normalised", received), ("queued", received)]
            if status == DeliveryStatus.BOOKED:
                if rng.random() < 0.02:
                    steps.append(("replayed", received))
                steps.append(("booked", booked_at))
            rows[TimelineEntry].extend(
                {"id": id_at(at), "order_id": order_id, "step": step, "at": at, "message": f"{step} (bench)",
                 "data": {}, "delivery_id": None if step in ("received", "normalised") else delivery_id}
                for step, at in steps)
            if n == count // 2:
                sample = {"order_id": order_id, "number": external, "email": email}
        with db.begin() as session:
            for model in (InboundEvent, Order, OrderVersion, Delivery, DeliveryAttempt, TimelineEntry):
                session.execute(insert(model), rows[model])
        print(f"\r  seeded {min(start + BATCH, count):>7} orders", end="", flush=True)
    print(f" in {time.monotonic() - started:.0f} s")
    sample["secret"] = secret
    return sample


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def timed(http: requests.Session, url: str, n: int) -> tuple[float, float]:
    http.get(url, timeout=120).raise_for_status()  # warm up (and fail loudly on an error page)
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = http.get(url, timeout=120)
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return statistics.median(samples), percentile(samples, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    ssrf.configure(allow_private=True)
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), args.database, "embedded")
        try:
            print(f"{args.database}: seeding {args.orders} orders")
            sample = seed(stack, args.orders)
            create_user(stack.runtime.db, "root", PASSWORD, role="admin")
            base = stack.serve()
            http = requests.Session()
            page = http.get(base + "/console/login", timeout=30).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
            http.post(base + "/console/login", data={"username": "root", "password": PASSWORD,
                                                     "csrf_token": token}, timeout=30).raise_for_status()
            pages = [
                ("GET /healthz (baseline)", "/healthz", None),
                ("dashboard, computed (TTL 0)", "/console/", 0),
                ("dashboard, as served (30 s cache)", "/console/", 30),
                ("orders list (first page, 50)", "/console/orders/", None),
                ("orders list (page 2 by cursor)", None, None),
                ("order search by number", f"/console/orders/?number={sample['number']}", None),
                ("order search by email", f"/console/orders/?email={sample['email']}", None),
                ("order search: dead deliveries", "/console/orders/?delivery_status=dead", None),
                ("order journey", f"/console/orders/{sample['order_id']}", None),
                ("dead letters", "/console/dead-letters/", None),
                ("parked", "/console/parked", None),
            ]
            first = http.get(base + "/console/orders/", timeout=60).text
            next_page = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")  # type: ignore
            print(f"\n{'page':<36} {'p50 ms':>8} {'p95 ms':>8}")
            for label, path, ttl in pages:
                if ttl is not None:
                    stack.app.config["CONSOLE_DASHBOARD_TTL"] = ttl
                p50, p95 = timed(http, base + (path or next_page), args.requests)
                print(f"{label:<36} {p50:>8.1f} {p95:>8.1f}")
        finally:
            stack.close()


if __name__ == "__main__":
    main()
