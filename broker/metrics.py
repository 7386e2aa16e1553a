"""Prometheus metrics; correct under several gunicorn workers (multiprocess mode).

`broker serve` and `broker up` set PROMETHEUS_MULTIPROC_DIR before any process imports
prometheus_client, so every gateway and worker process writes to the same folder and
/metrics adds them up. Gauges that the database knows best are computed at scrape time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ORDERS_RECEIVED = Counter(
    "broker_orders_received_total", "Orders and webhooks received, by source and outcome",
    ["source", "outcome"])
EVENTS_NORMALISED = Counter(
    "broker_events_normalised_total", "Webhook events normalised by workers, by source and outcome",
    ["source", "outcome"])
DELIVERIES = Counter(
    "broker_deliveries_total", "Delivery attempts finished, by connector and outcome",
    ["connector", "outcome"])
RECEIVED_TO_BOOKED = Histogram(
    "broker_received_to_booked_seconds", "Time from receiving an order to booking it",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400))
HTTP_RESPONSES = Counter(
    "broker_http_responses_total", "Gateway responses by status code (alert on the 5xx rate)",
    ["code"])


def _per_name(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


class DatabaseCollector(Collector):
    """Backlog gauges read from the source of truth at scrape time."""

    def __init__(self, db: Any) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from broker.services.reports import backlog

        stats = backlog(self.db)
        oldest = GaugeMetricFamily("broker_oldest_due_delivery_age_seconds",
                                   "Age of the oldest delivery that is due and not booked")
        oldest.add_metric([], stats.oldest_due_age)
        yield oldest
        yield _per_name("broker_deliveries_due", "Deliveries due and waiting for a worker, by "
                        "connector (what an autoscaler of its workers reads)", "connector",
                        stats.due_by_connector)
        yield _per_name("broker_connector_consent_failed", "1 when the refresh of a connector's "
                        "OAuth consent was refused: an admin must connect it again", "connector",
                        stats.consent_failed)
        yield _per_name("broker_source_catchup_failing", "1 when the last catch-up poll of a "
                        "source failed", "source", stats.catchup_failing)
        by_status = GaugeMetricFamily("broker_deliveries", "Deliveries by status",
                                      labels=["status"])
        for status, count in sorted(stats.by_status.items()):
            by_status.add_metric([status], count)
        yield by_status
        yield from beat_gauges(self.db)


def beat_gauges(db: Any) -> Iterator[GaugeMetricFamily]:
    """Which beat acts and when it last swept, for "beat absent" alerts:
    `time() - broker_beat_last_sweep_timestamp_seconds > 3 * sweep interval`."""
    from broker.services import leases

    lease = leases.state(db, leases.SWEEPER)
    last = GaugeMetricFamily("broker_beat_last_sweep_timestamp_seconds",
                             "Unix time of the last sweep done under the sweeper lease (0: never)")
    last.add_metric([], lease.last_act_at.timestamp() if lease and lease.last_act_at else 0.0)
    yield last
    expires = GaugeMetricFamily("broker_beat_lease_expires_in_seconds",
                                "Seconds until the acting beat's lease runs out (negative: no "
                                "beat holds it)")
    expires.add_metric([], lease.expires_in if lease else -1.0)
    yield expires
    holder = GaugeMetricFamily("broker_beat_lease_token",
                               "Fencing token of the sweeper lease (grows at each takeover), "
                               "labelled with the beat holding it", labels=["holder"])
    if lease:
        holder.add_metric([lease.holder], lease.token)
    yield holder


def render(db: Any) -> tuple[bytes, str]:
    """The exposition text: process counters (summed across processes) plus DB gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    gauges = CollectorRegistry()
    gauges.register(DatabaseCollector(db))
    return body + generate_latest(gauges), CONTENT_TYPE_LATEST
