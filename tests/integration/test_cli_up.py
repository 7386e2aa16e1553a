"""`broker up` as a new admin meets it: started from any folder on a fresh machine, it says
where the console, the API docs and the webhooks are, its address leads to the console, and
its log is one format (JSON lines when not on a terminal; readable lines on one), without
Celery's banner, gunicorn's own format or a raw Python warning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import free_port, stop_group, wait_until


def _start(tmp_path: Path, *, readable: bool) -> tuple[subprocess.Popen[bytes], Path, Path, int]:
    port = free_port()
    home, folder = tmp_path / "home", tmp_path / "wherever"
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               BROKER_BIND=f"127.0.0.1:{port}", BROKER_SWEEP_INTERVAL="1",
               BROKER_LOG_JSON="false" if readable else "auto", PYTHONUNBUFFERED="1")
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    proc = subprocess.Popen([sys.executable, "-m", "broker.cli", "up"], cwd=folder, env=env,
                            stdout=out.open("wb"), stderr=err.open("wb"), start_new_session=True)
    return proc, out, err, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_group(proc, signal.SIGINT, timeout=60)  # Ctrl-C, as a user stops `broker up`


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


@pytest.mark.slow
def test_up_prints_where_everything_is_and_logs_one_format(tmp_path: Path) -> None:
    proc, out, err, port = _start(tmp_path, readable=False)
    try:
        wait_until(lambda: b"ready." in err.read_bytes() or proc.poll() is not None, timeout=120,
                   message="worker ready")
        assert proc.poll() is None, err.read_text()[-3000:]
        base = f"http://127.0.0.1:{port}"
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as caught:
            opener.open(base + "/", timeout=10)
        assert caught.value.code == 302 and caught.value.headers["Location"] == "/console/"
        with urllib.request.urlopen(base + "/api/docs", timeout=10) as docs:
            assert docs.status == 200 and "text/html" in docs.headers["Content-Type"]
    finally:
        _stop(proc)
    banner = out.read_text()
    assert f"console    {base}/console/" in banner
    assert "no console user yet: `broker users create-admin NAME`" in banner
    assert f"API docs   {base}/api/docs" in banner and f"webhooks   {base}/webhooks/<source>" in banner
    assert str(tmp_path / "home" / "data" / "fobo-broker") in banner
    assert "celery@" not in banner and "-------------- " not in banner  # no Celery banner
    log = [line for line in err.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in log if line.startswith("{")]
    strays = [line for line in log if not line.startswith("{") and "creating the data folder" not in line]
    # billiard and Celery print their shutdown lines themselves; everything else is JSON
    assert [s for s in strays if "Warm shutdown" not in s and "exited with" not in s] == []
    loggers = {r["logger"] for r in records}
    assert "gunicorn.error" in loggers and "celery.apps.worker" in loggers
    assert not any("superuser privileges" in r["message"] for r in records)
    assert list((tmp_path / "wherever").iterdir()) == []  # nothing made where it was started


@pytest.mark.slow
def test_up_on_a_terminal_logs_readable_lines(tmp_path: Path) -> None:
    proc, _, err, _ = _start(tmp_path, readable=True)
    try:
        wait_until(lambda: b"ready." in err.read_bytes() or proc.poll() is not None, timeout=120,
                   message="worker ready")
    finally:
        _stop(proc)
    lines = [line for line in err.read_text().splitlines() if line.strip()]
    gateway = [line for line in lines if " gateway " in line]
    assert gateway and all(not line.startswith("{") for line in lines)
    assert any("Listening at: http://127.0.0.1:" in line for line in gateway)
    assert any(" worker " in line and "ready." in line for line in lines)
