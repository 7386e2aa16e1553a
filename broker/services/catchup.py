"""Catch-up: poll a channel's API for order changes its webhooks may have missed.

WooCommerce never retries a failed webhook and the others give up after hours or days, so a
source can poll on a schedule. Polled versions enter intake as events like webhooks do: keys
name the version, so overlapping polls store each once, and a version seen by webhook and poll
maps to the same canonical order, which the version digest books once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from broker.channels.api import ChannelUnavailable
from broker.channels.base import CatchUpWindow, PayloadError, channel_for, channel_kinds
from broker.db import Database, utcnow
from broker.models import Source
from broker.services.crypto import SecretBox
from broker.services.intake import dump_json, store_event

log = logging.getLogger(__name__)

OVERLAP = timedelta(minutes=5)   # re-read a little: vendor clocks and commit lag
DEFAULT_LOOKBACK = 86400.0


@dataclass
class CatchUpResult:
    source: str
    since: datetime
    polled: int = 0
    stored: int = 0          # new events (the rest were already stored)
    first_event_id: str | None = None
    error: str | None = None


def catch_up(db: Database, box: SecretBox, name: str, *, since: datetime | None = None
             ) -> CatchUpResult:
    """Poll one source now; on success the next poll starts where this one started."""
    with db.begin() as session:
        source = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
        if source is None:
            raise LookupError(f"no source named {name!r}")
        session.expunge(source)
    if source.kind not in channel_kinds():
        raise LookupError(f"source {name!r} ({source.kind}) has no channel API to poll")
    started = utcnow()
    lookback = float(source.settings.get("catchup_lookback") or DEFAULT_LOOKBACK)
    if since is None:
        since = (source.catchup_since - OVERLAP if source.catchup_since
                 else started - timedelta(seconds=lookback))
    result = CatchUpResult(name, since)
    channel = channel_for(source.kind, source.settings)
    try:
        api = channel.api(box.decrypt(source.credentials_encrypted, {}))
        for polled in channel.catch_up(api, CatchUpWindow(since)):
            new, event_id = store_event(db, source.id, polled.event_key[:255], polled.topic,
                                        {"broker-catch-up": started.isoformat()},
                                        dump_json(polled.payload))
            result.polled += 1
            result.stored += new
            if new and result.first_event_id is None:
                result.first_event_id = event_id
    except (ChannelUnavailable, PayloadError, NotImplementedError) as exc:
        result.error = str(exc)
    with db.begin() as session:
        row = session.get(Source, source.id)
        row.catchup_at, row.catchup_error = started, result.error
        if result.error is None:
            row.catchup_since = started
    if result.error:
        log.warning("catch-up of %s failed, polled %d: %s", name, result.polled, result.error)
    else:
        log.info("catch-up of %s: %d polled, %d new", name, result.polled, result.stored)
    return result


def claim_due(db: Database, now: datetime | None = None) -> list[str]:
    """Names of sources whose catch-up is due, each claimed so only one worker polls it."""
    now = now or utcnow()
    claimed = []
    with db.begin() as session:
        rows = session.execute(select(Source.id, Source.name, Source.settings, Source.catchup_at)
                               .where(Source.enabled.is_(True))).all()
    for source_id, name, settings, last in rows:
        interval = float((settings or {}).get("catchup_interval") or 0)
        if interval <= 0 or (last is not None and last + timedelta(seconds=interval) > now):
            continue
        with db.begin() as session:
            won = session.execute(
                update(Source).where(Source.id == source_id,
                                     Source.catchup_at == last if last is not None
                                     else Source.catchup_at.is_(None))
                .values(catchup_at=now).execution_options(synchronize_session=False)).rowcount
        if won:
            claimed.append(name)
    return claimed
