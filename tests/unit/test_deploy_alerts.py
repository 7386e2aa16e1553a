"""The Prometheus alert rules in deploy/prometheus: promtool checks them and runs their unit tests
(alerts.test.yaml: each alert fires when it should, once for two gateways, and not before), and
every rule uses metrics the broker exports and has a runbook section in docs/OPERATIONS.md."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (.ci/run installs it from Debian's prometheus)"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60,
                          cwd=RULES.parent)


def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0 and "SUCCESS: 7 rules found" in checked.stdout, \
        checked.stdout + checked.stderr
    tested = _promtool("test", "rules", "alerts.test.yaml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_rules_use_exported_metrics_and_have_runbooks() -> None:
    rules = [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    assert {r["alert"] for r in rules} == {
        "BrokerDeadLettersRising", "BrokerParkedGrowing", "BrokerOldestDueDeliveryOld",
        "BrokerConsentRefreshFailed", "BrokerCatchUpFailing", "BrokerBeatAbsent", "BrokerGateway5xx"}
    exported = set(re.findall(r'"(broker_[a-z_]+)"', (ROOT / "broker" / "metrics.py").read_text()))
    headings = {re.sub(r"[^a-z0-9-]", "", line.lstrip("#").strip().lower().replace(" ", "-"))
                for line in (ROOT / "docs" / "OPERATIONS.md").read_text().splitlines()
                if line.startswith("#")}
    for rule in rules:
        names = set(re.findall(r"\b(broker_[a-z_]+)", rule["expr"]))
        assert names and names <= exported, (rule["alert"], names - exported)
        assert rule["labels"]["severity"] in ("warning", "critical")
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"]
        page, anchor = annotations["runbook_url"].split("#")
        assert page == "docs/OPERATIONS.md" and anchor == rule["alert"].lower()
        assert anchor in headings, f"docs/OPERATIONS.md has no section {rule['alert']}"
