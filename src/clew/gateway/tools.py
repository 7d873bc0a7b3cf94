"""Tool calls in the model's own words, parsed per model, and the default rendering for templates without tools.

Formats (``tool_format`` picks one from the chat template; ``parse_tool_calls`` reads it):
- ``hermes``: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` anywhere in the completion (Hermes 2
  Pro, Qwen 2/2.5/3, and the stated default for models whose chat template has no tool syntax); a result goes
  back as ``<tool_response>...</tool_response>`` in a user turn;
- ``llama3_json``: Llama 3.1+'s JSON tool calling, the whole reply one call ``{"name": ..., "parameters":
  {...}}`` (or several joined by ``;``), optionally after ``<|python_tag|>``;
- ``mistral``: ``[TOOL_CALLS]`` then a JSON list of ``{"name": ..., "arguments": {...}}``, after any text.

A template that renders ``tools=`` itself (``native``) gets the schemas and the tool roles as the API sent
them, and speaks the format its markers show; one that does not (SmolLM2's) gets ``hermes``: the schemas in
the system prompt (``TOOL_SYSTEM``), assistant tool calls written back as the ``<tool_call>`` text the model
would have sampled, and tool results as user turns.

A call that is not valid JSON with a string ``name`` (and an object ``arguments``, if any) is malformed:
the completion goes back as plain text, and the turn is recorded with ``info["malformed_tool_call"]`` and
``info["invalid_action"]``, so shaping charges the invalid-action penalty.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_OPEN = "<tool_call>"

TOOL_SYSTEM = (
    "You may call one or more functions to assist with the user query. The functions are listed in "
    "<tools></tools> as JSON schemas:\n<tools>\n{schemas}\n</tools>\n\nFor each function call, return a JSON "
    'object with the function name and arguments within <tool_call></tool_call> tags:\n<tool_call>\n{{"name": '
    '<function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


@dataclass(frozen=True)
class ToolCall:
    """One parsed call: OpenAI's shape (``arguments`` is the JSON text of an object)."""

    call_id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Parsed:
    """A completion read for tool calls: the text outside them, the calls, and whether one was malformed."""

    content: str
    calls: list[ToolCall]
    malformed: bool


def tool_format(template: str) -> str:
    """The tool-call format a chat template speaks (``hermes`` unless it shows Mistral's or Llama 3's markers)."""
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or "Environment: ipython" in template:
        return "llama3_json"
    return "hermes"


def parse_tool_calls(text: str, fmt: str = "hermes") -> Parsed:
    """The calls of ``text`` in format ``fmt``; a malformed call makes the whole completion plain text, flagged
    ``malformed``."""
    if fmt == "mistral":
        return _mistral(text)
    if fmt == "llama3_json":
        return _llama3(text)
    if fmt != "hermes":
        raise ValueError(f"unknown tool-call format {fmt!r}; known: hermes, llama3_json, mistral")
    return _hermes(text)


def _hermes(text: str) -> Parsed:
    """``<tool_call>`` blocks; a malformed block or an unclosed ``<tool_call>`` is malformed."""
    blocks = _CALL.findall(text)
    if not blocks:
        return Parsed(text, [], _OPEN in text)
    calls = [_call(block) for block in blocks]
    if any(c is None for c in calls) or _OPEN in _CALL.sub("", text):
        return Parsed(text, [], True)
    return Parsed(_CALL.sub("", text).strip(), [c for c in calls if c is not None], False)


def _llama3(text: str) -> Parsed:
    """A reply that is a JSON call (or ``;``-joined calls), after an optional ``<|python_tag|>``; an object
    without ``parameters`` or ``arguments`` is an answer in JSON, not a call."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return Parsed(text, [], False)
    objects = _json_objects(body)
    if objects and not any("parameters" in o or "arguments" in o for o in objects):
        return Parsed(text, [], False)
    calls = [_call_of(o) for o in objects]
    if not calls or any(c is None for c in calls):
        return Parsed(text, [], '"name"' in body)  # JSON that names something but does not parse: a broken call
    return Parsed("", [c for c in calls if c is not None], False)


def _json_objects(body: str) -> list[dict[str, Any]]:
    """The ``;``-separated JSON objects of ``body`` (a ``;`` inside a string is text), or [] if it is not that."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while at < len(body):
        try:
            found, at = decoder.raw_decode(body, at)
        except (ValueError, RecursionError):
            return []
        if not isinstance(found, dict):
            return []
        objects.append(found)
        rest = body[at:].lstrip()
        if rest and not rest.startswith(";"):
            return []
        at = len(body) - len(rest.removeprefix(";").lstrip())
    return objects


def _mistral(text: str) -> Parsed:
    """Text, then ``[TOOL_CALLS]`` and a JSON list of calls."""
    content, marker, body = text.partition("[TOOL_CALLS]")
    if not marker:
        return Parsed(text, [], False)
    try:
        listed = json.loads(body.strip())
    except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer past Python's digit limit
        return Parsed(text, [], True)
    listed = listed if isinstance(listed, list) else [listed]
    calls = [_call_of(item) for item in listed]
    if not calls or any(c is None for c in calls):
        return Parsed(text, [], True)
    return Parsed(content.strip(), [c for c in calls if c is not None], False)


def _call(block: str) -> ToolCall | None:
    try:
        body = json.loads(block)
    except (ValueError, RecursionError):  # ValueError: bad JSON, or an integer past Python's digit limit
        return None
    return _call_of(body)


def _call_of(body: Any) -> ToolCall | None:
    """A decoded call object: ``name`` and ``arguments`` (or ``parameters``: an object, or a JSON string of one)."""
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return None
    arguments = body.get("arguments", body.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as the API does
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", body["name"], json.dumps(arguments))


def tool_system_prompt(tools: list[dict[str, Any]]) -> str:
    """The system prompt that offers ``tools`` (OpenAI ``{"type": "function", "function": {...}}`` entries)."""
    return TOOL_SYSTEM.format(schemas="\n".join(json.dumps(t, sort_keys=True) for t in tools))


def as_plain_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """Messages for a template without tool syntax: the tools in the system prompt, tool calls as the
    ``<tool_call>`` text, tool results as ``<tool_response>`` user turns (consecutive ones in one turn)."""
    out: list[dict[str, str]] = []
    for message in messages:
        role, content = message.get("role", "user"), message_text(message.get("content"))
        if role == "assistant" and message.get("tool_calls"):
            calls = [_written(c) for c in message["tool_calls"]]
            content = "\n".join([content, *calls]).strip() if content else "\n".join(calls)
        if role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1]["content"].startswith("<tool_response>"):
                out[-1]["content"] += "\n" + content
                continue
        out.append({"role": role, "content": content})
    if tools:
        offer = tool_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{offer}"}
        else:
            out.insert(0, {"role": "system", "content": offer})
    return out


def _written(call: dict[str, Any]) -> str:
    function = call.get("function", {})
    arguments = function.get("arguments", "{}")
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
    except json.JSONDecodeError:
        parsed = arguments
    return "<tool_call>\n" + json.dumps({"name": function.get("name", ""), "arguments": parsed}) + "\n</tool_call>"


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    raise ValueError(f"message content must be a string or a list of parts, got {type(content).__name__}")
