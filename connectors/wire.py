"""What every HTTP connector needs on the wire: exact JSON, one pool shape, Retry-After."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import urllib3

from connectors.ssrf import GuardedPoolManager


def exact_json(value: Any) -> str:
    """JSON text where a Decimal keeps its exact digits as a number (never through a float)."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{exact_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(exact_json(v) for v in value) + "]"
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    return json.dumps(value, ensure_ascii=False)


def pool(*, connect_timeout: float, timeout: float, verify_tls: bool) -> urllib3.PoolManager:
    """A small pool without urllib3's own retries: the broker decides when to retry.

    Guarded (connectors/ssrf.py): each connection goes to a checked public address.
    """
    return GuardedPoolManager(
        num_pools=2, maxsize=4, retries=False,
        timeout=urllib3.Timeout(connect=connect_timeout, read=timeout),
        cert_reqs="CERT_REQUIRED" if verify_tls else "CERT_NONE")


def retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def network_reason(exc: BaseException) -> str:
    """The root cause of a urllib3 failure in a few words an operator can act on."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "no answer in time (it may still have been saved; the next attempt looks it up)"
    while (inner := exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)) \
            and isinstance(inner, BaseException) and inner is not exc:
        exc = inner
    return f"{type(exc).__name__}: {exc}"[:300]
