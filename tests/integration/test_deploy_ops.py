"""What the deployment kit relies on: `broker db check` (the pods' wait for the migrations, the
upgrade procedure's check) and the metrics the alert rules and the autoscaler read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import TEST_KEY, Stack, order
from sqlalchemy import text, update

from broker.cli_common import head_revisions
from broker.models import Connector, ConnectorGrant, Source


def _check(stack: Stack, *args: str) -> tuple[int, str]:
    result = stack.app.test_cli_runner().invoke(args=["broker", "db", "check", *args])
    return result.exit_code, result.output


def _set_revision(stack: Stack, revision: str) -> None:
    with stack.runtime.db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})


def test_db_check_says_whether_the_database_is_at_this_release(stack: Stack) -> None:
    (head,) = head_revisions()  # other branches add migrations: never a literal here
    code, output = _check(stack)
    assert code == 0 and output.strip().endswith(f"is at {head}, this release's newest"), output
    state = json.loads(_check(stack, "--json")[1])
    assert (state["state"], state["revision"], state["heads"]) == ("current", head, [head])

    _set_revision(stack, "0001")
    code, output = _check(stack)
    assert code == 1 and f"is at 0001; this release needs {head}: run `broker db upgrade`" in output

    _set_revision(stack, "9999")  # migrated by a newer release
    code, output = _check(stack)
    assert code == 3 and "is at 9999, which this release does not know" in output
    assert _check(stack, "--allow-newer")[0] == 0  # old pods during a rolling upgrade


def test_db_check_creates_nothing_and_names_an_unreachable_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(BROKER_DATA_DIR=str(tmp_path / "data"), BROKER_SECRET_KEYS=TEST_KEY)
    cmd = [sys.executable, "-m", "broker.cli", "db", "check"]
    missing = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "does not exist yet" in missing.stdout
    assert not (tmp_path / "data").exists()
    env["BROKER_DATABASE_URL"] = "postgresql+psycopg://broker:s3cret@127.0.0.1:1/broker"
    down = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert down.returncode == 4 and "cannot reach the database" in down.stdout
    assert "s3cret" not in down.stdout + down.stderr and "Traceback" not in down.stderr


def _metric(body: str, name: str, **labels: str) -> float | None:
    for line in body.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(part.split("=", 1) for part in line[len(name) + 1:line.find("}")].split(",")
                     if "=" in part) if "{" in line else {}
        if {k: v.strip('"') for k, v in found.items()} == labels:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_for_alerts_and_autoscaling(stack: Stack) -> None:
    @stack.app.route("/test-boom")
    def boom() -> str:
        raise RuntimeError("boom")

    token = stack.token("shopfront")
    stack.http_connector("erp", "http://127.0.0.1:9/orders")
    stack.http_connector("idle", "http://127.0.0.1:9/orders")
    stack.route("shopfront", "erp")
    headers = {"Authorization": f"Bearer {token}"}
    for n in range(2):
        assert stack.client.post("/api/v1/orders", json=order(f"M-{n}"), headers=headers).status_code == 201
    with stack.runtime.db.begin() as session:
        erp = session.query(Connector).filter_by(name="erp").one()
        session.add(ConnectorGrant(connector_id=erp.id, status="refresh_failed", granted_by="test",
                                   last_error="invalid_grant"))
        session.execute(update(Source).where(Source.name == "shopfront").values(catchup_error="401"))
    stack.source("quiet")

    before = stack.client.get("/metrics").get_data(as_text=True)
    assert stack.client.get("/test-boom").status_code == 500
    assert stack.client.get("/no-such-page").status_code == 404
    body = stack.client.get("/metrics").get_data(as_text=True)

    assert _metric(body, "broker_deliveries_due", connector="erp") == 2
    assert _metric(body, "broker_deliveries_due", connector="idle") == 0
    assert _metric(body, "broker_deliveries", status="dead") == 0  # present before the first one
    assert _metric(body, "broker_deliveries", status="pending") == 2
    assert _metric(body, "broker_connector_consent_failed", connector="erp") == 1
    assert _metric(body, "broker_connector_consent_failed", connector="idle") is None  # no consent
    assert _metric(body, "broker_source_catchup_failing", source="shopfront") == 1
    assert _metric(body, "broker_source_catchup_failing", source="quiet") == 0
    for code in ("500", "404"):
        assert (_metric(body, "broker_http_responses_total", code=code) or 0) == \
            (_metric(before, "broker_http_responses_total", code=code) or 0) + 1
