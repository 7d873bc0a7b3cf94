"""Text <-> OpenEnv models: the policy's words as an ``Action`` payload, an ``Observation`` as words.

Pure functions over the models' JSON schema and wire fields (no openenv import), used by
``clew.envs.adapters.openenv_text``; the rules are in that module's docstring.
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _type_name(schema: dict[str, Any]) -> str:
    if "type" in schema:
        return str(schema["type"])
    options = [s.get("type", "value") for s in schema.get("anyOf", []) if s.get("type") != "null"]
    return " or ".join(options) or "value"


class ActionCodec:
    """Turns the policy's text into the JSON payload of an Action, from the Action's JSON schema."""

    def __init__(self, schema: dict[str, Any], action_field: str | None) -> None:
        props = {k: v for k, v in schema.get("properties", {}).items() if k != "metadata"}
        if not props:
            raise ValueError("openenv: the Action has no fields besides metadata; text cannot fill it")
        self.props = props
        self.required = [k for k in schema.get("required", []) if k in props]
        if action_field is not None and action_field not in props:
            raise ValueError(f"openenv: action_field {action_field!r} is not one of {sorted(props)}")
        self.field = action_field or (next(iter(props)) if len(props) == 1 else None)

    def payload(self, text: str) -> dict[str, Any]:
        """The action's fields; raises ValueError for a text that holds none."""
        body = text.strip()
        fenced = _FENCE.match(body)
        if fenced:
            body = fenced.group(1).strip()
        if self.field is not None:
            obj = json_object(body)
            if obj is not None and set(obj) <= set(self.props) and self.field in obj:
                return obj
            if self.props[self.field].get("type") == "string":
                return {self.field: body}
            try:
                return {self.field: json.loads(body)}
            except ValueError:
                return {self.field: body}  # let pydantic's lax validation judge it ("42" -> 42)
        obj = json_object(body)
        if obj is None:
            raise ValueError("expected a JSON object with the action's fields")
        return obj

    def instructions(self) -> str:
        if self.field is not None and len(self.props) == 1:
            spec = self.props[self.field]
            if spec.get("type") == "string":
                return ""
            hint = f" ({spec['description']})" if spec.get("description") else ""
            kind = _type_name(spec)
            article = "an" if kind[:1] in "aeiou" else "a"
            return f"Reply with the {self.field}: {article} {kind}{hint}."
        fields = []
        for key, spec in self.props.items():
            optional = "" if key in self.required else ", optional"
            hint = f": {spec['description']}" if spec.get("description") else ""
            fields.append(f'"{key}" ({_type_name(spec)}{optional}{hint})')
        return "Reply with one JSON object with the fields " + "; ".join(fields) + "."


def json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def render_observation(fields: dict[str, Any], only: str | None = None) -> str:
    """An observation's own fields (the wire form, without done/reward/metadata) as text."""
    if only is not None:
        value = fields.get(only)
        return value if isinstance(value, str) else json.dumps(value, default=str)
    shown = {k: v for k, v in fields.items() if v is not None}
    if len(shown) == 1:
        value = next(iter(shown.values()))
        return value if isinstance(value, str) else json.dumps(value, default=str)
    lines = []
    for key, value in shown.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"{key}:\n{text}" if "\n" in text else f"{key}: {text}")
    return "\n".join(lines)
