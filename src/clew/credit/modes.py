"""Label-free turn credit from the group's own answers: SIOP's outcome modes and their potentials.

The group's final answers are clustered into outcome modes; each mode gets a reliability-aware target weight;
before every turn the trainer scores the policy's belief in its episode's mode (``CreditInput.mode_logprob``);
a turn earns the rise of that belief, weighted by the mode's target. No verifier or gold answer is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import dense_ids, discounted_returns, rewards_with_outcome, segment_mean_std

Array = np.ndarray

_PUNCT = re.compile(r"[^\w\s]")


def answer_key(text: str | None) -> str:
    """The normalised answer two replies must share to fall in one mode: lower case, punctuation as spaces,
    whitespace collapsed; "" for no answer."""
    return " ".join(_PUNCT.sub(" ", (text or "").lower()).split())


def outcome_modes(answers: Sequence[str | None], groups: Sequence[int] | Array) -> tuple[Array, Array]:
    """Cluster each group's final answers by ``answer_key`` (exact match after normalisation).

    Returns (E,) mode labels (dense over the batch; -1: no valid answer) and (E,) the index of each episode's
    mode representative (the mode's first member; -1 without a mode).
    """
    label, rep = np.full(len(answers), -1, dtype=np.int64), np.full(len(answers), -1, dtype=np.int64)
    first: dict[tuple[int, str], int] = {}  # (group, key) -> the mode's first member; modes numbered in order
    for i, (answer, group) in enumerate(zip(answers, groups, strict=True)):
        key = answer_key(answer)
        if key:
            rep[i] = first.setdefault((int(group), key), i)
            label[i] = list(first).index((int(group), key))
    return label, rep


def mode_targets(label: Array, groups: Array, evidence: Array, eta: float = 1.0) -> Array:
    """(E,) q_i: the target probability of each episode's own mode, 0 without one.

    q(c) is proportional to m(c) * exp(eta * r(c)) within a group: m(c) the mode's share of the group's valid
    answers, r(c) the mean evidence of its members that have any (NaN evidence: none; no member with any: 0).
    With one mode, or ``eta`` = 0, q(c) = m(c).
    """
    q = np.zeros(label.size)
    for group in np.unique(groups):
        members = np.flatnonzero((groups == group) & (label >= 0))
        if not members.size:  # nobody in the group answered: every q is 0
            continue
        modes = np.unique(label[members])
        share = np.array([(label[members] == c).mean() for c in modes])
        score = np.array([_mean_known(evidence[members[label[members] == c]]) for c in modes])
        logits = np.log(share + 1e-12) + (eta * score if eta > 0 and modes.size > 1 else 0.0)
        target = np.exp(logits - logits.max())
        target /= target.sum()
        for c, value in zip(modes, target, strict=True):
            q[members[label[members] == c]] = value
    return q


def _mean_known(values: Array) -> float:
    known = values[~np.isnan(values)]
    return float(known.mean()) if known.size else 0.0


def evidence_for(reference: str, observations: Sequence[str]) -> float:
    """The share of ``observations`` that contain the normalised ``reference`` answer (NaN: no observations):
    clew's offline stand-in for SIOP's NLI entailment of the answer by the tool outputs."""
    if not observations:
        return float("nan")
    key = answer_key(reference)
    return float(np.mean([bool(key) and f" {key} " in f" {answer_key(o)} " for o in observations]))


@register(
    "siop", needs_group=True, needs_outcome_modes=True,
    summary="label-free: rise in belief in the episode's own outcome mode, weighted by the mode's target",
)  # fmt: skip
def siop(
    inp: CreditInput, *, gamma: float = 1.0, outcome_lambda: float = 0.5, eta: float = 1.0,
    env_reward_weight: float = 0.0, eps: float = 1e-6,
) -> Credit:  # fmt: skip
    """Self-Induced Outcome Potential: potential-based turn credit towards the group's reliable answers.

    "Self-Induced Outcome Potential" (SIOP, 2026; the formulas follow the released code, dl-m9/SIOP @ 33043ff,
    ``compute_siop_process_rewards`` and ``compute_siop_turn_level_advantage``; the paper's text and arXiv id
    are not checked). Each episode's final answer falls in an outcome mode (``outcome_modes``: exact match after
    normalisation; the code asks an NLI model for two-way entailment, which clew has no offline model for);
    q_i is its mode's target (``mode_targets``, eta 1 as in the released script; the evidence is the share of
    the episode's tool observations that contain the answer, the code's NLI entailment otherwise); an episode
    without a valid answer has q = 0. phi_t is the mean log-prob of the mode's reference reply (its first
    member's sampled final action) after row t's prompt (``CreditInput.mode_logprob``). Turn rewards:
    r_t = q_i * (phi_{t+1} - phi_t) for t < T - 1, and the last turn r_{T-1} = (1 - lambda) * q_i, lambda 0.5;
    plus ``env_reward_weight`` times the env's rewards (0: label-free, as the method). ``eta`` is read by the
    trainer when it weights the modes (``mode_targets``); here the weights arrive as ``CreditInput.mode_weight``.

    Advantage: every turn reward of the group pooled, z-scored (unbiased std; std < 1e-6 counts as 1; a pool of
    one gives 0), then A_t = sum_{k >= t} gamma^(k-t) r~_k (gamma 1). Two differences from the code, both
    clew's reading: the belief after turn t is scored on the next row's prompt, which holds the observation that
    answered turn t (the code scores it before that observation, crediting it to the next turn), and the last
    turn's own rise in belief is not scored (there is no prompt after it; it keeps the terminal term). The
    scorer is the current policy (the code's scorer server is a separate, apparently frozen, model).

    Worked example (docs/credit.md): one group; episode a answers "Paris" (phi = -2, -1, -0.5), b answers
    "paris." (phi = -1.5, -0.5), c "Lyon" (phi = -2, -2.5), d no answer (2 turns); modes {a, b} and {c} with
    q = 2/3 and 1/3 (eta 0). r = [0.6667, 0.3333, 0.3333 | 0.6667, 0.3333 | -0.1667, 0.1667 | 0, 0], pooled
    mean 0.2593, std 0.2900: A_a = [1.9156, 0.5108, 0.2554], A_b = [1.6602, 0.2554], A_c = [-1.7879, -0.3193],
    A_d = [-1.7879, -0.8940].
    """
    assert inp.mode_logprob is not None and inp.mode_weight is not None
    q, phi = inp.mode_weight, np.nan_to_num(inp.mode_logprob, nan=0.0)
    has_next = np.r_[inp.turn[1:] != 0, False] if inp.n_turns else np.zeros(0, dtype=bool)
    rows = np.flatnonzero(has_next)
    rewards = np.where(has_next, 0.0, (1.0 - outcome_lambda) * q)
    rewards[rows] += q[rows] * (phi[rows + 1] - phi[rows])
    rewards = rewards + env_reward_weight * rewards_with_outcome(inp)
    ids, n = dense_ids(inp.group)
    mean, std, count = segment_mean_std(rewards, ids, n, unbiased=True)
    scale = np.where(std[ids] < 1e-6, 1.0, std[ids] + eps)
    normalized = np.where(count[ids] > 1, (rewards - mean[ids]) / scale, 0.0)
    diagnostics = {
        "credit/mode_weight_mean": float(q.mean()) if q.size else 0.0,
        "credit/rows_without_mode": float(np.isnan(inp.mode_logprob).mean()) if q.size else 0.0,
    }
    return Credit(discounted_returns(normalized, inp, gamma), rewards, diagnostics=diagnostics)
