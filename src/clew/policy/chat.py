"""Chat framing as token segments, derived once from a tokenizer's chat template.

Tokens in, tokens out: a turn's prompt is built by appending *token segments* (the sampled
action ids as they are, then the encoded framing + observation), never by re-tokenizing earlier
text. The framing strings are found by rendering the template around placeholders, so any HF
chat template works (a system preamble appears only in the first segment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_U1, _A1, _U2 = "CLEWUSERONE", "CLEWASSISTANTONE", "CLEWUSERTWO"


@dataclass(frozen=True)
class ChatFormat:
    """Text around observations: ``first_pre + obs + first_post`` opens the chat; later
    observations are framed as ``close + next_pre + obs + next_post`` after an action."""

    first_pre: str
    first_post: str
    close: str
    next_pre: str
    next_post: str
    eos_id: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> ChatFormat:
        one = _render(tokenizer, [("user", _U1)])
        two = _render(tokenizer, [("user", _U1), ("assistant", _A1), ("user", _U2)])
        first_pre, first_post = one.split(_U1)
        between, next_post = two.split(_A1)[1].split(_U2)
        eos = tokenizer.eos_token or ""
        close = eos if eos and between.startswith(eos) else ""
        return cls(first_pre, first_post, close, between[len(close) :], next_post, tokenizer.eos_token_id)

    def first_segment(self, tokenizer: Any, observation: str) -> list[int]:
        return _encode(tokenizer, self.first_pre + observation + self.first_post)

    def next_segment(self, tokenizer: Any, action_ids: list[int], observation: str) -> list[int]:
        """Ids that follow a sampled action: the turn close (eos if not sampled) + the observation."""
        ended = bool(action_ids) and action_ids[-1] == self.eos_id
        close = [] if ended or not self.close else [self.eos_id]
        return close + _encode(tokenizer, self.next_pre + observation + self.next_post)


def _render(tokenizer: Any, messages: list[tuple[str, str]]) -> str:
    msgs = [{"role": r, "content": c} for r, c in messages]
    return str(tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))
