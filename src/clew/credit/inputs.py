"""The credit estimators' input: ``CreditInput``, one columnar record of a batch's turns and tokens, and its
validation (every array aligned, episodes contiguous, turns in order, token offsets consistent).

Shapes: ``N`` turn rows (all episodes of all groups, episode-contiguous, turns in order),
``K`` tokens (the action tokens of every row, addressed by ``token_offsets`` of shape ``N + 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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
        gold_logprob: (N,) float or None, the policy's belief in its episode's gold answer before the row
            acts: the mean log-prob per token of the episode's gold reply (``Episode.gold_reply``),
            teacher-forced right after the row's prompt, computed by the trainer for estimators that
            need it (IGPO); NaN where the episode has no gold reply.
        env_step: (N,) bool or None, False for a context-edit turn (a summary, a memory edit) that
            the env never saw; discounting counts env steps only, so such a turn takes the return of
            the env step that follows it (None: every row is an env step).
        ref_logprob: (K,) float or None, log-probs of the sampled tokens under the KL reference
            (REINFORCE++'s KL-in-reward).
        token_offsets: (N + 1,) int or None; row ``i`` owns tokens ``[off[i], off[i+1])``.
        entropy, logprob, token_ids: (K,) per-token arrays or None.
        baseline: (N,) float or None, the return of one greedy (temperature 0) rollout of the row's task from
            the same seed, played by the trainer (ReMax's baseline); constant within a group.
        value: (K,) float or None, the value head's V at each action token (on the hidden state that scores the
            token), computed by the trainer for estimators with a critic (GAE).
        counterfactual_gain: (N,) float or None, what the observation that answered the row told the policy
            (InfoPO): the mean log-prob of the next row's action after the real observation minus after a
            placeholder one; NaN where there is no next row or no counterfactual prompt could be built.
        privileged_logratio: (N,) float or None, how much more likely the row's action is when the policy is
            also shown the episode's verified answer (PBSD): the summed log-prob of its action tokens under an
            answer-conditioned prompt minus under its own prompt; NaN where the episode has no gold reply.
        mode_logprob: (N,) float or None, the policy's belief, before the row acts, in the final answer of the
            outcome mode its episode ended in (SIOP): the mean log-prob of that mode's reference reply
            teacher-forced after the row's prompt; NaN where the episode gave no valid final answer.
        prm_logratio: (N,) float or None, the row's action scored by the implicit PRM the trainer learns online
            against the old policy (OPRL): the sum over its tokens of log pi_phi - log pi_old; NaN: not scored.
        branch_value: (N,) float or None, the mean return of Monte-Carlo rollouts branched from the state before
            the row (SPO's cutpoints, played by the trainer by replaying the episode); NaN at rows not branched.
        segment_start: (N,) bool or None, the row opens a new subgoal segment (HiPER: its reply set a subgoal);
            each episode's first row opens one whatever this says.
        mode_weight: (N,) float or None, the target probability of the row's episode's outcome mode (SIOP's
            reliability-aware q), 0 for an episode without a valid final answer; constant within an episode.
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
    gold_logprob: Array | None = None
    value: Array | None = None
    baseline: Array | None = None
    counterfactual_gain: Array | None = None
    privileged_logratio: Array | None = None
    mode_logprob: Array | None = None
    mode_weight: Array | None = None
    prm_logratio: Array | None = None
    branch_value: Array | None = None
    segment_start: Array | None = None

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
        gold_logprob: Sequence[float] | Array | None = None,
        value: Sequence[float] | Array | None = None,
        baseline: Sequence[float] | Array | None = None,
        counterfactual_gain: Sequence[float] | Array | None = None,
        privileged_logratio: Sequence[float] | Array | None = None,
        mode_logprob: Sequence[float] | Array | None = None,
        mode_weight: Sequence[float] | Array | None = None,
        prm_logratio: Sequence[float] | Array | None = None,
        branch_value: Sequence[float] | Array | None = None,
        segment_start: Sequence[bool] | Array | None = None,
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
            gold_logprob=_floats(gold_logprob) if gold_logprob is not None else None,
            value=_floats(value) if value is not None else None,
            baseline=_floats(baseline) if baseline is not None else None,
            counterfactual_gain=_floats(counterfactual_gain) if counterfactual_gain is not None else None,
            privileged_logratio=_floats(privileged_logratio) if privileged_logratio is not None else None,
            mode_logprob=_floats(mode_logprob) if mode_logprob is not None else None,
            mode_weight=_floats(mode_weight) if mode_weight is not None else None,
            prm_logratio=_floats(prm_logratio) if prm_logratio is not None else None,
            branch_value=_floats(branch_value) if branch_value is not None else None,
            segment_start=_bools(segment_start),
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
        "gold_logprob",
        "baseline",
        "counterfactual_gain",
        "privileged_logratio",
        "mode_logprob",
        "mode_weight",
        "prm_logratio",
        "branch_value",
        "segment_start",
    ):
        arr = getattr(inp, name)
        if arr is not None and arr.shape != (n,):
            raise ValueError(f"CreditInput.{name} has length {arr.shape[0]}, expected {n} (one per turn row)")
    finite = ("reward", "outcome", "penalty", "entropy", "logprob", "ref_logprob", "value", "baseline", "mode_weight")
    for name in finite:
        arr = getattr(inp, name)
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"CreditInput.{name} contains NaN or inf")
    gold = inp.gold_logprob
    if gold is not None and (np.any(np.isinf(gold)) or np.any(gold > 1e-6)):
        raise ValueError("CreditInput.gold_logprob must hold log-probs (<= 0) or NaN (no gold reply), not inf")
    for name in ("counterfactual_gain", "privileged_logratio", "mode_logprob", "prm_logratio", "branch_value"):
        arr = getattr(inp, name)
        if arr is not None and np.any(np.isinf(arr)):
            raise ValueError(f"CreditInput.{name} must be finite or NaN (not scored), not inf")
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
    per_token = [x for x in ("entropy", "logprob", "token_ids", "ref_logprob", "value") if getattr(inp, x) is not None]
    if off is None:
        if per_token:
            raise ValueError(f"CreditInput.{per_token[0]} needs token_offsets")
        return
    if off.shape != (n + 1,) or off[0] != 0 or np.any(np.diff(off) < 0):
        raise ValueError(f"CreditInput.token_offsets must have length {n + 1}, start at 0 and not decrease")
    for name in per_token:
        if getattr(inp, name).shape != (int(off[-1]),):
            raise ValueError(f"CreditInput.{name} has {getattr(inp, name).shape[0]} tokens, offsets say {off[-1]}")
