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
Games whose every seat the policy plays (self-play: an env with ``clew.envs.HasSeats`` and ``seats() > 1``) give
one episode per seat (``Episode.agent``, the game's id in ``Episode.match``), each with its own history, context
and group: the seats of task ``i`` are the groups ``group_offset + i + seat * len(tasks)`` (seat 0 keeps the usual
id), so group statistics are per (task, seat). Only the seat to act is sampled; its turn's observation is what
that seat sees when it acts again (after the others moved) or the game's last message. The ending step gives
each seat its verdict (``verdicts()``) as its outcome, success a verdict above 0. A budget ends every seat of the
game; a failure is charged to the seat whose move caused it, the others' episodes are ``infra`` (a game cut short
is no sample of theirs).

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

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from clew.envs import (
    Env,
    HasGoldReply,
    HasSeats,
    HasSnapshot,
    HasStateKey,
    StepResult,
    failure_type,
    make,
)
from clew.envs.pool import make_pooled
from clew.policy.base import Completion
from clew.rollout.actors import Actor
from clew.rollout.config import RolloutConfig
from clew.rollout.context import Framing, History
from clew.rollout.endings import apply_step, fail, record_outcome, release, step_failure
from clew.rollout.envsteps import EnvSteps
from clew.rollout.seats import Live, close_game, end_game, fail_game, finished_game, group_id, seated
from clew.rollout.tasks import Task, derive_seed
from clew.types import REPLAYED, Episode, Group, Turn


def collect(
    actor: Actor,
    tasks: Sequence[Task],
    cfg: RolloutConfig,
    seed: int,
    framing: Framing | None = None,
    group_offset: int = 0,
    on_turn: Callable[[int, int], None] | None = None,
    env_factory: Callable[..., Env] | None = None,
    finished: Mapping[tuple[int, int], Episode] | None = None,
    on_episode: Callable[[Episode, int], None] | None = None,
) -> list[Group]:
    """Roll out ``cfg.group_size`` episodes per task; return one Group per task (members in order).

    ``framing`` (tokenizer + chat format) is required for model actors; scripted actors may
    run without it (then prompts and action ids stay empty). ``on_turn(turns_done, active)``
    reports progress each time actions return: turns completed over all episodes, episodes
    still running. ``env_factory(env_id, **kwargs)`` builds each episode's env (default: in this
    process, or a worker process with ``cfg.env_processes``; a cluster passes its env hosts').
    ``on_episode(episode, member)`` is called as each episode ends; ``finished[(group_id, member)]``
    are episodes that ended before (a rollout resumed after a kill): they are kept as they are and
    not played again, and the others draw the same request seeds as they would have.
    """
    done, branch_points = finished or {}, dict[int, bytes]()  # group -> its branch point's env snapshot
    begin = functools.partial(_start, cfg=cfg, env_factory=env_factory, framing=framing, branch_points=branch_points)
    started: list[tuple[Episode, Live | None, int]] = []  # (episode, its item or None when not played now, member)
    for i, task in enumerate(tasks):
        ids = functools.partial(group_id, group_offset + i, len(tasks))
        for m in range(cfg.group_size):
            kept = finished_game(done, ids, m)
            started += [(e, None, m) for e in kept] if kept else [(e, x, m) for e, x in begin(task, ids, m)]
    if on_episode:
        for episode, item, member in started:
            if item is None and (episode.group_id, member) not in done:  # failed at reset
                on_episode(episode, member)
    live = [x for _, x, _ in started if x is not None]
    try:
        _Scheduler(actor, live, cfg, framing, seed, on_turn, on_episode).run()
    finally:
        for env in {id(item.env): item.env for item in live}.values():  # a game's seats share one env
            release(env)
    groups = {group_offset + i: Group(group_offset + i, t.task_id, t.seed) for i, t in enumerate(tasks)}
    for episode, _, _ in started:
        task = tasks[(episode.group_id - group_offset) % len(tasks)]
        groups.setdefault(episode.group_id, Group(episode.group_id, task.task_id, task.seed)).episodes.append(episode)
    return [groups[k] for k in sorted(groups)]


def _start(
    task: Task, ids: Callable[[int], int], member: int, cfg: RolloutConfig,
    env_factory: Callable[..., Env] | None = None, framing: Framing | None = None,
    branch_points: dict[int, bytes] | None = None,
) -> list[tuple[Episode, Live | None]]:  # fmt: skip
    """Build and reset the member's env; a task with a ``prefix`` replays it (the first member of a group whose env
    has ``HasSnapshot`` snapshots the branch point into ``branch_points``, the others restore it). A game the policy
    plays every seat of gives one (episode, item) per seat (``ids(seat)``: its group)."""
    episode = Episode(task.task_id, ids(0), task.seed)
    env: Env
    try:
        if env_factory is not None:
            env = env_factory(task.env_id, **task.env_kwargs)
        elif cfg.env_processes:
            env = make_pooled(task.env_id, timeout_s=cfg.env_step_timeout_s, **task.env_kwargs)
        else:
            env = make(task.env_id, **task.env_kwargs)
        first = env.reset(task.seed)
        if isinstance(env, HasSeats) and env.seats() > 1:
            return seated(task, env, first, ids, member, cfg)
        episode.gold_reply = env.gold_reply() if isinstance(env, HasGoldReply) else None
        episode.first_observation, history = first, History([first])
        _reach_branch_point(episode, env, history, task.prefix, framing, ids(0), branch_points)
    except Exception as exc:  # a broken env (or a replay that diverged) is recorded, not raised; no action caused it
        fail(episode, exc, "infra")
        return [(episode, None)]
    return [(episode, Live(episode, env, history, cfg.context.make(), member, acted=len(task.prefix)))]


