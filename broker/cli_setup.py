"""CLI for what an admin sets up: sources, connectors, routes, mappings, API clients.

Each command calls the same service as the admin API and the console, and is audited as
cli:<OS user>. Secrets are shown once, when made, and never again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from broker.cli_common import JSON, actor, fail, out, rt, setup_call, table


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _check_urls(values: dict[str, Any], url_keys: tuple[str, ...] | None = None) -> None:
    """Refuse up front a URL the SSRF guard would refuse at every connection (connectors/ssrf.py)."""
    from connectors.ssrf import Refused, check_settings

    rt()  # the runtime applies this installation's policy (BROKER_ALLOWED_PRIVATE_HOSTS) first
    try:
        check_settings(values, url_keys=url_keys)
    except Refused as exc:
        fail(str(exc))


_SOURCE_URL_KEYS = ("api_url", "store_url")


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    """NAME=VALUE options; VALUE @path reads a file (keeps credentials out of shell history)."""
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--{what} expects NAME=VALUE, got {item.split('=')[0]!r}")
        if value.startswith("@"):
            try:
                value = Path(value[1:]).read_text().strip()
            except OSError as exc:
                fail(f"--{what} {key}: cannot read {value[1:]}: {exc.strerror}")
        pairs[key] = value
    return pairs


def _enabled(model_name: str, name: str, enabled: bool, as_json: bool) -> None:
    from broker.models import Connector, Source
    from broker.services.setup import set_enabled

    runtime = rt()
    model = {"source": Source, "connector": Connector}[model_name]
    changed = setup_call(set_enabled, runtime.db, model, name, enabled, actor=actor())
    if model_name == "source":
        runtime.sources.forget(name)
    effect = {("source", True): "its webhooks are accepted again",
              ("source", False): "its webhooks answer 404 until it is enabled",
              ("connector", True): "its waiting deliveries go out",
              ("connector", False): "its deliveries wait until it is enabled"}[model_name, enabled]
    state = "enabled" if enabled else "disabled"
    out({"name": name, "enabled": enabled, "changed": changed}, as_json,
        f"{model_name} {name} {state}: {effect}" if changed else f"{model_name} {name} was {state} already")


# --- sources ---------------------------------------------------------------------------

@click.group("sources", cls=_Group)
def sources_group() -> None:
    """Front-office sources (channel webhooks, REST)."""


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
@JSON
def sources_add(name: str, kind: str, secret: str | None, settings: tuple[str, ...],
                credentials: tuple[str, ...], as_json: bool) -> None:
    """Create a source; prints its webhook URL and signing secret once."""
    from broker.services.sources import create_source

    runtime = rt()
    _check_urls(_pairs(settings, "setting"), _SOURCE_URL_KEYS)
    source, secret = setup_call(create_source, runtime.db, runtime.box, name, kind, secret,
                                settings=_pairs(settings, "setting"),
                                credentials=_pairs(credentials, "credential"), actor=actor())
    url = f"{runtime.settings.public_url}/webhooks/{source.name}"
    data = {"id": source.id, "name": source.name, "kind": source.kind,
            "webhook_url": url if source.kind != "rest" else None, "secret": secret}
    out(data, as_json, f"source {name} created\nwebhook URL: {url}\nsigning secret "
        f"(shown once, store it in the channel's admin): {secret}" if secret else
        f"source {name} created (REST: clients post to {runtime.settings.public_url}/api/v1/orders)")


@sources_group.command("configure")
@click.argument("name")
@_SETTING
@_CREDENTIAL
@JSON
def sources_configure(name: str, settings: tuple[str, ...], credentials: tuple[str, ...],
                      as_json: bool) -> None:
    """Change a source's settings and API credentials (NAME= removes one)."""
    from broker.services.sources import configure_source

    runtime = rt()
    _check_urls(_pairs(settings, "setting"), _SOURCE_URL_KEYS)
    data = setup_call(configure_source, runtime.db, runtime.box, name,
                      settings=_pairs(settings, "setting"),
                      credentials=_pairs(credentials, "credential"), actor=actor())
    runtime.sources.forget(name)
    out(data, as_json, f"source {name}: settings {json.dumps(data['settings'])}; "
        f"credentials stored: {', '.join(data['credentials']) or 'none'}")


