"""No single point of failure for the sweeper: any number of beats, one acts, with fencing.

The lease is a row in the broker's own database, so it is proven on each database (SQLite,
PostgreSQL, MariaDB); the kill test runs real beats, kills the acting one with SIGKILL and
counts who publishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from harness import Stack, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from broker import metrics
from broker.models import Lease
from broker.services import leases, sweeper
from broker.services.delivery import db_now

PUBLISHED = "publishing broker.sweep under sweeper lease token"


def _expire(stack: Stack, name: str) -> None:
    """What the death of the holder looks like to the others: it stops renewing."""
    with stack.runtime.db.begin() as session:
        session.execute(update(Lease).where(Lease.name == name).values(
            expires_at=db_now(session) - timedelta(seconds=1)))


def test_one_holder_at_a_time_and_stale_tokens_are_refused(db_stack):
    stack, db = db_stack, db_stack.runtime.db
    gate, won = threading.Barrier(4), []

    def contend(holder: str) -> None:  # beats starting together on a new installation
        gate.wait()
        won.append(leases.hold(db, "contended", holder, 30))

    threads = [threading.Thread(target=contend, args=(f"beat-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won, key=str) == [1, None, None, None]

    first = leases.hold(db, leases.SWEEPER, "beat-a", 30)
    assert first is not None
    assert leases.hold(db, leases.SWEEPER, "beat-b", 30) is None  # a standby waits
    assert leases.hold(db, leases.SWEEPER, "beat-a", 30) == first  # a renewal keeps the token

    found = sweeper.sweep(db, grace_seconds=0, fence=first)  # the holder's sweep acts
    assert found.connectors == [] and leases.state(db, leases.SWEEPER).acts == 1

    _expire(stack, leases.SWEEPER)  # beat-a died
    second = leases.hold(db, leases.SWEEPER, "beat-b", 30)
    assert second == first + 1
    assert leases.hold(db, leases.SWEEPER, "beat-a", 30) is None  # back from a pause: too late
    before = leases.state(db, leases.SWEEPER)
    for stale in (first, None):
        try:
            sweeper.sweep(db, grace_seconds=0, fence=stale)
        except leases.Fenced as exc:
            assert "stale" in str(exc) or "no sweeper lease token" in str(exc)
        else:
            raise AssertionError(f"a sweep under token {stale} acted beside token {second}")
    after = leases.state(db, leases.SWEEPER)
    assert (after.acts, after.last_act_at, after.holder) == (before.acts, before.last_act_at,
                                                             "beat-b")
    assert not leases.current(db, leases.SWEEPER, first)

    sweeper.sweep(db, grace_seconds=0, fence=second)
    gauges = {(sample.name, tuple(sample.labels.items())): sample.value
              for family in text_string_to_metric_families(metrics.render(db)[0].decode())
              for sample in family.samples}
    assert gauges[("broker_beat_lease_token", (("holder", "beat-b"),))] == second
    assert (gauges[("broker_beat_last_sweep_timestamp_seconds", ())]
            == leases.state(db, leases.SWEEPER).last_act_at.timestamp())

    leases.release(db, leases.SWEEPER, "beat-b")  # a clean stop hands over at once
    assert leases.hold(db, leases.SWEEPER, "beat-a", 30) == second + 1


def _beat(stack: Stack, index: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = stack.tmp / f"beat-{index}.log"
    env = {**os.environ, **stack.env, "BROKER_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "beat"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def _published(log: Path) -> list[int]:
    """Tokens of the sweeps a beat published, from its JSON log lines."""
    tokens = []
    for line in log.read_text(errors="replace").splitlines():
        if PUBLISHED in line:
            tokens.append(int(json.loads(line)["message"].split(PUBLISHED)[1].split()[0]))
    return tokens


def test_two_beats_one_publishes_and_the_other_takes_over_after_kill_9(tmp_path):
    interval = 4.0  # lease 2 s, checked every 0.7 s: a takeover within 2.7 s of a death
    stack = Stack(tmp_path, "postgresql", "redis", sweep_interval=interval)
    beats = []
    try:
        beats = [_beat(stack, 0), _beat(stack, 1)]  # they start while the worker does
        stack.start_worker(beat=False, concurrency=1)
        db = stack.runtime.db
        held = wait_until(lambda: (s := leases.state(db, leases.SWEEPER)) and s.acts >= 2 and s,
                          timeout=60, message="two sweeps under the lease")
        pid = int(held.holder.split(":")[1])
        (leader, leader_log), (standby, standby_log) = sorted(
            beats, key=lambda beat: beat[0].pid != pid)
        assert leader.pid == pid
        assert len(_published(leader_log)) >= 2 and set(_published(leader_log)) == {held.token}
        assert _published(standby_log) == []  # standing by: not one sweep published

        os.kill(leader.pid, signal.SIGKILL)
        killed = time.monotonic()
        leader.wait(timeout=10)
        with db.begin() as session:
            killed_at = db_now(session)
        died = leases.state(db, leases.SWEEPER)
        taken = wait_until(lambda: (s := leases.state(db, leases.SWEEPER)) and s.token > held.token
                           and s.acts > died.acts and s, timeout=60, message="the takeover")
        took = time.monotonic() - killed
        assert int(taken.holder.split(":")[1]) == standby.pid and taken.token == held.token + 1
        with db.begin() as session:
            acquired = session.get(Lease, leases.SWEEPER).acquired_at
        assert (acquired - killed_at).total_seconds() <= interval, "not within one sweep interval"
        print(f"kill -9 of the acting beat -> first sweep by the other: {took:.1f} s "
              f"(lease taken {(acquired - killed_at).total_seconds():.1f} s after the kill)")
        assert set(_published(standby_log)) == {taken.token}
        assert set(_published(leader_log)) == {held.token}  # never two tokens from one beat

        # A sweep published under the dead beat's token (a late message) does nothing.
        stack.runtime.publisher.celery.send_task("broker.sweep", kwargs={"fence": held.token},
                                                 queue="broker")
        wait_until(lambda: f"lease token {held.token} is stale" in stack.worker_logs(),
                   timeout=30, message="the stale sweep refused")
    finally:
        for proc, _ in beats:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        stack.close()
