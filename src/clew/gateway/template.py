"""Is a chat template safe for multi-turn RL? ``clew check-template MODEL`` runs these checks.

RL on multi-turn chats needs each call's prompt to *extend* the last call's prompt and sampled reply, token
for token: otherwise a turn's training row is not what the model saw next, merged rows (``merge_prefix``)
are wrong, and every call of a gateway session starts a new segment. Templates break this in known ways:
Qwen3-style templates drop past ``<think>`` blocks, some rewrite past tool calls, some close a turn with a
token the engine does not stop at. The checks, each over the model's own template (through the gateway's
``Renderer``, so tool schemas and calls go where the gateway puts them):

- ``prefix: plain``, ``prefix: tool calls``, ``prefix: reasoning``: over a multi-turn history, the prompt of
  each assistant turn, then the reply's ids as the model would sample them, are a prefix of the next turn's
  prompt. With a tool-aware template the reply of a tool-calling turn is written by the template, so there
  only the prompt extension is checked (said in the row).
- ``generation prompt``: adding the generation prompt changes the render, and a full render with the
  assistant's reply starts with it (the model is asked to speak as the assistant, in the reply's framing).
- ``stop token``: the template closes an assistant turn with the end-of-sequence id the engine stops at, so
  a sampled stop token is part of the next prompt.
- ``consecutive tool results``: two tool results in a row both appear, in order, each once.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any

from clew.gateway.render import Renderer
from clew.gateway.tools import as_plain_messages

_TOOL = {
    "type": "function",
    "function": {"name": "add", "description": "Add two numbers.",
                 "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}},
}  # fmt: skip
_CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": json.dumps({"a": 2, "b": 3})}}
_CALL2 = {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": json.dumps({"a": 5, "b": 1})}}
PLAIN: list[dict[str, Any]] = [
    {"role": "user", "content": "You are in a room with a door. What do you do?"},
    {"role": "assistant", "content": "open the door"},
    {"role": "user", "content": "The door is locked."},
    {"role": "assistant", "content": "look for a key"},
    {"role": "user", "content": "You see a key under the mat."},
    {"role": "assistant", "content": "take the key"},
]
TOOLS: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 2 + 3, plus 1?"},
    {"role": "assistant", "content": "", "tool_calls": [_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "5"},
    {"role": "assistant", "content": "", "tool_calls": [_CALL2]},
    {"role": "tool", "tool_call_id": "call_2", "content": "6"},
    {"role": "assistant", "content": "It is 6."},
]
REASONING: list[dict[str, Any]] = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "<think>\nTwo plus three is five.\n</think>\n\n5"},
    {"role": "user", "content": "And times 2?"},
    {"role": "assistant", "content": "<think>\nFive times two is ten.\n</think>\n\n10"},
]
CONSECUTIVE: list[dict[str, Any]] = [
    {"role": "user", "content": "Add 2 and 3, and 5 and 1."},
    {"role": "assistant", "content": "", "tool_calls": [_CALL, _CALL2]},
    {"role": "tool", "tool_call_id": "call_1", "content": "RESULT-ONE"},
    {"role": "tool", "tool_call_id": "call_2", "content": "RESULT-TWO"},
]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_template(tokenizer: Any) -> list[Check]:
    """Every check of the module docstring on ``tokenizer``'s chat template."""
    renderer = Renderer.of(tokenizer)
    return [
        prefix_check("prefix: plain", renderer, PLAIN),
        prefix_check("prefix: tool calls", renderer, TOOLS, [_TOOL]),
        prefix_check("prefix: reasoning", renderer, REASONING),
        _generation_prompt(renderer),
        _stop_token(renderer),
        _consecutive_tool_results(renderer),
    ]


