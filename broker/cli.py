"""The `broker` command line: run, migrate, set up, operate.

Every command finds the installation the same way from any folder (broker.settings: an
explicit setting, a discovered broker.toml, or the per-user data folder), never creates one
by accident, and answers a missing or unmigrated database with one line that says what to run.
Only click is imported up front; each command imports what it needs, so `broker --help` and
read commands start in a fraction of a second. List, show and create commands take --json.

The same commands run inside the Flask CLI too (`flask --app broker broker …`, and the tests'
CLI runner), on that app's runtime.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from broker.cli_common import JSON, out, rt, settings

if TYPE_CHECKING:
    from broker.settings import Settings


class _Group(click.Group):
    """Commands listed in the order they are added (the order of the help text below)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group("broker", cls=_Group, context_settings=CONTEXT)
def broker_group() -> None:
    """FOBO Broker: front-office orders booked once in the back office.

    Start with `broker up`, then `broker info` shows where the data is and which addresses
    serve the console, the API and the webhooks.
    """


# --- running ---------------------------------------------------------------------------

def _metrics_dir(s: Settings, clean: bool) -> str:
    path = s.data_dir / "metrics"
    if clean and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def upgrade_database(s: Settings) -> None:
    from alembic import command

    from broker.migrations import alembic_config

    command.upgrade(alembic_config(s.database_url), "head")


def _prepared() -> Settings:
    """Settings for a command that sets the installation up: the data folder and the embedded
    default's key are made if missing (and said so)."""
    s = settings()
    if not s.data_dir.exists():
        click.echo(f"creating the data folder {s.data_dir}", err=True)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return settings(create_key=True)


def _gunicorn_cmd(s: Settings, workers: int, worker_class: str) -> list[str]:
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:broker.gunicorn_conf",
           "--bind", s.bind, "--workers", str(workers), "--worker-class", worker_class]
    if worker_class == "gthread":
        cmd += ["--threads", "8"]
    return [*cmd, "broker.wsgi:app"]


def _celery_cmd(s: Settings, concurrency: int, beat: bool, queues: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "celery", "-A", "workers", "--quiet", "worker", "--concurrency",
           str(concurrency), "--loglevel", s.log_level, "--without-gossip",
           "--without-mingle", "--hostname", f"worker-{os.getpid()}@%h"]
    if beat:
        cmd += ["--beat"]
    if queues:
        cmd += ["--queues", queues]
    return cmd


def _child_env(s: Settings, **extra: str) -> dict[str, str]:
    """The environment of the gateway and worker processes. Celery warns about root on stderr
    before any logging exists; the broker says it once, in its own log format, instead."""
    import logging

    from broker.logging import setup_logging

    setup_logging(s.log_level, s.log_json)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        logging.getLogger("broker.cli").warning(
            "running as root: run the broker under a user of its own in production")
    warnings = [w for w in (os.environ.get("PYTHONWARNINGS"),
                            "ignore:You're running the worker with superuser privileges") if w]
    return {**os.environ, "PYTHONWARNINGS": ",".join(warnings), **extra}


def addresses(s: Settings) -> dict[str, str]:
    """Where people and channels reach this broker."""
    base = s.public_url
    return {"console": f"{base}/console/", "api_docs": f"{base}/api/docs",
            "webhooks": f"{base}/webhooks/<source>", "api": f"{base}/api/v1", "metrics": f"{base}/metrics"}


def _user_hint(s: Settings) -> str:
    from sqlalchemy import func, select

    from broker.db import Database
    from broker.models import User

    db = Database(s.database_url)
    try:
        with db.begin() as session:
            users = session.execute(select(func.count()).select_from(User)).scalar()
    finally:
        db.dispose()
    return "" if users else "   (no console user yet: `broker users create-admin NAME`)"


