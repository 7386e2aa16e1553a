"""FOBO Broker: books every front-office order once in the back office.

Nothing happens at import: `create_app` builds the gateway, so workers and connector
plugins can import the domain core without Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from broker.settings import Settings


def create_app(settings: Settings | None = None, **overrides: Any) -> Flask:
    """Build the Flask gateway (the one way to do it)."""
    from broker.app import build_app

    return build_app(settings, **overrides)
