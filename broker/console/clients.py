"""API clients in the console (admins): list, create (the secret is shown once), revoke."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from broker.console.auth import requires
from broker.console.common import actor, names, page_limit, runtime
from broker.identity.server import SCOPES
from broker.models import Client, Source
from broker.services.setup import create_client, revoke_client
from broker.services.sources import REST_KIND, SetupError

bp = Blueprint("console_clients", __name__, url_prefix="/console/clients")


def _page(errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
          status: int = 200) -> ResponseReturnValue:
    limit, after = page_limit(), request.args.get("after")
    query = (select(Client, Source.name).outerjoin(Source, Source.id == Client.source_id)
             .order_by(Client.name).limit(limit))
    if after:
        query = query.where(Client.name > after)
    with runtime().db.begin() as session:
        items = [{"name": c.name, "client_id": c.client_id, "scope": c.scope, "source": s,
                  "revoked": c.revoked, "created_at": c.created_at} for c, s in session.execute(query)]
        rest_sources = names(session, Source, Source.kind == REST_KIND)
    return render_template("console/clients.html", items=items, scopes=SCOPES, rest_sources=rest_sources,
                           errors=errors or {}, values=values or {},
                           next_after=items[-1]["name"] if len(items) == limit else None), status


@bp.route("/", methods=["GET"])
@requires("admin")
def index() -> ResponseReturnValue:
    return _page()


@bp.route("/", methods=["POST"])
@requires("admin")
def create() -> ResponseReturnValue:
    rt = runtime()
    name = request.form.get("name", "").strip()
    scope = " ".join(s for s in SCOPES if request.form.get(f"scope.{s}"))
    source = request.form.get("source", "").strip() or None
    values = {"name": name, "source": source or "", "scope": scope}
    if not scope:
        return _page({"scope": "choose at least one scope"}, values, 422)
    with rt.db.begin() as session:
        if session.execute(select(Client.id).where(Client.name == name)).first():
            return _page({"name": f"a client named {name!r} exists already"}, values, 422)
    try:
        client, secret = create_client(rt.db, rt.box, name, scope, source, actor=actor())
    except SetupError as exc:
        return _page({"name": str(exc)}, values, 422)
    return render_template("console/client_secret.html", name=name, client_id=client.client_id, secret=secret,
                           token_url=f"{rt.settings.public_url}/oauth/token", scope=scope)


@bp.route("/<name>/revoke", methods=["POST"])
@requires("admin")
def revoke(name: str) -> ResponseReturnValue:
    try:
        changed = revoke_client(runtime().db, name, actor=actor())
    except SetupError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Client {name} revoked: its tokens stop working now." if changed
              else f"Client {name} was revoked already.")
    return redirect(url_for("console_clients.index"), 303)
