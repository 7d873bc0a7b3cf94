"""Context strategies: how a turn's prompt ids are built from the episode so far, and how it is edited.

A strategy is named in ``rollout.context: {name, params}`` and looked up in ``CONTEXTS``:

- ``full``: the whole chat. Each prompt extends the previous prompt + action exactly, which
  ``train.merge_prefix`` exploits (one row per episode).
- ``window`` (``turns``): the last ``turns`` exchanges, the oldest kept observation opening the chat.
- ``summary`` (IterResearch-style workspace; ``every``, ``budget_tokens``, ``instruction``): every
  ``every`` env turns, or when the next prompt would pass ``budget_tokens``, the policy is asked to
  summarise; the summary is a sampled turn (recorded and trained like any other) and the prompt
  becomes the task, the summary as the assistant's reply to it, then the exchanges since.
- ``memory`` (Memory-as-Action; ``turns``, ``max_chars``): an action may carry
  ``<memory>...</memory>``; the block replaces the agent's memory and is cut from the text the env
  receives. The prompt is the task + the memory + the last ``turns`` exchanges.
- ``markovian`` (Delethink-style chunks; ``chunk_tokens``, ``carry_tokens``): the chat grows until
  the prompt would pass ``chunk_tokens``; then a new chunk starts from the task plus the last
  ``carry_tokens`` ids of the previous chunk and the newest observation.

Summaries are sampled with ``rollout.max_new_tokens`` like actions; one cut at that limit is kept
(its turn has ``cut`` set) and the episode goes on. A ``budget_tokens`` below what the task, a
summary and one exchange take makes every step summarise: size it well above that. Actors that
cannot write edits (the scripted expert of SFT warm starts: ``writes_context_edits = False``) are
never asked: they get an empty edit (``take_edit(history, [])``), so a ``summary`` context still cuts
the history on schedule and their prompts look like the policy's, with an empty summary. Estimators
that group by turn index (``turn_returns`` with ``normalize: turn``, ``matchtir``) see summaries as
turns and shift later indices; prefer state-keyed or outcome-level credit with ``summary``. Under
``window`` and ``memory`` every turn starts a new segment.

Tokens in, tokens out: only env text (observations, the task, the memory text) is ever encoded;
sampled ids (actions, summaries, the markovian carry-over) enter prompts exactly as sampled. Each
turn's record holds the prompt the engine saw, so every training row is byte-for-byte what was
sampled from, whatever the strategy did to the context before it.

Credit across context edits. An edit that is sampled (a summary) is a turn of its episode like any
other: reward 0, no env step, recorded with ``Turn.context_edit``, so every estimator credits it;
outcome-level estimators (GRPO, RLOO) give it the episode's advantage and turn-level ones (discounted
returns, GiGPO's step groups, keyed ``summary:<env state>``) the return of what followed it. A memory
edit rides inside an action and shares that action's credit. Group statistics stay per episode, never
per segment: that is DCPO's rule (Memory as Action, arXiv 2510.12635, ``compute_dcpo_outcome_advantage``:
A_seg = (R(tau) - mean_G) / (std_G + eps) with the statistics deduplicated per rollout; worked example in
shared/reference/credit.md section 23) and MemSearcher's multi-context GRPO, which propagates the
trajectory advantage to each of its contexts. Each segment (a run of turns whose prompts extend each other)
becomes its own training rows; ``objective.weighting`` says whether episodes, segments or turns weigh alike
(``episode``, the default, keeps the number of segments out of the loss; DCPO's per-segment samples
correspond to ``segment``).

One strategy instance per episode: the rollout builds a fresh one (``rollout.context.make()``) for each
episode, so a strategy keeps its episode's edit state (the summary, the memory, the carry-over) in its own
fields, and ``History`` holds only what every strategy reads (observations, sampled actions, framed segments).

Hooks: ``build`` (pure) gives the next action's prompt; ``after_step`` runs after each env step
and may return a prompt to sample a context edit from (the engine is called by the rollout
scheduler, on the same seed schedule as actions); ``take_edit`` absorbs that sample;
``take_action`` maps a sampled action to the text the env receives.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clew.policy.chat import ChatFormat
from clew.registry import ParamRegistry

SUMMARY_INSTRUCTION = "Summarize what you know and what you did so far, briefly; it will replace the history."
_MEMORY = re.compile(r"<memory>(.*?)</memory>", re.DOTALL)
SUBGOAL = re.compile(r"<subgoal>(.*?)</subgoal>", re.DOTALL)  # a plan turn's new subgoal (``plan`` context, HiPER)
PLAN_INSTRUCTION = "To set a new subgoal, start a reply with <subgoal>...</subgoal>; otherwise keep the current one."


@dataclass
class History:
    """An episode as the policy saw it: observations, sampled action ids, cached segments.

    ``segments[i]`` holds the ids that follow ``actions[i]``: the turn close and the framed
    observation ``observations[i + 1]``. What a strategy does with them (a summary, a memory, a
    carry-over) is the strategy's own state, not the history's.
    """

    observations: list[str]
    actions: list[list[int]] = field(default_factory=list)
    segments: list[list[int]] = field(default_factory=list)

    def add(self, action_ids: list[int], observation: str, framing: Framing | None) -> None:
        self.actions.append(list(action_ids))
        self.observations.append(observation)
        seg = framing.chat.next_segment(framing.tokenizer, action_ids, observation) if framing else []
        self.segments.append(seg)

    def exchanges(self, start: int) -> list[int]:
        """Actions and their following segments from exchange ``start`` on."""
        return [x for i in range(start, len(self.actions)) for x in self.actions[i] + self.segments[i]]


@dataclass(frozen=True)
class Framing:
    """The tokenizer and its chat framing."""

    tokenizer: Any
    chat: ChatFormat

    def first(self, text: str) -> list[int]:
        return self.chat.first_segment(self.tokenizer, text)

    def after(self, action_ids: list[int], text: str) -> list[int]:
        return self.chat.next_segment(self.tokenizer, action_ids, text)


class ContextStrategy(Protocol):
    """Builds the prompt ids of the next turn and decides on context edits; one instance per episode."""

    @property
    def name(self) -> str: ...

    def build(self, history: History, framing: Framing) -> list[int]: ...

    def after_step(self, history: History, framing: Framing) -> list[int] | None: ...

    def take_edit(self, history: History, action_ids: list[int]) -> None: ...

    def take_action(self, history: History, text: str) -> str: ...


class _NoEdits:
    """Defaults: no separately sampled edit, the action's text goes to the env as it is."""

    def after_step(self, history: History, framing: Framing) -> list[int] | None:
        return None

    def take_edit(self, history: History, action_ids: list[int]) -> None:
        raise RuntimeError(f"context strategy {type(self).__name__} asked for no edit")

    def take_action(self, history: History, text: str) -> str:
        return text


