"""The credit contract: columnar ``CreditInput`` in, ``Credit`` out, estimators by name.

Shapes: ``N`` turn rows (all episodes of all groups, episode-contiguous, turns in order),
``K`` tokens (the action tokens of every row, addressed by ``token_offsets`` of shape ``N + 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clew.registry import Registry, keyword_params
from clew.types import Group

Array = np.ndarray


@dataclass(frozen=True)
class CreditInput:
    """Per-turn arrays for a batch of groups.

    Attributes:
        group: (N,) int, the group (task + seed) of the row.
        episode: (N,) int, the episode of the row; an episode's rows are contiguous.
        turn: (N,) int, 0, 1, 2, ... within each episode.
        reward: (N,) float, the per-turn (env or shaped) reward.
        outcome: (N,) float, the episode's final scalar, **repeated on every turn of the episode**.
        state_key: (N,) int, canonical state id for anchor grouping; -1 means none.
        agent: (N,) int or None, the acting agent (multi-agent / self-play).
        token_offsets: (N + 1,) int or None; row ``i`` owns tokens ``[off[i], off[i+1])``.
        entropy, logprob, token_ids: (K,) per-token arrays or None.
    """

    group: Array
    episode: Array
    turn: Array
    reward: Array
    outcome: Array
    state_key: Array
    agent: Array | None = None
    token_offsets: Array | None = None
    entropy: Array | None = None
    logprob: Array | None = None
    token_ids: Array | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_turns(self) -> int:
        return int(self.group.shape[0])

    @classmethod
    def from_arrays(
        cls,
        group: Sequence[int] | Array,
        episode: Sequence[int] | Array,
        turn: Sequence[int] | Array,
        reward: Sequence[float] | Array,
        outcome: Sequence[float] | Array,
        state_key: Sequence[int] | Array | None = None,
        agent: Sequence[int] | Array | None = None,
        token_offsets: Sequence[int] | Array | None = None,
        entropy: Sequence[float] | Array | None = None,
        logprob: Sequence[float] | Array | None = None,
        token_ids: Sequence[int] | Array | None = None,
    ) -> CreditInput:
        """Build from plain sequences/arrays (copied to int64/float64)."""
        n = len(group)
        return cls(
            group=_ints(group),
            episode=_ints(episode),
            turn=_ints(turn),
            reward=_floats(reward),
            outcome=_floats(outcome),
            state_key=_ints(state_key) if state_key is not None else np.full(n, -1, dtype=np.int64),
            agent=_ints(agent) if agent is not None else None,
            token_offsets=_ints(token_offsets) if token_offsets is not None else None,
            entropy=_floats(entropy) if entropy is not None else None,
            logprob=_floats(logprob) if logprob is not None else None,
            token_ids=_ints(token_ids) if token_ids is not None else None,
        )

    @classmethod
    def from_groups(cls, groups: Sequence[Group]) -> CreditInput:
        """Rows in (group, episode, turn) order; string state keys become ints (None -> -1).

        Per-token entropies come from ``turn.info["token_entropies"]`` when every turn has them;
        an ``info["agent"]`` on turns fills ``agent``.
        """
        keys: dict[str, int] = {}
        cols: dict[str, list[Any]] = {k: [] for k in ("group", "episode", "turn", "reward", "outcome", "state")}
        offsets, token_ids, logprob = [0], [], []
        entropy: list[list[float] | None] = []
        agents: list[int | None] = []
        episode_id = 0
        for g in groups:
            for ep in g.episodes:
                for t, turn in enumerate(ep.turns):
                    key = -1 if turn.state_key is None else keys.setdefault(turn.state_key, len(keys))
                    for name, value in zip(cols, (g.group_id, episode_id, t, turn.reward, ep.outcome, key)):
                        cols[name].append(value)
                    offsets.append(offsets[-1] + len(turn.action_ids))
                    token_ids += turn.action_ids
                    logprob += turn.behavior_logprobs
                    entropy.append(turn.info.get("token_entropies"))
                    agents.append(turn.info.get("agent"))
                episode_id += 1
        has_entropy = bool(entropy) and all(e is not None and len(e) == o for e, o in zip(entropy, np.diff(offsets)))
        return cls.from_arrays(
            cols["group"], cols["episode"], cols["turn"], cols["reward"], cols["outcome"], cols["state"],
            agent=[int(a) for a in agents if a is not None] if agents and None not in agents else None,
            token_offsets=offsets,
            entropy=[x for e in entropy for x in (e or [])] if has_entropy else None,
            logprob=logprob,
            token_ids=token_ids,
        )  # fmt: skip


@dataclass(frozen=True)
class Credit:
    """What an estimator returns.

    Attributes:
        turn_advantage: (N,) advantage broadcast to every action token of the row.
        turn_return: (N,) the return the advantage was built from.
        token_advantage: (K,) per-token advantages (same offsets) or None.
        diagnostics: plain numbers, namespaced ``credit/...``.
    """

    turn_advantage: Array
    turn_return: Array
    token_advantage: Array | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)


Estimator = Callable[..., Credit]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator and what it needs from the input."""

    name: str
    fn: Estimator
    needs_state_keys: bool = False
    needs_tokens: bool = False
    needs_entropy: bool = False
    needs_values: bool = False
    needs_agents: bool = False
    needs_group: bool = False
    summary: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return keyword_params(self.fn)


