"""Context strategies: how a turn's prompt ids are built from the episode so far.

Only observation text is ever encoded; sampled action ids are reused as they are. Under ``full``
each prompt extends the previous prompt + action exactly, which ``train.merge_prefix`` exploits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from clew.policy.chat import ChatFormat


@dataclass
class History:
    """An episode as the policy saw it: observations, sampled action ids, cached segments.

    ``segments[i]`` (i >= 1) holds the ids that follow ``actions[i - 1]``: the turn close and the
    framed observation ``observations[i]``.
    """

    observations: list[str]
    actions: list[list[int]] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)

    def add(self, action_ids: list[int], observation: str, framing: Framing | None) -> None:
        self.actions.append(list(action_ids))
        self.observations.append(observation)
        seg = framing.chat.next_segment(framing.tokenizer, action_ids, observation) if framing else []
        self.segments.append(seg)


@dataclass(frozen=True)
class Framing:
    """The tokenizer and its chat framing."""

    tokenizer: Any
    chat: ChatFormat


class ContextStrategy(Protocol):
    """Builds the prompt ids of the next turn."""

    def build(self, history: History, framing: Framing) -> list[int]: ...


def _span(history: History, framing: Framing, start: int) -> list[int]:
    ids = framing.chat.first_segment(framing.tokenizer, history.observations[start])
    for i in range(start, len(history.actions)):
        ids += history.actions[i] + history.segments[i]
    return ids


@dataclass(frozen=True)
class FullContext:
    """The whole chat so far."""

    def build(self, history: History, framing: Framing) -> list[int]:
        return _span(history, framing, 0)


@dataclass(frozen=True)
class WindowContext:
    """The last ``turns`` exchanges; the oldest kept observation opens the chat (0 = current only)."""

    turns: int

    def build(self, history: History, framing: Framing) -> list[int]:
        return _span(history, framing, max(0, len(history.actions) - self.turns))


def make_context(kind: str, window_turns: int = 0) -> ContextStrategy:
    """``"full"`` or ``"window"`` (with ``window_turns`` >= 0)."""
    if kind == "full":
        return FullContext()
    if kind == "window":
        if window_turns < 0:
            raise ValueError(f"rollout.window_turns must be >= 0, got {window_turns}")
        return WindowContext(window_turns)
    raise ValueError(f"rollout.context must be one of 'full', 'window'; got {kind!r}")