@dataclass(frozen=True)
class FullContext(_NoEdits):
    """The whole chat so far."""

    name: str = "full"

    def build(self, history: History, framing: Framing) -> list[int]:
        return framing.first(history.observations[0]) + history.exchanges(0)


@dataclass(frozen=True)
class WindowContext(_NoEdits):
    """The last ``turns`` exchanges; the oldest kept observation opens the chat (0 = current only)."""

    turns: int = 0
    name: str = "window"

    def __post_init__(self) -> None:
        _at_least("window", "turns", self.turns, 0)

    def build(self, history: History, framing: Framing) -> list[int]:
        start = max(0, len(history.actions) - self.turns)
        return framing.first(history.observations[start]) + history.exchanges(start)


@dataclass
class SummaryContext(_NoEdits):
    """Every ``every`` env turns (0: never by count), or when the next prompt would be longer than
    ``budget_tokens`` (None: no budget), the policy writes a summary that replaces the history.

    State: ``note``, the ids of the last summary; ``start``, the first exchange the prompt still shows
    (the exchanges before it are what the note replaced; 0 until the first summary)."""

    every: int = 8
    budget_tokens: int | None = None
    instruction: str = SUMMARY_INSTRUCTION
    name: str = "summary"
    note: list[int] = field(default_factory=list, init=False, compare=False)
    start: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        _at_least("summary", "every", self.every, 0)
        if self.budget_tokens is not None:
            _at_least("summary", "budget_tokens", self.budget_tokens, 1)
        if self.every == 0 and self.budget_tokens is None:
            raise ValueError("context 'summary' needs every >= 1 or a budget_tokens; it would never summarize")

    def build(self, history: History, framing: Framing) -> list[int]:
        if self.start == 0:  # no summary yet (a summary always follows at least one exchange)
            return framing.first(history.observations[0]) + history.exchanges(0)
        opening = framing.first(history.observations[0]) + self.note
        return opening + framing.after(self.note, history.observations[self.start]) + history.exchanges(self.start)

    def after_step(self, history: History, framing: Framing) -> list[int] | None:
        due = self.every > 0 and len(history.actions) - self.start >= self.every  # env turns since the last summary
        over = self.budget_tokens is not None and len(self.build(history, framing)) > self.budget_tokens
        if not (due or over) or not history.actions:
            return None
        prompt = self.build(history, framing)  # ends with the last exchange: its action, then segments[-1]
        asked = framing.after(history.actions[-1], f"{history.observations[-1]}\n\n{self.instruction}")
        return prompt[: len(prompt) - len(history.segments[-1])] + asked

    def take_edit(self, history: History, action_ids: list[int]) -> None:
        self.note, self.start = list(action_ids), len(history.actions)