def prefix_check(name: str, renderer: Renderer, history: list[dict[str, Any]], tools: list | None = None) -> Check:
    """Each assistant turn's prompt + its reply ids is a prefix of the next assistant turn's prompt."""
    turns = [i for i, m in enumerate(history) if m["role"] == "assistant"]
    for here, there in itertools.pairwise(turns):
        prompt, later = renderer.chat(history[:here], tools), renderer.chat(history[:there], tools)
        if later[: len(prompt)] != prompt:
            return Check(name, False, f"the prompt of assistant turn {turns.index(there) + 1} rewrites earlier text")
        reply = _reply_text(renderer, history[here], tools)
        if reply is None:  # a tool-aware template writes the call itself: only the extension can be checked
            continue
        ids = renderer.encode(reply)
        if later[len(prompt) : len(prompt) + len(ids)] != ids:
            shown = renderer.decode(later[len(prompt) :])[:60]
            return Check(name, False, f"a past reply is not kept as sampled: {reply[:40]!r} became {shown!r}")
    note = " (tool-aware template: replies with calls not checked)" if tools and renderer.native_tools else ""
    count = len(turns) - 1
    verb = "turns extend" if count != 1 else "turn extends"
    return Check(name, True, f"{count} later {verb} exactly{note}")


def _reply_text(renderer: Renderer, message: dict[str, Any], tools: list | None) -> str | None:
    if message.get("tool_calls") and renderer.native_tools:
        return None
    return as_plain_messages([message], None)[0]["content"]


def _generation_prompt(renderer: Renderer) -> Check:
    name, tok = "generation prompt", renderer.tokenizer
    asked = str(tok.apply_chat_template(PLAIN[:1], add_generation_prompt=True, tokenize=False))
    plain = str(tok.apply_chat_template(PLAIN[:1], add_generation_prompt=False, tokenize=False))
    full = str(tok.apply_chat_template(PLAIN[:2], add_generation_prompt=False, tokenize=False))
    if asked == plain:
        return Check(name, False, "add_generation_prompt changes nothing: the model is never asked to answer")
    if not full.startswith(asked):
        return Check(name, False, f"a reply is framed differently from the generation prompt {asked[len(plain) :]!r}")
    return Check(name, True, f"the assistant header is {asked[len(plain) :]!r}")


def _stop_token(renderer: Renderer) -> Check:
    name, eos = "stop token", renderer.eos_id
    prompt, later = renderer.chat(PLAIN[:1]), renderer.chat(PLAIN[:3])
    reply = renderer.encode(PLAIN[1]["content"])
    after = later[len(prompt) + len(reply) : len(prompt) + len(reply) + 1]
    eos_text = renderer.tokenizer.convert_ids_to_tokens(eos)
    if after != [eos]:
        closer = renderer.decode(later[len(prompt) + len(reply) :])[:20]
        return Check(name, False, f"a turn closes with {closer!r}, not the stop token {eos_text!r} (id {eos})")
    return Check(name, True, f"a turn closes with the stop token {eos_text!r} (id {eos})")


def _consecutive_tool_results(renderer: Renderer) -> Check:
    name = "consecutive tool results"
    text = renderer.decode(renderer.chat(CONSECUTIVE, [_TOOL]))
    one, two = text.count("RESULT-ONE"), text.count("RESULT-TWO")
    if one != 1 or two != 1 or text.index("RESULT-ONE") > text.index("RESULT-TWO"):
        return Check(name, False, f"two tool results in a row render {one} and {two} times, or out of order")
    how = "the template's tool role" if renderer.native_tools else "one user turn of <tool_response> blocks"
    return Check(name, True, f"both kept, in order ({how})")


def prefix_safe(tokenizer: Any) -> Check:
    """The checks training needs (every prefix check), folded into one."""
    renderer = Renderer.of(tokenizer)
    checks = [prefix_check("prefix: plain", renderer, PLAIN), prefix_check("prefix: reasoning", renderer, REASONING)]
    failed = [c for c in checks if not c.ok]
    return failed[0] if failed else Check("prefix", True, "every turn extends the last")
