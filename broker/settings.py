"""Settings: defaults from config/defaults.toml, then a broker.toml, then BROKER_* variables,
validated once.

A bad value stops the process with a message that names the variable, so an operator
never has to guess which of twenty settings is wrong. Where the data lives never depends on
the folder a command runs in: it is the per-user data folder unless a setting says otherwise
(BROKER_DATA_DIR, or `data_dir` in the broker.toml named by BROKER_CONFIG, found in the
current folder or a parent, or in the user's config folder).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

ENV_PREFIX = "BROKER_"
CONFIG_ENV = "BROKER_CONFIG"   # path of a broker.toml (not a setting itself)
CONFIG_NAME = "broker.toml"
APP_DIR = "fobo-broker"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    queue_url: str
    secret_keys: tuple[str, ...]
    bind: str
    public_url: str
    max_body_bytes: int
    webhook_tolerance: int
    lease_seconds: int
    sweep_interval: float
    max_attempts: int
    retry_base: float
    retry_cap: float
    claim_batch: int
    token_ttl: int
    session_ttl: int
    log_level: str
    log_json: bool | None  # None: JSON unless the log goes to a terminal
    web_workers: int
    web_worker_class: str
    worker_concurrency: int
    stop_grace_seconds: float
    allow_private_networks: bool
    allowed_private_hosts: tuple[str, ...] = ()
    # Retention (broker.services.retention): days each data class is kept; 0 = for ever.
    retention_events_days: int = 0
    retention_versions_days: int = 0
    retention_attempts_days: int = 0
    retention_timeline_days: int = 0
    retention_audit_days: int = 0
    retention_batch: int = 500
    retention_interval: float = 3600.0
    retention_archive_dir: str = ""  # JSON lines of each purged row go here first; "" = none
    trusted_proxies: int = 0  # reverse proxies in front of the gateway whose X-Forwarded-* count
    metrics_token: str = ""  # bearer token /metrics requires (empty: open, for loopback binds)
    access_log: bool = True
    # Where the values came from besides the environment (shown by `broker info`).
    config_file: Path | None = None

    @property
    def embedded(self) -> bool:
        """True when running on the server-less default (SQLite database)."""
        return self.database_url.startswith("sqlite")

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


_NOT_FROM_ENV = ("config_file",)


def _defaults() -> dict[str, object]:
    text = resources.files("config").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def user_dir(kind: str, env: Mapping[str, str] | None = None) -> Path:
    """The per-user folder of this application: kind "data", "config" or "state" (XDG)."""
    env = os.environ if env is None else env
    xdg = {"data": ("XDG_DATA_HOME", ".local/share"), "config": ("XDG_CONFIG_HOME", ".config"),
           "state": ("XDG_STATE_HOME", ".local/state")}[kind]
    base = env.get(xdg[0]) or str(Path(env.get("HOME") or Path.home()) / xdg[1])
    return Path(base).expanduser() / APP_DIR


def find_config(env: Mapping[str, str], cwd: Path | None = None) -> Path | None:
    """The broker.toml in effect: BROKER_CONFIG, else one in the current folder or a parent,
    else the user's (~/.config/fobo-broker/broker.toml); None when there is none."""
    named = env.get(CONFIG_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named!r}: no such file")
        return path.resolve()
    here = (cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    candidate = user_dir("config", env) / CONFIG_NAME
    return candidate if candidate.is_file() else None


def _read_config(path: Path) -> dict[str, object]:
    """The settings of a broker.toml; relative folders are relative to the file, not the shell."""
    try:
        values = tomllib.loads(path.read_text())
    except (OSError, UnicodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not readable as TOML: {exc}") from None
    known = {f.name for f in dataclasses.fields(Settings)} - set(_NOT_FROM_ENV)
    for key in values:
        if key not in known:
            raise ConfigError(f"{path}: {key!r} is not a known setting (see config/defaults.toml)")
    if values.get("data_dir"):
        values["data_dir"] = str((path.parent / str(values["data_dir"])).expanduser())
    return values


class _Days(int):
    """Marker for a retention period in days (0 or empty: keep for ever)."""


def _coerce(name: str, raw: object, kind: type) -> object:
    var = ENV_PREFIX + name.upper()
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            value = str(raw).strip().lower()
            if value in {"1", "true", "yes", "on"}:
                return True
            if value in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if kind is _Days:  # a retention period: 0 or empty keeps for ever
            days = int(str(raw).strip() or 0)
            if days < 0:
                raise ValueError("must be 0 (keep for ever) or a number of days")
            return days
        if kind in (int, float):
            number = kind(raw)
            if number <= 0:
                raise ValueError("must be positive")
            return number
        return str(raw).strip()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{var}={raw!r} is invalid: {exc}") from None


def write_key_file(data_dir: Path) -> Path:
    """The embedded default's generated key, made once (readable by this user only)."""
    from cryptography.fernet import Fernet

    key_file = data_dir / "secret.key"
    if not key_file.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return key_file
        with os.fdopen(fd, "w") as fh:
            fh.write(Fernet.generate_key().decode())
    return key_file


MISSING_KEYS = (
    "BROKER_SECRET_KEYS is required with a database server (BROKER_DATABASE_URL is not the "
    "embedded SQLite): every gateway, worker and beat must use the same keys, or each host "
    "would make its own and fail to open the others' secrets. Make one with `broker keys "
    "generate` and set it on every process")


def _load_secret_keys(raw: str, data_dir: Path, create: bool, embedded: bool) -> tuple[str, ...]:
    """Keys from BROKER_SECRET_KEYS; the embedded default keeps one generated key on disk.

    Without `create`, a missing key file gives no keys (the caller says what to run) instead
    of a new key that could not open the secrets stored so far. With a database server the
    keys must be explicit: a process that would run (`create`) refuses to start without them.
    """
    if not raw and not embedded:
        if create:
            key_file = data_dir / "secret.key"
            hint = (f" (the key this host generated earlier is in {key_file}: put it in BROKER_SECRET_KEYS)"
                    if key_file.exists() else "")
            raise ConfigError(MISSING_KEYS + hint)
        return ()
    if not raw:
        key_file = data_dir / "secret.key"
        if create:
            write_key_file(data_dir)
        elif not key_file.exists():
            return ()
        raw = key_file.read_text().strip()
    from cryptography.fernet import Fernet

    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                f"BROKER_SECRET_KEYS: key #{index + 1} is not a Fernet key "
                "(32 url-safe base64 bytes; make one with `broker keys generate`)"
            ) from None
    return keys


def _check_url(var: str, url: str, schemes: tuple[str, ...]) -> None:
    scheme = urlsplit(url).scheme.split("+")[0]
    if scheme not in schemes:
        raise ConfigError(f"{var}={url.split('@')[-1]!r}: scheme must be one of {', '.join(schemes)}")


def _allowed_hosts(raw: object) -> tuple[str, ...]:
    """BROKER_ALLOWED_PRIVATE_HOSTS, each entry checked (connectors.allowlist says how)."""
    from connectors.allowlist import parse_entries

    text = ",".join(str(v) for v in raw) if isinstance(raw, list | tuple) else str(raw or "")
    try:
        return tuple(str(entry) for entry in parse_entries(text))
    except ValueError as exc:
        raise ConfigError(f"BROKER_ALLOWED_PRIVATE_HOSTS: {exc}") from None


def load_settings(environ: Mapping[str, str] | None = None, *, create_key: bool = True,
                  cwd: Path | None = None, **overrides: object) -> Settings:
    """Build validated settings from defaults, a broker.toml, the environment and overrides.

    `create_key=False` never writes anything (the CLI's read-only commands): without
    BROKER_SECRET_KEYS and a key file, `secret_keys` is empty.
    """
    env = os.environ if environ is None else environ
    names = {f.name for f in dataclasses.fields(Settings)} - set(_NOT_FROM_ENV)
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k != CONFIG_ENV
                     and k[len(ENV_PREFIX):].lower() not in names)
    if unknown:
        raise ConfigError(f"{unknown[0]} is not a known setting (see config/defaults.toml)")
    values = _defaults()
    config_file = find_config(env, cwd)
    if config_file is not None:
        values.update(_read_config(config_file))
    for name in names:
        var = ENV_PREFIX + name.upper()
        if var in env:
            values[name] = env[var]
    values.update(overrides)

    data_dir = Path(str(values.get("data_dir") or user_dir("data", env))).expanduser().resolve()
    kinds = {"max_body_bytes": int, "webhook_tolerance": int, "lease_seconds": int,
             "sweep_interval": float, "max_attempts": int, "retry_base": float,
             "retry_cap": float, "claim_batch": int, "token_ttl": int, "session_ttl": int,
             "web_workers": int, "worker_concurrency": int, "stop_grace_seconds": float,
             "allow_private_networks": bool, "access_log": bool,
             "retention_batch": int, "retention_interval": float,
             **{f"retention_{c}_days": _Days
                for c in ("events", "versions", "attempts", "timeline", "audit")}}
    clean: dict[str, object] = {"data_dir": data_dir, "config_file": config_file,
                                "allowed_private_hosts": _allowed_hosts(values.get("allowed_private_hosts")),
                                "log_json": _log_json(values.get("log_json", "auto")),
                                "trusted_proxies": _hop_count(values.get("trusted_proxies", 0))}
    for field in dataclasses.fields(Settings):
        if field.name in ("data_dir", "secret_keys", "config_file", "allowed_private_hosts", "log_json",
                          "trusted_proxies"):
            continue
        raw = values.get(field.name, "")
        value = _coerce(field.name, raw, kinds.get(field.name, str))
        if isinstance(value, str):
            value = value.replace("{data_dir}", str(data_dir))
        clean[field.name] = value

    _check_url("BROKER_DATABASE_URL", str(clean["database_url"]),
               ("sqlite", "postgresql", "mysql", "mariadb"))
    _check_url("BROKER_QUEUE_URL", str(clean["queue_url"]),
               ("sqla", "redis", "rediss", "amqp", "amqps", "pyamqp", "memory"))
    host, sep, port = str(clean["bind"]).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"BROKER_BIND={clean['bind']!r}: expected host:port, e.g. 127.0.0.1:8080")
    if not clean["public_url"]:
        clean["public_url"] = f"http://{clean['bind']}"
    public = urlsplit(str(clean["public_url"]))
    if public.scheme not in ("http", "https") or not public.netloc:
        raise ConfigError(f"BROKER_PUBLIC_URL={clean['public_url']!r}: expected an http(s) URL")
    clean["public_url"] = str(clean["public_url"]).rstrip("/")
    if str(clean["log_level"]).upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"BROKER_LOG_LEVEL={clean['log_level']!r}: use DEBUG, INFO, WARNING or ERROR")
    clean["log_level"] = str(clean["log_level"]).upper()
    if int(str(clean["token_ttl"])) > 900:  # a bearer JWT can be revoked only via its jti: keep it short
        raise ConfigError(f"BROKER_TOKEN_TTL={clean['token_ttl']!r}: at most 900 seconds")
    if clean["web_worker_class"] not in {"gevent", "sync", "gthread"}:
        raise ConfigError(f"BROKER_WEB_WORKER_CLASS={clean['web_worker_class']!r}: "
                          "use gevent, sync or gthread")
    token = str(clean["metrics_token"])
    if token and (len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token):
        raise ConfigError("BROKER_METRICS_TOKEN: use at least 16 printable ASCII characters without "
                          "spaces, e.g. the output of `openssl rand -hex 32`")
    clean["secret_keys"] = _load_secret_keys(str(values.get("secret_keys") or ""), data_dir, create_key,
                                             str(clean["database_url"]).startswith("sqlite"))
    return Settings(**clean)  # type: ignore[arg-type]


def _log_json(raw: object) -> bool | None:
    """true, false, or auto (None): JSON unless the log is read on a terminal."""
    if raw is None or str(raw).strip().lower() in ("", "auto"):
        return None
    return bool(_coerce("log_json", raw, bool))


def _hop_count(raw: object) -> int:
    """BROKER_TRUSTED_PROXIES: how many proxies in front of the gateway append X-Forwarded-For."""
    try:
        hops = int(str(raw).strip() or 0)
    except ValueError:
        hops = -1
    if not 0 <= hops <= 10:
        raise ConfigError(f"BROKER_TRUSTED_PROXIES={raw!r}: give the number of reverse proxies in "
                          "front of the gateway, 0 (none: X-Forwarded-* ignored) to 10")
    return hops