@dataclass
class MemoryContext(_NoEdits):
    """Memory-as-Action: ``<memory>...</memory>`` in an action replaces the memory (at most
    ``max_chars``); the prompt is the task, the memory and the last ``turns`` exchanges.

    State: ``memory``, the agent's memory text."""

    turns: int = 2
    max_chars: int = 400
    name: str = "memory"
    memory: str = field(default="", init=False, compare=False)

    def __post_init__(self) -> None:
        _at_least("memory", "turns", self.turns, 0)
        _at_least("memory", "max_chars", self.max_chars, 1)

    def build(self, history: History, framing: Framing) -> list[int]:
        start = max(0, len(history.actions) - self.turns)
        return _noted(history, framing, start, f"Your memory: {self.memory or '(empty)'}")

    def take_action(self, history: History, text: str) -> str:
        """Store the last memory block of ``text`` and return the text without any memory block."""
        block, rest = _split_blocks(_MEMORY, text)
        if block is not None:
            self.memory = block[: self.max_chars]
        return rest


@dataclass
class PlanContext(_NoEdits):
    """Plan-execute (HiPER): a reply may open with ``<subgoal>...</subgoal>``, which switches to a new subgoal (the
    tag is removed before the env sees the action); the prompt is the task, the instruction, the current subgoal
    and the last ``turns`` exchanges (0: all of them).

    State: ``subgoal``, the current subgoal's text."""

    turns: int = 0
    instruction: str = PLAN_INSTRUCTION
    name: str = "plan"
    subgoal: str = field(default="", init=False, compare=False)

    def __post_init__(self) -> None:
        _at_least("plan", "turns", self.turns, 0)

    def build(self, history: History, framing: Framing) -> list[int]:
        start = max(0, len(history.actions) - self.turns) if self.turns else 0
        return _noted(history, framing, start, f"{self.instruction}\nCurrent subgoal: {self.subgoal or '(none)'}")

    def take_action(self, history: History, text: str) -> str:
        """Switch to the reply's last subgoal, if it sets one; return the reply without subgoal blocks."""
        block, rest = _split_blocks(SUBGOAL, text)
        if block is not None:
            self.subgoal = block
        return rest


def _noted(history: History, framing: Framing, start: int, note: str) -> list[int]:
    """The task with ``note`` under it (and, when exchanges before ``start`` are dropped, the observation that
    opens the kept ones), then the exchanges from ``start``."""
    opening = f"{history.observations[0]}\n\n{note}"
    if start > 0:
        opening += f"\n\n{history.observations[start]}"
    return framing.first(opening) + history.exchanges(start)


def _split_blocks(pattern: re.Pattern[str], text: str) -> tuple[str | None, str]:
    """The last block ``pattern`` finds in ``text`` (stripped), and the text without any such block (``text`` as it
    is when there is none)."""
    blocks = pattern.findall(text)
    return (blocks[-1].strip(), pattern.sub("", text).strip()) if blocks else (None, text)