def _reach_branch_point(
    episode: Episode, env: Env, history: History, prefix: Sequence[Turn], framing: Framing | None, key: int,
    branch_points: dict[int, bytes] | None,
) -> None:  # fmt: skip
    """Put ``env`` where ``prefix`` left it (``Task.prefix``): restore the group's snapshot of that point, or step the
    recorded actions again (then snapshot it for the group's other members). The prefix's turns open the episode,
    marked ``info["replayed"]``: they are not this rollout's samples (no training rows, no env steps)."""
    saved = branch_points.get(key) if branch_points is not None and prefix else None
    if saved is not None and isinstance(env, HasSnapshot):
        env.restore(saved)
    for turn in prefix:
        if not turn.env_step:
            raise ValueError("a replayed prefix cannot hold context edits (their strategy state is not replayed)")
        if saved is None or not isinstance(env, HasSnapshot):
            result = env.step(turn.action_text)
            if result.observation != turn.observation or result.terminated or result.truncated:
                raise RuntimeError(f"replaying turn {len(episode.turns)} diverged from the recorded episode")
        episode.turns.append(dataclasses.replace(turn, info={**turn.info, REPLAYED: True}))
        record_outcome(episode, float(turn.reward), None)
        history.add(turn.action_ids, turn.observation, framing)
    if prefix and saved is None and branch_points is not None and isinstance(env, HasSnapshot):
        branch_points[key] = env.snapshot()


