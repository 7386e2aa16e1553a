"""Sources in the console (admins): the webhook URL to copy, creation, settings and channel
API credentials, signing-secret rotation, catch-up status and 'Catch up now'.

A signing secret is shown once, in the answer to the request that made it, and never stored
in the session; credentials are write-only like connector secrets. Every change goes through
broker.services.sources and is audited under the signed-in person.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from broker.channels.base import COMMON_SETTINGS, Channel, channel_kinds
from broker.console.auth import requires
from broker.console.common import actor, page_limit, runtime, wake
from broker.models import EventStatus, InboundEvent, Order, Source
from broker.services.queries import list_events
from broker.services.setup import set_enabled
from broker.services.sources import (
    REST_KIND,
    SetupError,
    check_name,
    configure_source,
    create_source,
    rotate_secret,
    source_kinds,
)
from connectors.ssrf import Refused, check_settings

bp = Blueprint("console_sources", __name__, url_prefix="/console/sources")
URL_KEYS = ("api_url", "store_url")  # as `broker sources add` checks them
REJECTED_SHOWN = 50  # the latest rejected events on a source's page
RESERVED = {"new"}


@dataclass
class KindInfo:
    kind: str
    settings: dict[str, str]      # name → help text
    credentials: dict[str, str]   # name → help text
    issues_secret: bool           # the channel issues the signing secret: it must be pasted
    catch_up: bool


def kind_info(kind: str) -> KindInfo:
    if kind == REST_KIND:
        return KindInfo(kind, {}, {}, False, False)
    cls = channel_kinds().get(kind)
    if cls is None:
        abort(404, f"no source kind {kind!r}; choose one of {', '.join(source_kinds())}")
    polls = cls.catch_up is not Channel.catch_up
    settings = {k: v for k, v in {**COMMON_SETTINGS, **cls.settings_fields}.items()
                if polls or not k.startswith("catchup_")}
    return KindInfo(kind, settings, dict(cls.credential_fields), cls.new_secret is Channel.new_secret, polls)


def webhook_url(name: str, kind: str) -> str | None:
    return None if kind == REST_KIND else f"{runtime().settings.public_url}/webhooks/{name}"


def source_health(session: Any, source: Source) -> dict[str, Any]:
    """What the source page and the dashboard show: last order, rejected events, catch-up."""
    last = session.execute(select(Order.received_at).where(Order.source_id == source.id)
                           .order_by(Order.id.desc()).limit(1)).scalar()
    rejected = session.execute(select(func.count()).select_from(InboundEvent).where(
        InboundEvent.status == EventStatus.REJECTED, InboundEvent.source_id == source.id)).scalar()
    settings = source.settings or {}
    interval = settings.get("catchup_interval")
    return {"name": source.name, "kind": source.kind, "enabled": source.enabled,
            "webhook_url": webhook_url(source.name, source.kind), "last_order_at": last, "rejected": rejected,
            "catchup_interval": interval if interval not in (None, "", "0", 0) else None,
            "catchup_at": source.catchup_at, "catchup_error": source.catchup_error,
            "catchup_since": source.catchup_since}


def _row(session: Any, name: str) -> Source:
    row = session.execute(select(Source).where(Source.name == name)).scalar_one_or_none()
    if row is None:
        abort(404, f"no source named {name!r}")
    return row


def _pairs(prefix: str, names: dict[str, str], *, keep_empty: bool) -> dict[str, str]:
    values = {}
    for key in names:
        value = request.form.get(prefix + key, "").strip()
        if value or keep_empty:
            values[key] = value
    return values


def _url_error(settings: dict[str, str]) -> str | None:
    try:
        check_settings(settings, url_keys=URL_KEYS)
    except Refused as exc:
        return str(exc)
    return None


@bp.route("/", methods=["GET"])
@requires("admin")
def index() -> ResponseReturnValue:
    limit, after = page_limit(), request.args.get("after")
    query = select(Source).order_by(Source.name).limit(limit)
    if after:
        query = query.where(Source.name > after)
    with runtime().db.begin() as session:
        items = [source_health(session, s) for s in session.execute(query).scalars()]
    return render_template("console/sources.html", items=items,
                           next_after=items[-1]["name"] if len(items) == limit else None)


@bp.route("/new", methods=["GET"])
@requires("admin")
def new() -> ResponseReturnValue:
    kind = request.args.get("kind", "")
    if not kind:
        return render_template("console/source_kind.html", kinds=source_kinds())
    return render_template("console/source_new.html", info=kind_info(kind), values={}, errors={})


@bp.route("/new", methods=["POST"])
@requires("admin")
def create() -> ResponseReturnValue:
    rt = runtime()
    info = kind_info(request.form.get("kind", ""))
    name = request.form.get("name", "").strip()
    settings = _pairs("setting.", info.settings, keep_empty=False)
    credentials = _pairs("credential.", info.credentials, keep_empty=False)
    secret = request.form.get("secret", "").strip() or None
    errors: dict[str, str] = {}
    try:
        check_name(name, "source")
    except SetupError as exc:
        errors["name"] = str(exc)
    if name in RESERVED:
        errors["name"] = f"{name!r} is reserved by the console; choose another name"
    if info.issues_secret and not secret:
        errors["secret"] = (f"{info.kind} issues the signing secret: copy it from the channel's admin "
                            "and paste it here")
    url_error = _url_error(settings)
    if url_error:
        errors["settings"] = url_error
    if not errors:
        with rt.db.begin() as session:
            if session.execute(select(Source.id).where(Source.name == name)).first():
                errors["name"] = f"a source named {name!r} exists already"
    if not errors:
        try:
            _, shown = create_source(rt.db, rt.box, name, info.kind, secret, settings=settings,
                                          credentials=credentials, actor=actor())
        except SetupError as exc:
            errors["form"] = str(exc)
        else:
            rt.sources.forget(name)
            return render_template("console/source_secret.html", name=name, created=True,
                                   webhook_url=webhook_url(name, info.kind),
                                   secret=None if secret else shown)
    values = {"name": name, **{f"setting.{k}": v for k, v in settings.items()}}  # never secrets
    return render_template("console/source_new.html", info=info, values=values, errors=errors), 422


@bp.route("/<name>", methods=["GET"])
@requires("admin")
def show(name: str) -> ResponseReturnValue:
    return _page(name)


def _page(name: str, errors: dict[str, str] | None = None, status: int = 200) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        health = source_health(session, row)
        stored_credentials = sorted(rt.box.decrypt(row.credentials_encrypted, {}))
        signing_secrets = len(rt.box.decrypt(row.secrets_encrypted, []))
        settings = dict(row.settings or {})
        rejected = list_events(session, status=EventStatus.REJECTED, source=name, limit=REJECTED_SHOWN)
    return render_template("console/source.html", source=health, info=kind_info(health["kind"]),
                           rejected=rejected,
                           values={f"setting.{k}": v for k, v in settings.items()},
                           stored_credentials=stored_credentials,
                           signing_secrets=signing_secrets, errors=errors or {}), status


@bp.route("/<name>", methods=["POST"])
@requires("admin")
def configure(name: str) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        info = kind_info(_row(session, name).kind)
    settings = _pairs("setting.", info.settings, keep_empty=True)  # empty removes a setting
    credentials = _pairs("credential.", info.credentials, keep_empty=False)  # empty keeps it
    credentials.update({key: "" for key in info.credentials if request.form.get(f"forget.{key}")})
    url_error = _url_error(settings)
    if url_error:
        return _page(name, {"settings": url_error}, 422)
    try:
        configure_source(rt.db, rt.box, name, settings=settings, credentials=credentials, actor=actor())
    except SetupError as exc:
        return _page(name, {"settings": str(exc)}, 422)
    rt.sources.forget(name)
    flash(f"Source {name} saved.")
    return redirect(url_for("console_sources.show", name=name), 303)


@bp.route("/<name>/rotate-secret", methods=["POST"])
@requires("admin")
def rotate(name: str) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        info, kind = kind_info(row.kind), row.kind
    given = request.form.get("secret", "").strip() or None
    if info.issues_secret and not given:
        return _page(name, {"secret": f"{kind} issues the signing secret: paste the new one from the "
                                      "channel's admin"}, 422)
    keep = request.form.get("keep_previous") == "true"
    try:
        secret = rotate_secret(rt.db, rt.box, name, given, keep, actor=actor())
    except SetupError as exc:
        return _page(name, {"secret": str(exc)}, 422)
    rt.sources.forget(name)
    return render_template("console/source_secret.html", name=name, created=False, kept_previous=keep,
                           webhook_url=webhook_url(name, kind),
                           secret=None if given else secret)


@bp.route("/<name>/catch-up", methods=["POST"])
@requires("admin")
def catch_up_now(name: str) -> ResponseReturnValue:
    from broker.services.catchup import catch_up

    rt = runtime()
    with rt.db.begin() as session:
        _row(session, name)
    try:
        result = catch_up(rt.db, rt.box, name)
    except LookupError as exc:
        flash(str(exc).strip("'\""), "error")
        return redirect(url_for("console_sources.show", name=name), 303)
    if result.first_event_id:
        rt.publisher.normalise(result.first_event_id)
    if result.error:
        flash(f"Catch-up of {name} failed after {result.polled} polled: {result.error}", "error")
    else:
        flash(f"Catch-up of {name}: {result.polled} order versions polled, {result.stored} new.")
    return redirect(url_for("console_sources.show", name=name), 303)


@bp.route("/<name>/enabled", methods=["POST"])
@requires("admin")
def enable(name: str) -> ResponseReturnValue:
    enabled = request.form.get("enabled") == "true"
    try:
        set_enabled(runtime().db, Source, name, enabled, actor=actor())
    except SetupError as exc:
        abort(404, str(exc))
    runtime().sources.forget(name)
    flash(f"Source {name} {'enabled' if enabled else 'disabled: its webhooks answer 404'}.")
    return redirect(url_for("console_sources.show", name=name), 303)


@bp.route("/<name>/events/<event_id>/reprocess", methods=["POST"])
@requires("operate")
def reprocess(name: str, event_id: str) -> ResponseReturnValue:
    """Normalise a rejected event again, after its cause was fixed (a setting, a credential)."""
    from broker.services.intake import normalise_event

    rt = runtime()
    with rt.db.begin() as session:
        source_id = _row(session, name).id
        event = session.get(InboundEvent, event_id)
        if event is None or event.source_id != source_id:
            abort(404, f"no event {event_id} from source {name}")
    result = normalise_event(rt.db, event_id, force=True, box=rt.box, actor=actor())
    wake(result.wake)
    if result.released:
        rt.publisher.normalise(event_id)
    if result.status == EventStatus.NORMALISED:
        flash(f"Event {event_id} reprocessed: {len(result.outcomes)} order version(s) accepted.")
    elif result.status == EventStatus.REJECTED:
        flash(f"Event {event_id} is still rejected: {result.error}", "error")
    else:
        flash(f"Event {event_id} reprocessed: {result.status}"
              + (f" ({result.error})" if result.error else "") + ".")
    return redirect(url_for("console_sources.show", name=name) + "#rejected", 303)
