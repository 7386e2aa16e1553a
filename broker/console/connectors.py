"""Connectors in the console (admins): the list, a form generated from the kind's config
schema to create or change one, 'Test connection', enable and disable.

Every change goes through broker.services.setup, so it is validated by the kind's schema and
audited under the signed-in person. Secrets are write-only: the form never shows them, and an
empty secret field on an edit keeps the stored value.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from broker.console.auth import requires
from broker.console.common import actor, page_limit, runtime
from broker.console.forms import (
    FormField,
    attach_errors,
    fill_defaults,
    fill_stored,
    fill_submitted,
    read_form,
    schema_fields,
    walk,
)
from broker.logging import redact
from broker.models import Connector, Delivery, DeliveryStatus
from broker.services.setup import (
    InvalidConfig,
    set_enabled,
    upsert_connector,
    validate_connector_config,
)
from broker.services.sources import SetupError, check_name
from connectors.errors import ConnectorError
from connectors.registry import connector_kinds
from connectors.ssrf import Refused, check_settings

log = logging.getLogger(__name__)
bp = Blueprint("console_connectors", __name__, url_prefix="/console/connectors")
RESERVED = {"new", "callback"}  # console URLs under /console/connectors/


def _form(kind: str) -> list[FormField]:
    cls = connector_kinds().get(kind)
    if cls is None:
        abort(404, f"no connector kind {kind!r}; installed: {', '.join(sorted(connector_kinds()))}")
    return schema_fields(cls.Config())


def _invalid(form: list[FormField]) -> bool:
    return any(f.errors for f in walk(form))


def _row(session: Any, name: str) -> Connector:
    row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if row is None:
        abort(404, f"no connector named {name!r}")
    return row


def _url_errors(config: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """Outbound URLs the SSRF guard refuses, by config path (every leaf checked on its own)."""
    errors: dict[str, list[str]] = {}
    for key, value in config.items():
        path = prefix + key
        if isinstance(value, dict):
            errors.update(_url_errors(value, path + "."))
            continue
        try:
            check_settings({key: value})
        except Refused as exc:
            errors[path] = [str(exc)]
    return errors


def _save(name: str, kind: str, form: list[FormField], stored: list[str]) -> tuple[list[str], bool]:
    """Validate and store the submitted form; returns (errors for no field, saved).

    `stored` names the secrets the connector has already (an edit may leave them empty).
    """
    config, errors = read_form(form, request.form)
    errors.update(_url_errors(config))
    if errors:  # JSON that does not parse, a refused URL: save nothing, show what else is wrong
        try:
            validate_connector_config(kind, config)
        except InvalidConfig as exc:
            for path, messages in exc.fields.items():
                if path not in stored:
                    errors.setdefault(path, messages)
        except SetupError:
            pass
    else:
        try:
            upsert_connector(runtime().db, runtime().box, name, kind, config, actor=actor())
            return [], True
        except InvalidConfig as exc:
            errors = exc.fields
        except SetupError as exc:
            return [str(exc)], False
    return attach_errors(form, errors), False


@bp.route("/", methods=["GET"])
@requires("admin")
def index() -> ResponseReturnValue:
    from broker.services.custody import consent_health

    rt = runtime()
    limit, after = page_limit(), request.args.get("after")
    query = select(Connector).order_by(Connector.name).limit(limit)
    if after:
        query = query.where(Connector.name > after)
    with rt.db.begin() as session:
        rows = session.execute(query).scalars().all()
        items = [{"name": r.name, "kind": r.kind, "enabled": r.enabled,
                  "consent": consent_health(session, rt.box, r)} for r in rows]
    return render_template("console/connectors.html", items=items, kinds=sorted(connector_kinds()),
                           next_after=items[-1]["name"] if len(items) == limit else None)


@bp.route("/new", methods=["GET"])
@requires("admin")
def new() -> ResponseReturnValue:
    kind = request.args.get("kind", "")
    if not kind:
        return render_template("console/connector_kind.html", kinds=sorted(connector_kinds()))
    form = _form(kind)
    fill_defaults(form)
    return render_template("console/connector_form.html", kind=kind, form=form, name="", creating=True,
                           loose=[], name_error=None)


@bp.route("/new", methods=["POST"])
@requires("admin")
def create() -> ResponseReturnValue:
    kind, name = request.form.get("kind", ""), request.form.get("name", "").strip()
    form = _form(kind)
    name_error = None
    try:
        check_name(name, "connector")
    except SetupError as exc:
        name_error = str(exc)
    with runtime().db.begin() as session:
        if name in RESERVED:
            name_error = f"{name!r} is reserved by the console; choose another name"
        elif session.execute(select(Connector.id).where(Connector.name == name)).first():
            name_error = f"a connector named {name!r} exists already"
    loose, saved = ([], False) if name_error else _save(name, kind, form, [])
    if saved:
        flash(f"Connector {name} created.")
        return redirect(url_for("console_connectors.edit", name=name), 303)
    fill_submitted(form, request.form)
    return render_template("console/connector_form.html", kind=kind, form=form, name=name, creating=True,
                           loose=loose, name_error=name_error, invalid=_invalid(form)), 422


def _edit_page(name: str, form: list[FormField] | None = None, loose: list[str] | None = None,
               status: int = 200) -> ResponseReturnValue:
    from broker.services.custody import consent_health

    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        secrets = sorted(rt.box.decrypt(row.secrets_encrypted, {}))
        consent = consent_health(session, rt.box, row)
        counts = dict(session.execute(
            select(Delivery.status, func.count()).where(
                Delivery.connector_id == row.id,
                Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.LEASED, DeliveryStatus.PARKED,
                                     DeliveryStatus.DEAD]))
            .group_by(Delivery.status)).all())
        kind, enabled, config = row.kind, row.enabled, dict(row.config or {})
        session.expunge(row)
    if form is None:
        form = _form(kind)
        fill_stored(form, config, secrets)
    else:  # a refused submit: what was typed, and which secrets are stored
        fill_submitted(form, request.form, secrets)
    return render_template("console/connector_form.html", kind=kind, form=form, name=name, creating=False,
                           loose=loose or [], name_error=None, enabled=enabled, consent=consent,
                           counts=counts, invalid=_invalid(form),
                           warnings=connector_warnings(rt, row)), status


def connector_warnings(rt: Any, row: Any) -> list[str]:
    """What the stored configuration weakens (e.g. an http connector without lookup_url is
    at-least-once); none for a config the kind refuses (its errors say so)."""
    try:
        return rt.connector(row).warnings()
    except Exception:
        return []


@bp.route("/<name>", methods=["GET"])
@requires("admin")
def edit(name: str) -> ResponseReturnValue:
    return _edit_page(name)


@bp.route("/<name>", methods=["POST"])
@requires("admin")
def update(name: str) -> ResponseReturnValue:
    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        kind, stored = row.kind, list(rt.box.decrypt(row.secrets_encrypted, {}))
    form = _form(kind)
    loose, saved = _save(name, kind, form, stored)
    if saved:
        flash(f"Connector {name} saved.")
        return redirect(url_for("console_connectors.edit", name=name), 303)
    return _edit_page(name, form, loose, 422)


@bp.route("/<name>/check", methods=["POST"])
@requires("admin")
def check(name: str) -> ResponseReturnValue:
    """Test the connection and credentials, as `broker connectors check` does."""
    rt = runtime()
    with rt.db.begin() as session:
        row = _row(session, name)
        session.expunge(row)
    try:
        rt.connector(row).check()
    except Exception as exc:  # a ConnectorError, or a stored config the kind now refuses
        if not isinstance(exc, ConnectorError):
            log.warning("check of connector %s raised %s", name, type(exc).__name__, exc_info=True)
        flash(redact(f"Connection test of {name} failed: {exc}"), "error")
    else:
        flash(f"Connection test of {name} passed: the back office answers and accepts the credentials.")
        for warning in connector_warnings(rt, row):
            flash(f"Warning: {warning}", "warning")
    return redirect(url_for("console_connectors.edit", name=name), 303)


@bp.route("/<name>/enabled", methods=["POST"])
@requires("admin")
def enable(name: str) -> ResponseReturnValue:
    enabled = request.form.get("enabled") == "true"
    try:
        set_enabled(runtime().db, Connector, name, enabled, actor=actor())
    except SetupError as exc:
        abort(404, str(exc))
    flash(f"Connector {name} {'enabled' if enabled else 'disabled: its deliveries wait'}.")
    return redirect(url_for("console_connectors.edit", name=name), 303)