@sources_group.command("rotate-secret")
@click.argument("name")
@click.option("--secret", default=None, help="The new secret, where the channel issues it.")
@JSON
def sources_rotate(name: str, secret: str | None, as_json: bool) -> None:
    """Add a new signing secret; the previous one keeps working until the next rotation."""
    from broker.services.sources import rotate_secret

    runtime = rt()
    secret = setup_call(rotate_secret, runtime.db, runtime.box, name, secret, actor=actor())
    runtime.sources.forget(name)  # other processes pick the new secret up within 5 s
    out({"name": name, "secret": secret}, as_json, f"new signing secret (shown once): {secret}")


@sources_group.command("catch-up")
@click.argument("name")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
              default=None, help="Poll changes since this time (default: since the last poll).")
@JSON
def sources_catch_up(name: str, since: Any, as_json: bool) -> None:
    """Poll the channel's API now for orders its webhooks may have missed."""
    import sys
    from datetime import UTC

    from broker.services.catchup import catch_up

    runtime = rt()
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    result = setup_call(catch_up, runtime.db, runtime.box, name, since=since)
    if result.first_event_id:
        runtime.publisher.normalise(result.first_event_id)
    data = {"source": name, "since": result.since.isoformat(), "polled": result.polled,
            "stored": result.stored, "error": result.error}
    out(data, as_json, f"catch-up of {name} since {data['since']}: {result.polled} polled, "
        f"{result.stored} new" + (f"; failed: {result.error}" if result.error else ""))
    if result.error:
        sys.exit(1)


@sources_group.command("list")
@JSON
def sources_list(as_json: bool) -> None:
    """Every source with its webhook URL, catch-up state and rejected events."""
    from sqlalchemy import func, select

    from broker.models import EventStatus, InboundEvent, Source

    runtime = rt()
    with runtime.db.begin() as session:
        rejected = dict(session.execute(
            select(InboundEvent.source_id, func.count()).where(InboundEvent.status == EventStatus.REJECTED)
            .group_by(InboundEvent.source_id)).all())
        rows = [{"id": s.id, "name": s.name, "kind": s.kind, "enabled": s.enabled,
                 "webhook_url": f"{runtime.settings.public_url}/webhooks/{s.name}"
                 if s.kind != "rest" else "", "settings": s.settings,
                 "catchup_at": s.catchup_at.isoformat() if s.catchup_at else None,
                 "catchup_error": s.catchup_error, "rejected_events": rejected.get(s.id, 0)}
                for s in session.execute(select(Source).order_by(Source.name)).scalars()]
    out(rows, as_json, table(rows, ["name", "kind", "enabled", "webhook_url", "rejected_events",
                                    "catchup_error"]))


@sources_group.command("enable")
@click.argument("name")
@JSON
def sources_enable(name: str, as_json: bool) -> None:
    """Accept the source's webhooks again."""
    _enabled("source", name, True, as_json)


@sources_group.command("disable")
@click.argument("name")
@JSON
def sources_disable(name: str, as_json: bool) -> None:
    """Refuse the source's webhooks (404) until it is enabled; nothing stored is lost."""
    _enabled("source", name, False, as_json)


@sources_group.command("remove")
@click.argument("name")
@JSON
def sources_remove(name: str, as_json: bool) -> None:
    """Delete a source that never received anything (one with orders: disable it)."""
    from broker.services.sources import remove_source

    runtime = rt()
    setup_call(remove_source, runtime.db, name, actor=actor())
    runtime.sources.forget(name)
    out({"name": name, "removed": True}, as_json, f"source {name} removed")


