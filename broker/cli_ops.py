"""CLI for the operator's day: orders and their status, deliveries, dead letters, parked
deliveries, inbound events; replay and retry.

An order's status is the one the console and the API show (broker.services.status): booked,
partly booked, parked, dead, waiting or not routed, with the back-office references.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from broker.cli_common import JSON, actor, fail, out, rt, setup_call, table

STATE_CHOICES = ["booked", "partly-booked", "parked", "dead", "waiting", "not-routed"]


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


def _short(text: str | None, width: int = 70) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(value: str | None) -> str:
    """An ISO time as a table shows it: to the second, UTC."""
    return (value or "").replace("T", " ")[:19]


def _wake(connectors: list[tuple[str, str]]) -> None:
    if connectors:
        rt().publisher.wake(connectors)


# --- orders ----------------------------------------------------------------------------

@click.group("orders", cls=_Group)
def orders_group() -> None:
    """Orders: their status, references and journeys."""


@orders_group.command("list", short_help="The latest orders with status and references.")
@click.option("--status", "state", type=click.Choice(STATE_CHOICES), default=None,
              help="Only orders in this status (from their deliveries).")
@click.option("--source", default=None)
@click.option("--number", default=None, help="Order number, with or without '#'.")
@click.option("--email", default=None)
@click.option("--reference", default=None, help="A back-office reference, e.g. SO-00042.")
@click.option("--cancelled", is_flag=True, help="Only cancelled orders.")
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@JSON
def orders_list(state: str | None, source: str | None, number: str | None, email: str | None,
                reference: str | None, cancelled: bool, limit: int, as_json: bool) -> None:
    """The latest orders, newest first, with their status and back-office references."""
    from broker.services.queries import list_orders
    from broker.services.status import parse_state

    with rt().db.begin() as session:
        rows = list_orders(session, limit=limit, state=parse_state(state) if state else None,
                           source=source, number=number, email=email, reference=reference,
                           status="cancelled" if cancelled else None)
    text = [{**r, "status": r["state"] + (" (cancelled)" if r["status"] == "cancelled" else ""),
             "number": r["number"] or r["external_id"], "total": f"{r['total']} {r['currency']}",
             "received": _when(r["received_at"]), "detail": _short(r["detail"], 60)} for r in rows]
    out(rows, as_json, table(text, ["id", "number", "source", "status", "total", "received", "detail"]))


@orders_group.command("show", short_help="An order's status and journey.")
@click.argument("order_id")
@JSON
def orders_show(order_id: str, as_json: bool) -> None:
    """An order's status, deliveries, timeline (repeated errors folded) and versions."""
    from broker.services.queries import order_detail
    from broker.services.status import delivery_label, fold_timeline

    with rt().db.begin() as session:
        detail = order_detail(session, order_id)
    if detail is None:
        fail(f"no order {order_id}")
    if as_json:
        out(detail, True)
        return
    cancelled = " (cancelled)" if detail["status"] == "cancelled" else ""
    click.echo(f"order {detail['number'] or detail['external_id']}  {detail['state']}{cancelled}  "
               f"{detail['total']} {detail['currency']}  (source {detail['source']}, "
               f"version {detail['version']}, id {detail['id']})")
    click.echo(f"  {detail['detail']}")
    rows = [{**d, "status": delivery_label({**d, "connector_enabled": None})[0],
             "last_error": _short(d["last_error"], 60)} for d in detail["deliveries"]]
    click.echo("\ndeliveries:")
    click.echo(table(rows, ["id", "connector", "version", "action", "status", "attempts", "reference",
                            "last_error"]))
    click.echo("\ntimeline:")
    for step in fold_timeline(detail["timeline"]):
        repeat = f"  [{step['repeat']}]" if step["repeat"] else ""
        click.echo(f"  {_when(step['at'])}  {step['step']:<11} {step['message']}{repeat}")


@orders_group.command("replay", short_help="Deliver dead or parked deliveries again.")
@click.argument("order_id")
@JSON
def orders_replay(order_id: str, as_json: bool) -> None:
    """Deliver an order's dead or parked deliveries again, and route it to connectors it never
    reached (idempotent: never books twice)."""
    from broker.services.operations import replay_order

    wake = setup_call(replay_order, rt().db, order_id, actor=actor())
    _wake(wake)
    out({"id": order_id, "replayed": len(wake)}, as_json,
        f"replayed {len(wake)} deliver{'y' if len(wake) == 1 else 'ies'} of {order_id}"
        if wake else f"nothing to replay: no delivery of {order_id} is dead or parked")


# --- deliveries ------------------------------------------------------------------------

