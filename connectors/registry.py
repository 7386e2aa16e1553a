"""Connector kinds found through the entry-point group broker.connectors (built-ins too)."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from connectors.base import Connector

GROUP = "broker.connectors"
log = logging.getLogger(__name__)


@cache
def connector_kinds() -> dict[str, type[Connector]]:
    """Every installed kind by slug; a broken plugin is skipped with a warning naming it."""
    kinds: dict[str, type[Connector]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:
            log.warning("connector plugin %r could not be loaded: %s", ep.name, exc,
                        extra={"entry_point": ep.value})
            continue
        if not (isinstance(cls, type) and issubclass(cls, Connector)) or cls.kind != ep.name:
            log.warning("connector plugin %r is not a Connector whose kind is %r; skipped",
                        ep.name, ep.name)
            continue
        kinds[ep.name] = cls
    return kinds


def connector_class(kind: str) -> type[Connector]:
    try:
        return connector_kinds()[kind]
    except KeyError:
        known = ", ".join(sorted(connector_kinds())) or "none"
        raise LookupError(f"unknown connector kind '{kind}' (installed: {known})") from None
