"""Collect groups: G episodes per task from the same seed, each episode advancing on its own.

Every episode moves as soon as its own action returns: its prompt goes to the actor, the action
comes back, the env steps it on a worker thread, and the next prompt follows, while other episodes
are still being sampled or stepped. Each request's seed is ``derive_seed(seed, group_id, member,
turn)``, so the groups a seed gives do not depend on the scheduling.

Budgets (all end the episode as ``truncated`` with ``truncation_reason``):
- ``max_turns``: the episode reached that many turns without the env ending it.
- ``max_prompt_tokens``: the next prompt would be longer than ``rollout.max_prompt_tokens`` or
  ``actor.max_model_len - rollout.max_new_tokens``; the episode stops before that turn.
- ``max_new_tokens``: a completion hit the per-turn limit without a stop token; the turn is
  recorded (its tokens were sampled and can be trained on) and the episode ends.
An env exception or step timeout ends that episode with ``error`` set; the others go on. So does a
request the actor hands back as lost (an exception in place of its completion: a remote engine worker
died). An exception raised by the actor itself (the engine failed) propagates.

Each failure is typed (``Episode.failure``, rule in ``clew.envs.InfraError``): one while the env
processes an action (an exception from ``step``, a step past ``env_step_timeout_s``, its worker
crashing) is ``policy`` unless it is an ``InfraError``: no reward from that step, its turn flagged
``info["invalid_action"]`` (so shaping charges the invalid-action penalty) with
``info["step_failure"]`` saying why (``timeout``, ``crash`` or ``exception``). One outside a step
(building or resetting the env, a lost request) is ``infra``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clew.envs import Closeable, Env, HasStateKey, StepResult, failure_type, make
from clew.envs.pool import EnvWorkerError, make_pooled
from clew.policy.base import Completion
from clew.rollout.actors import UNBOUNDED_MODEL_LEN, Actor
from clew.rollout.context import CONTEXTS, ContextStrategy, Framing, History, make_context
from clew.types import Episode, FailureType, Group, Turn


class ContextConfig(BaseModel):
    """``rollout.context``: a registered strategy (``clew.rollout.context.CONTEXTS``) and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("full", description=f"context strategy: {', '.join(CONTEXTS.available())}")
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters")

    @model_validator(mode="after")
    def _known(self) -> ContextConfig:
        make_context(self.name, self.params)  # unknown names, parameters and bad values fail here, naming them
        return self

    def make(self) -> ContextStrategy:
        return make_context(self.name, self.params)


