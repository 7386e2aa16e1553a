"""Console pages: the home page, and connecting a connector to its back office's OAuth 2.0
server (an admin's one-time consent, broker.services.custody)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from broker.console.auth import requires, runtime
from broker.models import Connector

log = logging.getLogger(__name__)
bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static",
               template_folder="templates")
CONSENT_CALLBACK = "/console/connectors/callback"


def _connectors() -> list[dict[str, Any]]:
    from broker.services.custody import consent_health

    rt = runtime()
    with rt.db.begin() as db_session:
        return [{"name": row.name, "kind": row.kind, "enabled": row.enabled,
                 "consent": consent_health(db_session, rt.box, row)}
                for row in db_session.execute(select(Connector).order_by(Connector.name)).scalars()]


@bp.route("/", methods=["GET"])
@requires("orders:read")
def home() -> ResponseReturnValue:
    from broker.console.dashboard import dashboard_context, live_context

    return render_template("console/home.html", connectors=_connectors(), **dashboard_context(),
                           **live_context())


@bp.route("/connectors/<name>/connect", methods=["GET"])
@requires("admin")
def connect(name: str) -> ResponseReturnValue:
    """Start the consent: the admin is sent to the back office's authorization page."""
    from broker.services.custody import ConsentError, begin_consent

    rt = runtime()
    try:
        url, pending = begin_consent(rt.db, rt.box, name, rt.settings.public_url + CONSENT_CALLBACK)
    except ConsentError as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.home"), 303)
    session["consent"] = pending
    return redirect(url, 303)


@bp.route("/connectors/callback", methods=["GET"])
@requires("admin")
def consent_callback() -> ResponseReturnValue:
    """The back office's authorization server sends the admin back here with a code."""
    from broker.services.custody import ConsentError, complete_consent

    rt = runtime()
    pending = session.pop("consent", None)
    if not pending:
        flash("This connection attempt has expired or was started in another browser; "
              "start again.", "error")
        return redirect(url_for("console.home"), 303)
    try:
        result = complete_consent(rt.db, rt.box, pending, request.args.to_dict(),
                                  actor=g.user.actor)
    except ConsentError as exc:
        log.warning("consent for connector %s refused: %s", pending.get("connector"), exc)
        flash(str(exc), "error")
        return redirect(url_for("console.home"), 303)
    rt.publisher.wake(result["wake"])
    flash(f"Connector {pending['connector']} is connected"
          + (f"; {result['resumed']} parked deliveries resume" if result["resumed"] else "") + ".")
    return redirect(url_for("console.home"), 303)
