"""The credit contract: columnar ``CreditInput`` in, ``Credit`` out, estimators by name.

Shapes: ``N`` turn rows (all episodes of all groups, episode-contiguous, turns in order),
``K`` tokens (the action tokens of every row, addressed by ``token_offsets`` of shape ``N + 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from clew.credit.anchors import check_grouping_params
from clew.registry import Registry, keyword_params
from clew.table import TurnTable
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
        penalty: (N,) float or None, shaping penalties (invalid action, overlong) of the row; ``compute``
            subtracts them from that row's advantage after the estimator, undiscounted.
        outcome_explicit: (N,) bool or None, True where the env reported the outcome itself
            (``StepResult.outcome``); then ``reward`` holds only the step-level rewards. Estimators built
            on step returns add such an outcome as a reward on the episode's last turn; ``gated`` and
            ``pure`` keep the two apart.
        observation: (N,) int or None, dense id of the observation text the turn answered (its
            first observation for turn 0), for estimators that key on what the agent saw.
        observation_text: (N,) str (object array) or None, that observation's text: the key of
            ``state_grouping="normalized"`` and the ``"tfidf"`` features of ``"similarity"`` (``clew.credit.anchors``).
        state_vector: (N, D) float or None, a feature vector per turn for ``state_features="hidden"``: the
            policy's hidden state at the turn's last prompt token, computed by the trainer.
        env_step: (N,) bool or None, False for a context-edit turn (a summary, a memory edit) that
            the env never saw; discounting counts env steps only, so such a turn takes the return of
            the env step that follows it (None: every row is an env step).
        ref_logprob: (K,) float or None, log-probs of the sampled tokens under the KL reference
            (REINFORCE++'s KL-in-reward).
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
    penalty: Array | None = None
    outcome_explicit: Array | None = None
    observation: Array | None = None
    env_step: Array | None = None
    token_offsets: Array | None = None
    entropy: Array | None = None
    logprob: Array | None = None
    token_ids: Array | None = None
    ref_logprob: Array | None = None
    observation_text: Array | None = None
    state_vector: Array | None = None

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
        penalty: Sequence[float] | Array | None = None,
        outcome_explicit: Sequence[bool] | Array | None = None,
        observation: Sequence[int] | Array | None = None,
        entropy: Sequence[float] | Array | None = None,
        logprob: Sequence[float] | Array | None = None,
        token_ids: Sequence[int] | Array | None = None,
        env_step: Sequence[bool] | Array | None = None,
        ref_logprob: Sequence[float] | Array | None = None,
        observation_text: Sequence[str] | Array | None = None,
        state_vector: Sequence[Sequence[float]] | Array | None = None,
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
            penalty=_floats(penalty) if penalty is not None else None,
            outcome_explicit=_bools(outcome_explicit),
            observation=_ints(observation) if observation is not None else None,
            env_step=_bools(env_step),
            token_offsets=_ints(token_offsets) if token_offsets is not None else None,
            entropy=_floats(entropy) if entropy is not None else None,
            logprob=_floats(logprob) if logprob is not None else None,
            token_ids=_ints(token_ids) if token_ids is not None else None,
            ref_logprob=_floats(ref_logprob) if ref_logprob is not None else None,
            observation_text=_texts(observation_text),
            state_vector=np.asarray(state_vector, dtype=np.float64) if state_vector is not None else None,
        )

    @classmethod
    def from_table(cls, table: TurnTable) -> CreditInput:
        """The credit columns of a flattened batch (see ``clew.table``)."""
        return cls.from_arrays(
            table.group, table.episode, table.turn, table.reward, table.outcome, table.state_key,
            agent=table.agent, token_offsets=table.token_offsets, penalty=table.penalty,
            outcome_explicit=table.outcome_explicit, observation=table.observation, env_step=table.env_step,
            entropy=table.entropy, logprob=table.logprob, token_ids=table.token_ids,
            observation_text=table.observation_text,
        )  # fmt: skip

    @classmethod
    def from_groups(cls, groups: Sequence[Group]) -> CreditInput:
        """Shorthand for ``from_table(TurnTable.from_groups(groups))``."""
        return cls.from_table(TurnTable.from_groups(groups))


@dataclass(frozen=True)
class Credit:
    """What an estimator returns.

    Attributes:
        turn_advantage: (N,) advantage broadcast to every action token of the row.
        turn_return: (N,) the return the advantage was built from.
        token_advantage: (K,) per-token advantages (same offsets) or None.
        diagnostics: plain numbers, namespaced ``credit/...``.
        penalty_charged: the estimator put the rows' penalties into its own statistics
            (``penalty_placement="statistics"``), so ``compute`` charges nothing after it.
        anchor_group: (N,) int or None, the anchor-state group each row's step advantage was computed in
            (GiGPO; ids unique over the batch, -1: in no group); the store keeps it for the viewer.
    """

    turn_advantage: Array
    turn_return: Array
    token_advantage: Array | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)
    penalty_charged: bool = False
    anchor_group: Array | None = None


PENALTY_PLACEMENTS = ("advantage", "statistics")


def penalties_in_statistics(inp: CreditInput, placement: str) -> Array:
    """(N,) the penalties an estimator puts into its statistics: ``inp.penalty`` for ``"statistics"``, else 0.

    ``"advantage"`` (clew's default): ``compute`` subtracts a penalty from its own row's advantage after the
    estimator, so it never moves another row's advantage or a group baseline. ``"statistics"``: the estimator
    subtracts it from the scores its group statistics are built from (verl-agent's
    ``apply_invalid_action_penalty``; DAPO's overlong reward term), so the penalised episode also scores
    lower against its group and the penalty costs more than its coefficient.
    """
    check_choice("penalty_placement", placement, PENALTY_PLACEMENTS)
    if placement == "advantage" or inp.penalty is None:
        return np.zeros(inp.n_turns)
    return inp.penalty


Estimator = Callable[..., Credit]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator and what it needs from the input; ``compute`` enforces the input needs.

    Attributes:
        needs_state_keys: anchor-state grouping. With ``state_grouping="exact"`` (the default) it reads the
            env's state keys and is refused when no row has one; ``"normalized"`` and ``"similarity"`` read
            the observation text (or ``state_vector``) instead, see ``clew.credit.anchors``.
        needs_tokens: per-token ids and offsets.
        needs_entropy: per-token entropies of the sampled tokens.
        needs_outcome: the env-reported outcome apart from the step rewards (``outcome_explicit``);
            episodes cut short before the env reported one are the estimator's to handle.
        needs_group: a group-relative baseline; enforced by the run config (``group_size >= 2``),
            since one batch cannot tell a group of one from a one-episode task.
        reference_param: the parameter that, when > 0, makes the estimator read the sampled tokens'
            log-probs under the KL reference (``ref_logprob``), e.g. REINFORCE++'s ``kl_coef``.
    """

    name: str
    fn: Estimator
    needs_state_keys: bool = False
    needs_tokens: bool = False
    needs_entropy: bool = False
    needs_outcome: bool = False
    needs_group: bool = False
    reference_param: str | None = None
    summary: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return keyword_params(self.fn)

    def needs_reference(self, params: dict[str, Any]) -> bool:
        """Whether these parameters make the estimator read ``ref_logprob``."""
        name = self.reference_param
        return name is not None and float(params.get(name, self.params.get(name, 0.0)) or 0.0) > 0

    def state_grouping(self, params: dict[str, Any]) -> str | None:
        """The anchor grouping these parameters pick (``"exact"`` unless set), or None without anchor groups."""
        return str(self._setting(params, "state_grouping", "exact")) if self.needs_state_keys else None

    def needs_env_state_keys(self, params: dict[str, Any]) -> bool:
        """Whether these parameters group turns by the env's ``state_key()`` (``state_grouping="exact"``)."""
        return self.state_grouping(params) == "exact"

    def needs_state_vectors(self, params: dict[str, Any]) -> bool:
        """Whether these parameters make the estimator read ``state_vector`` (similarity on hidden states)."""
        hidden = self._setting(params, "state_features", "tfidf") == "hidden"
        return self.state_grouping(params) == "similarity" and hidden

    def _setting(self, params: dict[str, Any], name: str, default: Any) -> Any:
        return params.get(name, self.params.get(name, default))


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
    """Fail on parameters the estimator does not take, listing the valid ones, and on anchor-grouping values
    outside their choices (``clew.credit.anchors.check_grouping``)."""
    _REGISTRY.check_params(name, params)
    check_grouping_params(params)


def compute(name: str, inp: CreditInput, **params: Any) -> Credit:
    """Run estimator ``name`` on ``inp``, then charge each row its ``penalty``.

    Unknown names or parameters fail with the valid ones; an input lacking what the estimator's
    metadata says it needs fails naming it. Penalties (invalid actions, overlong outputs) are
    subtracted from the penalised row's advantage only, after the returns are formed: undiscounted,
    never leaking into earlier turns, the episode outcome or the group baselines — unless the
    estimator took them into its statistics itself (``penalty_placement="statistics"`` of ``grpo``
    and ``gigpo``, see ``penalties_in_statistics``).
    """
    spec = get(name)
    check_params(name, params)
    check_inputs(spec, inp, params)
    return charge_penalties(spec.fn(inp, **params), inp)


def check_inputs(spec: EstimatorSpec, inp: CreditInput, params: dict[str, Any] | None = None) -> None:
    """Fail when ``inp`` lacks something ``spec`` needs (with ``params``, the estimator's parameters)."""
    name = spec.name
    if spec.needs_tokens and (inp.token_offsets is None or inp.token_ids is None):
        raise ValueError(f"credit estimator {name!r} needs token_offsets and token_ids")
    if spec.needs_entropy and (inp.token_offsets is None or inp.entropy is None):
        raise ValueError(f"credit estimator {name!r} needs per-token entropy and token_offsets")
    _check_anchor_inputs(spec, inp, params or {})
    explicit = inp.outcome_explicit
    if spec.needs_outcome and explicit is None:
        raise ValueError(
            f"credit estimator {name!r} needs the outcome_explicit column: which episodes' outcome the env "
            "reported apart from its step rewards (StepResult.outcome); CreditInput.from_table fills it"
        )


def _check_anchor_inputs(spec: EstimatorSpec, inp: CreditInput, params: dict[str, Any]) -> None:
    """Fail when the anchor grouping ``params`` pick cannot be formed from ``inp``."""
    name, grouping = spec.name, spec.state_grouping(params)
    if spec.needs_env_state_keys(params) and inp.n_turns and not np.any(inp.state_key >= 0):
        raise ValueError(
            f"credit estimator {name!r} groups turns by environment state, but no turn has a state key; "
            "give the env a state_key() method, set state_grouping='normalized' (anchor groups from the "
            "observation text) or pick an estimator without step-level grouping (e.g. grpo)"
        )
    if spec.needs_state_vectors(params) and inp.state_vector is None:
        raise ValueError(
            f"credit estimator {name!r} with state_features='hidden' needs CreditInput.state_vector (N, D): the "
            "policy's hidden state at each turn's last prompt token, which the trainer computes"
        )
    reads_text = grouping in ("normalized", "similarity") and not spec.needs_state_vectors(params)
    if reads_text and inp.observation_text is None:
        raise ValueError(
            f"credit estimator {name!r} with state_grouping={grouping!r} keys on the observation text, but "
            "CreditInput.observation_text is None; CreditInput.from_table fills it"
        )


def charge_penalties(credit: Credit, inp: CreditInput) -> Credit:
    """Subtract each row's penalty from its advantage (and from each of its tokens' advantages)."""
    if credit.penalty_charged or inp.penalty is None or not np.any(inp.penalty):
        return credit
    token_adv = credit.token_advantage
    if token_adv is not None and inp.token_offsets is not None:
        token_adv = token_adv - np.repeat(inp.penalty, np.diff(inp.token_offsets))
    diagnostics = {**credit.diagnostics, "credit/penalty_mean": float(inp.penalty.mean())}
    adv = credit.turn_advantage - inp.penalty
    return replace(credit, turn_advantage=adv, token_advantage=token_adv, diagnostics=diagnostics)


def check_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Fail when an option is not one of ``allowed``, naming both."""
    if value not in allowed:
        raise ValueError(f"{field_name} must be one of {list(allowed)}, got {value!r}")


# --- validation ----------------------------------------------------------------------------------
def _ints(x: Sequence[int] | Array) -> Array:
    return np.asarray(x, dtype=np.int64).reshape(-1)


def _floats(x: Sequence[float] | Array) -> Array:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _bools(x: Sequence[bool] | Array | None) -> Array | None:
    return None if x is None else np.asarray(x, dtype=bool).reshape(-1)


def _texts(x: Sequence[str] | Array | None) -> Array | None:
    if x is None:
        return None
    out = np.empty(len(x), dtype=object)
    out[:] = [str(t) for t in x]
    return out


def _validate(inp: CreditInput) -> None:
    n = inp.group.shape[0]
    for name in (
        "episode",
        "turn",
        "reward",
        "outcome",
        "state_key",
        "agent",
        "penalty",
        "outcome_explicit",
        "observation",
        "observation_text",
        "env_step",
    ):
        arr = getattr(inp, name)
        if arr is not None and arr.shape != (n,):
            raise ValueError(f"CreditInput.{name} has length {arr.shape[0]}, expected {n} (one per turn row)")
    for name in ("reward", "outcome", "penalty", "entropy", "logprob", "ref_logprob"):
        arr = getattr(inp, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"CreditInput.{name} contains NaN or inf")
    vec = inp.state_vector
    if vec is not None and (vec.ndim != 2 or vec.shape[0] != n or not np.all(np.isfinite(vec))):
        raise ValueError(f"CreditInput.state_vector must be finite with shape ({n}, D), got {vec.shape}")
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
    per_token = [x for x in ("entropy", "logprob", "token_ids", "ref_logprob") if getattr(inp, x) is not None]
    if off is None:
        if per_token:
            raise ValueError(f"CreditInput.{per_token[0]} needs token_offsets")
        return
    if off.shape != (n + 1,) or off[0] != 0 or np.any(np.diff(off) < 0):
        raise ValueError(f"CreditInput.token_offsets must have length {n + 1}, start at 0 and not decrease")
    for name in per_token:
        if getattr(inp, name).shape != (int(off[-1]),):
            raise ValueError(f"CreditInput.{name} has {getattr(inp, name).shape[0]} tokens, offsets say {off[-1]}")