class RolloutConfig(BaseModel):
    """How episodes are collected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _context_shorthand(cls, data: Any) -> Any:
        """``context: window`` means ``{name: window}``; runs from before the registry wrote ``window_turns``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        turns = data.pop("window_turns", None)
        if isinstance(data.get("context"), str):
            data["context"] = {"name": data["context"]}
        if turns is not None and isinstance(data.get("context"), dict) and data["context"].get("name") == "window":
            data["context"] = {**data["context"], "params": {"turns": turns, **data["context"].get("params", {})}}
        return data

    group_size: int = Field(8, ge=1, description="episodes per task, all from the task's seed")
    max_turns: int = Field(64, ge=1, description="turn budget per episode")
    max_new_tokens: int = Field(16, ge=1, description="token budget per action")
    max_prompt_tokens: int = Field(4096, ge=1, description="longest prompt a turn may have")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    context: ContextConfig = Field(
        default_factory=ContextConfig, description="how prompts are built from the episode: {name, params}"
    )
    env_step_timeout_s: float | None = Field(
        60.0,
        gt=0,
        description="seconds an env step may take, in threads, worker processes (env_processes) and on env hosts "
        "alike; past it the step is abandoned (its worker killed) and the episode ends as a policy failure, "
        "penalised like an invalid action (an action can hang an env). null: no limit",
    )
    env_workers: int = Field(4, ge=1, description="threads that step envs")
    env_processes: bool = Field(
        False,
        description="run each episode's env in its own worker process (JVM, slow or crash-prone envs): a crashed or "
        "hung worker is killed and its episode recorded as an error (a policy failure when it died in a step, "
        "an infra one, left out of credit and baselines, otherwise)",
    )
    batch_window_s: float | None = Field(
        None,
        ge=0,
        description="engines that decode in waves (hf): how long to wait for env steps in flight so that their "
        "next requests share one batch. None: wait for all of them (the batches are then those of a lock-step "
        "loop, so runs repeat bit for bit); a few ms lets fast episodes pass a slow env. Continuous-batching "
        "engines (vllm) never wait",
    )
    engine: Literal["hf", "vllm"] = Field("hf", description="rollout engine: hf (transformers) or vllm")
    engine_tolerance: float = Field(
        1e-3, gt=0, description="max |engine - learner| log-prob on the parity probe after each sync"
    )
    parity_probe_every: int | None = Field(
        None,
        ge=1,
        description="run the parity probe after every N-th weight sync (the first sync always). None: every sync for "
        "an engine that receives weights (vllm, any engine on a cluster); only the first for the in-process hf "
        "engine, which samples from the learner's own tensors (nothing is copied, so nothing can arrive stale)",
    )
    parity_probe_tokens: int = Field(
        8,
        ge=1,
        description="tokens sampled per probe prompt (at most rollout.max_new_tokens): a weight that did not arrive "
        "changes every token's log-prob, so a few decode steps check a sync as well as many",
    )
    engine_params: dict[str, Any] = Field(
        default_factory=dict, description="engine constructor options, e.g. {kv_cache_gib: 2} for vllm"
    )
    max_staleness: int = Field(
        0,
        ge=0,
        description="updates the weights that sampled a batch may lag the learner's (0: synchronous). With >= 1 the "
        "next iteration's rollout runs while the learner updates, one update behind (on a cluster the learner "
        "ranks update; in one process the update runs in a thread and the hf engine samples from its own copy of "
        "the weights). clew overlaps one rollout at most, so 2 or more act as 1; TIS (objective.tis_cap) corrects "
        "the mismatch",
    )


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
    """An episode in flight: ``member`` is its index in the group; ``action`` the completion being stepped."""

    episode: Episode
    env: Env
    history: History
    member: int
    prompt: list[int] = field(default_factory=list)
    action: Completion | None = None
    edit_prompt: list[int] | None = None  # the context strategy asked for an edit (a summary) before the next action
    editing: bool = False  # the request at the actor is that edit
    acted: int = 0  # env actions so far (context edits do not count against max_turns)


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
    env_factory: Callable[..., Env] | None = None,
) -> list[Group]:
    """Roll out ``cfg.group_size`` episodes per task; return one Group per task (members in order).

    ``framing`` (tokenizer + chat format) is required for model actors; scripted actors may
    run without it (then prompts and action ids stay empty). ``on_turn(turns_done, active)``
    reports progress each time actions return: turns completed over all episodes, episodes
    still running. ``env_factory(env_id, **kwargs)`` builds each episode's env (default: in this
    process, or a worker process with ``cfg.env_processes``; a cluster passes its env hosts').
    """
    groups = [Group(group_offset + i, t.task_id, t.seed) for i, t in enumerate(tasks)]
    started = [_start(t, g, m, cfg, env_factory) for t, g in zip(tasks, groups) for m in range(cfg.group_size)]
    live = [x for _, x in started if x is not None]
    try:
        _Scheduler(actor, live, cfg, framing, seed, on_turn).run()
    finally:
        for item in live:
            _release(item.env)
    by_id = {g.group_id: g for g in groups}
    for episode, _ in started:
        by_id[episode.group_id].episodes.append(episode)
    return groups


