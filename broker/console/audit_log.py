"""The audit log in the console (admins): who changed what and when, newest first."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, render_template, request, url_for
from flask.typing import ResponseReturnValue

from broker.console.auth import requires
from broker.console.common import page_limit, runtime
from broker.services import audit

bp = Blueprint("console_audit", __name__, url_prefix="/console/audit")
FILTERS = ("action", "actor", "target_type", "target")


@bp.route("/", methods=["GET"])
@requires("admin")
def index() -> ResponseReturnValue:
    filters = {k: request.args.get(k, "").strip() or None for k in FILTERS}
    errors: dict[str, str] = {}
    since = None
    if request.args.get("since"):
        try:
            since = datetime.strptime(request.args["since"], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            errors["since"] = "a date like 2025-01-31"
    limit, before = page_limit(), request.args.get("before") or None
    with runtime().db.begin() as session:
        items = audit.list_entries(session, **filters, since=since, before=before, limit=limit)
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    return render_template(
        "console/audit.html", items=items, args=args, errors=errors,
        next_url=url_for("console_audit.index", **args, before=items[-1]["id"])
        if len(items) == limit else None,
        first_url=url_for("console_audit.index", **args) if before else None)