_REGISTRY: Registry[EstimatorSpec] = Registry("credit estimator")


def register(name: str, **meta: Any) -> Callable[[Estimator], Estimator]:
    """Decorator: ``@register("grpo", needs_group=True, summary=...)``."""

    def wrap(fn: Estimator) -> Estimator:
        _REGISTRY.add(EstimatorSpec(name, fn, **meta))
        return fn

    return wrap


def available() -> dict[str, EstimatorSpec]:
    """Every estimator by name, with its metadata and default parameters."""
    return _REGISTRY.available()


def get(name: str) -> EstimatorSpec:
    return _REGISTRY.get(name)


def check_params(name: str, params: dict[str, Any]) -> None:
    """Fail on parameters the estimator does not take, listing the valid ones."""
    _REGISTRY.check_params(name, params)


def compute(name: str, inp: CreditInput, **params: Any) -> Credit:
    """Run estimator ``name`` on ``inp``; unknown names or parameters fail with the valid ones."""
    spec = get(name)
    check_params(name, params)
    if spec.needs_tokens and (inp.token_offsets is None or inp.token_ids is None):
        raise ValueError(f"credit estimator {name!r} needs token_offsets and token_ids")
    if spec.needs_entropy and (inp.token_offsets is None or inp.entropy is None):
        raise ValueError(f"credit estimator {name!r} needs per-token entropy and token_offsets")
    return spec.fn(inp, **params)


def check_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Fail when an option is not one of ``allowed``, naming both."""
    if value not in allowed:
        raise ValueError(f"{field_name} must be one of {list(allowed)}, got {value!r}")


# --- validation ----------------------------------------------------------------------------------
def _ints(x: Sequence[int] | Array) -> Array:
    return np.asarray(x, dtype=np.int64).reshape(-1)


def _floats(x: Sequence[float] | Array) -> Array:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _validate(inp: CreditInput) -> None:
    n = inp.group.shape[0]
    for name in ("episode", "turn", "reward", "outcome", "state_key", "agent"):
        arr = getattr(inp, name)
        if arr is not None and arr.shape != (n,):
            raise ValueError(f"CreditInput.{name} has length {arr.shape[0]}, expected {n} (one per turn row)")
    for name in ("reward", "outcome", "entropy", "logprob"):
        arr = getattr(inp, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"CreditInput.{name} contains NaN or inf")
    if n:
        _validate_order(inp)
    _validate_tokens(inp, n)


def _validate_order(inp: CreditInput) -> None:
    new_ep = np.r_[True, inp.episode[1:] != inp.episode[:-1]]
    if len(np.unique(inp.episode)) != int(new_ep.sum()):
        raise ValueError("CreditInput.episode: each episode's rows must be contiguous")
    expected = np.arange(inp.turn.shape[0]) - np.maximum.accumulate(np.where(new_ep, np.arange(len(new_ep)), 0))
    if not np.array_equal(inp.turn, expected):
        raise ValueError("CreditInput.turn must count 0, 1, 2, ... within each episode (turns ordered)")
    for name in ("group", "outcome"):
        arr = getattr(inp, name)
        if np.any((arr[1:] != arr[:-1]) & ~new_ep[1:]):
            raise ValueError(f"CreditInput.{name} must be constant within an episode")


def _validate_tokens(inp: CreditInput, n: int) -> None:
    off = inp.token_offsets
    per_token = [x for x in ("entropy", "logprob", "token_ids") if getattr(inp, x) is not None]
    if off is None:
        if per_token:
            raise ValueError(f"CreditInput.{per_token[0]} needs token_offsets")
        return
    if off.shape != (n + 1,) or off[0] != 0 or np.any(np.diff(off) < 0):
        raise ValueError(f"CreditInput.token_offsets must have length {n + 1}, start at 0 and not decrease")
    for name in per_token:
        if getattr(inp, name).shape != (int(off[-1]),):
            raise ValueError(f"CreditInput.{name} has {getattr(inp, name).shape[0]} tokens, offsets say {off[-1]}")