def _start(
    task: Task, group: Group, member: int, cfg: RolloutConfig, env_factory: Callable[..., Env] | None = None
) -> tuple[Episode, _Live | None]:
    episode = Episode(task.task_id, group.group_id, task.seed)
    env: Env
    try:
        if env_factory is not None:
            env = env_factory(task.env_id, **task.env_kwargs)
        elif cfg.env_processes:
            env = make_pooled(task.env_id, timeout_s=cfg.env_step_timeout_s, **task.env_kwargs)
        else:
            env = make(task.env_id, **task.env_kwargs)
        first = env.reset(task.seed)
    except Exception as exc:  # a broken env is recorded, not raised through the loop; no action caused it
        _fail(episode, exc, "infra")
        return episode, None
    episode.first_observation = first
    return episode, _Live(episode, env, History([first]), member)


def _release(env: Env) -> None:
    """Close an env that holds resources (a JVM, a worker process); a failing close is not the episode's problem."""
    if isinstance(env, Closeable):
        with contextlib.suppress(Exception):  # best effort: the episode is already recorded
            env.close()


class _Scheduler:
    """Drives every episode through prompt -> actor -> env step until each one ends."""

    def __init__(
        self,
        actor: Actor,
        live: list[_Live],
        cfg: RolloutConfig,
        framing: Framing | None,
        seed: int,
        on_turn: Callable[[int, int], None] | None,
    ) -> None:
        self.actor, self.live, self.cfg = actor, live, cfg
        self.framing, self.seed, self.on_turn = framing, seed, on_turn
        self.context: ContextStrategy = cfg.context.make()
        self.edits = bool(getattr(actor, "writes_context_edits", True))  # a scripted expert writes no summaries
        max_model_len = int(getattr(actor, "max_model_len", UNBOUNDED_MODEL_LEN))
        self.prompt_budget = min(cfg.max_prompt_tokens, max_model_len - cfg.max_new_tokens)
        continuous = bool(getattr(actor, "continuous_batching", False))
        self.gather_s: float | None = 0.0 if continuous else cfg.batch_window_s
        self.ready: list[int] = list(range(len(live)))  # keys (indices into live) waiting to act
        self.sampling: set[int] = set()  # keys with a request at the actor
        self.turns_done = 0

    def run(self) -> None:
        steps = _EnvSteps(self.cfg.env_workers, self.cfg.env_step_timeout_s)
        try:
            while self.ready or self.sampling or steps:
                self._submit_ready()
                if self.sampling:
                    self._take(self.actor.poll(), steps)
                block = not self.sampling and not (self.ready and self.gather_s == 0)
                for key, result in steps.harvest(block=block, gather_s=self.gather_s):
                    self._apply(key, result)
        finally:
            steps.close()

    def _submit_ready(self) -> None:
        ready, self.ready = sorted(self.ready), []
        for key in ready:
            item = self.live[key]
            if self._within_budgets(item):
                episode = item.episode
                request_seed = derive_seed(self.seed, episode.group_id, item.member, len(episode.turns))
                self.actor.submit(key, item.prompt, item.env, request_seed)
                self.sampling.add(key)

    def _within_budgets(self, item: _Live) -> bool:
        """Build the next prompt; close the episode (and return False) when a budget is spent."""
        item.editing = item.edit_prompt is not None
        if item.edit_prompt is not None:
            item.prompt, item.edit_prompt = item.edit_prompt, None
        elif item.acted >= self.cfg.max_turns:
            _close(item.episode, "max_turns")
            return False
        else:
            item.prompt = self.context.build(item.history, self.framing) if self.framing else []
        if len(item.prompt) > self.prompt_budget:
            _close(item.episode, "max_prompt_tokens")
            return False
        return True

    def _take(self, finished: Sequence[tuple[int, Completion | Exception]], steps: _EnvSteps) -> None:
        """Record each returned action as a turn and send it to its env; a lost request ends its episode."""
        for key, completion in finished:
            if key not in self.sampling:
                raise RuntimeError(f"actor returned request {key}, which is not waiting for an action")
            self.sampling.discard(key)
            item = self.live[key]
            if isinstance(completion, Exception):  # its remote engine worker died: not the policy's doing
                _fail(item.episode, completion, "infra")
                continue
            _record_turn(item, completion, self.context.name if item.editing else None)
            if item.editing:  # a context edit: no env step, the next action follows
                self.context.take_edit(item.history, completion.token_ids)
                self.ready.append(key)
                continue
            item.action, item.acted = completion, item.acted + 1
            steps.submit(key, item.env, self.context.take_action(item.history, completion.text))
        self.turns_done += len(finished)
        if not finished and self.sampling and self.actor.pending() == 0 and not steps:
            raise RuntimeError(f"actor has no pending requests but {len(self.sampling)} never returned")
        if finished and self.on_turn:
            self.on_turn(self.turns_done, sum(not x.episode.done for x in self.live))

    def _apply(self, key: int, result: StepResult | Exception) -> None:
        """Apply an env step's result (or failure) to its episode; a running episode becomes ready again."""
        item = self.live[key]
        action, item.action = item.action, None
        assert action is not None
        if isinstance(result, Exception):  # env failures and timeouts end this episode only
            _fail(item.episode, result, failure_type(result, in_step=True))
            return
        _apply_step(item.episode, result, action)
        if not item.episode.done:
            item.history.add(action.token_ids, result.observation, self.framing)
            if self.framing and item.acted < self.cfg.max_turns:  # no edit that nothing would read
                item.edit_prompt = self.context.after_step(item.history, self.framing)
            if item.edit_prompt is not None and not self.edits:  # the actor writes nothing: an empty edit
                self.context.take_edit(item.history, [])
                item.edit_prompt = None
            self.ready.append(key)


