"""The embedded queue (broker/embedded_queue.py) when two processes declare the same new queue
at once, as the gateway and a worker do for a connector created while orders flow."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

QUEUES = 150


def _declare_all(url: str, start: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue) -> None:
    from kombu import Connection

    from broker.queue import _embedded_transport

    try:
        with Connection(_embedded_transport(url)) as conn:
            channel = conn.default_channel
            start.wait(30)
            for n in range(QUEUES):
                channel._new_queue(f"connector.race-{n}")
            channel.basic_publish(channel.prepare_message("ok"), "", "connector.race-0")
    except Exception as exc:  # reported to the test, which fails with it
        errors.put(f"{type(exc).__name__}: {exc}")


def _race(tmp_path: Path, *, tables_exist: bool) -> None:
    url = f"sqla+sqlite:///{tmp_path}/queue.db"
    if tables_exist:
        from kombu import Connection

        from broker.queue import _embedded_transport

        with Connection(_embedded_transport(url)) as conn:
            conn.default_channel._new_queue("broker")
    context = multiprocessing.get_context("spawn")
    start, errors = context.Barrier(2), context.Queue()
    workers = [context.Process(target=_declare_all, args=(url, start, errors)) for _ in range(2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []
    assert [p.exitcode for p in workers] == [0, 0]
    import sqlite3

    with sqlite3.connect(tmp_path / "queue.db") as db:
        assert db.execute("SELECT count(*) FROM kombu_queue").fetchone()[0] == QUEUES + tables_exist
        assert db.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 2


def test_two_processes_declaring_the_same_new_queues_both_go_on(tmp_path: Path) -> None:
    _race(tmp_path, tables_exist=True)


def test_two_processes_opening_a_new_queue_database_both_go_on(tmp_path: Path) -> None:
    _race(tmp_path, tables_exist=False)