@broker_group.command("up", short_help="Run the broker here: gateway, worker, sweeper.")
def up() -> None:
    """Embedded mode: migrate, then run gateway, worker and sweeper until Ctrl-C."""
    s = _prepared()
    upgrade_database(s)
    env = _child_env(s, PROMETHEUS_MULTIPROC_DIR=_metrics_dir(s, clean=True))
    worker_class = "gthread" if s.embedded else s.web_worker_class
    web_workers = 1 if s.embedded else s.web_workers
    where = addresses(s)
    click.echo(f"FOBO Broker is up\n"
               f"  console    {where['console']}{_user_hint(s)}\n"
               f"  API docs   {where['api_docs']}\n"
               f"  webhooks   {where['webhooks']}\n"
               f"  data       {s.data_dir}" + (f" (from {s.config_file})" if s.config_file else "") + "\n"
               f"  database   {_safe(s.database_url)}\n"
               "Ctrl-C stops it.")
    procs = [
        subprocess.Popen(_gunicorn_cmd(s, web_workers, worker_class), env=env),
        subprocess.Popen(_celery_cmd(s, 1 if s.embedded else s.worker_concurrency, True, None), env=env),
    ]
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(p.poll() is None for p in procs):
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:  # the worker stops within its grace period (workers/stopping.py)
            p.wait(timeout=s.stop_grace_seconds + 10)
        except subprocess.TimeoutExpired:
            p.kill()
    click.echo("stopped")
    if not stopping:
        sys.exit(1)


def _safe(url: str) -> str:
    from broker.cli_common import safe_url

    return safe_url(url)


@broker_group.command("serve")
@click.option("--workers", type=int, default=None, help="Gateway processes.")
@click.option("--worker-class", type=click.Choice(["gevent", "sync", "gthread"]), default=None)
def serve(workers: int | None, worker_class: str | None) -> None:
    """Scaled mode: the gateway under gunicorn."""
    s = _prepared()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir(s, clean=True)
    cmd = _gunicorn_cmd(s, workers or s.web_workers, worker_class or s.web_worker_class)
    os.execv(cmd[0], cmd)


@broker_group.command("worker", short_help="Scaled mode: a Celery worker.")
@click.option("--concurrency", type=int, default=None, help="Worker processes.")
@click.option("--beat/--no-beat", default=False, help="Also run the sweeper schedule.")
@click.option("--queues", default=None, help="Only these queues, e.g. connector.erp")
def worker(concurrency: int | None, beat: bool, queues: str | None) -> None:
    """Scaled mode: a Celery worker (same as `celery -A workers worker`)."""
    s = _prepared()
    env = _child_env(s, PROMETHEUS_MULTIPROC_DIR=os.environ.get("PROMETHEUS_MULTIPROC_DIR")
                     or _metrics_dir(s, clean=False))
    cmd = _celery_cmd(s, concurrency or s.worker_concurrency, beat, queues)
    os.execve(cmd[0], cmd, env)


@broker_group.command("beat")
def beat() -> None:
    """Scaled mode: the sweeper schedule alone. Run one per machine if you like: the one
    holding the sweeper lease publishes, the others take over when it stops."""
    s = _prepared()
    cmd = [sys.executable, "-m", "celery", "-A", "workers", "--quiet", "beat",
           "--loglevel", s.log_level]
    os.execv(cmd[0], cmd)


