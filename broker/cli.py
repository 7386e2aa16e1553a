"""The `broker` command line (a Flask CLI group): run, migrate, set up, operate.

List, show and create commands take --json so scripts can read their output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, FlaskGroup, with_appcontext
from sqlalchemy import select

from broker.cli_common import actor as _actor
from broker.cli_common import fail as _fail
from broker.cli_common import out as _out
from broker.cli_common import rt as _rt
from broker.cli_common import setup_call as _setup_call
from broker.cli_common import table as _table
from broker.settings import ConfigError, Settings, load_settings

broker_group = AppGroup("broker", help="FOBO Broker administration.")


def _check_urls(values: dict[str, Any], url_keys: tuple[str, ...] | None = None) -> None:
    """Refuse up front a URL the SSRF guard would refuse at every connection (connectors/ssrf.py)."""
    from connectors.ssrf import Refused, check_settings

    try:
        check_settings(values, url_keys=url_keys)
    except Refused as exc:
        _fail(str(exc))


_SOURCE_URL_KEYS = ("api_url", "store_url")


# --- running ---------------------------------------------------------------------------

def _metrics_dir(settings: Settings, clean: bool) -> str:
    path = settings.data_dir / "metrics"
    if clean and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def upgrade_database(settings: Settings) -> None:
    from alembic import command

    from broker.migrations import alembic_config

    command.upgrade(alembic_config(settings.database_url), "head")


def _gunicorn_cmd(settings: Settings, workers: int, worker_class: str) -> list[str]:
    cmd = [sys.executable, "-m", "gunicorn", "--config", "python:broker.gunicorn_conf",
           "--bind", settings.bind, "--workers", str(workers), "--worker-class", worker_class]
    if worker_class == "gthread":
        cmd += ["--threads", "8"]
    return [*cmd, "broker.wsgi:app"]


def _celery_cmd(settings: Settings, concurrency: int, beat: bool, queues: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "celery", "-A", "workers", "worker", "--concurrency",
           str(concurrency), "--loglevel", settings.log_level, "--without-gossip",
           "--without-mingle", "--hostname", f"worker-{os.getpid()}@%h"]
    if beat:
        cmd += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    if queues:
        cmd += ["--queues", queues]
    return cmd


@broker_group.command("up")
@with_appcontext
def up() -> None:
    """Embedded mode: migrate, then run gateway, worker and sweeper until Ctrl-C."""
    settings: Settings = _rt().settings
    upgrade_database(settings)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": _metrics_dir(settings, clean=True)}
    worker_class = "gthread" if settings.embedded else settings.web_worker_class
    web_workers = 1 if settings.embedded else settings.web_workers
    procs = [
        subprocess.Popen(_gunicorn_cmd(settings, web_workers, worker_class), env=env),
        subprocess.Popen(_celery_cmd(settings, 1 if settings.embedded else
                                     settings.worker_concurrency, True, None), env=env),
    ]
    click.echo(f"FOBO Broker is up: gateway {settings.public_url}  "
               f"(webhooks {settings.public_url}/webhooks/<source>, API docs "
               f"{settings.public_url}/api/openapi.json, metrics {settings.public_url}/metrics)")
    click.echo(f"database {settings.database_url.split('@')[-1]}; press Ctrl-C to stop")
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
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            p.kill()
    click.echo("stopped")
    if not stopping:
        sys.exit(1)


@broker_group.command("serve")
@click.option("--workers", type=int, default=None, help="Gateway processes.")
@click.option("--worker-class", type=click.Choice(["gevent", "sync", "gthread"]), default=None)
@with_appcontext
def serve(workers: int | None, worker_class: str | None) -> None:
    """Scaled mode: the gateway under gunicorn."""
    settings: Settings = _rt().settings
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir(settings, clean=True)
    cmd = _gunicorn_cmd(settings, workers or settings.web_workers,
                        worker_class or settings.web_worker_class)
    os.execv(cmd[0], cmd)


@broker_group.command("worker")
@click.option("--concurrency", type=int, default=None, help="Worker processes.")
@click.option("--beat/--no-beat", default=False, help="Also run the sweeper schedule.")
@click.option("--queues", default=None, help="Only these queues, e.g. connector.erp")
@with_appcontext
def worker(concurrency: int | None, beat: bool, queues: str | None) -> None:
    """Scaled mode: a Celery worker (same as `celery -A workers worker`)."""
    settings: Settings = _rt().settings
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _metrics_dir(settings, clean=False))
    cmd = _celery_cmd(settings, concurrency or settings.worker_concurrency, beat, queues)
    os.execv(cmd[0], cmd)


@broker_group.command("beat")
@with_appcontext
def beat() -> None:
    """Scaled mode: the sweeper schedule alone (run exactly one)."""
    settings: Settings = _rt().settings
    cmd = [sys.executable, "-m", "celery", "-A", "workers", "beat", "--schedule",
           str(settings.data_dir / "celerybeat-schedule"), "--loglevel", settings.log_level]
    os.execv(cmd[0], cmd)


@broker_group.command("sink")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9000, show_default=True, type=int)
def sink(host: str, port: int) -> None:
    """A demo back office that prints every order it books (for trials and the README)."""
    from broker.devsink import run_sink

    run_sink(host, port)


# --- database and keys -----------------------------------------------------------------

@broker_group.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply Alembic migrations up to the newest."""
    upgrade_database(_rt().settings)
    click.echo("database is up to date")


