"""CLI for personal data: the retention purge on demand and erasing one customer."""

from __future__ import annotations

import sys

import click

from broker.cli_common import JSON, actor, fail, out, rt, setup_call, table


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group("data", cls=_Group)
def data_group() -> None:
    """Stored data: retention (BROKER_RETENTION_*)."""


@data_group.command("purge", short_help="Delete data past its retention window now.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@JSON
def data_purge(dry_run: bool, as_json: bool) -> None:
    """Delete raw events, order versions, delivery attempts, timeline and audit entries older
    than their BROKER_RETENTION_* window, in small batches (what the beat also does every
    BROKER_RETENTION_INTERVAL seconds). Nothing an unfinished order still needs is deleted."""
    from broker.services import retention

    runtime = rt()
    policy = retention.Policy.from_settings(runtime.settings)
    report = retention.report(retention.purge(runtime.db, policy, dry_run=dry_run))
    if not dry_run:  # a person deleted data: say who, when and how much
        from broker.services import audit

        with runtime.db.begin() as session:
            audit.record(session, actor=actor(), action="data.purge", target_type="data",
                         target=None, after={name: r["rows"] for name, r in report.items()})
    done = "would delete" if dry_run else "deleted"
    rows = [{"data": name, "keep": f"{r['keep_days']} days" if r["keep_days"] else "for ever",
             "older than": (r["cutoff"] or "")[:19].replace("T", " "), done: str(r["rows"]),
             "batches": str(r["batches"]),
             **({"+deliveries": str(r["related"].get("deliveries", 0)),
                 "+attempts": str(r["related"].get("delivery_attempts", 0))}
                if name == "versions" else {})}
            for name, r in report.items()]
    columns = ["data", "keep", "older than", done, *([] if dry_run else ["batches"]),
               "+deliveries", "+attempts"]
    text = table(rows, columns)
    if policy.archive_dir and not dry_run:
        text += f"\narchived to {policy.archive_dir}"
    out({"dry_run": dry_run, "archive_dir": str(policy.archive_dir or "") or None, "data": report},
        as_json, text)


@click.group("customers", cls=_Group)
def customers_group() -> None:
    """Customers' personal data."""


@customers_group.command("erase", short_help="Erase one customer's personal data.")
@click.argument("email")
@click.option("--force", is_flag=True,
              help="Erase even while orders of the customer wait to be delivered (they are then "
                   "pushed without the customer's data).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@JSON
def customers_erase(email: str, force: bool, yes: bool, as_json: bool) -> None:
    """Remove the name, email, phone and addresses of the customer with EMAIL from every
    order, version, raw event, timeline, identity link and audit entry; orders keep their
    totals, state and journey. Recorded in the audit log under a hash of the email. Running it
    again is safe."""
    from broker.services.erasure import erase_customer, normalise_email

    setup_call(normalise_email, email)
    if not yes:
        if not sys.stdin.isatty():
            fail("erasing cannot be undone: add --yes to erase without being asked")
        click.confirm("Erase this customer's personal data? This cannot be undone", abort=True)
    result = setup_call(erase_customer, rt().db, email, actor=actor(), force=force)
    data = result.as_dict()
    if result.already_erased_at:
        text = f"already erased on {result.already_erased_at}; nothing about this customer is left"
    else:
        counts = {k: v for k, v in data.items()
                  if isinstance(v, int) and not isinstance(v, bool) and v}
        text = (f"erased ({result.subject}): "
                + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))
    out(data, as_json, text)
