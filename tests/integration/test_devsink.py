"""`broker sink`, the README's demo back office, keeps counting and deduplicating across
restarts: two orders of one walkthrough never both become SO-00001."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from harness import free_port, wait_until


def _post(port: int, key: str, number: str) -> str:
    body = json.dumps({"action": "create", "order": {"external_id": number, "number": f"#{number}",
                                                     "currency": "USD", "totals": {"total": "1.00"}}})
    request = urllib.request.Request(f"http://127.0.0.1:{port}/orders", data=body.encode(),
                                     headers={"Content-Type": "application/json", "Idempotency-Key": key})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["id"]


def _sink(port: int, journal: Path, out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "sink", "--port", str(port),
                             "--journal", str(journal)], stdout=out.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wait_until(lambda: b"sink listening" in out.read_bytes() or proc.poll() is not None, timeout=30,
               message="sink start")
    assert proc.poll() is None, out.read_text()
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)


def test_the_demo_sink_keeps_its_numbering_and_dedupe_across_restarts(tmp_path: Path) -> None:
    port, journal = free_port(), tmp_path / "sink.jsonl"
    first = _sink(port, journal, tmp_path / "one.out")
    try:
        assert _post(port, "key-a", "1042") == "SO-00001"
        assert _post(port, "key-b", "1043") == "SO-00002"
        assert _post(port, "key-a", "1042") == "SO-00001"  # a retry: the same booking
    finally:
        _stop(first)
    second = _sink(port, journal, tmp_path / "two.out")
    try:
        assert "(next SO-00003)" in (tmp_path / "two.out").read_text()
        assert _post(port, "key-c", "1044") == "SO-00003"
        assert _post(port, "key-b", "1043") == "SO-00002"  # retried after the restart: not booked again
    finally:
        _stop(second)
    printed = (tmp_path / "one.out").read_text() + (tmp_path / "two.out").read_text()
    assert [line.split()[0] for line in printed.splitlines() if line.startswith("SO-")] == [
        "SO-00001", "SO-00002", "SO-00003"]