@broker_group.group("keys")
def keys_group() -> None:
    """Encryption keys for secrets at rest."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key for BROKER_SECRET_KEYS."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@keys_group.command("rotate")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def keys_rotate(as_json: bool) -> None:
    """Rotate the access-token signing key: new tokens use a new key; the old one stays in the
    JWKS until its last token expires. Gateways pick the new key up within seconds."""
    report = current_app.extensions["broker_tokens"].keys.rotate(actor=_actor())
    _out(report, as_json, f"new signing key {report['kid']} ({report['alg']}); "
         + (f"retired {', '.join(report['retired'])}, published until {report['publish_until']}"
            if report["retired"] else "no previous key"))


@keys_group.command("rotate-secrets")
@click.option("--batch-size", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def keys_rotate_secrets(batch_size: int, as_json: bool) -> None:
    """Re-encrypt every stored secret under the first key of BROKER_SECRET_KEYS.

    Put a new key first (old keys after it) everywhere, restart, run this; then the old key
    can be dropped. Safe to run again: values already under the first key are left alone.
    """
    from broker.services.crypto import rotate_stored_secrets

    report = rotate_stored_secrets(_rt().db, _rt().box, actor=_actor(), batch_size=batch_size)
    _out(report, as_json, "\n".join(
        f"{r['column']}: {r['rotated']} rotated, {r['current']} already current"
        + (f", {r['skipped']} changed meanwhile (run again)" if r["skipped"] else "")
        + (f", {r['failed']} FAILED (no configured key opens rows {', '.join(r['failed_ids'])})"
           if r["failed"] else "") for r in report))
    if any(r["failed"] for r in report):
        sys.exit(1)


# --- sources ---------------------------------------------------------------------------

@broker_group.group("sources")
def sources_group() -> None:
    """Front-office sources."""


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """NAME=VALUE options; VALUE @path reads a file (keeps credentials out of shell history)."""
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--{what} expects NAME=VALUE, got {item.split('=')[0]!r}")
        if value.startswith("@"):
            value = Path(value[1:]).read_text().strip()
        pairs[key] = value
    return pairs


_SETTING = click.option("--setting", "settings", multiple=True, metavar="NAME=VALUE",
                        help="A channel setting, e.g. shop=acme.myshopify.com (repeatable).")
_CREDENTIAL = click.option("--credential", "credentials", multiple=True, metavar="NAME=VALUE",
                           help="A channel API credential, stored encrypted; VALUE @file reads "
                                "it from a file (repeatable).")


@sources_group.command("add")
@click.argument("name")
@click.option("--kind", required=True, help="standard-webhooks, shopify, woocommerce, stripe, "
                                            "square, bigcommerce or rest.")
@click.option("--secret", default=None,
              help="Signing secret; required where the channel issues it (Shopify, Stripe, "
                   "Square, BigCommerce), generated otherwise.")
@_SETTING
@_CREDENTIAL
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def sources_add(name: str, kind: str, secret: str | None, settings: tuple[str, ...],
                credentials: tuple[str, ...], as_json: bool) -> None:
    """Create a source; prints its webhook URL and signing secret once."""
    from broker.services.sources import create_source

    rt = _rt()
    _check_urls(_pairs(settings, "setting"), _SOURCE_URL_KEYS)
    source, secret = _setup_call(create_source, rt.db, rt.box, name, kind, secret,
                                 settings=_pairs(settings, "setting"),
                                 credentials=_pairs(credentials, "credential"), actor=_actor())
    url = f"{rt.settings.public_url}/webhooks/{source.name}"
    data = {"id": source.id, "name": source.name, "kind": source.kind,
            "webhook_url": url if source.kind != "rest" else None, "secret": secret}
    _out(data, as_json, f"source {name} created\nwebhook URL: {url}\nsigning secret "
         f"(shown once, store it in the channel's admin): {secret}" if secret else
         f"source {name} created (REST: clients post to {rt.settings.public_url}/api/v1/orders)")


@sources_group.command("configure")
@click.argument("name")
@_SETTING
@_CREDENTIAL
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def sources_configure(name: str, settings: tuple[str, ...], credentials: tuple[str, ...],
                      as_json: bool) -> None:
    """Change a source's settings and API credentials (NAME= removes one)."""
    from broker.services.sources import configure_source

    rt = _rt()
    _check_urls(_pairs(settings, "setting"), _SOURCE_URL_KEYS)
    data = _setup_call(configure_source, rt.db, rt.box, name,
                       settings=_pairs(settings, "setting"),
                       credentials=_pairs(credentials, "credential"), actor=_actor())
    rt.sources.forget(name)
    _out(data, as_json, f"source {name}: settings {json.dumps(data['settings'])}; "
         f"credentials stored: {', '.join(data['credentials']) or 'none'}")


