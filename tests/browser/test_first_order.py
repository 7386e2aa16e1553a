"""The README's first order, exactly as a new admin types it: `broker up` in one terminal, the
README's second block in another (bash, any folder: the shell lines are read from README.md,
only the ports changed so the run cannot clash with another broker), then the console in a real
Chromium: the broker's address leads to the sign-in, the dashboard lists the order, and its
journey says booked with the sink's reference. Screenshots go to $FOBO_SCREENSHOTS.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import STRICT, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(os.environ.get("FOBO_SCREENSHOTS") or Path(__file__).parent / "screenshots")

if not Path(CHROMIUM).exists():
    if STRICT or os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (required in CI)", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def readme_blocks() -> tuple[str, str]:
    """The first-order section's two shell blocks: how to start the broker, the second terminal."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Your first order, end to end"):text.index("## Configuration")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, blocks
    return blocks[0], blocks[1]


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fresh machine: an empty HOME, two free ports instead of the README's 8080 and 9000."""
    home, web, sink = tmp_path / "home", free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_CONFIG_HOME=str(home / ".config"), XDG_STATE_HOME=str(home / ".local/state"),
               PYTHONUNBUFFERED="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               BROKER_SWEEP_INTERVAL="1", BROKER_BIND=f"127.0.0.1:{web}")  # the README's 8080, moved
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield {"env": env, "web": web, "sink": sink, "tmp": tmp_path, "procs": procs}
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):  # a script's background sink ignores SIGINT
                os.killpg(proc.pid, signal.SIGTERM)


def ported(block: str, machine: dict[str, Any]) -> str:
    return block.replace("127.0.0.1:8080", f"127.0.0.1:{machine['web']}").replace(
        "--port 9000", f"--port {machine['sink']}").replace("127.0.0.1:9000", f"127.0.0.1:{machine['sink']}")


@pytest.mark.slow
def test_the_readmes_first_order_books_and_its_journey_shows_in_the_console(machine: dict[str, Any]) -> None:
    start, second = readme_blocks()
    env, tmp = machine["env"], machine["tmp"]
    # terminal 1: `BROKER_ALLOWED_PRIVATE_HOSTS=http://127.0.0.1 broker up`, on the test's port
    command = ported(start, machine).strip()
    assert command.endswith("broker up"), command
    up_log = (tmp / "up.out").open("wb")
    up = subprocess.Popen(["bash", "-c", command],
                          cwd=tmp, env=env, stdout=up_log, stderr=subprocess.STDOUT, start_new_session=True)
    machine["procs"].append(up)
    wait_until(lambda: b"ready." in (tmp / "up.out").read_bytes() or up.poll() is not None, timeout=120,
               message="broker up")
    assert up.poll() is None, (tmp / "up.out").read_text()[-3000:]

    # terminal 2, in another folder: the README's lines; the secret and order id it asks the
    # reader to copy are taken from the output, as the reader would
    script = ported(second, machine)
    script = script.replace("broker sources add shop --kind standard-webhooks",
                            "broker sources add shop --kind standard-webhooks | tee sources-add.out", 1)
    script = script.replace("SECRET=whsec_...",
                            "SECRET=$(grep -o 'whsec_[A-Za-z0-9+/=]*' sources-add.out)", 1)
    script = script.replace("broker sink --port", "broker sink --journal sink.jsonl --port", 1)
    script = script.replace("broker orders list ", "sleep 1; until broker orders list --json | grep -q "
                            '\'"state": "booked"\'; do sleep 1; done; broker orders list ', 1)
    script = script.replace("<ORDER ID>", "$(broker orders list --json | python -c "
                            "'import json,sys; print(json.load(sys.stdin)[0][\"id\"])')")
    terminal = tmp / "terminal-2"
    terminal.mkdir()
    # the terminal's output goes to a file: the background sink keeps writing to it after bash ends
    with (tmp / "terminal-2.out").open("wb") as screen:
        shell = subprocess.Popen(["bash", "-ec", script], cwd=terminal, env=env, stdout=screen,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        machine["procs"].append(shell)  # its background sink is in the same process group
        shell.wait(timeout=240)
    output = (tmp / "terminal-2.out").read_text()
    assert shell.returncode == 0, output
    assert '"status":"accepted"' in output.replace(" ", "")
    assert re.search(r"SO-00001\s+create\s+#1042\s+25.00 USD", output), output  # what the sink printed
    listing = re.search(r"ID\s+NUMBER.*?\n(.*#1042.*)", output)
    assert listing and "booked" in listing.group(1) and "erp SO-00001" in listing.group(1), output
    assert "status, deliveries, timeline" not in output and "order #1042  booked" in output
    password = re.search(r"password \(shown once\): (\S+)", output).group(1)  # type: ignore[union-attr]
    assert list(terminal.iterdir()) == [terminal / "sources-add.out", terminal / "sink.jsonl"]

    base = f"http://127.0.0.1:{machine['web']}"
    with urllib.request.urlopen(base + "/api/docs", timeout=10) as docs:
        assert docs.status == 200
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            violations: list[str] = []
            page.on("console", lambda msg: violations.append(msg.text)
                    if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
            page.goto(base + "/")  # the broker's address leads to the console's sign-in
            assert page.url.startswith(base + "/console/login")
            page.get_by_label("User name").fill("root")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(base + "/console/")
            latest = page.get_by_role("region", name="Latest orders")
            row = latest.get_by_role("row", name=re.compile("#1042"))
            sync_api.expect(row.locator(".badge.tone-ok")).to_have_text("booked")
            sync_api.expect(row).to_contain_text("SO-00001")
            sync_api.expect(page.locator(".all-clear")).to_be_visible()
            page.screenshot(path=str(SHOTS / "first-order-1-dashboard.png"), full_page=True)
            row.get_by_role("link", name="#1042").click()
            sync_api.expect(page.get_by_role("heading", level=1)).to_have_text("Order #1042")
            sync_api.expect(page.locator("article.delivery code.reference")).to_have_text("SO-00001")
            sync_api.expect(page.locator("ol.timeline")).to_contain_text("booked in erp as SO-00001")
            page.screenshot(path=str(SHOTS / "first-order-2-journey.png"), full_page=True)
            assert violations == []
        finally:
            browser.close()
    data = json.loads(subprocess.run(["broker", "info", "--json"], env=env, cwd=terminal, check=True,
                                     capture_output=True).stdout)
    assert data["data_dir"] == str(Path(env["XDG_DATA_HOME"]) / "fobo-broker")
