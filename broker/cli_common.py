"""Helpers shared by the command-line modules: settings and the runtime, the database check,
output, failures, the actor.

Only click is imported at module level: `broker --help` and simple commands must start in a
fraction of a second, so everything heavier is imported by the command that needs it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from broker.runtime import Runtime
    from broker.settings import Settings

_state: dict[str, Any] = {}
MIGRATIONS = Path(__file__).parent / "migrations" / "versions"


def _flask_app() -> Any:
    """The Flask app this command runs in (`flask --app broker broker …`, or a test's CLI
    runner), if any; never imports Flask for the plain `broker` command."""
    if "flask" not in sys.modules:
        return None
    from flask import current_app, has_app_context
    from flask.cli import ScriptInfo

    if has_app_context():
        return current_app._get_current_object()  # type: ignore[attr-defined]
    ctx = click.get_current_context(silent=True)
    info = ctx.find_object(ScriptInfo) if ctx else None
    return info.load_app() if info is not None else None


def app_extension(name: str) -> Any:
    """An extension of that Flask app (e.g. its token service, whose key cache it shares)."""
    app = _flask_app()
    return app.extensions.get(name) if app is not None else None


def _flask_runtime() -> Runtime | None:
    app = _flask_app()
    return app.extensions["broker"] if app is not None else None


def settings(*, create_key: bool = False) -> Settings:
    """The settings this command uses (those of the Flask app it runs in, if any). Nothing is
    written unless `create_key` (commands that set an installation up)."""
    embedded = _flask_runtime()
    if embedded is not None:
        return embedded.settings
    key = "settings+key" if create_key else "settings"
    if key not in _state:
        from broker.settings import ConfigError, load_settings

        try:
            _state[key] = load_settings(create_key=create_key)
        except ConfigError as exc:
            click.echo(f"configuration error: {exc}", err=True)
            sys.exit(2)
    return _state[key]


def where(s: Settings) -> str:
    """Where these settings come from, for messages that send the operator somewhere."""
    origin = f"broker.toml at {s.config_file}" if s.config_file else (
        "BROKER_DATA_DIR" if "BROKER_DATA_DIR" in os.environ else "the per-user default")
    return f"data folder {s.data_dir} ({origin})"


def safe_url(url: str) -> str:
    """A database or queue URL without its password."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def sqlite_path(url: str) -> Path | None:
    """The file of an sqlite:/// URL (None for anything else or in-memory)."""
    match = re.match(r"^sqlite(\+\w+)?:///(.+?)(\?.*)?$", url)
    return Path(match.group(2)) if match and match.group(2) != ":memory:" else None


def _migration_graph() -> tuple[set[str], set[str]]:
    """Every revision this release knows and the ones something builds on, read from the
    migration files (cheaper than importing Alembic)."""
    revisions, parents = set(), set()
    for path in MIGRATIONS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = re.search(r"^revision\s*=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
        if found:
            revisions.add(found.group(1))
        if down:
            parents.update(re.findall(r"['\"]([^'\"]+)['\"]", down.group(1)))
    return revisions, parents


def head_revisions() -> set[str]:
    """The newest migration(s) of this release."""
    revisions, parents = _migration_graph()
    return revisions - parents


def known_revisions() -> set[str]:
    """Every migration of this release (a database at another one was migrated by a newer one)."""
    return _migration_graph()[0]


def check_database(rt: Runtime) -> None:
    """One line, not a traceback, when the database is missing, unreachable or not migrated."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    s = rt.settings
    try:
        with rt.db.engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "alembic_version" in message:  # no such table / relation / doesn't exist
            fail(f"the database {safe_url(s.database_url)} has no broker tables: run "
                 "`broker db upgrade` (or `broker up`)")
        fail(f"cannot use the database {safe_url(s.database_url)}: {message}")
    heads = head_revisions()
    if version not in heads:
        fail(f"the database {safe_url(s.database_url)} is at migration {version or 'none'}, this "
             f"broker needs {', '.join(sorted(heads))}: run `broker db upgrade`")


def rt() -> Runtime:
    """The broker runtime for this command: the Flask app's when run inside one, else one
    built from the settings after checking that the database exists and is migrated."""
    embedded = _flask_runtime()
    if embedded is not None:
        return embedded
    if "runtime" not in _state:
        s = settings()
        path = sqlite_path(s.database_url)
        if path is not None and not path.exists():
            fail(f"no broker database at {path} ({where(s)}): start the broker with `broker up`, "
                 "which creates it, or point BROKER_DATA_DIR, BROKER_DATABASE_URL or a broker.toml "
                 "at the existing one (`broker info` shows what is used)")
        if not s.secret_keys and not s.embedded:
            from broker.settings import MISSING_KEYS

            fail(MISSING_KEYS)
        if not s.secret_keys:
            fail(f"no key for the secrets at rest: BROKER_SECRET_KEYS is empty and there is no "
                 f"{s.data_dir / 'secret.key'}; set BROKER_SECRET_KEYS to the gateway's keys")
        from broker.runtime import Runtime

        runtime = Runtime(s)
        check_database(runtime)
        _state["runtime"] = runtime
    return _state["runtime"]


def out(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text if text is not None else json.dumps(data, indent=2, default=str))


def fail(message: str) -> None:
    raise click.ClickException(message)


def setup_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a service; its refusals (unknown names, invalid input, wrong state) become one line."""
    from broker.services.operations import NotReplayable
    from broker.services.sources import SetupError

    try:
        return fn(*args, **kwargs)
    except (SetupError, LookupError, NotReplayable) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))  # not str(): a KeyError quotes itself


def actor() -> str:
    """Who runs this command, for the audit log: cli:<OS user>."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"cli:uid-{os.getuid()}"


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns).rstrip()
              for r in rows]
    return "\n".join(lines)


JSON = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def forget() -> None:
    """Drop the settings and runtime this process cached (tests run many commands in one)."""
    runtime = _state.pop("runtime", None)
    if runtime is not None:
        runtime.close()
    _state.clear()
