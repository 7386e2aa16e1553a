"""The `broker` command run as an admin runs it: from any folder, on the installation its
settings name (here the per-user data folder under a scratch HOME), never creating one by
accident, with one-line answers instead of tracebacks, and a command (with --json) for every
operation of the admin API.

Every command runs in a folder other than the data's; orders are made through the real
intake and delivered in-process by the real delivery service into the fake REST back office.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fakes.sink import Sink
from harness import order
from sqlalchemy import select, update

from broker import cli_common
from broker.cli import broker_group
from broker.models import Connector, Delivery, DeliveryStatus, Source
from broker.runtime import Runtime
from broker.services import delivery
from broker.services.intake import normalise_event, store_event
from broker.settings import load_settings


class Admin:
    """A shell: HOME, the current folder and the environment of one admin's machine."""

    def __init__(self, home: Path, cwd: Path, env: dict[str, str]) -> None:
        self.home, self.cwd, self.env = home, cwd, env

    def run(self, *args: str) -> Result:
        cli_common.forget()
        previous = Path.cwd()
        saved = {k: v for k, v in os.environ.items() if k.startswith("BROKER_")}
        for key in saved:
            del os.environ[key]
        os.chdir(self.cwd)
        try:
            return CliRunner().invoke(broker_group, list(args), env=self.env, catch_exceptions=False)
        finally:
            os.chdir(previous)
            os.environ.update(saved)
            cli_common.forget()

    def ok(self, *args: str) -> Any:
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return json.loads(result.output) if "--json" in args else result.output

    def refused(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code != 0, result.output
        assert "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output  # one line that says what to do
        return lines[0]

    def runtime(self) -> Runtime:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.env.items():
                patch.setenv(key, value)
            return Runtime(load_settings(self.env, create_key=False))


@pytest.fixture
def admin(tmp_path: Path) -> Admin:
    home, elsewhere = tmp_path / "home", tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / ".local/share"),
           "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".local/state"),
           "BROKER_ALLOWED_PRIVATE_HOSTS": "http://127.0.0.1", "BROKER_LOG_JSON": "false"}
    return Admin(home, elsewhere, env)


def created_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_help_and_a_missing_installation_create_nothing_and_say_what_to_run(admin: Admin) -> None:
    help_text = admin.ok("--help")
    for command in ("up", "orders", "deliveries", "dead-letters", "parked", "connectors"):
        assert f"  {command} " in help_text
    assert "--app" not in help_text and "--env-file" not in help_text  # no Flask options
    line = admin.refused("orders", "list")
    data = admin.home / ".local/share/fobo-broker"
    assert f"no broker database at {data}/broker.db" in line and "broker up" in line
    assert admin.refused("deliveries", "list") == line
    info = admin.ok("info", "--json")
    assert info["data_dir"] == str(data) and info["database_exists"] is False
    assert created_files(admin.cwd) == [] and not admin.home.exists()


