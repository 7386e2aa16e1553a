"""Connector commands about delivery: prove a connector against its back office before going
live (`connectors kit`), and cap its pushes in flight (`connectors limit`)."""

from __future__ import annotations

import click

from broker.cli_common import JSON, actor, fail, out, rt, setup_call, table


@click.command("kit")
@click.argument("name")
@click.option("--sku", "skus", multiple=True, required=True,
              help="A product code that exists in the back office (give two).")
@click.option("--currency", default="USD", show_default=True,
              help="The currency of the scratch orders (the company's, usually).")
@click.option("--keep", is_flag=True, help="Leave the scratch orders in the back office.")
@JSON
def connectors_kit(name: str, skus: tuple[str, ...], currency: str, keep: bool, as_json: bool) -> None:
    """Run the contract kit's live cases against connector NAME with scratch orders
    (external ids FOBO-KIT-...), then discard them as far as the back office allows."""
    from sqlalchemy import select

    from broker.models import Connector
    from connectors.live_kit import LiveKit

    if len(skus) != 2:
        fail("give two --sku values: product codes that exist in the back office")
    runtime = rt()
    with runtime.db.begin() as session:
        row = session.execute(select(Connector).where(Connector.name == name)).scalar_one_or_none()
    if row is None:
        fail(f"no connector named {name!r}")

    # A fresh instance per step, as separate worker processes would have.
    kit = LiveKit(lambda: runtime.new_connector(row), (skus[0], skus[1]), currency)
    results = kit.run()
    cleanup = [] if keep else kit.clean_up()
    rows = [{"case": r.case, "result": "pass" if r.passed else "FAIL", "detail": r.detail}
            for r in [*results, *cleanup]]
    out(rows, as_json, table(rows, ["case", "result", "detail"]))
    if not all(r.passed for r in results + cleanup):
        raise SystemExit(1)


@click.command("limit")
@click.argument("name")
@click.argument("max_in_flight", type=click.IntRange(min=0, max=64))
@JSON
def connectors_limit(name: str, max_in_flight: int, as_json: bool) -> None:
    """Let at most MAX_IN_FLIGHT pushes to connector NAME run at once, across all workers
    (0: the kind's default, e.g. 1 for Tryton, whose invoice numbering does not lock)."""
    from broker.services.setup import set_push_limit
    from connectors.registry import connector_class

    runtime = rt()
    row = setup_call(set_push_limit, runtime.db, name, max_in_flight or None, actor=actor())
    default = connector_class(row.kind).max_in_flight
    effective = row.max_in_flight or default
    out({"name": name, "max_in_flight": effective, "kind_default": default}, as_json,
        f"connector {name}: at most {effective} push{'es' if effective != 1 else ''} in flight"
        f"{'' if row.max_in_flight else ' (the kind default)'}")