def _record_turn(item: _Live, completion: Completion, edit: str | None = None) -> None:
    """The turn as sampled: exact prompt and action ids, log-probs, the env state before the step.

    A context edit (``edit`` names the strategy) is a turn too, trained and credited like any other:
    reward 0, no env step; its state key is the env's prefixed with the strategy, so step-level
    grouping compares edits written in the same env state; its observation is the last env
    observation, which is also what the next action answers.
    """
    state = item.env.state_key() if isinstance(item.env, HasStateKey) else None
    turn = Turn(list(item.prompt), completion.token_ids, completion.logprobs, completion.text, state_key=state)
    if completion.finish_reason == "length":
        turn.info["cut"] = True  # stopped at max_new_tokens without a stop token (overlong shaping reads it)
    if edit is not None:
        turn.state_key = f"{edit}:{state}" if state is not None else None
        turn.observation = item.history.observations[-1]
        turn.info["context_edit"] = edit
        if completion.finish_reason == "length":
            turn.info["edit_truncated"] = True  # cut at max_new_tokens; the episode goes on with what was written
    if completion.entropies:
        turn.info["token_entropies"] = list(completion.entropies)  # per sampled token, for EMPG
    item.episode.turns.append(turn)


def env_turns(episode: Episode) -> int:
    """Turns that were env actions (context edits such as summaries do not count against ``max_turns``)."""
    return sum("context_edit" not in t.info for t in episode.turns)


def _apply_step(episode: Episode, result: StepResult, action: Completion) -> None:
    turn = episode.turns[-1]
    turn.reward, turn.observation, turn.info = float(result.reward), result.observation, {**turn.info, **result.info}
    _record_outcome(episode, turn.reward, result.outcome)
    episode.terminated, episode.truncated = result.terminated, result.truncated
    if result.truncated:
        episode.truncation_reason = "env"
    elif not result.terminated and action.finish_reason == "length":
        _close(episode, "max_new_tokens")


def _record_outcome(episode: Episode, reward: float, reported: float | None) -> None:
    """An env-reported outcome wins; otherwise the outcome is the running sum of step rewards."""
    if reported is not None:
        episode.outcome, episode.outcome_explicit = float(reported), True
    elif not episode.outcome_explicit:
        episode.outcome += reward


def _close(episode: Episode, reason: str) -> None:
    if not episode.done:
        episode.truncated, episode.truncation_reason = True, reason


