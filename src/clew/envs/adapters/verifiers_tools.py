"""verifiers 0.4.0 tools and messages for ``verifiers_text``: a rollout's toolsets called in this process, tool
calls read out of the policy's plain text, conversation messages rendered as the text the policy reads."""

from __future__ import annotations

import inspect
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import pydantic
import verifiers.v1 as vf
from pydantic_core import to_jsonable_python
from verifiers.v1.errors import ToolsetError
from verifiers.v1.harnesses.utils.compaction import truncate_tool_output
from verifiers.v1.mcp.server import _call_state  # private: the contextvar behind Toolset.state
from verifiers.v1.types import content_text
from verifiers.v1.utils.decorators import discover_decorated

TOOL_HINT = (
    'To call a tool, write <tool_call>{"name": "<tool>", "arguments": {...}}</tool_call> '
    "(one block per call); reply without a tool call to give your answer."
)
_TOOL_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)


# --- tools --------------------------------------------------------------------------------------


@dataclass
class Tool:
    name: str
    server: Any  # a vf.Toolset
    fn: Any  # its bound @vf.tool method
    args: type[pydantic.BaseModel]
    spec: vf.Tool


def _tool(full_name: str, server: Any, fn: Any) -> Tool:
    """A tool's argument model and advertised schema, from its signature (as MCP derives them)."""
    hints = typing.get_type_hints(fn)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    model = pydantic.create_model(f"{full_name}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    description = (fn.__doc__ or "").strip()
    return Tool(full_name, server, fn, model, vf.Tool(name=full_name, description=description, parameters=schema))


class Tools:
    """The tools of a rollout's toolsets, called in process with the rollout's state bound."""

    def __init__(self, servers: list[Any]) -> None:
        self.by_name: dict[str, Tool] = {}
        for server in servers:
            prefix = server.server_name
            for fn in discover_decorated(server, "tool"):
                raw = getattr(fn, "tool_name", None) or fn.__name__
                full = f"{prefix}_{raw}" if prefix else raw
                if full in self.by_name:
                    raise ToolsetError(f"duplicate tool name {full!r}")
                self.by_name[full] = _tool(full, server, fn)

    @property
    def specs(self) -> list[vf.Tool]:
        return [tool.spec for tool in self.by_name.values()]

    def __bool__(self) -> bool:
        return bool(self.by_name)

    async def call(self, name: str, raw_arguments: str, state: vf.State) -> tuple[str, str | None]:
        """(result text, error or None); errors are results the model reads, as in verifiers' chat loop."""
        tool = self.by_name.get(name)
        if tool is None:
            return f"error: unknown tool {name!r}", f"unknown tool {name!r}"
        try:
            arguments = json.loads(raw_arguments or "{}")
        except json.JSONDecodeError as exc:
            return f"error: invalid JSON in tool arguments ({exc})", "invalid JSON arguments"
        if not isinstance(arguments, dict):
            return "error: tool arguments must be a JSON object", "arguments not an object"
        try:
            parsed = tool.args.model_validate(arguments)
        except pydantic.ValidationError as exc:
            return f"error: invalid arguments for {name}: {exc}", f"invalid arguments for {name}"
        kwargs = {key: getattr(parsed, key) for key in type(parsed).model_fields}
        # Toolset.state reads this contextvar; verifiers syncs it with trace.state over HTTP, here it IS trace.state.
        bound = state if isinstance(state, tool.server._state_cls) else tool.server._state_cls()
        token = _call_state.set(bound)
        try:
            result = tool.fn(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a tool failing on the model's input is a result, not a crash
            return f"error: {name} raised {type(exc).__name__}: {exc}", f"{name} raised {type(exc).__name__}"
        finally:
            _call_state.reset(token)
        if result is None:
            text = ""
        elif isinstance(result, str):
            text = result
        elif isinstance(result, pydantic.BaseModel):
            text = result.model_dump_json()
        else:
            text = json.dumps(to_jsonable_python(result))
        return truncate_tool_output(text), None


# --- the policy's text <-> assistant messages -----------------------------------------------------


@dataclass
class Parsed:
    """An assistant reply: its text and tool calls ``(name, raw JSON arguments)``, or why it is malformed."""

    content: str | None
    calls: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None


def _call_from(obj: Any) -> tuple[str, str] | str:
    """A tool call ``(name, arguments JSON)`` from a decoded object, or the reason it is not one."""
    if not isinstance(obj, dict):
        return "a tool call must be a JSON object"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return 'a tool call needs a "name"'
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # OpenAI's wire form: arguments as a JSON string
        try:
            arguments = json.loads(arguments or "{}")
        except json.JSONDecodeError:
            return f"the arguments of {name!r} are not valid JSON"
    if not isinstance(arguments, dict):
        return f'the "arguments" of {name!r} must be a JSON object'
    return name.strip(), json.dumps(arguments)


def parse_reply(text: str, tools: bool) -> Parsed:
    """Read tool calls out of a plain-text reply (only when the rollout has tools)."""
    if not tools:
        return Parsed(content=text)
    blocks = _TOOL_BLOCK.findall(text)
    if blocks:
        calls: list[tuple[str, str]] = []
        for body in blocks:
            try:
                obj = json.loads(body.strip())
            except json.JSONDecodeError as exc:
                return Parsed(None, error=f"a <tool_call> block is not valid JSON ({exc.msg})")
            call = _call_from(obj)
            if isinstance(call, str):
                return Parsed(None, error=call)
            calls.append(call)
        rest = _TOOL_BLOCK.sub("", text).strip()
        return Parsed(rest or None, calls)
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            return Parsed(content=text)  # prose that starts with a brace
        items = obj if isinstance(obj, list) else [obj]
        if items and all(isinstance(item, dict) and "name" in item for item in items):
            calls = []
            for item in items:
                call = _call_from(item)
                if isinstance(call, str):
                    return Parsed(None, error=call)
                calls.append(call)
            return Parsed(None, calls)
    return Parsed(content=text)


def text_of(content: Any) -> str:
    return content_text(content)


def render_message(message: Any) -> str:
    if isinstance(message, vf.ToolMessage):
        return f'<tool_response name="{message.name or ""}">\n{text_of(message.content)}\n</tool_response>'
    if isinstance(message, vf.AssistantMessage):
        calls = "".join(
            f'\n<tool_call>{{"name": {json.dumps(c.name)}, "arguments": {c.arguments}}}</tool_call>'
            for c in message.tool_calls or []
        )
        return f"[assistant] {message.content or ''}{calls}"
    return text_of(message.content)


def render_tools(specs: list[vf.Tool]) -> str:
    lines = [json.dumps({"name": s.name, "description": s.description, "parameters": s.parameters}) for s in specs]
    return "Tools:\n" + "\n".join(lines) + "\n" + TOOL_HINT
