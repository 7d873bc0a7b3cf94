"""gym/<id>: gymnasium 1.4 toy-text envs (FrozenLake, Taxi, CliffWalking) played in words.

Ids: ``gym/FrozenLake-v1``, ``gym/FrozenLake8x8-v1``, ``gym/Taxi-v4``, ``gym/CliffWalking-v1``,
``gym/CliffWalkingSlippery-v1``. Others are refused with the reason (``Taxi-v3`` is deprecated in
gymnasium 1.4; Blackjack has no text render; continuous-state envs have no discrete state).

Kwargs:
    is_slippery: FrozenLake / CliffWalking slip (default False, so the expert's plan is exact).
    map_name: FrozenLake's fixed map (``"4x4"`` or ``"8x8"``).
    map_size: FrozenLake only; a random ``map_size`` x ``map_size`` map generated from each seed
        (``generate_random_map(map_size, seed=seed)``), so the seed picks the maze too.
    max_steps: turn budget, invalid actions included (default: the gymnasium spec's
        ``max_episode_steps``, 100 for CliffWalking); running out truncates the episode.
    reward_scale: multiplies gymnasium's rewards (FrozenLake 1 at the goal; Taxi -1 a step, +20 for a
        delivery, -10 for an illegal pickup/dropoff; CliffWalking -1 a step, -100 for the cliff).
    gym_kwargs: any other constructor kwargs (e.g. ``{is_rainy: true}`` for Taxi).

Observation: the ``render_mode="ansi"`` board with its ANSI colour codes stripped, plus a line
saying where the agent (and Taxi's passenger and destination) are, since the colours carried that,
and the action words. Actions: FrozenLake ``left/down/right/up``; Taxi
``south/north/east/west/pickup/dropoff``; CliffWalking ``up/right/down/left``. Anything else is a
recorded step flagged ``info["invalid_action"]`` that leaves the state unchanged and costs a turn.

``info["success"]``: the goal was reached (FrozenLake's G, Taxi's delivery, CliffWalking's end).
Expert: value iteration on ``env.unwrapped.P`` (probability of reaching the goal, discounted 0.99),
which is the shortest path when the env is deterministic and the most reliable route when slippery.
State key: the discrete state (``env.unwrapped.s``). Valid actions: every action word. Snapshots
(``clew.envs.HasSnapshot``): the adapter with its gymnasium env pickled whole, the slippery envs' random generator
included, so a restored env continues exactly (``clew check-env`` verifies it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clew.envs.base import PickledSnapshot, StepResult, ensure_running, normalize_action

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_GAMMA = 0.99
_TAXI_STOPS = "RGYB"


@dataclass(frozen=True)
class _Game:
    actions: tuple[str, ...]
    default_kwargs: tuple[tuple[str, Any], ...] = ()
    default_steps: int = 100


_GAMES = {
    "FrozenLake-v1": _Game(("left", "down", "right", "up"), (("is_slippery", False),)),
    "FrozenLake8x8-v1": _Game(("left", "down", "right", "up"), (("is_slippery", False),), 200),
    "Taxi-v4": _Game(("south", "north", "east", "west", "pickup", "dropoff"), (), 200),
    "CliffWalking-v1": _Game(("up", "right", "down", "left")),
    "CliffWalkingSlippery-v1": _Game(("up", "right", "down", "left")),
}
_REFUSED = {
    "Taxi-v3": "deprecated in gymnasium 1.4; use gym/Taxi-v4",
    "FrozenLake-v0": "removed from gymnasium; use gym/FrozenLake-v1",
    "Blackjack-v1": "it has no text (ansi) render and its state is a tuple, not a discrete index",
}


def strip_ansi(text: str) -> str:
    """Drop ANSI colour codes (``\\x1b[41m``...) from a rendered board."""
    return _ANSI.sub("", text)


Transitions = tuple[tuple[tuple[tuple[float, int, bool], ...], ...], ...]
"""``transitions[s][a]``: ``(p, next_state, reached_goal)``; ``next_state`` is -1 when the episode ends."""

_PLANS: dict[str, tuple[Transitions, tuple[float, ...]]] = {}


def plan_values(transitions: Transitions) -> tuple[float, ...]:
    """Value iteration: V(s) = max_a sum p * (1 if the goal is reached, 0 if the episode ends, else gamma V(s')).

    With deterministic moves V(s) = gamma^(d - 1) for a goal d steps away, so the greedy action is a
    shortest path; with slippery moves it maximises the (discounted) chance of reaching the goal.
    Gauss-Seidel sweeps until the largest change is below 1e-10 (at most 10,000 sweeps).
    """
    values = [0.0] * len(transitions)
    for _ in range(10_000):
        delta = 0.0
        for s, actions in enumerate(transitions):
            best = max((_q(values, outcomes) for outcomes in actions), default=0.0)
            delta = max(delta, abs(best - values[s]))
            values[s] = best
        if delta < 1e-10:
            break
    return tuple(values)


def _q(values: list[float] | tuple[float, ...], outcomes: tuple[tuple[float, int, bool], ...]) -> float:
    total = 0.0
    for p, nxt, reached in outcomes:
        total += p * (float(reached) if nxt < 0 else _GAMMA * values[nxt])
    return total


class GymText(PickledSnapshot):
    """A gymnasium toy-text env as text: words in, stripped ANSI board out.

    Args:
        env_id: gymnasium id (see the module docstring).
        is_slippery: FrozenLake/CliffWalking slip; default False.
        map_name: FrozenLake fixed map name.
        map_size: FrozenLake random map size (one map per seed).
        max_steps: turn budget (invalid actions count).
        reward_scale: factor on gymnasium's rewards.
        gym_kwargs: other ``gymnasium.make`` kwargs.
    """

    def __init__(
        self,
        env_id: str,
        is_slippery: bool | None = None,
        map_name: str | None = None,
        map_size: int | None = None,
        max_steps: int | None = None,
        reward_scale: float = 1.0,
        gym_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if env_id in _REFUSED:
            raise ValueError(f"gym/{env_id} is not supported: {_REFUSED[env_id]}")
        if env_id not in _GAMES:
            raise ValueError(f"gym/{env_id} is not supported; choose one of {', '.join(sorted(_GAMES))}")
        frozen = env_id.startswith("FrozenLake")
        if (map_name is not None or map_size is not None) and not frozen:
            raise ValueError(f"gym/{env_id}: map_name and map_size apply to FrozenLake only")
        if map_size is not None and map_size < 2:
            raise ValueError(f"gym/{env_id}: map_size must be >= 2, got {map_size}")
        self.env_id, self.game = env_id, _GAMES[env_id]
        self.actions = self.game.actions
        self.kwargs: dict[str, Any] = {**dict(self.game.default_kwargs), **(gym_kwargs or {})}
        if is_slippery is not None:
            self.kwargs["is_slippery"] = is_slippery
        if map_name is not None:
            self.kwargs["map_name"] = map_name
        self.map_size, self.reward_scale = map_size, reward_scale
        self.max_steps = max_steps or self.game.default_steps
        if self.max_steps < 1:
            raise ValueError(f"gym/{env_id}: max_steps must be >= 1, got {self.max_steps}")
        self._env: Any = None
        self._table: Transitions = ()
        self._values: tuple[float, ...] = ()
        self.steps, self._finished = 0, True

    # --- contract -------------------------------------------------------------------------
    def reset(self, seed: int) -> str:
        if self.map_size:
            from gymnasium.envs.toy_text.frozen_lake import generate_random_map

            self.close()
            self._env = self._make({"desc": generate_random_map(size=self.map_size, seed=seed)})
        elif self._env is None:
            self._env = self._make({})
        self._env.reset(seed=seed)
        self._table, self._values = self._plan()
        self.steps, self._finished = 0, False
        return self._render("")

    def step(self, action: str) -> StepResult:
        ensure_running(self._finished, "GymText")
        self.steps += 1
        act = normalize_action(action).rstrip(".")
        info: dict[str, Any] = {}
        if act not in self.actions:
            info["invalid_action"] = True
            reward, terminated, gym_truncated = 0.0, False, False
            note = f"Invalid action {action.strip()[:40]!r}."
        else:
            _, raw, terminated, gym_truncated, _ = self._env.step(self.actions.index(act))
            reward, note = float(raw) * self.reward_scale, f"Reward {float(raw):g}."
        truncated = not terminated and (bool(gym_truncated) or self.steps >= self.max_steps)
        self._finished = bool(terminated) or truncated
        if self._finished:
            info["success"] = bool(terminated) and self._at_goal()
        return StepResult(self._render(note), reward, bool(terminated), truncated, info)

    def state_key(self) -> str:
        return str(int(self._env.unwrapped.s))

    def valid_actions(self) -> list[str]:
        return list(self.actions)

    def expert_action(self) -> str:
        """The action with the highest planned value (first in action order on ties)."""
        qs = [_q(self._values, outcomes) for outcomes in self._table[int(self._env.unwrapped.s)]]
        return self.actions[qs.index(max(qs))]

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    # --- mechanics ------------------------------------------------------------------------
    def _make(self, extra: dict[str, Any]) -> Any:
        import gymnasium

        kwargs = {**self.kwargs, **extra}
        return gymnasium.make(self.env_id, render_mode="ansi", max_episode_steps=self.max_steps, **kwargs)

    def _goal(self, reward: float, done: bool) -> bool:
        """A transition that reaches the goal: FrozenLake's holes also end the episode, with reward 0."""
        return done and (reward > 0 or not self.env_id.startswith("FrozenLake"))

    def _at_goal(self) -> bool:
        if self.env_id.startswith("FrozenLake"):
            desc = self._env.unwrapped.desc
            row, col = divmod(int(self._env.unwrapped.s), desc.shape[1])
            return bool(desc[row, col] == b"G")
        return True  # Taxi and CliffWalking terminate only at their goal

    def _transitions(self) -> Transitions:
        """``P`` as tuples; a transition that ends the episode becomes ``(p, -1, reached_goal)``."""
        table = self._env.unwrapped.P
        return tuple(
            tuple(
                tuple((float(p), -1 if done else int(nxt), self._goal(float(r), bool(done))) for p, nxt, r, done in row)
                for _, row in sorted(table[s].items())
            )
            for s in range(len(table))
        )

    def _plan(self) -> tuple[Transitions, tuple[float, ...]]:
        """Transitions and values, computed once per process for each game, kwargs and map."""
        key = f"{self.env_id}|{sorted(self.kwargs.items())}|{self._desc_key()}"
        if key not in _PLANS:
            if len(_PLANS) >= 256:  # random maps: one plan per seed
                _PLANS.pop(next(iter(_PLANS)), None)
            table = self._transitions()
            _PLANS[key] = (table, plan_values(table))
        return _PLANS[key]

    def _desc_key(self) -> str:
        desc = getattr(self._env.unwrapped, "desc", None)
        return "" if desc is None else "/".join(b"".join(row).decode() for row in desc)

    def _render(self, note: str) -> str:
        board = strip_ansi(str(self._env.render())).strip("\n")
        lines = [board, self._where()]
        if note:
            lines.append(note)
        lines.append("Actions: " + ", ".join(self.actions) + ".")
        return "\n".join(lines)

    def _where(self) -> str:
        s = int(self._env.unwrapped.s)
        if self.env_id.startswith("Taxi"):
            row, col, passenger, dest = self._env.unwrapped.decode(s)
            where = "in the taxi" if passenger == 4 else f"at {_TAXI_STOPS[passenger]}"
            return f"Taxi at row {row}, column {col}. Passenger {where}. Destination {_TAXI_STOPS[dest]}."
        frozen = self.env_id.startswith("FrozenLake")
        row, col = divmod(s, self._env.unwrapped.desc.shape[1] if frozen else self._env.unwrapped.shape[1])
        if frozen:
            return f"You are at row {row}, column {col}. Reach G; do not step on H."
        return f"You (x) are at row {row}, column {col}. Reach T; do not step on C (the cliff)."