# --- connectors ------------------------------------------------------------------------

@click.group("connectors", cls=_Group)
def connectors_group() -> None:
    """Back-office connectors."""


@connectors_group.command("kinds")
@click.argument("kind", required=False)
@JSON
def connectors_kinds(kind: str | None, as_json: bool) -> None:
    """Installed kinds and their settings (type, default, allowed values, help); name a
    KIND to see only its settings."""
    from connectors.config import secret_paths
    from connectors.describe import describe, flat, summary
    from connectors.registry import connector_kinds

    kinds = connector_kinds()
    if kind is not None and kind not in kinds:
        fail(f"no connector kind {kind!r}; installed: {', '.join(sorted(kinds))}")
    rows = []
    for name, cls in sorted(kinds.items()):
        if kind is not None and name != kind:
            continue
        fields = describe(cls.Config())
        rows.append({"kind": name, "class": f"{cls.__module__}.{cls.__qualname__}",
                     "title": cls.title or "", "secrets": secret_paths(cls.Config()),
                     "fields": [f.as_dict() for f in fields], "_flat": flat(fields)})
    text = []
    for row in rows:
        text.append(f"{row['kind']}  ({row['class']}){'  ' + row['title'] if row['title'] else ''}")
        for info in row["_flat"]:
            if info.type == "section":
                text.append(f"  {info.path}:  section{' (required)' if info.required else ''}")
                continue
            text.append(f"  {info.path}  {summary(info)}")
            if info.description:
                text.append(f"      {info.description}")
        text.append("")
    out([{k: v for k, v in r.items() if k != "_flat"} for r in rows], as_json, "\n".join(text).rstrip())


@connectors_group.command("add")
@click.argument("name")
@click.option("--kind", required=True)
@click.option("--config", "config_json", required=True,
              help="JSON object of the kind's config (`broker connectors kinds KIND` lists it); "
                   "@FILE reads it from a file.")
@JSON
def connectors_add(name: str, kind: str, config_json: str, as_json: bool) -> None:
    """Create (or reconfigure) a connector; secrets are encrypted and never shown again."""
    from broker.services.setup import upsert_connector

    if config_json.startswith("@"):
        try:
            config_json = Path(config_json[1:]).read_text()
        except OSError as exc:
            fail(f"--config: cannot read {config_json[1:]}: {exc.strerror}")
    try:
        config = json.loads(config_json)
    except ValueError as exc:
        fail(f"--config is not valid JSON: {exc}")
    if isinstance(config, dict):
        _check_urls(config)
    runtime = rt()
    row, created = setup_call(upsert_connector, runtime.db, runtime.box, name, kind, config,
                              actor=actor())
    warnings = _warnings(runtime, row)
    out({"id": row.id, "name": row.name, "kind": row.kind, "queue": row.queue,
         "created": created, "warnings": warnings}, as_json,
        f"connector {name} {'created' if created else 'updated'} (queue {row.queue})")
    for warning in [] if as_json else warnings:
        click.echo(f"warning: {warning}", err=True)


def _warnings(runtime: Any, row: Any) -> list[str]:
    """What the connector's configuration weakens (Connector.warnings)."""
    try:
        return runtime.connector(row).warnings()
    except Exception:  # a config the kind refuses: its check says why
        return []


