"""The exact prompt ids of a call: the model's own chat template over the messages and tool schemas.

A template that mentions ``tools`` renders them itself (``native``: Qwen, Llama 3.1+, Hermes); any other
gets the stated default of ``clew.gateway.tools`` (schemas in the system prompt, ``<tool_call>`` JSON).
The rendered text is encoded without adding special tokens (the template wrote them), as the rollout's
``ChatFormat`` does, so a call's prompt ids are what the engine conditions on, byte for byte.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from clew.gateway.tools import as_plain_messages, message_text, tool_format


@dataclass(frozen=True)
class Renderer:
    """Messages (+ tools) -> prompt ids for one tokenizer; ``eos_id`` ends every completion."""

    tokenizer: Any
    native_tools: bool
    eos_id: int
    tool_format: str = "hermes"  # how this model writes tool calls (``clew.gateway.tools.tool_format``)

    @classmethod
    def of(cls, tokenizer: Any) -> Renderer:
        template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
        if not template:
            raise ValueError("the gateway needs a model with a chat template (tokenizer.chat_template is empty)")
        native = "tools" in template
        return cls(tokenizer, native, int(tokenizer.eos_token_id), tool_format(template) if native else "hermes")

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """The prompt ids of a chat completion: the template over ``messages``, the generation prompt added."""
        if not messages:
            raise ValueError("messages must be a non-empty list")
        if self.native_tools:
            rendered = [_native(m) for m in messages]
            text = self.tokenizer.apply_chat_template(
                rendered, tools=tools or None, add_generation_prompt=True, tokenize=False
            )
        else:
            plain = as_plain_messages(messages, tools)
            text = self.tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        return self.encode(str(text))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def raw(self, ids: list[int]) -> str:
        """The sampled text with special tokens kept (``[TOOL_CALLS]``, ``<|python_tag|>``), the stop token cut."""
        return str(self.tokenizer.decode(ids[:-1] if ids and ids[-1] == self.eos_id else ids))


def _native(message: dict[str, Any]) -> dict[str, Any]:
    """A message as a tool-aware template expects it: text content, tool calls with parsed arguments."""
    out = {**message, "content": message_text(message.get("content"))}
    if message.get("tool_calls"):
        out["tool_calls"] = [_parsed_arguments(c) for c in message["tool_calls"]]
    return out


def _parsed_arguments(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function", {}))
    if isinstance(function.get("arguments"), str):
        with contextlib.suppress(json.JSONDecodeError):  # else the template shows the text as it came
            function["arguments"] = json.loads(function["arguments"])
    return {**call, "function": function}
