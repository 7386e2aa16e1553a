"""Dead letters in the console: grouped by connector and reason so one fix is replayed
together (operators, with the count confirmed), and the dead deliveries one by one."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from broker.console.auth import requires
from broker.console.common import actor, page_limit, runtime, wake
from broker.services import queries, throttle
from broker.services.dead_letters import dead_letter_groups, dead_letter_ids
from broker.services.operations import replay_dead_letters

bp = Blueprint("console_dead_letters", __name__, url_prefix="/console/dead-letters")
GROUPS_SHOWN = 100  # reasons on the page; elided messages keep their number small


@bp.route("/", methods=["GET"])
@requires("orders:read")
def index() -> ResponseReturnValue:
    connector = request.args.get("connector") or None
    limit, before = page_limit(), request.args.get("before") or None
    with runtime().db.begin() as session:
        groups = dead_letter_groups(session, connector=connector)
        items = queries.list_deliveries(session, status="dead", connector=connector, before=before,
                                        limit=limit)
    args = {"connector": connector} if connector else {}
    return render_template(
        "console/dead_letters.html", groups=groups[:GROUPS_SHOWN], more_groups=len(groups) > GROUPS_SHOWN,
        items=items, connector=connector,
        next_url=url_for("console_dead_letters.index", **args, before=items[-1]["id"])
        if len(items) == limit else None,
        first_url=url_for("console_dead_letters.index", **args) if before else None)


@bp.route("/replay", methods=["POST"])
@requires("operate")
def replay() -> ResponseReturnValue:
    """Replay a group; the count the operator saw must still be the count that matches."""
    rt = runtime()
    selection = {key: request.form.get(key) or None for key in ("connector", "reason")}
    try:
        confirmed = int(request.form.get("confirm", ""))
    except ValueError:
        confirmed = -1
    throttle.admit(rt.db, throttle.BULK_OPERATIONS, actor(), "bulk replays")
    with rt.db.begin() as session:
        ids = dead_letter_ids(session, **selection)
    if confirmed != len(ids):
        flash(f"{len(ids)} dead letters match now, not {confirmed}; nothing was replayed. Check them "
              "again and replay.", "error")
    else:
        replayed, connectors = replay_dead_letters(rt.db, ids, selection=selection, actor=actor())
        wake(connectors)
        flash(f"Replayed {replayed} dead letters; they are due again.")
    return redirect(url_for("console_dead_letters.index"), 303)
