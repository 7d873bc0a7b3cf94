"""Collect groups: G episodes per task from the same seed, every turn one batched decision.

Budgets (all end the episode as ``truncated`` with ``truncation_reason``):
- ``max_turns``: the episode reached that many turns without the env ending it.
- ``max_prompt_tokens``: the next prompt would be longer; the episode stops before that turn.
- ``max_new_tokens``: a completion hit the per-turn limit without a stop token; the turn is
  recorded (its tokens were sampled and can be trained on) and the episode ends.
An env exception or step timeout ends that episode with ``error`` set; the others go on.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from clew.envs import Env, HasStateKey, StepResult, make
from clew.policy.hf import Completion
from clew.rollout.actors import Actor
from clew.rollout.context import ContextStrategy, Framing, History, make_context
from clew.types import Episode, Group, Turn


class RolloutConfig(BaseModel):
    """How episodes are collected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group_size: int = Field(8, ge=1, description="episodes per task, all from the task's seed")
    max_turns: int = Field(64, ge=1, description="turn budget per episode")
    max_new_tokens: int = Field(16, ge=1, description="token budget per action")
    max_prompt_tokens: int = Field(4096, ge=1, description="longest prompt a turn may have")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    context: str = Field("full", pattern="^(full|window)$", description="'full' chat or 'window'")
    window_turns: int = Field(0, ge=0, description="exchanges kept by the 'window' context")
    env_step_timeout_s: float | None = Field(None, gt=0, description="per-step env timeout (None: none)")


@dataclass(frozen=True)
class Task:
    """One task: an env id (or ``module:Class``), its kwargs and the seed every group member uses."""

    env_id: str
    seed: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str:
        return f"{self.env_id}#{self.seed}"


@dataclass
class _Live:
    """An episode in flight."""

    episode: Episode
    env: Env
    history: History
    prompt: list[int] = field(default_factory=list)


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (run seed, iteration, episode, turn, ...)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def collect(
    actor: Actor,
    tasks: Sequence[Task],
    cfg: RolloutConfig,
    seed: int,
    framing: Framing | None = None,
    group_offset: int = 0,
    on_turn: Callable[[int, int], None] | None = None,
) -> list[Group]:
    """Roll out ``cfg.group_size`` episodes per task; return one Group per task.

    ``framing`` (tokenizer + chat format) is required for model actors; scripted actors may
    run without it (then prompts and action ids stay empty). ``on_turn(turn, active)`` reports
    progress.
    """
    context = make_context(cfg.context, cfg.window_turns)
    groups = [Group(group_offset + i, t.task_id, t.seed) for i, t in enumerate(tasks)]
    started = [_start(t, g, framing) for t, g in zip(tasks, groups) for _ in range(cfg.group_size)]
    live = [x for x in started if x is not None]
    for turn in range(cfg.max_turns):
        active = _prepare(live, context, framing, cfg)
        if not active:
            break
        if on_turn:
            on_turn(turn, len(active))
        completions = actor.act([x.prompt for x in active], [x.env for x in active], derive_seed(seed, turn))
        for item, completion in zip(active, completions):
            _advance(item, completion, framing, cfg)
    for item in live:
        _close(item.episode, "max_turns")
    by_id = {g.group_id: g for g in groups}
    for item in live:
        by_id[item.episode.group_id].episodes.append(item.episode)
    return groups


def _start(task: Task, group: Group, framing: Framing | None) -> _Live | None:
    episode = Episode(task.task_id, group.group_id, task.seed)
    try:
        env = make(task.env_id, **task.env_kwargs)
        first = env.reset(task.seed)
    except Exception as exc:  # a broken env is recorded, not raised through the loop
        episode.error, episode.truncated, episode.truncation_reason = repr(exc), True, "error"
        group.episodes.append(episode)
        return None
    episode.first_observation = first
    return _Live(episode, env, History([first]))


def _prepare(live: list[_Live], context: ContextStrategy, framing: Framing | None, cfg: RolloutConfig) -> list[_Live]:
    active = []
    for item in live:
        if item.episode.done:
            continue
        item.prompt = context.build(item.history, framing) if framing else []
        if len(item.prompt) > cfg.max_prompt_tokens:
            _close(item.episode, "max_prompt_tokens")
            continue
        active.append(item)
    return active


def _advance(item: _Live, completion: Completion, framing: Framing | None, cfg: RolloutConfig) -> None:
    episode = item.episode
    state = item.env.state_key() if isinstance(item.env, HasStateKey) else None
    turn = Turn(list(item.prompt), completion.token_ids, completion.logprobs, completion.text, state_key=state)
    if completion.entropies:
        turn.info["token_entropies"] = list(completion.entropies)  # per sampled token, for EMPG
    episode.turns.append(turn)
    try:
        result = _step(item.env, completion.text, cfg.env_step_timeout_s)
    except Exception as exc:  # env failures and timeouts end this episode only
        episode.error = "timeout" if isinstance(exc, TimeoutError) else repr(exc)
        _close(episode, "error")
        return
    turn.reward, turn.observation, turn.info = (
        float(result.reward),
        result.observation,
        {**turn.info, **result.info},
    )
    _record_outcome(episode, turn.reward, result.outcome)
    episode.terminated, episode.truncated = result.terminated, result.truncated
    if result.truncated:
        episode.truncation_reason = "env"
    elif not result.terminated and completion.finish_reason == "length":
        _close(episode, "max_new_tokens")
    if not episode.done:
        item.history.add(completion.token_ids, result.observation, framing)


def _record_outcome(episode: Episode, reward: float, reported: float | None) -> None:
    """An env-reported outcome wins; otherwise the outcome is the running sum of step rewards."""
    if reported is not None:
        episode.outcome, episode.outcome_explicit = float(reported), True
    elif not episode.outcome_explicit:
        episode.outcome += reward


def _step(env: Env, action: str, timeout_s: float | None) -> StepResult:
    if timeout_s is None:
        return env.step(action)
    pool = cf.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(env.step, action).result(timeout=timeout_s)
    except cf.TimeoutError as exc:
        raise TimeoutError(f"env step exceeded {timeout_s}s") from exc
    finally:
        pool.shutdown(wait=False)


def _close(episode: Episode, reason: str) -> None:
    if not episode.done:
        episode.truncated, episode.truncation_reason = True, reason
