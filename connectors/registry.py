"""Plugins found through entry points; connector kinds live in the group broker.connectors.

Built-ins are registered exactly like third-party kinds (see pyproject.toml).
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from typing import TypeVar

from connectors.base import Connector

GROUP = "broker.connectors"
log = logging.getLogger(__name__)
T = TypeVar("T")


def load_plugins(group: str, base: type[T]) -> dict[str, type[T]]:
    """Every class in an entry-point group whose `kind` equals its name.

    A plugin that fails to import or is not a `base` is skipped with a warning naming it,
    so one broken package never takes the broker down.
    """
    found: dict[str, type[T]] = {}
    for ep in entry_points(group=group):
        try:
            cls = ep.load()
        except Exception as exc:
            log.warning("plugin %r of %s could not be loaded: %s", ep.name, group, exc)
            continue
        if not (isinstance(cls, type) and issubclass(cls, base)) or getattr(cls, "kind", None) != ep.name:
            log.warning("plugin %r of %s is not a %s whose kind is %r; skipped",
                        ep.name, group, base.__name__, ep.name)
            continue
        found[ep.name] = cls
    return found


@cache
def connector_kinds() -> dict[str, type[Connector]]:
    """Every installed connector kind by slug."""
    return load_plugins(GROUP, Connector)


def connector_class(kind: str) -> type[Connector]:
    try:
        return connector_kinds()[kind]
    except KeyError:
        known = ", ".join(sorted(connector_kinds())) or "none"
        raise LookupError(f"unknown connector kind '{kind}' (installed: {known})") from None