@click.group("deliveries", cls=_Group, short_help="Deliveries: list, show, retry, replay.")
def deliveries_group() -> None:
    """Deliveries (one order version to one connector): list, show, retry, replay."""


@deliveries_group.command("list")
@click.option("--status", type=click.Choice(["pending", "leased", "booked", "parked", "dead",
                                             "superseded"]), default=None)
@click.option("--connector", default=None)
@click.option("--order", "order_id", default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=50, show_default=True)
@JSON
def deliveries_list(status: str | None, connector: str | None, order_id: str | None, limit: int,
                    as_json: bool) -> None:
    """The latest deliveries, newest first."""
    from broker.services.queries import list_deliveries
    from broker.services.status import delivery_label

    with rt().db.begin() as session:
        rows = list_deliveries(session, status=status, connector=connector, order_id=order_id,
                               limit=limit)
    text = [{**r, "status": delivery_label(r)[0], "updated": _when(r["updated_at"]),
             "last_error": _short(r["last_error"], 50)} for r in rows]
    out(rows, as_json, table(text, ["id", "order_id", "connector", "version", "action", "status",
                                    "attempts", "reference", "updated", "last_error"]))


@deliveries_group.command("show")
@click.argument("delivery_id")
@JSON
def deliveries_show(delivery_id: str, as_json: bool) -> None:
    """One delivery with every attempt (identical failures folded)."""
    from broker.services.queries import delivery_detail
    from broker.services.status import delivery_label, fold_attempts

    with rt().db.begin() as session:
        detail = delivery_detail(session, delivery_id)
    if detail is None:
        fail(f"no delivery {delivery_id}")
    if as_json:
        out(detail, True)
        return
    click.echo(f"delivery {detail['id']}  {delivery_label(detail)[0]}  to {detail['connector']}  "
               f"(order {detail['order_id']}, version {detail['version']}, {detail['action']})")
    if detail["reference"]:
        click.echo(f"  reference {detail['reference']}")
    if detail["parked_reason"]:
        click.echo(f"  parked: {detail['parked_reason']} ({detail['parked_kind']} {detail['parked_key']})")
    if detail["last_error"]:
        click.echo(f"  last error: {detail['last_error']}")
    for a in fold_attempts(detail["attempt_log"]):
        numbers = f"#{a['number']}" + (f"-{a['last_number']} (x{a['count']})" if a["count"] > 1 else "")
        click.echo(f"  {numbers:<14} {_when(a['started_at'])}  {a['outcome']:<11} "
                   f"{a['reference'] or a['error'] or ''}")


@deliveries_group.command("retry")
@click.argument("delivery_id")
@JSON
def deliveries_retry(delivery_id: str, as_json: bool) -> None:
    """Attempt a pending delivery now instead of at its next retry."""
    from broker.services.operations import retry_delivery

    _wake(setup_call(retry_delivery, rt().db, delivery_id, actor=actor()))
    out({"id": delivery_id, "retried": True}, as_json, f"delivery {delivery_id} will be attempted now")


@deliveries_group.command("replay")
@click.argument("delivery_id")
@JSON
def deliveries_replay(delivery_id: str, as_json: bool) -> None:
    """Make a dead or parked delivery due again (idempotent: never books twice)."""
    from broker.services.operations import replay_delivery

    _wake(setup_call(replay_delivery, rt().db, delivery_id, actor=actor()))
    out({"id": delivery_id, "replayed": True}, as_json, f"delivery {delivery_id} is due again")


# --- dead letters and parked deliveries -------------------------------------------------

@click.group("dead-letters", cls=_Group, short_help="Dead letters by reason; replay them.")
def dead_letters_group() -> None:
    """Dead deliveries grouped by reason; replay a whole group after fixing its cause."""


@dead_letters_group.command("list")
@click.option("--connector", default=None)
@JSON
def dead_letters_list(connector: str | None, as_json: bool) -> None:
    """Dead letters by connector and reason, biggest first (REASON ids for `replay`)."""
    from broker.services.dead_letters import dead_letter_groups

    with rt().db.begin() as session:
        groups = dead_letter_groups(session, connector=connector)
    for g in groups:
        g["oldest"], g["newest"] = g["oldest"].isoformat(), g["newest"].isoformat()
    text = [{**g, "newest": _when(g["newest"]), "message": _short(g["message"], 80)} for g in groups]
    out(groups, as_json, table(text, ["connector", "reason", "count", "newest", "error_class", "message"]))


