"""Connector config forms generated from each kind's marshmallow schema, and read back.

Each schema field becomes one labelled control: nested schemas are fieldsets, `Secret` fields
password inputs that are never filled in (empty on an edit keeps the stored secret), `OneOf`
strings selects, booleans checkboxes, numbers number inputs, dicts and lists JSON textareas.
A submitted form becomes the config dict the schema validates; the schema's errors come back
by field path and are shown next to the field they belong to. Form values are strings: the
schema coerces them ("10" for a Float), so its messages are the ones people read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, missing, validate

from connectors.config import Secret


@dataclass
class FormField:
    path: str                      # "auth.token_url": the config path, also the input's name
    label: str
    widget: str                    # text, password, number, select, checkbox, json, fieldset
    required: bool = False
    choices: list[str] = field(default_factory=list)
    step: str = "any"
    default: Any = None            # the schema's load_default (None when it has none)
    optional_section: bool = False  # a fieldset left out of the config when nothing in it is set
    children: list[FormField] = field(default_factory=list)
    value: str = ""                # what the control shows (never a secret)
    checked: bool = False
    stored: bool = False           # a secret with a stored value
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.path.replace(".", "-")

    @property
    def hint(self) -> str:
        if self.widget == "password":
            return ("A value is stored; leave empty to keep it." if self.stored
                    else "Write-only: never shown again.")
        if self.widget == "json":
            return "JSON" + (f", default {json.dumps(self.default)}" if self.default not in (None, {}, [])
                             else "")
        if self.widget == "fieldset" and self.optional_section:
            return "Optional: leave every field empty to leave this section out."
        if self.default not in (None, "") and self.widget not in ("checkbox", "select", "fieldset"):
            return f"Default {self.default}."
        return ""


def _default(f: fields.Field) -> Any:
    value = f.load_default
    if value is missing or callable(value):
        try:
            value = value() if callable(value) else None
        except TypeError:
            value = None
    return value


def _choices(f: fields.Field) -> list[str]:
    validators = list(f.validators)
    for v in list(validators):
        validators.extend(getattr(v, "validators", []))  # validate.And
    for v in validators:
        if isinstance(v, validate.OneOf):
            return [str(c) for c in v.choices]
    return []


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


def schema_fields(schema: Schema, prefix: str = "") -> list[FormField]:
    """The form's controls, in the schema's declaration order."""
    out: list[FormField] = []
    for name, f in schema.fields.items():
        if f.dump_only:
            continue
        key = f.data_key or name
        path = prefix + key
        common = {"path": path, "label": _label(key), "required": bool(f.required)}
        if isinstance(f, Secret):
            out.append(FormField(widget="password", **common))
        elif isinstance(f, fields.Nested) and not f.many and isinstance(f.schema, Schema):
            out.append(FormField(widget="fieldset", optional_section=not f.required,
                                 children=schema_fields(f.schema, path + "."), **common))
        elif isinstance(f, fields.Boolean):
            out.append(FormField(widget="checkbox", default=_default(f), **common))
        elif isinstance(f, fields.Integer):
            out.append(FormField(widget="number", step="1", default=_default(f), **common))
        elif isinstance(f, fields.Number):
            out.append(FormField(widget="number", default=_default(f), **common))
        elif isinstance(f, fields.Dict | fields.List | fields.Nested | fields.Tuple):
            out.append(FormField(widget="json", default=_default(f), **common))
        elif _choices(f):
            out.append(FormField(widget="select", choices=_choices(f), default=_default(f), **common))
        else:
            out.append(FormField(widget="text", default=_default(f), **common))
    return out


def walk(form: list[FormField]) -> list[FormField]:
    """Every control, fieldsets included, depth first."""
    found: list[FormField] = []
    for f in form:
        found.append(f)
        found.extend(walk(f.children))
    return found


def _lookup(config: Mapping[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _shown(f: FormField, value: Any) -> None:
    if f.widget == "checkbox":
        f.checked = bool(value)
    elif value is None:
        f.value = ""
    elif f.widget == "json":
        f.value = json.dumps(value, indent=2, ensure_ascii=False) if value not in ({}, []) else ""
    else:
        f.value = str(value)


def fill_defaults(form: list[FormField]) -> None:
    """A new connector: every control shows the schema's default."""
    for f in walk(form):
        if f.widget not in ("fieldset", "password"):
            _shown(f, f.default)


def fill_stored(form: list[FormField], config: Mapping[str, Any], secrets: list[str]) -> None:
    """An edit: controls show the stored public config; secrets only say that they are set."""
    for f in walk(form):
        if f.widget == "password":
            f.stored = f.path in secrets
        elif f.widget != "fieldset":
            _shown(f, _lookup(config, f.path))


def fill_submitted(form: list[FormField], data: Mapping[str, str], secrets: list[str] | None = None) -> None:
    """After a refused submit: controls keep what was typed, except secrets (never echoed)."""
    for f in walk(form):
        if f.widget == "password":
            f.stored = f.path in (secrets or [])
        elif f.widget == "checkbox":
            f.checked = f.path in data
        elif f.widget != "fieldset":
            f.value = data.get(f.path, "")


def _given(f: FormField, data: Mapping[str, str]) -> bool:
    """Whether a control of an optional section says something other than its default."""
    if f.widget == "fieldset":
        return any(_given(c, data) for c in f.children)
    if f.widget == "checkbox":
        return (f.path in data) != bool(f.default)
    raw = data.get(f.path, "").strip()
    return raw != "" and raw != ("" if f.default is None else str(f.default))


def read_form(form: list[FormField], data: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The config a submitted form describes, and the errors found before the schema runs
    (JSON that does not parse). An empty control is left out: the schema's default applies,
    and an empty secret keeps the stored one."""
    config: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for f in form:
        if f.widget == "fieldset":
            if f.optional_section and not _given(f, data):
                continue
            section, section_errors = read_form(f.children, data)
            config[f.path.rpartition(".")[2]] = section
            errors.update(section_errors)
            continue
        key = f.path.rpartition(".")[2]
        if f.widget == "checkbox":
            config[key] = f.path in data
            continue
        raw = data.get(f.path, "")
        if f.widget != "password":
            raw = raw.strip()
        if raw == "":
            continue
        if f.widget == "json":
            try:
                config[key] = json.loads(raw)
            except ValueError as exc:
                errors[f.path] = [f"not valid JSON: {exc}"]
            continue
        config[key] = raw
    return config, errors


def attach_errors(form: list[FormField], errors: Mapping[str, list[str]]) -> list[str]:
    """Put each error next to its control (the deepest one whose path it is in); returns the
    errors that belong to no control (shown at the top of the form)."""
    controls = {f.path: f for f in walk(form)}
    loose: list[str] = []
    for path, messages in errors.items():
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            target = controls.get(".".join(parts[:n]))
            if target is not None:
                rest = ".".join(parts[n:])
                target.errors.extend(f"{rest}: {m}" if rest else m for m in messages)
                break
        else:
            loose.extend(messages if path == "_schema" else [f"{path}: {m}" for m in messages])
    return loose
