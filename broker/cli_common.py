"""Helpers shared by the command-line modules: the runtime, output, failures, the actor."""

from __future__ import annotations

import getpass
import json
import os
from typing import Any

import click
from flask import current_app


def rt() -> Any:
    """The broker runtime of the current Flask app."""
    return current_app.extensions["broker"]


def out(data: Any, as_json: bool, text: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        click.echo(text if text is not None else json.dumps(data, indent=2, default=str))


def fail(message: str) -> None:
    raise click.ClickException(message)


def setup_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    from broker.services.sources import SetupError

    try:
        return fn(*args, **kwargs)
    except (SetupError, LookupError) as exc:
        fail(str(exc))


def actor() -> str:
    """Who runs this command, for the audit log: cli:<OS user>."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return f"cli:uid-{os.getuid()}"


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, "") or "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "") or "").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
