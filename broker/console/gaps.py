"""Parked orders in the console: mapping gaps ('SKU X has no product in Tryton' → map it → the
parked orders resume), the identity review queue, and the mappings themselves.

Reading what waits is for every role; mapping is configuration, so adding or removing a
mapping is for admins. `add_mapping` resumes the deliveries parked for it in the same
transaction, and the connectors are woken after the commit.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from broker.console.auth import requires
from broker.console.common import (
    PAGE,
    actor,
    decode_cursor,
    encode_cursor,
    names,
    page_limit,
    runtime,
    wake,
)
from broker.models import Connector
from broker.services.links import add_mapping, list_mappings, mapping_gaps, remove_mapping
from broker.services.sources import SetupError
from connectors.base import LINK_KINDS

bp = Blueprint("console_gaps", __name__, url_prefix="/console")
REVIEW = "identity review"


def _offset() -> int:
    try:
        return max(0, int(request.args.get("offset", 0)))
    except ValueError:
        return 0


def _groups(review: bool) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """One page of parked groups (identity reviews, or everything else), and the page links."""
    connector = request.args.get("connector") or None
    with runtime().db.begin() as session:
        groups = [g for g in mapping_gaps(session, connector=connector) if (g["reason"] == REVIEW) == review]
    offset, endpoint = _offset(), "console_gaps.reviews" if review else "console_gaps.index"
    args = {"connector": connector} if connector else {}
    chunk = groups[offset:offset + PAGE]
    return (chunk, url_for(endpoint, **args, offset=offset + PAGE) if offset + PAGE < len(groups) else None,
            url_for(endpoint, **args) if offset else None)


@bp.route("/parked", methods=["GET"])
@requires("orders:read")
def index() -> ResponseReturnValue:
    groups, next_url, first_url = _groups(review=False)
    return render_template("console/gaps.html", groups=groups, next_url=next_url, first_url=first_url,
                           connector=request.args.get("connector"))


@bp.route("/reviews", methods=["GET"])
@requires("orders:read")
def reviews() -> ResponseReturnValue:
    groups, next_url, first_url = _groups(review=True)
    return render_template("console/reviews.html", groups=groups, next_url=next_url, first_url=first_url)


def _back(default: str) -> str:
    target = request.form.get("next", "")
    return target if target.startswith("/console/") and "//" not in target and "\\" not in target else default


@bp.route("/mappings", methods=["POST"])
@requires("admin")
def add() -> ResponseReturnValue:
    form = request.form
    connector, kind = form.get("connector", ""), form.get("kind", "")
    key, value = form.get("key", "").strip(), form.get("value", "").strip()
    back = _back(url_for("console_gaps.mappings"))
    try:
        resumed, connectors = add_mapping(runtime().db, connector, kind, key, value, actor=actor())
    except SetupError as exc:
        flash(f"Not mapped: {exc}", "error")
        return redirect(back, 303)
    wake(connectors)
    flash(f"Mapped {kind} {key} to {value} in {connector}"
          + (f"; {resumed} parked deliveries resume." if resumed else "."))
    return redirect(back, 303)


@bp.route("/mappings/remove", methods=["POST"])
@requires("admin")
def remove() -> ResponseReturnValue:
    form = request.form
    try:
        removed = remove_mapping(runtime().db, form.get("connector", ""), form.get("kind", ""),
                                 form.get("key", ""), actor=actor())
    except SetupError as exc:
        flash(str(exc), "error")
        removed = False
    else:
        flash(f"Mapping {form.get('kind')} {form.get('key')} removed." if removed
              else "There was no such mapping.")
    return redirect(_back(url_for("console_gaps.mappings")), 303)


@bp.route("/mappings", methods=["GET"])
@requires("admin")
def mappings() -> ResponseReturnValue:
    filters = {k: request.args.get(k) or None for k in ("connector", "kind", "key")}
    limit, cursor = page_limit(), request.args.get("cursor")
    after = decode_cursor(cursor, 3)
    with runtime().db.begin() as session:
        items = list_mappings(session, **filters, after=after, limit=limit)  # type: ignore[arg-type]
        connectors = names(session, Connector)
    args = {k: v for k, v in filters.items() if v}
    last = items[-1] if items else None
    return render_template(
        "console/mappings.html", items=items, filters=args, connectors=connectors, kinds=LINK_KINDS,
        next_url=url_for("console_gaps.mappings", **args,
                         cursor=encode_cursor(last["connector"], last["kind"], last["key"]))
        if last and len(items) == limit else None,
        first_url=url_for("console_gaps.mappings", **args) if after else None)