@sources_group.command("rotate-secret")
@click.argument("name")
@click.option("--secret", default=None, help="The new secret, where the channel issues it.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def sources_rotate(name: str, secret: str | None, as_json: bool) -> None:
    """Add a new signing secret; the previous one keeps working until the next rotation."""
    from broker.services.sources import rotate_secret

    rt = _rt()
    secret = _setup_call(rotate_secret, rt.db, rt.box, name, secret, actor=_actor())
    rt.sources.forget(name)  # other processes pick the new secret up within 5 s
    _out({"name": name, "secret": secret}, as_json, f"new signing secret (shown once): {secret}")


@sources_group.command("catch-up")
@click.argument("name")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              default=None, help="Poll changes since this time (default: since the last poll).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def sources_catch_up(name: str, since: datetime | None, as_json: bool) -> None:
    """Poll the channel's API now for orders its webhooks may have missed."""
    from broker.services.catchup import catch_up

    rt = _rt()
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    result = _setup_call(catch_up, rt.db, rt.box, name, since=since)
    if result.first_event_id:
        rt.publisher.normalise(result.first_event_id)
    data = {"source": name, "since": result.since.isoformat(), "polled": result.polled,
            "stored": result.stored, "error": result.error}
    _out(data, as_json, f"catch-up of {name} since {data['since']}: {result.polled} polled, "
         f"{result.stored} new" + (f"; failed: {result.error}" if result.error else ""))
    if result.error:
        sys.exit(1)


@sources_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def sources_list(as_json: bool) -> None:
    from broker.models import Source

    rt = _rt()
    with rt.db.begin() as session:
        rows = [{"id": s.id, "name": s.name, "kind": s.kind, "enabled": s.enabled,
                 "webhook_url": f"{rt.settings.public_url}/webhooks/{s.name}"
                 if s.kind != "rest" else "", "settings": s.settings,
                 "catchup_at": s.catchup_at.isoformat() if s.catchup_at else None,
                 "catchup_error": s.catchup_error}
                for s in session.execute(select(Source).order_by(Source.name)).scalars()]
    _out(rows, as_json, _table(rows, ["name", "kind", "enabled", "webhook_url", "catchup_at",
                                      "catchup_error"]))


# --- connectors ------------------------------------------------------------------------

@broker_group.group("connectors")
def connectors_group() -> None:
    """Back-office connectors."""


@connectors_group.command("kinds")
@click.option("--json", "as_json", is_flag=True)
def connectors_kinds(as_json: bool) -> None:
    from connectors.config import secret_paths
    from connectors.registry import connector_kinds

    rows = [{"kind": k, "class": f"{c.__module__}.{c.__qualname__}",
             "fields": ", ".join(sorted(c.Config().fields)),
             "secrets": ", ".join(secret_paths(c.Config()))}
            for k, c in sorted(connector_kinds().items())]
    _out(rows, as_json, _table(rows, ["kind", "class", "secrets"]))


@connectors_group.command("add")
@click.argument("name")
@click.option("--kind", required=True)
@click.option("--config", "config_json", required=True, help="JSON object of the kind's config.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def connectors_add(name: str, kind: str, config_json: str, as_json: bool) -> None:
    """Create (or reconfigure) a connector; secrets are encrypted and never shown again."""
    from broker.services.setup import upsert_connector

    try:
        config = json.loads(config_json)
    except ValueError as exc:
        _fail(f"--config is not valid JSON: {exc}")
    if isinstance(config, dict):
        _check_urls(config)
    rt = _rt()
    row, created = _setup_call(upsert_connector, rt.db, rt.box, name, kind, config, actor=_actor())
    _out({"id": row.id, "name": row.name, "kind": row.kind, "queue": row.queue,
          "created": created}, as_json,
         f"connector {name} {'created' if created else 'updated'} (queue {row.queue})")


@connectors_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def connectors_list(as_json: bool) -> None:
    from broker.models import Connector
    from broker.services.custody import consent_health

    rt = _rt()
    with rt.db.begin() as session:
        rows = [{"id": c.id, "name": c.name, "kind": c.kind, "enabled": c.enabled,
                 "queue": c.queue, "config": c.config, "consent": consent_health(session, rt.box, c)}
                for c in session.execute(select(Connector).order_by(Connector.name)).scalars()]
    text = [{**r, "consent": r["consent"]["summary"] if r["consent"] else ""} for r in rows]
    _out(rows, as_json, _table(text, ["name", "kind", "enabled", "queue", "consent"]))


@connectors_group.command("check")
@click.argument("name")
@with_appcontext
def connectors_check(name: str) -> None:
    """Test the connection and credentials of a connector."""
    from broker.models import Connector
    from connectors.errors import ConnectorError

    rt = _rt()
    with rt.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if row is None:
        _fail(f"no connector named {name!r}")
    from broker.services.custody import consent_health

    with rt.db.begin() as session:
        consent = consent_health(session, rt.box, row)
    if consent:  # an OAuth consent: its health first, since a check without one cannot pass
        click.echo(f"{name}: consent {consent['summary']}")
    try:
        rt.connector(row).check()
    except ConnectorError as exc:
        _fail(f"{name}: {type(exc).__name__}: {exc}")
    click.echo(f"{name}: ok")


@connectors_group.command("consent")
@click.argument("name")
@click.option("--redirect-uri", required=True,
              help="The redirect URI registered for the broker at the authorization server.")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def connectors_consent(name: str, redirect_uri: str, as_json: bool) -> None:
    """Connect a connector to its back office (OAuth 2.0 consent) without the console: open the
    printed URL, approve, then paste the address the browser was sent back to."""
    from urllib.parse import parse_qsl, urlsplit

    from broker.services.custody import ConsentError, begin_consent, complete_consent

    rt = _rt()
    try:
        url, pending = begin_consent(rt.db, rt.box, name, redirect_uri)
        click.echo(f"Open this address in a browser, sign in and approve:\n\n  {url}\n", err=True)
        # The address carries a one-time code, useless without this process's PKCE verifier.
        answer = click.prompt("Paste the address the browser was sent back to", err=True)
        params = dict(parse_qsl(urlsplit(answer.strip()).query))
        result = complete_consent(rt.db, rt.box, pending, params, actor=_actor())
    except ConsentError as exc:
        _fail(str(exc))
    rt.publisher.wake(result.pop("wake"))
    _out(result, as_json, f"{name}: connected (scope {result['scope'] or '-'}, access token expires "
                          f"{result['expires_at'] or 'never'}); {result['resumed']} parked "
                          "deliveries resumed")


# --- routes ----------------------------------------------------------------------------

@broker_group.group("routes")
def routes_group() -> None:
    """Which orders go to which connectors."""


@routes_group.command("add")
@click.option("--source", required=True)
@click.option("--connector", required=True)
@click.option("--channel", multiple=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--currency", multiple=True)
@click.option("--country", multiple=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def routes_add(source: str, connector: str, channel: tuple[str, ...], tags: tuple[str, ...],
               currency: tuple[str, ...], country: tuple[str, ...], as_json: bool) -> None:
    from broker.services.setup import add_route

    filters = {"channel": list(channel), "tags": list(tags), "currency": list(currency),
               "country": list(country)}
    route = _setup_call(add_route, _rt().db, source, connector, filters, actor=_actor())
    _out({"id": route.id, "source": source, "connector": connector, "filters": route.filters},
         as_json, f"route {source} -> {connector} {route.filters or '(all orders)'}")


@routes_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def routes_list(as_json: bool) -> None:
    from broker.models import Connector, Route, Source

    with _rt().db.begin() as session:
        rows = [{"id": r.id, "source": s, "connector": c, "filters": r.filters, "enabled": r.enabled}
                for r, s, c in session.execute(
                    select(Route, Source.name, Connector.name)
                    .join(Source, Source.id == Route.source_id)
                    .join(Connector, Connector.id == Route.connector_id)
                    .order_by(Source.name, Connector.name))]
    _out(rows, as_json, _table(rows, ["source", "connector", "filters", "enabled"]))


# --- identity links and mappings --------------------------------------------------------

@broker_group.group("mappings")
def mappings_group() -> None:
    """Identity links and mappings per connector (customer, product, tax, shipping, payment)."""


@mappings_group.command("add")
@click.argument("connector")
@click.argument("kind", type=click.Choice(["customer", "product", "tax", "shipping", "payment"]))
@click.argument("key")
@click.argument("value")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def mappings_add(connector: str, kind: str, key: str, value: str, as_json: bool) -> None:
    """Map KEY (a SKU, a customer anchor, a tax/shipping/payment name) to the back office's
    VALUE; deliveries parked for it resume at once."""
    from broker.services.links import add_mapping

    rt = _rt()
    resumed, wake = _setup_call(add_mapping, rt.db, connector, kind, key, value, actor=_actor())
    rt.publisher.wake(wake)
    _out({"connector": connector, "kind": kind, "key": key, "value": value, "resumed": resumed},
         as_json, f"{kind} {key} → {value} in {connector}; {resumed} parked deliveries resumed")


@mappings_group.command("remove")
@click.argument("connector")
@click.argument("kind")
@click.argument("key")
@with_appcontext
def mappings_remove(connector: str, kind: str, key: str) -> None:
    from broker.services.links import remove_mapping

    if not _setup_call(remove_mapping, _rt().db, connector, kind, key, actor=_actor()):
        _fail(f"no {kind} mapping {key!r} in {connector}")
    click.echo(f"removed {kind} {key} from {connector}")


@mappings_group.command("list")
@click.option("--connector", default=None)
@click.option("--kind", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def mappings_list(connector: str | None, kind: str | None, as_json: bool) -> None:
    from broker.services.links import list_mappings

    with _rt().db.begin() as session:
        rows = list_mappings(session, connector=connector, kind=kind)
    _out(rows, as_json, _table(rows, ["connector", "kind", "key", "value", "origin"]))


@mappings_group.command("gaps")
@click.option("--connector", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def mappings_gaps(connector: str | None, as_json: bool) -> None:
    """Parked deliveries grouped by the mapping or identity decision they wait for."""
    from broker.services.links import mapping_gaps

    with _rt().db.begin() as session:
        rows = mapping_gaps(session, connector=connector)
    _out(rows, as_json, _table(rows, ["connector", "reason", "kind", "key", "deliveries", "message"]))


# --- clients ---------------------------------------------------------------------------

@broker_group.group("clients")
def clients_group() -> None:
    """OAuth API clients."""


@clients_group.command("create")
@click.argument("name")
@click.option("--scope", default="orders:write orders:read", show_default=True)
@click.option("--source", default=None, help="REST source its orders enter (default: NAME).")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def clients_create(name: str, scope: str, source: str | None, as_json: bool) -> None:
    """Create an API client; prints its client id and secret once."""
    from broker.services.setup import create_client

    rt = _rt()
    client, secret = _setup_call(create_client, rt.db, rt.box, name, scope, source, actor=_actor())
    _out({"name": name, "client_id": client.client_id, "client_secret": secret,
          "scope": client.scope, "token_url": f"{rt.settings.public_url}/oauth/token"}, as_json,
         f"client {name}\nclient_id: {client.client_id}\nclient_secret (shown once): {secret}\n"
         f"token URL: {rt.settings.public_url}/oauth/token")


@clients_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def clients_list(as_json: bool) -> None:
    from broker.models import Client

    with _rt().db.begin() as session:
        rows = [{"name": c.name, "client_id": c.client_id, "scope": c.scope, "revoked": c.revoked}
                for c in session.execute(select(Client).order_by(Client.name)).scalars()]
    _out(rows, as_json, _table(rows, ["name", "client_id", "scope", "revoked"]))


# --- orders and events -----------------------------------------------------------------

@broker_group.group("orders")
def orders_group() -> None:
    """Orders and their journeys."""


@orders_group.command("list")
@click.option("--limit", type=int, default=50)
@click.option("--status", default=None)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def orders_list(limit: int, status: str | None, as_json: bool) -> None:
    from broker.services.queries import list_orders

    with _rt().db.begin() as session:
        rows = list_orders(session, limit=limit, status=status)
    _out(rows, as_json, _table(rows, ["id", "source", "number", "status", "total", "currency",
                                      "version", "received_at"]))


@orders_group.command("show")
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def orders_show(order_id: str, as_json: bool) -> None:
    """An order's versions, deliveries and timeline."""
    from broker.services.queries import order_detail

    with _rt().db.begin() as session:
        detail = order_detail(session, order_id)
    if detail is None:
        _fail(f"no order {order_id}")
    if as_json:
        _out(detail, True)
        return
    click.echo(f"order {detail['id']}  {detail['number'] or detail['external_id']}  "
               f"{detail['status']}  {detail['total']} {detail['currency']}  "
               f"(source {detail['source']}, version {detail['version']})")
    click.echo("\ndeliveries:")
    click.echo(_table(detail["deliveries"], ["connector", "version", "action", "status",
                                             "attempts", "reference", "last_error"]))
    click.echo("\ntimeline:")
    for step in detail["timeline"]:
        click.echo(f"  {step['at']}  {step['step']:<11} {step['message']}")


@orders_group.command("replay")
@click.argument("order_id")
@with_appcontext
def orders_replay(order_id: str) -> None:
    """Deliver an order's dead or parked deliveries again (idempotent: never books twice)."""
    from broker.services.operations import replay_order

    rt = _rt()
    wake = _setup_call(replay_order, rt.db, order_id, actor=_actor())
    rt.publisher.wake(wake)
    click.echo(f"replayed {len(wake)} deliver{'y' if len(wake) == 1 else 'ies'} of {order_id}")


@broker_group.group("events")
def events_group() -> None:
    """Inbound webhook events."""


@events_group.command("reprocess")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def events_reprocess(event_id: str, as_json: bool) -> None:
    """Normalise a stored event again (after fixing a mapping problem)."""
    from broker.services.intake import normalise_event

    rt = _rt()
    result = _setup_call(normalise_event, rt.db, event_id, force=True, box=rt.box, actor=_actor())
    rt.publisher.wake(result.wake)
    if result.released:
        rt.publisher.normalise(event_id)
    data = {"event_id": event_id, "status": result.status, "error": result.error,
            "orders": [o.order_id for o in result.outcomes]}
    _out(data, as_json, f"event {event_id}: {result.status}"
         + (f" ({result.error})" if result.error else ""))


@events_group.command("list")
@click.option("--status", type=click.Choice(["received", "normalised", "rejected", "ignored",
                                             "parked"]), default=None)
@click.option("--source", "source_name", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def events_list(status: str | None, source_name: str | None, limit: int, as_json: bool) -> None:
    """The latest inbound events (e.g. --status rejected to find what needs a fix)."""
    from broker.services.queries import list_events

    with _rt().db.begin() as session:
        rows = list_events(session, status=status, source=source_name, limit=limit)
    _out(rows, as_json, _table(rows, ["id", "source", "topic", "status", "received_at", "error"]))


@events_group.command("show")
@click.argument("event_id")
@with_appcontext
def events_show(event_id: str) -> None:
    from broker.services.queries import event_detail

    with _rt().db.begin() as session:
        detail = event_detail(session, event_id)
    if detail is None:
        _fail(f"no event {event_id}")
    _out(detail, True)


# --- audit log -------------------------------------------------------------------------

@broker_group.group("audit")
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
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def audit_list(action: str | None, target: str | None, target_type: str | None, actor: str | None,
               since: datetime | None, limit: int, as_json: bool) -> None:
    """The latest entries, newest first (--json adds before/after)."""
    from broker.services.audit import list_entries

    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _rt().db.begin() as session:
        rows = list_entries(session, action=action, target=target, target_type=target_type,
                            actor=actor, since=since, limit=limit)
    _out(rows, as_json, _table(rows, ["at", "actor", "action", "target_type", "target"]))


# --- declarative configuration ---------------------------------------------------------

@broker_group.group("config")
def config_group() -> None:
    """Declarative configuration."""


@config_group.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@with_appcontext
def config_apply(path: Path, as_json: bool) -> None:
    """Create or update sources, connectors and routes from YAML (${ENV} for secrets)."""
    from broker.services.declarative import apply_file

    rt = _rt()
    report = _setup_call(apply_file, rt.db, rt.box, path, actor=_actor())
    _out(report, as_json, "\n".join(f"{k}: {', '.join(v) or '-'}" for k, v in report.items()))


def _create_app() -> Any:
    from broker import create_app

    try:
        return create_app()
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)


def _register_access_commands() -> None:
    from broker.cli_access import issuers_group, users_group  # needs the helpers above
    from broker.cli_delivery import connectors_kit, connectors_limit

    broker_group.add_command(users_group)
    broker_group.add_command(issuers_group)
    connectors_group.add_command(connectors_kit)
    connectors_group.add_command(connectors_limit)


_register_access_commands()


cli = FlaskGroup(name="broker", create_app=_create_app, add_default_commands=True,
                 load_dotenv=False, add_version_option=False,
                 help="FOBO Broker: front-office orders booked once in the back office.")
for command in broker_group.commands.values():
    cli.add_command(command)


def main() -> None:
    try:
        load_settings()
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)
    cli.main(prog_name="broker")


if __name__ == "__main__":
    main()