@connectors_group.command("list")
@JSON
def connectors_list(as_json: bool) -> None:
    """Every connector with its state and the deliveries waiting, parked or dead."""
    from sqlalchemy import func, select

    from broker.models import Connector, Delivery, DeliveryStatus
    from broker.services.custody import consent_health

    runtime = rt()
    with runtime.db.begin() as session:
        counts: dict[str, dict[str, int]] = {}
        for connector_id, status, count in session.execute(
                select(Delivery.connector_id, Delivery.status, func.count())
                .where(Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.LEASED,
                                            DeliveryStatus.PARKED, DeliveryStatus.DEAD]))
                .group_by(Delivery.connector_id, Delivery.status)):
            counts.setdefault(connector_id, {})[status] = count
        rows = []
        for c in session.execute(select(Connector).order_by(Connector.name)).scalars():
            n = counts.get(c.id, {})
            rows.append({"id": c.id, "name": c.name, "kind": c.kind, "enabled": c.enabled,
                         "queue": c.queue, "config": c.config,
                         "consent": consent_health(session, runtime.box, c),
                         "waiting": n.get("pending", 0) + n.get("leased", 0),
                         "parked": n.get("parked", 0), "dead": n.get("dead", 0)})
    text = [{**r, "consent": r["consent"]["summary"] if r["consent"] else ""} for r in rows]
    out(rows, as_json, table(text, ["name", "kind", "enabled", "waiting", "parked", "dead", "consent"]))


@connectors_group.command("check")
@click.argument("name")
@JSON
def connectors_check(name: str, as_json: bool) -> None:
    """Test the connection and credentials of a connector."""
    from sqlalchemy import select

    from broker.logging import redact
    from broker.models import Connector
    from broker.services.custody import consent_health
    from connectors.errors import ConnectorError

    runtime = rt()
    with runtime.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
        if row is None:
            fail(f"no connector named {name!r}")
        consent = consent_health(session, runtime.box, row)
        session.expunge(row)
    if consent and not as_json:  # an OAuth consent: its health first, a check cannot pass without
        click.echo(f"{name}: consent {consent['summary']}")
    error = None
    warnings = _warnings(runtime, row)
    try:
        runtime.connector(row).check()
    except ConnectorError as exc:
        error = redact(f"{type(exc).__name__}: {exc}")
    if as_json:
        out({"name": name, "ok": error is None, "error": error, "consent": consent,
             "warnings": warnings}, True)
        if error:
            raise SystemExit(1)
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    if error:
        fail(f"{name}: {error}")
    click.echo(f"{name}: ok" + (" (with warnings)" if warnings else ""))


@connectors_group.command("enable")
@click.argument("name")
@JSON
def connectors_enable(name: str, as_json: bool) -> None:
    """Let the connector's deliveries go out again."""
    _enabled("connector", name, True, as_json)


@connectors_group.command("disable")
@click.argument("name")
@JSON
def connectors_disable(name: str, as_json: bool) -> None:
    """Hold the connector's deliveries (they wait, nothing is lost) until it is enabled."""
    _enabled("connector", name, False, as_json)


@connectors_group.command("remove")
@click.argument("name")
@JSON
def connectors_remove(name: str, as_json: bool) -> None:
    """Delete a connector that has no deliveries (one with deliveries: disable it)."""
    from broker.services.setup import remove_connector

    setup_call(remove_connector, rt().db, name, actor=actor())
    out({"name": name, "removed": True}, as_json, f"connector {name} removed")


@connectors_group.command("consent")
@click.argument("name")
@click.option("--redirect-uri", required=True,
              help="The redirect URI registered for the broker at the authorization server.")
@JSON
def connectors_consent(name: str, redirect_uri: str, as_json: bool) -> None:
    """Connect a connector to its back office (OAuth 2.0 consent) without the console: open the
    printed URL, approve, then paste the address the browser was sent back to."""
    from urllib.parse import parse_qsl, urlsplit

    from broker.services.custody import ConsentError, begin_consent, complete_consent

    runtime = rt()
    try:
        url, pending = begin_consent(runtime.db, runtime.box, name, redirect_uri)
        click.echo(f"Open this address in a browser, sign in and approve:\n\n  {url}\n", err=True)
        # The address carries a one-time code, useless without this process's PKCE verifier.
        answer = click.prompt("Paste the address the browser was sent back to", err=True)
        params = dict(parse_qsl(urlsplit(answer.strip()).query))
        result = complete_consent(runtime.db, runtime.box, pending, params, actor=actor())
    except ConsentError as exc:
        fail(str(exc))
    runtime.publisher.wake(result.pop("wake"))
    out(result, as_json, f"{name}: connected (scope {result['scope'] or '-'}, access token expires "
                         f"{result['expires_at'] or 'never'}); {result['resumed']} parked "
                         "deliveries resumed")


