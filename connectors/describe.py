"""What each setting of a connector kind's config is: type, default, allowed values, help text.

The description comes from the config schema itself, so the console's forms, `broker
connectors kinds` and the API's JSON Schema say the same thing. A field may carry metadata:

- `title`: the label people read (default: the key, humanised: "verify_tls" -> "Verify TLS");
- `description`: one or two sentences of help;
- `x-shown-when`: `{"sibling": [values]}`, the field only matters when a sibling field of the
  same section has one of these values (e.g. the password of `auth` when `type` is "basic");
  forms hide it otherwise and leave it out of the config.

Plain marshmallow `metadata`, so apispec copies `title`, `description` and `x-*` keys into
the JSON Schema unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, missing, validate

from connectors.config import Secret

_WORDS = {"url": "URL", "urls": "URLs", "tls": "TLS", "api": "API", "id": "ID", "ids": "IDs",
          "sftp": "SFTP", "uom": "UOM", "oauth": "OAuth", "oauth2": "OAuth 2.0", "json": "JSON",
          "http": "HTTP", "sku": "SKU", "edi": "EDI", "csv": "CSV", "x12": "X12", "sql": "SQL",
          "rpc": "RPC", "xmlrpc": "XML-RPC", "jsonrpc": "JSON-RPC", "db": "DB", "po": "PO"}


def humanise(key: str) -> str:
    """A label from a config key: words, acronyms in capitals, the first letter upper case."""
    words = [_WORDS.get(w, w) for w in re.split(r"[_\s]+", key) if w]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


@dataclass
class FieldInfo:
    path: str                   # dotted config path, e.g. "auth.token_url"
    key: str                    # the last part of the path
    label: str
    type: str                   # string, secret, integer, number, boolean, object, list, section
    required: bool = False
    default: Any = None         # None when the field has no default
    choices: list[str] = field(default_factory=list)
    description: str = ""
    shown_when: dict[str, list[str]] = field(default_factory=dict)
    children: list[FieldInfo] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "label": self.label, "type": self.type,
                                "required": self.required}
        if self.default is not None:
            data["default"] = self.default
        if self.choices:
            data["choices"] = self.choices
        if self.description:
            data["description"] = self.description
        if self.shown_when:
            data["shown_when"] = self.shown_when
        if self.children:
            data["fields"] = [c.as_dict() for c in self.children]
        return data


def default_of(f: fields.Field) -> Any:
    """The value the schema fills in when the field is left out (None when there is none)."""
    value = f.load_default
    if value is missing:
        return None
    if callable(value):
        try:
            value = value()
        except TypeError:
            return None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def choices_of(f: fields.Field) -> list[str]:
    validators = list(f.validators)
    for v in list(validators):
        validators.extend(getattr(v, "validators", []))  # validate.And
    for v in validators:
        if isinstance(v, validate.OneOf):
            return [str(c) for c in v.choices]
    return []


def _type(f: fields.Field) -> str:
    if isinstance(f, Secret):
        return "secret"
    if isinstance(f, fields.Nested) and not f.many and isinstance(f.schema, Schema):
        return "section"
    if isinstance(f, fields.Boolean):
        return "boolean"
    if isinstance(f, fields.Integer):
        return "integer"
    if isinstance(f, fields.Number):
        return "number"
    if isinstance(f, fields.List | fields.Tuple) or (isinstance(f, fields.Nested) and f.many):
        return "list"
    if isinstance(f, fields.Dict | fields.Nested):
        return "object"
    return "string"


def describe(schema: Schema, prefix: str = "") -> list[FieldInfo]:
    """The fields of a config schema in declaration order, sections with their children."""
    found: list[FieldInfo] = []
    for name, f in schema.fields.items():
        if f.dump_only:
            continue
        key = f.data_key or name
        meta: Mapping[str, Any] = f.metadata or {}
        kind = _type(f)
        info = FieldInfo(
            path=prefix + key, key=key, label=str(meta.get("title") or humanise(key)), type=kind,
            required=bool(f.required), default=None if kind in ("secret", "section") else default_of(f),
            choices=choices_of(f), description=str(meta.get("description") or ""),
            shown_when={k: [str(v) for v in vs] for k, vs in (meta.get("x-shown-when") or {}).items()})
        if kind == "section":
            info.children = describe(f.schema, info.path + ".")  # type: ignore[attr-defined]
        found.append(info)
    return found


def flat(infos: list[FieldInfo]) -> list[FieldInfo]:
    """Every field, sections included, depth first."""
    out: list[FieldInfo] = []
    for info in infos:
        out.append(info)
        out.extend(flat(info.children))
    return out


def summary(info: FieldInfo) -> str:
    """One line for a terminal: type, required or default, allowed values, when it applies."""
    parts = [info.type + (" (required)" if info.required else "")]
    if info.default not in (None, "", {}, []):
        parts.append(f"default {json.dumps(info.default)}")
    if info.choices:
        parts.append("one of " + ", ".join(info.choices))
    if info.shown_when:
        parts.append("only when " + "; ".join(f"{k} is {' or '.join(v)}" for k, v in info.shown_when.items()))
    return "; ".join(parts)
