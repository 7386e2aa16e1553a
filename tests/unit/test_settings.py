"""Settings: defaults, BROKER_* overrides, and errors that name the variable (never a secret)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from broker.settings import ConfigError, load_settings


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"BROKER_DATA_DIR": str(tmp_path), **{f"BROKER_{k}": v for k, v in values.items()}}


def config_error(tmp_path: Path, **values: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(env(tmp_path, **values))
    return str(caught.value)


def test_defaults_load_into_the_embedded_setup(tmp_path):
    settings = load_settings(env(tmp_path))
    assert settings.data_dir == tmp_path.resolve()
    assert settings.embedded
    assert settings.database_url == f"sqlite:///{tmp_path.resolve()}/broker.db"
    assert settings.queue_url == f"sqla+sqlite:///{tmp_path.resolve()}/queue.db"
    assert settings.bind == "127.0.0.1:8080"
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.webhook_tolerance == 300
    assert settings.token_ttl == 900 and settings.log_level == "INFO"
    assert len(settings.secret_keys) == 1


def test_environment_overrides_defaults_with_types(tmp_path):
    settings = load_settings(env(tmp_path, MAX_BODY_BYTES="2048", LOG_JSON="false",
                                 SWEEP_INTERVAL="2.5", LOG_LEVEL="debug",
                                 PUBLIC_URL="https://broker.example.com/"))
    assert settings.max_body_bytes == 2048
    assert settings.log_json is False
    assert settings.sweep_interval == 2.5
    assert settings.log_level == "DEBUG"
    assert settings.public_url == "https://broker.example.com"


def test_database_url_with_unknown_scheme_names_the_variable(tmp_path):
    assert "BROKER_DATABASE_URL" in config_error(tmp_path, DATABASE_URL="ftp://x")


def test_database_url_error_does_not_echo_the_password(tmp_path):
    message = config_error(tmp_path, DATABASE_URL="ftp://admin:hunter2-pw@db.example.com/broker")
    assert "BROKER_DATABASE_URL" in message
    assert "hunter2-pw" not in message


def test_bind_without_a_port_names_the_variable(tmp_path):
    assert "BROKER_BIND" in config_error(tmp_path, BIND="nonsense")


def test_secret_keys_that_are_not_fernet_keys_name_the_variable_and_not_the_value(tmp_path):
    good = Fernet.generate_key().decode()
    message = config_error(tmp_path, SECRET_KEYS=f"{good},notakey")
    assert "BROKER_SECRET_KEYS" in message
    assert "notakey" not in message and good not in message
    assert "#2" in message


def test_negative_lease_seconds_names_the_variable(tmp_path):
    message = config_error(tmp_path, LEASE_SECONDS="-1")
    assert "BROKER_LEASE_SECONDS" in message


def test_non_numeric_value_names_the_variable(tmp_path):
    assert "BROKER_MAX_BODY_BYTES" in config_error(tmp_path, MAX_BODY_BYTES="1MB")


def test_unknown_broker_variable_is_named(tmp_path):
    assert "BROKER_FOO" in config_error(tmp_path, FOO="1")


def test_embedded_default_generates_a_private_secret_key_once_and_reuses_it(tmp_path):
    data_dir = tmp_path / "data"
    first = load_settings({"BROKER_DATA_DIR": str(data_dir)})
    key_file = data_dir / "secret.key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert first.secret_keys == (key_file.read_text().strip(),)
    Fernet(first.secret_keys[0])  # a usable key
    second = load_settings({"BROKER_DATA_DIR": str(data_dir)})
    assert second.secret_keys == first.secret_keys


def test_explicit_secret_keys_write_no_key_file(tmp_path):
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    settings = load_settings(env(tmp_path, SECRET_KEYS=" , ".join(keys)))
    assert settings.secret_keys == tuple(keys)
    assert not (tmp_path / "secret.key").exists()


def test_console_script_exits_non_zero_naming_the_bad_variable(tmp_path):
    script = Path(sys.executable).with_name("broker")
    command = [str(script)] if script.exists() else [shutil.which("broker") or "broker"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    result = subprocess.run([*command, "sources", "list"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60,
                            env={**clean, **env(tmp_path, BIND="nonsense")})
    assert result.returncode != 0
    assert "configuration error: BROKER_BIND" in result.stderr
    assert "Traceback" not in result.stderr


SERVER_DB = "postgresql+psycopg://broker@db.internal/broker"


def test_database_server_without_secret_keys_refuses_to_start(tmp_path):
    """Each host would otherwise generate its own key and fail on the others' secrets."""
    message = config_error(tmp_path, DATABASE_URL=SERVER_DB)
    assert message.startswith("BROKER_SECRET_KEYS is required with a database server")
    assert "broker keys generate" in message and "\n" not in message
    assert not (tmp_path / "secret.key").exists()  # no key generated on the way
    # read-only commands get no keys (and say so when they need one); nothing is written
    assert load_settings(env(tmp_path, DATABASE_URL=SERVER_DB), create_key=False).secret_keys == ()
    assert not (tmp_path / "secret.key").exists()
    # a host that generated a key before this rule is told where it is
    (tmp_path / "secret.key").write_text(Fernet.generate_key().decode())
    assert str(tmp_path / "secret.key") in config_error(tmp_path, DATABASE_URL=SERVER_DB)
    key = Fernet.generate_key().decode()
    assert load_settings(env(tmp_path, DATABASE_URL=SERVER_DB, SECRET_KEYS=key)).secret_keys == (key,)