# --- routes ----------------------------------------------------------------------------

@click.group("routes", cls=_Group)
def routes_group() -> None:
    """Which orders go to which connectors."""


@routes_group.command("add")
@click.option("--source", required=True)
@click.option("--connector", required=True)
@click.option("--channel", multiple=True)
@click.option("--tag", "tags", multiple=True)
@click.option("--currency", multiple=True)
@click.option("--country", multiple=True)
@JSON
def routes_add(source: str, connector: str, channel: tuple[str, ...], tags: tuple[str, ...],
               currency: tuple[str, ...], country: tuple[str, ...], as_json: bool) -> None:
    """Send a source's orders (those matching the filters) to a connector."""
    from broker.services.setup import add_route

    filters = {"channel": list(channel), "tags": list(tags), "currency": list(currency),
               "country": list(country)}
    route = setup_call(add_route, rt().db, source, connector, filters, actor=actor())
    out({"id": route.id, "source": source, "connector": connector, "filters": route.filters},
        as_json, f"route {source} -> {connector} {route.filters or '(all orders)'}")


def _route_rows(session: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from broker.models import Connector, Route, Source

    return [{"id": r.id, "source": s, "connector": c, "filters": r.filters, "enabled": r.enabled}
            for r, s, c in session.execute(
                select(Route, Source.name, Connector.name)
                .join(Source, Source.id == Route.source_id)
                .join(Connector, Connector.id == Route.connector_id)
                .order_by(Source.name, Connector.name))]


@routes_group.command("list")
@JSON
def routes_list(as_json: bool) -> None:
    with rt().db.begin() as session:
        rows = _route_rows(session)
    out(rows, as_json, table(rows, ["id", "source", "connector", "filters", "enabled"]))


@routes_group.command("remove")
@click.argument("route_id", required=False)
@click.option("--source", default=None)
@click.option("--connector", default=None)
@JSON
def routes_remove(route_id: str | None, source: str | None, connector: str | None, as_json: bool) -> None:
    """Delete a route, by id or by --source and --connector; deliveries it made are kept."""
    from broker.services.setup import remove_route

    runtime = rt()
    if route_id is None:
        if not (source and connector):
            fail("name the route: ROUTE_ID, or --source and --connector")
        with runtime.db.begin() as session:
            found = [r for r in _route_rows(session) if r["source"] == source and r["connector"] == connector]
        if not found:
            fail(f"no route {source} -> {connector}")
        route_id = found[0]["id"]
    setup_call(remove_route, runtime.db, route_id, actor=actor())
    out({"id": route_id, "removed": True}, as_json, f"route {route_id} removed")


# --- identity links and mappings --------------------------------------------------------

@click.group("mappings", cls=_Group, short_help="Identity links and mappings per connector.")
def mappings_group() -> None:
    """Identity links and mappings per connector (customer, product, tax, shipping, payment)."""


@mappings_group.command("add")
@click.argument("connector")
@click.argument("kind", type=click.Choice(["customer", "product", "tax", "shipping", "payment"]))
@click.argument("key")
@click.argument("value")
@JSON
def mappings_add(connector: str, kind: str, key: str, value: str, as_json: bool) -> None:
    """Map KEY (a SKU, a customer anchor, a tax/shipping/payment name) to the back office's
    VALUE; deliveries parked for it resume at once."""
    from broker.services.links import add_mapping

    runtime = rt()
    resumed, wake = setup_call(add_mapping, runtime.db, connector, kind, key, value, actor=actor())
    runtime.publisher.wake(wake)
    out({"connector": connector, "kind": kind, "key": key, "value": value, "resumed": resumed},
        as_json, f"{kind} {key} → {value} in {connector}; {resumed} parked deliveries resumed")


@mappings_group.command("remove")
@click.argument("connector")
@click.argument("kind")
@click.argument("key")
@JSON
def mappings_remove(connector: str, kind: str, key: str, as_json: bool) -> None:
    from broker.services.links import remove_mapping

    if not setup_call(remove_mapping, rt().db, connector, kind, key, actor=actor()):
        fail(f"no {kind} mapping {key!r} in {connector}")
    out({"connector": connector, "kind": kind, "key": key, "removed": True}, as_json,
        f"removed {kind} {key} from {connector}")


@mappings_group.command("list")
@click.option("--connector", default=None)
@click.option("--kind", default=None)
@JSON
def mappings_list(connector: str | None, kind: str | None, as_json: bool) -> None:
    from broker.services.links import list_mappings

    with rt().db.begin() as session:
        rows = list_mappings(session, connector=connector, kind=kind)
    out(rows, as_json, table(rows, ["connector", "kind", "key", "value", "origin"]))


@mappings_group.command("gaps")
@click.option("--connector", default=None)
@JSON
def mappings_gaps(connector: str | None, as_json: bool) -> None:
    """Parked deliveries grouped by the mapping or identity decision they wait for."""
    from broker.services.links import mapping_gaps

    with rt().db.begin() as session:
        rows = mapping_gaps(session, connector=connector)
    out(rows, as_json, table(rows, ["connector", "reason", "kind", "key", "deliveries", "message"]))


# --- clients ---------------------------------------------------------------------------

@click.group("clients", cls=_Group)
def clients_group() -> None:
    """OAuth API clients."""


@clients_group.command("create")
@click.argument("name")
@click.option("--scope", default="orders:write orders:read", show_default=True)
@click.option("--source", default=None, help="REST source its orders enter (default: NAME).")
@JSON
def clients_create(name: str, scope: str, source: str | None, as_json: bool) -> None:
    """Create an API client; prints its client id and secret once."""
    from broker.services.setup import create_client

    runtime = rt()
    client, secret = setup_call(create_client, runtime.db, runtime.box, name, scope, source, actor=actor())
    out({"name": name, "client_id": client.client_id, "client_secret": secret,
         "scope": client.scope, "token_url": f"{runtime.settings.public_url}/oauth/token"}, as_json,
        f"client {name}\nclient_id: {client.client_id}\nclient_secret (shown once): {secret}\n"
        f"token URL: {runtime.settings.public_url}/oauth/token")


@clients_group.command("list")
@JSON
def clients_list(as_json: bool) -> None:
    from sqlalchemy import select

    from broker.models import Client

    with rt().db.begin() as session:
        rows = [{"name": c.name, "client_id": c.client_id, "scope": c.scope, "revoked": c.revoked}
                for c in session.execute(select(Client).order_by(Client.name)).scalars()]
    out(rows, as_json, table(rows, ["name", "client_id", "scope", "revoked"]))


@clients_group.command("revoke")
@click.argument("name")
@JSON
def clients_revoke(name: str, as_json: bool) -> None:
    """Revoke an API client: no new tokens, and its tokens stop working at once."""
    from broker.services.setup import revoke_client

    changed = setup_call(revoke_client, rt().db, name, actor=actor())
    out({"name": name, "revoked": True, "changed": changed}, as_json,
        f"client {name} revoked: its tokens are refused from now on" if changed
        else f"client {name} was revoked already")


def _delivery_commands() -> None:
    from broker.cli_delivery import connectors_kit, connectors_limit

    connectors_group.add_command(connectors_kit)
    connectors_group.add_command(connectors_limit)


_delivery_commands()
