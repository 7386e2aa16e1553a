"""`broker config apply FILE.yaml`: sources, connectors and routes as code.

Secrets come from the environment as ${VAR}, so the file can live in version control.
Applying the same file twice changes nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from broker.db import Database
from broker.models import Source
from broker.services import audit
from broker.services.crypto import SecretBox
from broker.services.setup import add_route, upsert_connector
from broker.services.sources import SetupError, configure_source, create_source

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand(value: Any, where: str = "") -> Any:
    """Replace ${VAR} in every string; a missing variable is an error naming it."""
    if isinstance(value, dict):
        return {k: expand(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise SetupError(f"{where}: environment variable {name} is not set")
            return os.environ[name]
        return _VAR.sub(sub, value)
    return value


def apply_file(db: Database, box: SecretBox, path: Path, *,
               actor: str = audit.SYSTEM) -> dict[str, list[str]]:
    """Apply the file; each change is audited as `actor` by the service that makes it."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SetupError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise SetupError(f"{path}: expected a mapping with sources, connectors, routes")
    unknown = set(document) - {"sources", "connectors", "routes"}
    if unknown:
        raise SetupError(f"{path}: unknown section {sorted(unknown)[0]!r}")
    document = expand(document)
    report: dict[str, list[str]] = {"sources": [], "connectors": [], "routes": []}
    for i, item in enumerate(document.get("sources") or []):
        name, kind = item.get("name"), item.get("kind")
        if not name or not kind:
            raise SetupError(f"sources.{i}: name and kind are required")
        with db.begin() as session:
            exists = session.execute(select(Source.id).where(Source.name == name)).first()
        settings, credentials = item.get("settings") or {}, item.get("credentials") or {}
        if not exists:
            create_source(db, box, name, kind, item.get("secret"), settings=settings,
                          credentials=credentials, actor=actor)
            report["sources"].append(name)
        elif settings or credentials:
            configure_source(db, box, name, settings=settings, credentials=credentials, actor=actor)
            report["sources"].append(name)
    for i, item in enumerate(document.get("connectors") or []):
        if not item.get("name") or not item.get("kind"):
            raise SetupError(f"connectors.{i}: name and kind are required")
        upsert_connector(db, box, item["name"], item["kind"], item.get("config") or {}, actor=actor)
        report["connectors"].append(item["name"])
    for i, item in enumerate(document.get("routes") or []):
        if not item.get("source") or not item.get("connector"):
            raise SetupError(f"routes.{i}: source and connector are required")
        add_route(db, item["source"], item["connector"], item.get("filters") or {}, actor=actor)
        report["routes"].append(f"{item['source']}->{item['connector']}")
    return report