def test_an_unmigrated_database_is_one_line_naming_the_command(admin: Admin, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    admin.env["BROKER_DATABASE_URL"] = f"sqlite:///{empty}"
    admin.env["BROKER_SECRET_KEYS"] = "x" * 43 + "="
    line = admin.refused("orders", "list")
    assert "has no broker tables: run `broker db upgrade`" in line
    admin.env["BROKER_BIND"] = "nonsense"
    line = admin.refused("orders", "list")
    assert line.startswith("configuration error: BROKER_BIND")


def test_a_broker_toml_in_a_parent_folder_is_found_and_its_paths_are_its_own(admin: Admin,
                                                                              tmp_path: Path) -> None:
    project = tmp_path / "somewhere"
    (project / "broker.toml").write_text('data_dir = "state"\nbind = "127.0.0.1:8181"\n')
    admin.ok("db", "upgrade")
    info = admin.ok("info", "--json")
    assert info["config_file"] == str(project / "broker.toml")
    assert info["data_dir"] == str(project / "state")
    assert info["addresses"]["console"] == "http://127.0.0.1:8181/console/"
    assert (project / "state" / "broker.db").exists() and not admin.home.exists()


@pytest.fixture
def installed(admin: Admin, sink: Sink) -> Iterator[tuple[Admin, Runtime]]:
    """`broker db upgrade` run in another folder than every later command."""
    first = admin.cwd.parent / "first"
    first.mkdir()
    admin.cwd, later = first, admin.cwd
    assert "is up to date" in admin.ok("db", "upgrade")
    admin.cwd = later
    rt = admin.runtime()
    try:
        yield admin, rt
    finally:
        rt.close()


def webhook(rt: Runtime, source: str, doc: dict[str, Any]) -> str:
    """Store and normalise one signed webhook as the gateway and a worker would; the order id."""
    with rt.db.begin() as session:
        source_id = session.execute(select(Source.id).where(Source.name == source)).scalar_one()
    _, event_id = store_event(rt.db, source_id, "msg_" + doc["external_id"], "order",
                              {"content-type": "application/json"}, json.dumps(doc).encode())
    result = normalise_event(rt.db, event_id, box=rt.box)
    assert result.status == "normalised", result.error
    return result.outcomes[0].order_id


def deliver(rt: Runtime, connector: str) -> None:
    with rt.db.begin() as session:
        connector_id = session.execute(select(Connector.id).where(Connector.name == connector)).scalar_one()
    delivery.run(rt, connector_id, budget_seconds=10)


def test_every_admin_operation_has_a_command_that_works_from_another_folder(
        installed: tuple[Admin, Runtime], sink: Sink) -> None:
    admin, rt = installed
    # setup
    created = admin.ok("sources", "add", "shop", "--kind", "standard-webhooks", "--json")
    assert created["webhook_url"] == "http://127.0.0.1:8080/webhooks/shop"
    assert admin.ok("connectors", "add", "erp", "--kind", "http", "--config",
                    json.dumps({"url": sink.url + "/orders", "timeout": 5}), "--json")["created"]
    assert admin.ok("connectors", "add", "wh", "--kind", "http", "--config",
                    json.dumps({"url": sink.url + "/orders", "timeout": 5}), "--json")["created"]
    route = admin.ok("routes", "add", "--source", "shop", "--connector", "erp", "--json")
    admin.ok("routes", "add", "--source", "shop", "--connector", "wh", "--json")
    assert {(r["source"], r["connector"]) for r in admin.ok("routes", "list", "--json")} == {
        ("shop", "erp"), ("shop", "wh")}

    # a booked order, a dead one, and one waiting for a disabled connector
    booked = webhook(rt, "shop", order("5001"))
    deliver(rt, "erp")
    deliver(rt, "wh")
    sink.script([(422, {"Content-Type": "application/json"}, b'{"error": "unknown SKU SKU-001"}')])
    dead = webhook(rt, "shop", order("5002"))
    deliver(rt, "erp")
    deliver(rt, "wh")
    assert admin.ok("connectors", "disable", "wh", "--json")["changed"] is True
    waiting = webhook(rt, "shop", order("5003"))
    deliver(rt, "erp")

    listed = {o["id"]: o for o in admin.ok("orders", "list", "--json")}
    assert listed[booked]["state"] == "booked"
    assert sorted(r["connector"] for r in listed[booked]["references"]) == ["erp", "wh"]
    assert listed[dead]["state"] == "dead" and "unknown SKU" in listed[dead]["detail"]
    assert listed[waiting]["state"] == "partly booked"
    assert "connector disabled" in listed[waiting]["detail"]
    problems = {p["kind"]: p for p in admin.ok("problems", "--json")}
    assert problems["dead"]["what"] == "erp: 1 dead letter"
    assert problems["disabled"]["what"] == "wh is disabled: 1 delivery waits until it is enabled"
    assert "!! erp: 1 dead letter" in admin.ok("problems")
    assert [o["id"] for o in admin.ok("orders", "list", "--status", "dead", "--json")] == [dead]
    assert [o["id"] for o in admin.ok("orders", "list", "--status", "booked", "--json")] == [booked]
    table = admin.ok("orders", "list")
    assert "booked" in table and "dead" in table and "BO-1" in table
    shown = admin.ok("orders", "show", dead)
    assert shown.startswith("order #5002  dead") and "unknown SKU" in shown

    # dead letters, deliveries, replay, retry
    groups = admin.ok("dead-letters", "list", "--json")
    assert [(g["connector"], g["count"]) for g in groups] == [("erp", 1)]  # wh booked it
    dry = admin.ok("dead-letters", "replay", "--connector", groups[0]["connector"], "--json")
    assert dry == {"matched": 1, "replayed": 0, "dry_run": True}
    dead_rows = admin.ok("deliveries", "list", "--status", "dead", "--json")
    assert len(dead_rows) == 1
    shown = admin.ok("deliveries", "show", dead_rows[0]["id"])
    assert "dead" in shown and "unknown SKU" in shown
    assert "dead" in admin.refused("deliveries", "retry", dead_rows[0]["id"])  # replay it instead
    assert admin.ok("deliveries", "replay", dead_rows[0]["id"], "--json")["replayed"] is True
    deliver(rt, dead_rows[0]["connector"])
    assert admin.ok("orders", "show", dead, "--json")["state"] in ("booked", "partly booked")
    assert admin.ok("dead-letters", "replay", "--yes", "--json")["matched"] == 0

    # enabling the connector sends what waited
    assert admin.ok("connectors", "enable", "wh", "--json")["changed"] is True
    deliver(rt, "wh")
    assert admin.ok("orders", "show", waiting, "--json")["state"] == "booked"
    assert admin.ok("orders", "replay", booked, "--json") == {"id": booked, "replayed": 0}

    # a parked delivery (an OAuth consent nobody gave yet) and what resumes it
    admin.ok("connectors", "add", "ledger", "--kind", "http", "--config", json.dumps({
        "url": sink.url + "/orders", "timeout": 5, "auth": {
            "type": "oauth2_consent", "authorize_url": sink.url + "/authorize",
            "token_url": sink.url + "/oauth/token", "client_id": "c", "client_secret": "s"}}))
    admin.ok("routes", "add", "--source", "shop", "--connector", "ledger")
    parked_order = webhook(rt, "shop", order("5004"))
    deliver(rt, "erp")
    deliver(rt, "wh")
    deliver(rt, "ledger")
    assert admin.ok("orders", "show", parked_order, "--json")["state"] == "parked"
    parked = admin.ok("parked", "list", "--json")
    assert [(p["connector"], p["reason"]) for p in parked] == [("ledger", "consent required")]
    assert "Connect" in parked[0]["resume"]
    assert "consent required" in admin.ok("parked", "list")

    # events, mappings, clients, audit, the rest of the setup operations
    events = admin.ok("events", "list", "--json")
    assert len(events) == 4 and {e["status"] for e in events} == {"normalised"}
    assert json.loads(admin.ok("events", "show", events[0]["id"]))["status"] == "normalised"
    assert admin.ok("events", "reprocess", events[0]["id"], "--json")["status"] == "normalised"
    admin.ok("mappings", "add", "erp", "product", "SKU-001", "P-1", "--json")
    assert admin.ok("mappings", "list", "--json")[0]["value"] == "P-1"
    assert admin.ok("mappings", "gaps", "--json")[0]["reason"] == "consent required"
    admin.ok("mappings", "remove", "erp", "product", "SKU-001", "--json")
    client = admin.ok("clients", "create", "pos", "--json")
    assert client["client_secret"]
    assert admin.ok("clients", "revoke", "pos", "--json")["revoked"] is True
    assert admin.ok("clients", "list", "--json")[0]["revoked"] is True
    admin.ok("sources", "add", "spare", "--kind", "standard-webhooks", "--json")
    assert admin.ok("sources", "disable", "spare", "--json")["changed"] is True
    assert admin.ok("sources", "enable", "spare", "--json")["changed"] is True
    admin.ok("sources", "rotate-secret", "spare", "--json")
    admin.ok("sources", "configure", "spare", "--json")
    assert admin.ok("sources", "remove", "spare", "--json")["removed"] is True
    assert "source 'shop' has orders" in admin.refused("sources", "remove", "shop")
    assert "has deliveries" in admin.refused("connectors", "remove", "erp")
    admin.ok("connectors", "add", "spare", "--kind", "http", "--config",
             json.dumps({"url": sink.url + "/orders"}))
    assert admin.ok("connectors", "remove", "spare", "--json")["removed"] is True
    assert admin.ok("routes", "remove", route["id"], "--json")["removed"] is True
    admin.ok("routes", "remove", "--source", "shop", "--connector", "wh", "--json")
    assert {r["connector"] for r in admin.ok("routes", "list", "--json")} == {"ledger"}
    assert admin.ok("connectors", "check", "erp", "--json")["ok"] is True
    connectors = {c["name"]: c for c in admin.ok("connectors", "list", "--json")}
    assert connectors["ledger"]["parked"] == 1 and connectors["erp"]["dead"] == 0
    actions = {e["action"] for e in admin.ok("audit", "list", "--limit", "200", "--json")}
    assert {"connector.disable", "connector.enable", "delivery.replay", "client.revoke",
            "route.remove", "connector.remove", "source.remove"} <= actions
    assert "user root (admin) created" in admin.ok("users", "create-admin", "root")
    assert admin.ok("users", "list", "--json")[0]["username"] == "root"
    assert admin.ok("issuers", "list", "--json") == []
    assert len(admin.ok("keys", "generate").strip()) == 44
    assert admin.ok("keys", "rotate", "--json")["kid"]

    # nothing was ever written where the commands ran
    assert created_files(admin.cwd) == []


def test_connectors_kinds_lists_each_setting_with_type_default_choices_and_help(admin: Admin) -> None:
    kinds = {k["kind"]: k for k in admin.ok("connectors", "kinds", "--json")}
    fields = {f["path"]: f for f in kinds["http"]["fields"]}
    assert fields["url"]["type"] == "string" and fields["url"]["required"] is True
    assert fields["url"]["label"] == "URL" and fields["url"]["description"]
    assert fields["timeout"]["default"] == 10.0 and fields["timeout"]["type"] == "number"
    assert fields["method"]["choices"] == ["POST", "PUT"]
    auth = {f["path"]: f for f in fields["auth"]["fields"]}
    assert auth["auth.password"]["type"] == "secret"
    assert auth["auth.password"]["shown_when"] == {"type": ["basic"]}
    text = admin.ok("connectors", "kinds", "http")
    assert "auth.password  secret; only when type is basic" in text
    assert "verify_tls  boolean; default true" in text
    assert "no connector kind 'telex'" in admin.refused("connectors", "kinds", "telex")
    assert created_files(admin.cwd) == []


def test_parked_deliveries_waiting_for_a_setting_say_which(installed: tuple[Admin, Runtime],
                                                          sink: Sink) -> None:
    admin, rt = installed
    admin.ok("sources", "add", "shop", "--kind", "standard-webhooks")
    admin.ok("connectors", "add", "erp", "--kind", "http", "--config", json.dumps({"url": sink.url + "/o"}))
    admin.ok("routes", "add", "--source", "shop", "--connector", "erp")
    order_id = webhook(rt, "shop", order("5101"))
    with rt.db.begin() as session:  # as the worker leaves a MissingSetting park
        session.execute(update(Delivery).where(Delivery.order_id == order_id).values(
            status=DeliveryStatus.PARKED, parked_reason="missing setting", parked_kind="setting",
            parked_key="shipping_product", last_error="the order has shipping: set shipping_product"))
    parked = admin.ok("parked", "list", "--json")
    assert parked[0]["key"] == "shipping_product"
    assert parked[0]["resume"].startswith("set shipping_product in the configuration of connector erp")
    assert admin.ok("orders", "list", "--status", "parked", "--json")[0]["id"] == order_id


def test_a_fresh_cli_process_applies_the_allow_list_before_checking_a_url(
        installed: tuple[Admin, Runtime], sink: Sink) -> None:
    """In its own process (as an admin runs it), `connectors add` checks the URL under this
    installation's BROKER_ALLOWED_PRIVATE_HOSTS, not under a guard nobody configured yet."""
    import subprocess
    import sys

    admin, _ = installed
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(admin.env)

    def add(name: str, url: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "broker.cli", "connectors", "add", name, "--kind", "http",
                   "--config", json.dumps({"url": url})]
        return subprocess.run(command, cwd=admin.cwd, env=env, capture_output=True, text=True, timeout=60)

    listed = add("erp", sink.url + "/orders")  # http://127.0.0.1:PORT, listed as http://127.0.0.1
    assert listed.returncode == 0, listed.stderr
    neighbour = add("other", sink.url.replace("127.0.0.1", "127.0.0.2") + "/orders")
    assert neighbour.returncode != 0
    assert "127.0.0.2 is a loopback address" in neighbour.stderr and "Traceback" not in neighbour.stderr
