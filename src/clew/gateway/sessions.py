"""Calls grouped into episodes by a session key: each call a turn, recorded as sampled.

A session is one episode of a harness. Its key comes with each call, in the URL (``/s/<key>/v1/...``: hand
the harness ``base_url=gateway.base_url(key)``) or the ``X-Clew-Session`` header. Each call becomes a
``Turn`` with the exact prompt ids the engine saw (the template over the messages), the sampled ids and
their log-probs; the sampled text is never re-tokenised. A call whose prompt does not extend the previous
call's prompt + completion (a template that drops past reasoning, a harness that trims its history) starts
a new *segment*: the training rows split there on their own (``clew.rollout.batch.to_rows``), and the
session counts them (``Session.segments``, ``Episode`` turn ``info["segment_start"]``).

State keys for step-level credit (GiGPO's anchor groups): a hash of the normalised message history (roles,
text with whitespace collapsed, tool names and arguments), so two episodes of a group that reach the same
conversation state share a key. Calls in one session are serialised in arrival order; sessions never mix.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from clew.gateway.tools import message_text
from clew.types import Episode, FailureType, Turn

_SPACE = re.compile(r"\s+")


class UnknownSession(KeyError):
    """A call named a session that was never opened (or is already closed)."""


@dataclass
class Session:
    """One episode in the making: its turns, the last call's full ids, and how many segments it has."""

    key: str
    task_id: str = ""
    group_id: int = 0
    seed: int = 0
    temperature: float | None = None  # set: every call samples at it, whatever the client asks
    turns: list[Turn] = field(default_factory=list)
    segments: int = 0
    first_observation: str = ""
    last_ids: list[int] = field(default_factory=list)  # the last call's prompt + completion
    shown: int = 0  # messages the last call sent

    def record(self, turn: Turn, messages: list[dict[str, Any]] | None = None) -> None:
        """Add a call's turn; a prompt that does not extend the last call's ids starts a segment. The messages
        that follow the last call's reply (tool results, the user's answer) are that turn's observation."""
        starts = not self.turns or turn.prompt_ids[: len(self.last_ids)] != self.last_ids
        self.segments += starts
        turn.info["segment_start"] = starts
        if messages is not None:
            if self.turns:
                self.turns[-1].observation = "\n".join(
                    message_text(m.get("content")) for m in messages[self.shown + 1 :]
                )
            else:
                self.first_observation = message_text(messages[-1].get("content"))
            self.shown = len(messages)
        self.turns.append(turn)
        self.last_ids = [*turn.prompt_ids, *turn.action_ids]

    def episode(
        self, outcome: float, rewards: list[float] | None = None, error: str | None = None,
        failure: FailureType = "policy",
    ) -> Episode:  # fmt: skip
        """The finished episode: ``outcome`` explicit (the harness's reward), optional per-turn ``rewards``."""
        if rewards is not None:
            if len(rewards) != len(self.turns):
                raise ValueError(f"session {self.key}: {len(rewards)} rewards for {len(self.turns)} turns")
            for turn, reward in zip(self.turns, rewards, strict=True):
                turn.reward = float(reward)
        episode = Episode(self.task_id, self.group_id, self.seed, self.turns, float(outcome), terminated=error is None)
        episode.outcome_explicit, episode.first_observation = True, self.first_observation
        if error is not None:
            episode.error, episode.failure = error, failure
            episode.truncated, episode.truncation_reason = True, "error"
        return episode


class Sessions:
    """Open sessions by key (thread-safe); ``open_on_demand`` opens an unknown key at its first call
    (``clew serve``), otherwise such a call is refused (the trainer opens each episode's session)."""

    def __init__(self, open_on_demand: bool = False) -> None:
        self.open_on_demand = open_on_demand
        self._open: dict[str, Session] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def open(
        self, key: str, task_id: str = "", group_id: int = 0, seed: int = 0, temperature: float | None = None
    ) -> Session:
        with self._guard:
            if key in self._open:
                raise ValueError(f"session {key!r} is already open")
            self._open[key] = Session(key, task_id, group_id, seed, temperature)
            self._locks[key] = threading.Lock()
            return self._open[key]

    def lock(self, key: str, create: bool = True) -> threading.Lock:
        """The session's lock: a call holds it from rendering to recording, so its turns keep arrival order.
        An unknown key opens a session when ``open_on_demand`` and ``create`` (a call, not a close)."""
        with self._guard:
            if key not in self._open:
                if not (self.open_on_demand and create):
                    raise UnknownSession(key)
                self._open[key], self._locks[key] = Session(key), threading.Lock()
            return self._locks[key]

    def get(self, key: str) -> Session:
        with self._guard:
            if key not in self._open:
                raise UnknownSession(key)
            return self._open[key]

    def close(self, key: str) -> Session:
        with self._guard:
            if key not in self._open:
                raise UnknownSession(key)
            self._locks.pop(key)
            return self._open.pop(key)

    def open_keys(self) -> list[str]:
        with self._guard:
            return list(self._open)


def state_key(messages: list[dict[str, Any]]) -> str:
    """A hash of the normalised conversation so far (what the call's prompt shows), for anchor grouping."""
    shown = [
        [m.get("role", ""), _SPACE.sub(" ", message_text(m.get("content"))).strip(), _calls(m.get("tool_calls"))]
        for m in messages
    ]
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()[:16]


def _calls(calls: Any) -> list[list[str]]:
    if not isinstance(calls, list):
        return []
    return [
        [str(c.get("function", {}).get("name", "")), str(c.get("function", {}).get("arguments", ""))] for c in calls
    ]