@dead_letters_group.command("replay")
@click.option("--connector", default=None, help="Only this connector's dead letters.")
@click.option("--reason", default=None, help="Only this reason (an id from `dead-letters list`).")
@click.option("--yes", is_flag=True, help="Replay without asking (otherwise: asked, or a dry run).")
@JSON
def dead_letters_replay(connector: str | None, reason: str | None, yes: bool, as_json: bool) -> None:
    """Replay the dead letters the filters select (all of them without a filter)."""
    from broker.services.dead_letters import dead_letter_ids
    from broker.services.operations import replay_dead_letters

    runtime = rt()
    selection = {"connector": connector, "reason": reason}
    with runtime.db.begin() as session:
        ids = dead_letter_ids(session, **selection)
    if not ids:
        out({"matched": 0, "replayed": 0, "dry_run": False}, as_json, "no dead letter matches")
        return
    if not yes and not (sys.stdin.isatty() and not as_json and click.confirm(
            f"Replay {len(ids)} dead letter(s)? Pushes are idempotent: nothing is booked twice")):
        out({"matched": len(ids), "replayed": 0, "dry_run": True}, as_json,
            f"{len(ids)} dead letter(s) match; nothing replayed (add --yes to replay them)")
        return
    replayed, wake = replay_dead_letters(runtime.db, ids, selection=selection, actor=actor())
    _wake(wake)
    out({"matched": len(ids), "replayed": replayed, "dry_run": False}, as_json,
        f"replayed {replayed} of {len(ids)} dead letter(s)")


@click.group("parked", cls=_Group, short_help="What parked deliveries wait for.")
def parked_group() -> None:
    """Parked deliveries grouped by what they wait for (a mapping, a setting, a decision)."""


@parked_group.command("list")
@click.option("--connector", default=None)
@JSON
def parked_list(connector: str | None, as_json: bool) -> None:
    """What parked deliveries wait for, biggest group first, with what resumes them."""
    from broker.services.links import mapping_gaps
    from broker.services.status import parked_hint

    with rt().db.begin() as session:
        groups = mapping_gaps(session, connector=connector)
    for g in groups:
        g["resume"] = parked_hint(g["connector"], g["reason"], g["kind"], g["key"])
    out(groups, as_json, table(groups, ["connector", "reason", "key", "deliveries", "resume"]))


# --- inbound events --------------------------------------------------------------------

@click.group("events", cls=_Group)
def events_group() -> None:
    """Inbound webhook events and polled versions."""


@events_group.command("list")
@click.option("--status", type=click.Choice(["received", "normalised", "rejected", "ignored",
                                             "parked"]), default=None)
@click.option("--source", "source_name", default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@JSON
def events_list(status: str | None, source_name: str | None, limit: int, as_json: bool) -> None:
    """The latest inbound events (e.g. --status rejected to find what needs a fix)."""
    from broker.services.queries import list_events

    with rt().db.begin() as session:
        rows = list_events(session, status=status, source=source_name, limit=limit)
    text = [{**r, "received_at": _when(r["received_at"]), "error": _short(r["error"], 70)} for r in rows]
    out(rows, as_json, table(text, ["id", "source", "topic", "status", "received_at", "error"]))


@events_group.command("show")
@click.argument("event_id")
def events_show(event_id: str) -> None:
    """One stored event (JSON)."""
    from broker.services.queries import event_detail

    with rt().db.begin() as session:
        detail = event_detail(session, event_id)
    if detail is None:
        fail(f"no event {event_id}")
    out(detail, True)


@events_group.command("reprocess")
@click.argument("event_id")
@JSON
def events_reprocess(event_id: str, as_json: bool) -> None:
    """Normalise a stored event again (after fixing a mapping problem)."""
    from broker.services.intake import normalise_event

    runtime = rt()
    result: Any = setup_call(normalise_event, runtime.db, event_id, force=True, box=runtime.box,
                             actor=actor())
    _wake(result.wake)
    if result.released:
        runtime.publisher.normalise(event_id)
    data = {"event_id": event_id, "status": result.status, "error": result.error,
            "orders": [o.order_id for o in result.outcomes]}
    out(data, as_json, f"event {event_id}: {result.status}" + (f" ({result.error})" if result.error else ""))


# --- what needs a person ---------------------------------------------------------------

@click.command("problems", short_help="What needs a person now, worst first.")
@JSON
def problems_command(as_json: bool) -> None:
    """What needs a person now, worst first (the console's 'Needs attention')."""
    from broker.services.problems import problems

    runtime = rt()
    with runtime.db.begin() as session:
        found = [p.as_dict() for p in problems(session, runtime.box)]
    if as_json or not found:
        out(found, as_json, "nothing needs you: every delivery is booked or on its way")
        return
    for p in found:
        when = f"  ({p['when']} {_when(p['since'])} UTC)" if p["since"] else ""
        click.echo(f"{'!!' if p['tone'] == 'bad' else ' !'} {p['what']}{when}")
        if p["detail"]:
            click.echo(f"   {p['detail']}")