@broker_group.command("sink", short_help="A demo back office on loopback.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
@click.option("--journal", type=click.Path(dir_okay=False), default=None,
              help="File of the bookings (default: the per-user state folder), so references "
                   "keep counting and retries stay deduplicated across restarts.")
def sink(host: str, port: int, journal: str | None) -> None:
    """A demo back office that prints every order it books (for trials and the README)."""
    from broker.devsink import run_sink

    run_sink(host, port, journal)


@broker_group.command("info", short_help="Where the data is and where the broker answers.")
@JSON
def info(as_json: bool) -> None:
    """Where this broker keeps its data and where it answers (without touching anything)."""
    from broker.cli_common import head_revisions, sqlite_path

    s = settings()
    path = sqlite_path(s.database_url)
    data = {"config_file": str(s.config_file) if s.config_file else None, "data_dir": str(s.data_dir),
            "database": _safe(s.database_url), "queue": _safe(s.queue_url),
            "database_exists": path.exists() if path else None,
            "migration_needed": sorted(head_revisions()), "addresses": addresses(s),
            "allowed_private_hosts": list(s.allowed_private_hosts)}
    lines = [f"config file   {data['config_file'] or '(none: defaults and BROKER_* variables)'}",
             f"data folder   {s.data_dir}",
             f"database      {data['database']}"
             + ("" if path is None else "" if path.exists() else "   (not created yet: `broker up`)"),
             f"queue         {data['queue']}",
             *(f"{name.replace('_', ' '):<13} {url}" for name, url in data["addresses"].items()),
             f"private hosts {', '.join(s.allowed_private_hosts) or '(none allowed)'}"]
    out(data, as_json, "\n".join(lines))


# --- database and keys -----------------------------------------------------------------

@broker_group.group("db", cls=_Group)
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations up to the newest (creates the embedded database)."""
    s = settings()
    if s.embedded:  # a database server's migration needs no secret key (the processes do)
        s = _prepared()
    upgrade_database(s)
    click.echo(f"database {_safe(s.database_url)} is up to date")


DB_CHECK_EXIT = {"current": 0, "behind": 1, "newer": 3, "unreachable": 4}


def database_state(s: Settings) -> dict[str, Any]:
    """Where the database's schema stands against this release's migrations, without creating
    or changing anything: current, behind (run `broker db upgrade`), newer (a later release
    migrated it) or unreachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from broker.cli_common import head_revisions, known_revisions, sqlite_path

    heads = sorted(head_revisions())
    state: dict[str, Any] = {"database": _safe(s.database_url), "revision": None, "heads": heads}
    path = sqlite_path(s.database_url)
    if path is not None and not path.exists():
        return {**state, "state": "behind", "message": "does not exist yet"}
    engine = create_engine(s.database_url)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        message = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if "alembic_version" in message:  # no such table / relation / doesn't exist
            return {**state, "state": "behind", "message": "has no broker tables"}
        return {**state, "state": "unreachable", "message": message}
    finally:
        engine.dispose()
    state["revision"] = revision
    if revision in heads:
        return {**state, "state": "current", "message": f"is at {revision}, this release's newest"}
    if revision in known_revisions() or revision is None:
        return {**state, "state": "behind", "message": f"is at {revision or 'no migration'}"}
    return {**state, "state": "newer", "message": f"is at {revision}, which this release does not "
            "know: a newer release migrated it"}


@db_group.command("check")
@click.option("--allow-newer", is_flag=True,
              help="Succeed when a newer release migrated the database (each migration stays "
                   "compatible with the previous release, e.g. old pods during a rolling upgrade).")
@JSON
def db_check(allow_newer: bool, as_json: bool) -> None:
    """Say whether the database is at this release's newest migration (changes nothing).

    Exit 0 when it is, 1 when `broker db upgrade` is needed, 3 when a newer release migrated
    it (0 with --allow-newer), 4 when the database cannot be reached.
    """
    s = settings()
    state = database_state(s)
    hint = (f"; this release needs {', '.join(state['heads'])}: run `broker db upgrade`"
            if state["state"] == "behind" else "")
    line = (f"cannot reach the database {state['database']}: {state['message']}"
            if state["state"] == "unreachable" else f"database {state['database']} {state['message']}{hint}")
    out(state, as_json, line)
    code = DB_CHECK_EXIT[state["state"]]
    if code == 3 and allow_newer:
        code = 0
    sys.exit(code)


@broker_group.group("keys", cls=_Group)
def keys_group() -> None:
    """Encryption keys for secrets at rest and token signing."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key for BROKER_SECRET_KEYS."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@keys_group.command("rotate")
@JSON
def keys_rotate(as_json: bool) -> None:
    """Rotate the access-token signing key: new tokens use a new key; the old one stays in the
    JWKS until its last token expires. Gateways pick the new key up within seconds."""
    from broker.cli_common import actor, app_extension
    from broker.identity.server import TokenService

    service = app_extension("broker_tokens") or TokenService(rt())
    report = service.keys.rotate(actor=actor())
    out(report, as_json, f"new signing key {report['kid']} ({report['alg']}); "
        + (f"retired {', '.join(report['retired'])}, published until {report['publish_until']}"
           if report["retired"] else "no previous key"))


@keys_group.command("rotate-secrets")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=200, show_default=True)
@JSON
def keys_rotate_secrets(batch_size: int, as_json: bool) -> None:
    """Re-encrypt every stored secret under the first key of BROKER_SECRET_KEYS.

    Put a new key first (old keys after it) everywhere, restart, run this; then the old key
    can be dropped. Safe to run again: values already under the first key are left alone.
    """
    from broker.cli_common import actor
    from broker.services.crypto import rotate_stored_secrets

    report = rotate_stored_secrets(rt().db, rt().box, actor=actor(), batch_size=batch_size)
    out(report, as_json, "\n".join(
        f"{r['column']}: {r['rotated']} rotated, {r['current']} already current"
        + (f", {r['skipped']} changed meanwhile (run again)" if r["skipped"] else "")
        + (f", {r['failed']} FAILED (no configured key opens rows {', '.join(r['failed_ids'])})"
           if r["failed"] else "") for r in report))
    if any(r["failed"] for r in report):
        sys.exit(1)


# --- audit log and declarative configuration -------------------------------------------

@broker_group.group("audit", cls=_Group)
def audit_group() -> None:
    """The audit log of admin changes and operator actions."""


@audit_group.command("list")
@click.option("--action", default=None, help="e.g. source.configure, keys.rotate_secrets")
@click.option("--target", default=None, help="A source/connector/client name, order or event id.")
@click.option("--target-type", default=None)
@click.option("--actor", default=None, help="e.g. cli:alice or an OAuth client id")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S",
                                                      "%Y-%m-%d"]), default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@JSON
def audit_list(action: str | None, target: str | None, target_type: str | None, actor: str | None,
               since: Any, limit: int, as_json: bool) -> None:
    """The latest entries, newest first (--json adds before/after)."""
    from datetime import UTC

    from broker.cli_common import table
    from broker.services.audit import list_entries

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with rt().db.begin() as session:
        rows = list_entries(session, action=action, target=target, target_type=target_type,
                            actor=actor, since=since, limit=limit)
    out(rows, as_json, table(rows, ["at", "actor", "action", "target_type", "target"]))


@broker_group.group("config", cls=_Group)
def config_group() -> None:
    """Declarative configuration."""


@config_group.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@JSON
def config_apply(path: str, as_json: bool) -> None:
    """Create or update sources, connectors and routes from YAML (${ENV} for secrets)."""
    from pathlib import Path

    from broker.cli_common import actor, setup_call
    from broker.services.declarative import apply_file

    runtime = rt()
    report = setup_call(apply_file, runtime.db, runtime.box, Path(path), actor=actor())
    out(report, as_json, "\n".join(f"{k}: {', '.join(v) or '-'}" for k, v in report.items()))


def _register() -> None:
    """The command groups kept in their own modules (click only, at import)."""
    from broker.cli_access import issuers_group, users_group
    from broker.cli_data import customers_group, data_group
    from broker.cli_ops import (
        dead_letters_group,
        deliveries_group,
        events_group,
        orders_group,
        parked_group,
        problems_command,
    )
    from broker.cli_setup import (
        clients_group,
        connectors_group,
        mappings_group,
        routes_group,
        sources_group,
    )

    order = [problems_command, orders_group, deliveries_group, dead_letters_group, parked_group, events_group,
             sources_group, connectors_group, routes_group, mappings_group, clients_group,
             users_group, issuers_group, customers_group, data_group]
    commands = dict(broker_group.commands)
    broker_group.commands.clear()
    running = ["up", "info", "serve", "worker", "beat", "sink"]
    for name in running:
        broker_group.add_command(commands.pop(name))
    for group in order:
        broker_group.add_command(group)
    for command in commands.values():
        broker_group.add_command(command)


_register()
cli = broker_group  # the console script `broker` (pyproject.toml)


def main() -> None:
    broker_group.main(prog_name="broker")


if __name__ == "__main__":
    main()
