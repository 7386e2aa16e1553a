"""The dashboard: what needs a person now (broker.services.problems, each with a link to act),
the latest orders with their status, order-to-cash KPIs (orders by channel, booked and
touchless rates, the received-to-booked latency with a chart over the days), dead letters by
reason, parked orders, and the health of each connector and source.

The chart is SVG drawn here and inlined in the page: no script, no inline style (the CSP
forbids both), presentation attributes and console.css classes only, and a table of the same
figures for screen readers. The figures are cached per process for a few seconds
(CONSOLE_DASHBOARD_TTL, default 30 s) so a dashboard left open on many screens costs the
database one computation per interval; the problems and the latest orders are read on every
view (indexed, a few rows), so a back office that just went down shows at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import and_, case, func, select

from broker.console.common import runtime
from broker.console.sources import source_health
from broker.db import utcnow
from broker.models import Connector, Delivery, DeliveryStatus, Source
from broker.services.dead_letters import dead_letter_groups
from broker.services.kpis import DayLatency, Kpis, order_kpis
from broker.services.links import mapping_gaps

TTL = 30.0
SHOWN = 5        # dead-letter reasons and parked groups on the dashboard (the pages list them all)
HEALTH_ROWS = 50  # connectors and sources on the dashboard
OPEN = (DeliveryStatus.PENDING, DeliveryStatus.LEASED, DeliveryStatus.PARKED, DeliveryStatus.DEAD)

_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


# --- the latency chart -------------------------------------------------------------------------

@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    bottom: int  # y of the x axis
    right: int
    ticks: list[tuple[float, float]]            # (y, seconds) of the horizontal grid lines
    labels: list[tuple[float, str]]             # (x, day) under the axis
    series: list[tuple[str, str, list[str], list[tuple[float, float, str]]]]
    # (css class, legend, polyline point lists, markers (x, y, title))
    empty: bool


def _nice(value: float) -> float:
    """A round axis maximum at or above `value` (1, 2 or 5 times a power of ten, in seconds)."""
    if value <= 0:
        return 1.0
    scale = 10 ** int(f"{value:e}".split("e")[1])
    for step in (1, 2, 5, 10):
        if value <= step * scale:
            return float(step * scale)
    return float(10 * scale)


def latency_chart(days: list[DayLatency], width: int = 640, height: int = 220) -> Chart:
    # room on the right for the last day's label (text-anchor middle) and the p95 ring
    left, right, top, bottom = 64, width - 32, 16, height - 32
    peak = max((d.p95 or 0 for d in days), default=0)
    ymax = _nice(peak)
    step = (right - left) / max(1, len(days) - 1)

    def x(i: int) -> float:
        if len(days) == 1:  # one day: in the middle, not a dot on the axis
            return round((left + right) / 2, 1)
        return round(left + i * step, 1)

    def y(seconds: float) -> float:
        return round(bottom - (bottom - top) * seconds / ymax, 1)

    series = []
    for css, legend, attr in (("p95", "p95", "p95"), ("p50", "p50 (median)", "p50")):
        lines: list[str] = []
        current: list[str] = []
        markers = []
        for i, day in enumerate(days):
            value = getattr(day, attr)
            if value is None:  # no order booked that day: break the line
                if current:
                    lines.append(" ".join(current))
                current = []
                continue
            current.append(f"{x(i)},{y(value)}")
            markers.append((x(i), y(value), f"{day.day}: {legend} {_seconds(value)}, {day.booked} booked"))
        if current:
            lines.append(" ".join(current))
        series.append((css, legend, lines, markers))
    return Chart(width, height, left, top, bottom, right,
                 ticks=[(y(ymax * f), ymax * f) for f in (0, 0.5, 1)],
                 labels=[(x(i), d.day[5:]) for i, d in enumerate(days)], series=series,
                 empty=not any(d.booked for d in days))


def _seconds(value: float) -> str:
    from broker.console.common import duration

    return duration(value)


# --- health ------------------------------------------------------------------------------------

def connector_health(session: Any) -> dict[str, dict[str, Any]]:
    """Unfinished deliveries per connector and status, and how many are due now (indexed: only
    unfinished deliveries are read)."""
    due = case((and_(Delivery.status == DeliveryStatus.PENDING,
                     Delivery.next_attempt_at <= utcnow()), 1), else_=0)
    health: dict[str, dict[str, Any]] = {}
    for name, status, count, due_now in session.execute(
            select(Connector.name, Delivery.status, func.count(), func.sum(due))
            .join(Connector, Connector.id == Delivery.connector_id)
            .where(Delivery.status.in_(OPEN)).group_by(Connector.name, Delivery.status)):
        row = health.setdefault(name, {"pending": 0, "leased": 0, "parked": 0, "dead": 0, "due": 0})
        row[status] = count
        row["due"] += int(due_now or 0)
    return health


RECENT = 10  # orders on the dashboard


def live_context() -> dict[str, Any]:
    """Read on every view: what needs a person, and the latest orders with their status."""
    from broker.services.problems import problems
    from broker.services.queries import list_orders

    rt = runtime()
    with rt.db.begin() as session:
        return {"problems": problems(session, rt.box), "recent": list_orders(session, limit=RECENT)}


def _compute() -> dict[str, Any]:
    rt = runtime()
    with rt.db.begin() as session:
        kpis: Kpis = order_kpis(session, utcnow())
        dead = dead_letter_groups(session)
        gaps = mapping_gaps(session)
        health = connector_health(session)
        sources = [source_health(session, s) for s in session.execute(
            select(Source).order_by(Source.name).limit(HEALTH_ROWS)).scalars()]
    return {"kpis": kpis, "chart": latency_chart(kpis.days),
            "dead_groups": dead[:SHOWN], "dead_total": sum(g["count"] for g in dead),
            "gaps": gaps[:SHOWN], "parked_total": sum(g["deliveries"] for g in gaps),
            "health": health, "sources": sources, "computed_at": utcnow()}


def dashboard_context() -> dict[str, Any]:
    """The dashboard's figures, at most CONSOLE_DASHBOARD_TTL seconds old (per process)."""
    ttl = float(current_app.config.get("CONSOLE_DASHBOARD_TTL", TTL))
    if ttl <= 0:
        return _compute()
    key = str(id(runtime()))
    now = time.monotonic()
    cached = _cache.get(key)
    if cached and cached[0] > now:
        return cached[1]
    with _lock:  # one computation at a time; the others wait for its result
        cached = _cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        context = _compute()
        if len(_cache) > 16:
            _cache.clear()
        _cache[key] = (time.monotonic() + ttl, context)
        return context
