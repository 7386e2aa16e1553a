"""Config schemas for connector kinds; secret fields are marked by their field class."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields


class Secret(fields.String):
    """A write-only value, encrypted at rest and never shown back."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("load_only", True)
        super().__init__(**kwargs)


class ConfigSchema(Schema):
    """Base for connector configs: unknown keys are errors so typos never pass silently."""

    class Meta:
        unknown = RAISE


def secret_paths(schema: Schema, prefix: str = "") -> list[str]:
    """Dotted paths of every Secret field, nested schemas included."""
    paths: list[str] = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        if isinstance(field, Secret):
            paths.append(prefix + key)
        elif isinstance(field, fields.Nested) and isinstance(field.schema, Schema):
            paths.extend(secret_paths(field.schema, f"{prefix}{key}."))
    return paths


def split_secrets(schema: Schema, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a validated config into (public part, secrets by dotted path)."""
    public = _deepcopy(config)
    secrets: dict[str, Any] = {}
    for path in secret_paths(schema):
        parent, _, leaf = path.rpartition(".")
        node = public
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            secrets[path] = node.pop(leaf)
    return public, secrets


def merge_secrets(public: dict[str, Any], secrets: dict[str, Any]) -> dict[str, Any]:
    """The inverse of split_secrets."""
    merged = _deepcopy(public)
    for path, value in secrets.items():
        parent, _, leaf = path.rpartition(".")
        node = merged
        for part in parent.split(".") if parent else []:
            node = node.setdefault(part, {})
        node[leaf] = value
    return merged


def _deepcopy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deepcopy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deepcopy(v) for v in value]
    return value
