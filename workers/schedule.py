"""Celery beat under the sweeper lease: any number of beats may run, one publishes.

Every beat (`broker beat`, `broker worker --beat`, the one inside `broker up`) checks the lease
every third of its length. The holder publishes the schedule with its fencing token; the
others skip their turns. When the holder dies its lease runs out (half a sweep interval) and
the next standby to check takes it over with the next token and sweeps at once, so sweeps
resume within one sweep interval. The sweep task itself refuses a token that is no longer
current (broker.services.leases), so even a late message from an old holder does nothing.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from typing import Any

from celery.beat import Scheduler

from broker.runtime import process_runtime
from broker.services import leases

log = logging.getLogger(__name__)
# Tasks that take the lease token and act only while it is current (the others, e.g. a
# retention purge, are published by the acting beat alone too, but without a token).
FENCED = frozenset({"broker.sweep"})


class LeasedScheduler(Scheduler):
    """The in-memory schedule of `beat_schedule`, published only while holding the lease.

    In memory on purpose: a schedule file shared by two beats of one installation would be
    contended, and a sweep interval needs no memory across restarts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from workers.celery import settings

        self.settings = settings
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.seconds = leases.lease_seconds(settings.sweep_interval)
        self.check_every = self.seconds / 3
        self.fence: int | None = None
        self.valid_until = 0.0    # monotonic: the hold surely lasts until then
        self.next_check = 0.0

    @property
    def acting(self) -> bool:
        return self.fence is not None and time.monotonic() < self.valid_until

    def keep_lease(self) -> None:
        """Take, renew or lose the lease; on taking it, sweep at once."""
        started = time.monotonic()
        self.next_check = started + self.check_every
        try:
            fence = leases.hold(process_runtime(self.settings).db, leases.SWEEPER, self.holder,
                                self.seconds)
        except Exception as exc:  # the database is away: act no more, try again at the next check
            log.warning("could not reach the database to hold the sweeper lease (%s: %s); "
                        "not publishing sweeps until it answers", type(exc).__name__, exc)
            fence = None
        if fence is None:
            if self.fence is not None:
                log.info("sweeper lease lost: beat %s stands by", self.holder)
            self.fence = None
            return
        self.valid_until = started + self.seconds
        if fence != self.fence:
            log.info("sweeper lease taken (token %d): beat %s publishes the sweeps now",
                     fence, self.holder)
            self.fence = fence
            for entry in list(self.schedule.values()):
                if entry.task in FENCED:  # the last holder may have died just before its turn
                    self.apply_entry(self.reserve(entry), producer=self.producer)
            self._heap = None  # rebuilt from the entries just run

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() >= self.next_check:
            self.keep_lease()
        delay = super().tick(*args, **kwargs)
        return max(0.0, min(delay, self.next_check - time.monotonic()))

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Publish (with the fencing token where the task takes it) while holding the lease;
        skip the turn otherwise."""
        if not self.acting:
            return
        log.debug("publishing %s under sweeper lease token %d (beat %s)", entry.task, self.fence,
                  self.holder)
        kwargs = dict(entry.kwargs or {})
        if entry.task in FENCED:
            kwargs["fence"] = self.fence
        try:
            self.send_task(entry.task, entry.args, kwargs, producer=producer, **entry.options)
        except Exception as exc:  # the queue is away: the next turn tries again
            log.warning("could not publish %s (%s: %s)", entry.task, type(exc).__name__, exc)

    def close(self) -> None:
        """A clean stop hands the lease over at once instead of after it runs out."""
        if self.fence is not None:
            try:
                leases.release(process_runtime(self.settings).db, leases.SWEEPER, self.holder)
                log.info("sweeper lease released by beat %s", self.holder)
            except Exception as exc:
                log.warning("could not release the sweeper lease (%s); it runs out in %.0f s",
                            exc, self.seconds)
            self.fence = None
        super().close()