def test_gateway_and_worker_refuse_a_server_database_without_keys_in_one_line(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    run_env = {**clean, **env(tmp_path, DATABASE_URL=SERVER_DB)}
    commands = {  # started together: each takes a second to import
        "gateway": [sys.executable, "-m", "gunicorn", "--bind", "127.0.0.1:0", "broker.wsgi:app"],
        "worker": [sys.executable, "-m", "celery", "-A", "workers", "worker"],  # beat: same module
    }
    procs = {name: subprocess.Popen(cmd, cwd=repo, env=run_env, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT) for name, cmd in commands.items()}
    for name, proc in procs.items():
        output = proc.communicate(timeout=60)[0]
        assert proc.returncode != 0, (name, output)
        refusals = [line for line in output.splitlines() if line.startswith("configuration error:")]
        assert len(refusals) == 1 and "BROKER_SECRET_KEYS is required" in refusals[0], (name, output)
        assert "Traceback" not in output, (name, output)


def test_trusted_proxies_is_a_small_hop_count(tmp_path):
    assert load_settings(env(tmp_path)).trusted_proxies == 0
    assert load_settings(env(tmp_path, TRUSTED_PROXIES="2")).trusted_proxies == 2
    for bad in ("-1", "11", "yes"):
        assert "BROKER_TRUSTED_PROXIES" in config_error(tmp_path, TRUSTED_PROXIES=bad)


def test_metrics_token_must_be_long_enough_and_is_never_echoed(tmp_path):
    message = config_error(tmp_path, METRICS_TOKEN="short-tok")
    assert "BROKER_METRICS_TOKEN" in message and "short-tok" not in message
    token = "m" * 32
    assert load_settings(env(tmp_path, METRICS_TOKEN=token)).metrics_token == token


def test_production_example_refuses_its_placeholders_and_exposes_nothing_once_filled(tmp_path):
    """The example never lets a host generate a key of its own, and keeps /metrics closed."""
    example = Path(__file__).resolve().parents[2] / "config" / "production.env.example"
    values = dict(line.split("=", 1) for line in example.read_text().splitlines()
                  if line.strip() and not line.startswith("#"))
    values["BROKER_DATA_DIR"] = str(tmp_path)
    with pytest.raises(ConfigError, match="BROKER_SECRET_KEYS"):
        load_settings(values)
    values["BROKER_SECRET_KEYS"] = Fernet.generate_key().decode()
    values["BROKER_METRICS_TOKEN"] = "f" * 64
    settings = load_settings(values)
    assert not settings.embedded and settings.bind.startswith("0.0.0.0")
    assert settings.metrics_token and settings.trusted_proxies == 1 and settings.access_log
    assert not (tmp_path / "secret.key").exists()