def _fail(episode: Episode, exc: Exception, failure: FailureType) -> None:
    """End the episode with ``error``; a policy failure flags the turn whose action was being stepped.

    The failing step gives no reward, so the outcome stays what the episode had earned before it (0 for
    an env that scores only at the end), like an episode cut by a budget; the flag adds the penalty.
    """
    episode.error, episode.failure = ("timeout" if isinstance(exc, TimeoutError) else repr(exc)), failure
    if failure == "policy" and episode.turns:
        turn = episode.turns[-1]
        turn.info["invalid_action"] = True
        turn.info["step_failure"] = _step_failure(exc)
    _close(episode, "error")


def _step_failure(exc: Exception) -> str:
    """Why a step failed: ``timeout`` (past the step timeout), ``crash`` (its worker died) or ``exception``."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "crash" if isinstance(exc, EnvWorkerError) else "exception"


@dataclass
class _StepJob:
    """One env step; ``started`` (monotonic seconds) is set when a worker picks it up."""

    key: int
    env: Env
    action: str
    started: float | None = None

    def run(self) -> StepResult:
        self.started = time.monotonic()
        return self.env.step(self.action)


class _EnvSteps:
    """Env steps on a thread pool. A step running past ``timeout_s`` is abandoned (a thread cannot be
    killed): it is reported as a ``TimeoutError`` and later steps go to a fresh pool."""

    def __init__(self, workers: int, timeout_s: float | None) -> None:
        self.workers, self.timeout_s = workers, timeout_s
        self.pool = self._new_pool()
        self.jobs: dict[cf.Future[StepResult], _StepJob] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def submit(self, key: int, env: Env, action: str) -> None:
        job = _StepJob(key, env, action)
        self.jobs[self.pool.submit(job.run)] = job

    def harvest(self, block: bool, gather_s: float | None = 0.0) -> list[tuple[int, StepResult | Exception]]:
        """Finished steps (and timed-out ones); with ``block``, wait until at least one ends or times out,
        first giving every step in flight up to ``gather_s`` (None: no limit but the step timeout) to finish
        so that their next requests batch."""
        if not self.jobs:
            return []
        if block and gather_s != 0:
            limits = [t for t in (gather_s, self._wait_s()) if t is not None]
            cf.wait(self.jobs, timeout=min(limits, default=None), return_when=cf.ALL_COMPLETED)
        done, _ = cf.wait(self.jobs, timeout=self._wait_s() if block else 0, return_when=cf.FIRST_COMPLETED)
        out = [(self.jobs.pop(f).key, _result(f)) for f in done]
        return sorted(out, key=lambda r: r[0]) + self._expire()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _new_pool(self) -> cf.ThreadPoolExecutor:
        return cf.ThreadPoolExecutor(self.workers, thread_name_prefix="clew-env")

    def _wait_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        now = time.monotonic()
        left = [j.started + self.timeout_s - now for j in self.jobs.values() if j.started is not None]
        return max(0.0, min(left, default=self.timeout_s))

    def _expire(self) -> list[tuple[int, StepResult | Exception]]:
        if self.timeout_s is None:
            return []
        limit, now = self.timeout_s, time.monotonic()
        late = [f for f, j in self.jobs.items() if j.started is not None and now - j.started >= limit and not f.done()]
        if not late:
            return []
        expired: list[tuple[int, StepResult | Exception]] = []
        for f in late:
            expired.append((self.jobs.pop(f).key, TimeoutError(f"env step exceeded {limit}s")))
        self._renew_pool()
        return expired

    def _renew_pool(self) -> None:
        """Move to a fresh pool; steps still queued on the old one (behind a hung thread) move with it."""
        old, self.pool = self.pool, self._new_pool()
        for f, job in list(self.jobs.items()):
            if f.cancel():
                del self.jobs[f]
                self.jobs[self.pool.submit(job.run)] = job
        old.shutdown(wait=False)


def _result(future: cf.Future[StepResult]) -> StepResult | Exception:
    exc = future.exception()
    if exc is None:
        return future.result()
    if isinstance(exc, Exception):
        return exc
    raise exc