@dataclass
class MarkovianContext(_NoEdits):
    """Delethink-style chunks: when the prompt would pass ``chunk_tokens``, the next chunk starts from
    the task plus the last ``carry_tokens`` ids of the previous chunk (sampled ids kept as they are).

    State: ``carry``, the ids carried into the current chunk; ``start``, the chunk's first exchange."""

    chunk_tokens: int = 1024
    carry_tokens: int = 128
    name: str = "markovian"
    carry: list[int] = field(default_factory=list, init=False, compare=False)
    start: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        _at_least("markovian", "carry_tokens", self.carry_tokens, 1)
        if self.chunk_tokens <= self.carry_tokens:
            raise ValueError(
                f"context 'markovian': chunk_tokens ({self.chunk_tokens}) must exceed carry_tokens "
                f"({self.carry_tokens})"
            )

    def build(self, history: History, framing: Framing) -> list[int]:
        return framing.first(history.observations[0]) + self.carry + history.exchanges(self.start)

    def after_step(self, history: History, framing: Framing) -> list[int] | None:
        """Start a new chunk when the next prompt would be too long (no engine call needed): the carry is the
        last ``carry_tokens`` ids before the newest observation, then that observation's segment whole, so the
        policy always sees where it is."""
        if len(self.build(history, framing)) > self.chunk_tokens:
            stream, newest = self.carry + history.exchanges(self.start), history.segments[-1]
            self.carry = stream[: len(stream) - len(newest)][-self.carry_tokens :] + newest
            self.start = len(history.actions)
        return None


def _at_least(context: str, param: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"context {context!r}: {param} must be >= {low}, got {value}")


@dataclass(frozen=True)
class ContextSpec:
    """A registered strategy: ``fn(**params)`` builds one (the rollout builds a fresh one per episode)."""

    name: str
    fn: Callable[..., ContextStrategy]
    summary: str


CONTEXTS: ParamRegistry[ContextSpec] = ParamRegistry("context strategy")


def _full() -> ContextStrategy:
    return FullContext()


def _window(*, turns: int = 0) -> ContextStrategy:
    return WindowContext(turns)


def _summary(
    *, every: int = 8, budget_tokens: int | None = None, instruction: str = SUMMARY_INSTRUCTION
) -> ContextStrategy:
    return SummaryContext(every, budget_tokens, instruction)


def _memory(*, turns: int = 2, max_chars: int = 400) -> ContextStrategy:
    return MemoryContext(turns, max_chars)


def _plan(*, turns: int = 0, instruction: str = PLAN_INSTRUCTION) -> ContextStrategy:
    return PlanContext(turns, instruction)


def _markovian(*, chunk_tokens: int = 1024, carry_tokens: int = 128) -> ContextStrategy:
    return MarkovianContext(chunk_tokens, carry_tokens)


def register_context(name: str, factory: Callable[..., ContextStrategy], summary: str = "") -> None:
    """Add (or replace) a strategy: ``factory(**params)`` builds it, its keyword-only parameters (with defaults)
    are what ``rollout.context.params`` may set. A plug-in module calls this at import (``clew.plugins``)."""
    CONTEXTS.add(ContextSpec(name, factory, summary))


register_context("full", _full, "the whole chat")
register_context("window", _window, "the last `turns` exchanges")
register_context("summary", _summary, "the policy summarises every `every` turns or past `budget_tokens`")
register_context("memory", _memory, "Memory-as-Action: <memory> blocks + the last `turns` exchanges")
register_context("plan", _plan, "plan-execute: <subgoal> blocks switch subgoals (HiPER) + the last `turns` exchanges")
register_context("markovian", _markovian, "fixed chunks of `chunk_tokens`, `carry_tokens` carried over")


def make_context(name: str, params: dict[str, Any] | None = None) -> ContextStrategy:
    """The strategy ``name`` with ``params``; unknown names, parameters or values fail naming them."""
    params = dict(params or {})
    CONTEXTS.check_params(name, params)
    try:
        return CONTEXTS.get(name).fn(**params)
    except TypeError as exc:  # a parameter of the wrong type, e.g. every: "2"
        raise ValueError(f"context {name!r}: bad parameter value in {params}: {exc}") from None