class _Scheduler:
    """Drives every episode through prompt -> actor -> env step until each one ends."""

    def __init__(
        self,
        actor: Actor,
        live: list[Live],
        cfg: RolloutConfig,
        framing: Framing | None,
        seed: int,
        on_turn: Callable[[int, int], None] | None,
        on_episode: Callable[[Episode, int], None] | None = None,
    ) -> None:
        self.actor, self.live, self.cfg = actor, live, cfg
        self.framing, self.seed, self.on_turn, self.on_episode = framing, seed, on_turn, on_episode
        self.reported: set[int] = set()  # keys whose end went to on_episode
        self.edits = actor.writes_context_edits  # a scripted expert writes no summaries
        self.prompt_budget = min(cfg.max_prompt_tokens, actor.max_model_len - cfg.max_new_tokens)
        continuous = actor.continuous_batching
        self.gather_s: float | None = 0.0 if continuous else cfg.batch_window_s
        for key, item in enumerate(live):
            item.key = key
        self.ready: list[int] = [k for k, x in enumerate(live) if not x.waiting]  # keys (indices into live) to act
        self.sampling: set[int] = set()  # keys with a request at the actor
        self.turns_done = 0

    def run(self) -> None:
        steps = EnvSteps(self.cfg.env_workers, self.cfg.env_step_timeout_s)
        try:
            while self.ready or self.sampling or steps:
                self._submit_ready()
                if self.sampling:
                    self._take(self.actor.poll(), steps)
                block = not self.sampling and not (self.ready and self.gather_s == 0)
                for key, result in steps.harvest(block=block, gather_s=self.gather_s):
                    self._apply(key, result)
                self._report_ended()
        finally:
            steps.close()

    def _report_ended(self) -> None:
        if self.on_episode is None:
            return
        for key, item in enumerate(self.live):
            if item.episode.done and key not in self.reported:
                self.reported.add(key)
                self.on_episode(item.episode, item.member)

    def _submit_ready(self) -> None:
        ready, self.ready = sorted(self.ready), []
        for key in ready:
            item = self.live[key]
            if self._within_budgets(item):
                episode = item.episode
                request_seed = derive_seed(self.seed, episode.group_id, item.member, len(episode.turns))
                self.actor.submit(key, item.prompt, item.env, request_seed)
                self.sampling.add(key)

    def _within_budgets(self, item: Live) -> bool:
        """Build the next prompt; close the episode (and return False) when a budget is spent."""
        item.editing = item.edit_prompt is not None
        if item.edit_prompt is not None:
            item.prompt, item.edit_prompt = item.edit_prompt, None
        elif item.acted >= self.cfg.max_turns:
            close_game(item, "max_turns")
            return False
        else:
            item.prompt = item.context.build(item.history, self.framing) if self.framing else []
        if len(item.prompt) > self.prompt_budget:
            close_game(item, "max_prompt_tokens")
            return False
        return True

    def _take(self, finished: Sequence[tuple[int, Completion | Exception]], steps: EnvSteps) -> None:
        """Send each returned action to its env (a context edit becomes its turn at once); a lost request ends its
        episode."""
        for key, completion in finished:
            if key not in self.sampling:
                raise RuntimeError(f"actor returned request {key}, which is not waiting for an action")
            self.sampling.discard(key)
            item = self.live[key]
            if isinstance(completion, Exception):  # its remote engine worker died: not the policy's doing
                fail_game(item, completion, "infra")
                continue
            state = item.env.state_key() if isinstance(item.env, HasStateKey) else None
            if item.editing:  # a context edit: a turn now (no env step), then the next action follows
                item.episode.turns.append(_edit_turn(item, completion, state))
                item.context.take_edit(item.history, completion.token_ids)
                self.ready.append(key)
                continue
            item.action, item.state, item.acted = completion, state, item.acted + 1
            steps.submit(key, item.env, item.context.take_action(item.history, completion.text))
        self.turns_done += len(finished)
        if not finished and self.sampling and self.actor.pending() == 0 and not steps:
            raise RuntimeError(f"actor has no pending requests but {len(self.sampling)} never returned")
        if finished and self.on_turn:
            self.on_turn(self.turns_done, sum(not x.episode.done for x in self.live))

    def _apply(self, key: int, result: StepResult | Exception) -> None:
        """Build the action's turn from the step's result (or failure) and apply it to its episode; a running
        episode becomes ready again."""
        item = self.live[key]
        action, item.action = item.action, None
        assert action is not None
        if isinstance(result, Exception):  # env failures and timeouts end this episode only
            failure = failure_type(result, in_step=True)
            flag = {"invalid_action": True, "step_failure": step_failure(result)} if failure == "policy" else {}
            item.episode.turns.append(_turn(item, action, item.state, info=flag))
            fail_game(item, result, failure)
            return
        if item.seats is not None:
            self._apply_seat(item, action, result)
            return
        reward, info = float(result.reward), dict(result.info)
        item.episode.turns.append(
            _turn(item, action, item.state, reward=reward, observation=result.observation, info=info)
        )
        apply_step(item.episode, result, action)
        if not item.episode.done:
            item.history.add(action.token_ids, result.observation, self.framing)
            self._next_action(item)

    def _next_action(self, item: Live) -> None:
        """The item acts next: first a context edit when its strategy asks for one."""
        if self.framing and item.acted < self.cfg.max_turns:  # no edit that nothing would read
            item.edit_prompt = item.context.after_step(item.history, self.framing)
        if item.edit_prompt is not None and not self.edits:  # the actor writes nothing: an empty edit
            item.context.take_edit(item.history, [])
            item.edit_prompt = None
        self.ready.append(item.key)

    def _apply_seat(self, item: Live, action: Completion, result: StepResult) -> None:
        """A seat's move: its turn waits for what the seat sees next; the step's observation goes to the seat to act
        (the same one after an invalid move), or, when the game ended, to every seat with its verdict."""
        item.episode.turns.append(_turn(item, action, item.state, reward=float(result.reward), info=dict(result.info)))
        item.unseen = True
        game = item.env
        assert item.seats is not None and isinstance(game, HasSeats)
        if result.terminated or result.truncated:
            end_game(item.seats, result, game.verdicts())
        elif action.finish_reason == "length":
            close_game(item, "max_new_tokens")
        else:
            item.waiting = True
            acting = item.seats[game.to_act()]
            self._observe(acting, result.observation)
            self._next_action(acting)

    def _observe(self, item: Live, observation: str) -> None:
        """What a seat sees as its move comes: its first observation, or the answer to its last move."""
        item.waiting = False
        if not item.episode.turns:
            item.history, item.episode.first_observation = History([observation]), observation
            return
        turn, item.unseen = item.episode.turns[-1], False
        turn.observation = observation
        item.history.add(turn.action_ids, observation, self.framing)


def _turn(item: Live, completion: Completion, state: str | None, **answered: Any) -> Turn:
    """The turn as sampled, built once: exact prompt and action ids, log-probs, the env state before the step,
    and (``answered``) what the step or the context strategy gave it."""
    entropies = list(completion.entropies) if completion.entropies else None
    cut = completion.finish_reason == "length"  # overlong shaping reads it; a cut edit is kept as written
    return Turn(
        list(item.prompt), completion.token_ids, completion.logprobs, completion.text, state_key=state, cut=cut,
        token_entropies=entropies, **answered,
    )  # fmt: skip


def _edit_turn(item: Live, completion: Completion, state: str | None) -> Turn:
    """A context edit (a summary) is a turn too, trained and credited like any other: reward 0, no env step; its
    state key is the env's prefixed with the strategy, so step-level grouping compares edits written in the same
    env state; its observation is the last env observation, which is also what the next action answers."""
    edit = item.context.name
    key = f"{edit}:{state}" if state is not None else None
    return _turn(item, completion, key, observation=item.history.observations[-1], context_edit=edit)
