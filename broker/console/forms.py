"""Connector config forms generated from each kind's marshmallow schema, and read back.

Each schema field becomes one labelled control (connectors.describe gives its label, type,
default, choices and help): nested schemas are fieldsets, `Secret` fields password inputs that
are never filled in (empty on an edit keeps the stored secret), `OneOf` strings selects,
booleans checkboxes, numbers number inputs, dicts and lists JSON textareas. A field that only
matters for some values of a sibling (`x-shown-when`, e.g. the password of auth type "basic")
is hidden by console.js while it does not apply, and left out of the config when submitted
for another value, so a form shows what the chosen option needs and nothing else. Optional
settings are grouped after the required ones.

A submitted form becomes the config dict the schema validates; the schema's errors come back
by field path and are shown next to the field they belong to. Form values are strings: the
schema coerces them ("10" for a Float), so its messages are the ones people read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema

from connectors.describe import FieldInfo, describe


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
    description: str = ""          # the schema's help text for this setting
    shown_when: dict[str, list[str]] = field(default_factory=dict)  # sibling key -> values
    value: str = ""                # what the control shows (never a secret)
    checked: bool = False
    stored: bool = False           # a secret with a stored value
    errors: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return "f-" + self.path.replace(".", "-")

    @property
    def key(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def condition(self) -> tuple[str, list[str]] | None:
        """(id of the controlling sibling, the values for which this field applies)."""
        if not self.shown_when:
            return None
        sibling, values = next(iter(self.shown_when.items()))
        parent = self.path.rpartition(".")[0]
        return "f-" + (f"{parent}.{sibling}" if parent else sibling).replace(".", "-"), values

    @property
    def hint(self) -> str:
        notes = [self.description] if self.description else []
        if self.widget == "password":
            notes.append("A value is stored; leave empty to keep it." if self.stored
                         else "Write-only: never shown again.")
        elif self.widget == "json":
            notes.append("JSON" + (f", default {json.dumps(self.default)}."
                                   if self.default not in (None, {}, []) else "."))
        elif self.widget == "fieldset" and self.optional_section and not any(
                c.default not in (None, "", {}, []) for c in self.children):  # e.g. auth type "none"
            notes.append("Optional: leave every field empty to leave this section out.")
        elif self.default not in (None, "") and self.widget not in ("checkbox", "select", "fieldset"):
            notes.append(f"Default {self.default}.")
        return " ".join(notes)

    @property
    def applies_to(self) -> str:
        """For a person without console.js: which option this field belongs to."""
        if not self.shown_when:
            return ""
        sibling, values = next(iter(self.shown_when.items()))
        return f"Only for {sibling.replace('_', ' ')} {' or '.join(values)}."


_WIDGETS = {"secret": "password", "section": "fieldset", "boolean": "checkbox", "integer": "number",
            "number": "number", "object": "json", "list": "json", "string": "text"}


def _control(info: FieldInfo) -> FormField:
    widget = "select" if info.type == "string" and info.choices else _WIDGETS[info.type]
    return FormField(path=info.path, label=info.label, widget=widget, required=info.required,
                     choices=info.choices, step="1" if info.type == "integer" else "any",
                     default=info.default, optional_section=info.type == "section" and not info.required,
                     children=[_control(c) for c in info.children], description=info.description,
                     shown_when=info.shown_when)


def schema_fields(schema: Schema, prefix: str = "") -> list[FormField]:
    """The form's controls, in the schema's declaration order."""
    return [_control(info) for info in describe(schema, prefix)]


def split_optional(form: list[FormField]) -> tuple[list[FormField], list[FormField]]:
    """(required settings and sections, optional plain settings): the second group is shown
    folded, and open when one of them has an error or a value other than its default."""
    first = [f for f in form if f.required or f.widget == "fieldset"]
    return first, [f for f in form if f not in first]


def stands_out(group: list[FormField]) -> bool:
    """Whether a folded group must be open: an error, or a value other than the default."""
    for f in group:
        if f.errors:
            return True
        if f.widget == "checkbox":
            if f.checked != bool(f.default):
                return True
            continue
        if f.widget in ("password", "fieldset"):
            continue
        shown = f.value.strip()
        default = "" if f.default is None else str(f.default)
        if shown and shown != default and not (f.widget == "json" and shown in ("{}", "[]")):
            return True
    return False


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


def applies(f: FormField, data: Mapping[str, str], siblings: list[FormField]) -> bool:
    """Whether a conditional control applies to what was submitted for its controlling sibling
    (its default when the sibling was not submitted)."""
    if not f.shown_when:
        return True
    key, values = next(iter(f.shown_when.items()))
    control = next((s for s in siblings if s.key == key), None)
    if control is None:
        return True
    submitted = data.get(control.path, "").strip()
    if not submitted:
        submitted = "" if control.default is None else str(control.default)
    return submitted in values


def read_form(form: list[FormField], data: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The config a submitted form describes, and the errors found before the schema runs
    (JSON that does not parse). An empty control is left out: the schema's default applies,
    and an empty secret keeps the stored one; so is a control that does not apply to the
    option chosen (a password typed before switching auth to "bearer")."""
    config: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for f in form:
        if not applies(f, data, form):
            continue

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
