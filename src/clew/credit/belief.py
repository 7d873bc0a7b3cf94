"""Turn credit from the policy's own beliefs about the answer: IGPO's information gain, A^2TGPO's normalisation.

The trainer scores, before every turn, how strongly the policy already believes the episode's gold answer
(``CreditInput.gold_logprob``, teacher-forced after the turn's prompt); a turn that raised that belief
(a useful search or tool call) earns the rise, even in an episode whose final answer is wrong.
"""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    group_normalize,
    group_relative_outcome,
    rewards_with_outcome,
)

Array = np.ndarray


def gold_beliefs(inp: CreditInput) -> Array:
    """(N,) the policy's belief in the gold answer before each row acts: the geometric-mean token probability
    ``exp(mean log p(gold tokens | prompt))``; NaN where the episode has no gold reply."""
    assert inp.gold_logprob is not None  # compute() refuses the estimators that need it without it
    return np.exp(inp.gold_logprob)


def information_gain(inp: CreditInput) -> Array:
    """(N,) IG_t = b_{t+1} - b_t: the change in belief from row t's prompt to the next row's, within an episode.

    An episode's last row gets 0 (its answer is scored by the outcome instead), as does a row where either
    belief is missing (no gold reply).
    """
    belief = gold_beliefs(inp)
    gain = np.zeros(inp.n_turns)
    has_next = np.r_[inp.turn[1:] != 0, False] if inp.n_turns else np.zeros(0, dtype=bool)
    rows = np.flatnonzero(has_next)
    gain[rows] = belief[rows + 1] - belief[rows]
    return np.nan_to_num(gain, nan=0.0)


@register(
    "igpo", needs_group=True, needs_gold_beliefs=True,
    summary="information gain about the gold answer per turn (IGPO), group-normalised, discounted",
)  # fmt: skip
def igpo(inp: CreditInput, *, gamma: float = 1.0, info_gain_weight: float = 1.0, eps: float = 1e-6) -> Credit:
    """Information-Gain-based Policy Optimization: the turn reward is the rise in the policy's belief in the answer.

    Wang et al., "Information Gain-based Policy Optimization: A Simple and Effective Approach for Multi-Turn LLM
    Agents" (arXiv 2510.14967), the method (equation numbers not checked here). The belief after turn t is the
    policy's teacher-forced probability of the ground-truth answer a given the history,
    pi(a | q, o_<=t) = exp((1/L) sum_j log pi(a_j | q, o_<=t, a_<j)); the reward of turn t < T is the
    information gain r_t = pi(a | q, o_<=t) - pi(a | q, o_<=t-1); the final turn's reward is the outcome (the
    paper's F1; here the episode's outcome, ``rewards_with_outcome``). Env step rewards, where an env gives
    them, are added to the gain: r_t = reward_t + info_gain_weight * IG_t.

    Advantage (paper reading; credit.md section 13 marks it **unconfirmed**): every turn reward of every episode
    in a group is z-normalised with the group's pooled mean and unbiased std (+ eps), then
    A_t = sum_{k >= t} gamma^(k-t) r~_k within the episode, on every token of turn t. The released code differs:
    it subtracts a position-wise group mean of token-level returns and leaves the std unused; clew follows the
    paper. gamma = 1 by default (the worked example's value; the paper's gamma is not confirmed).

    In clew's rows, the belief before row t is scored on row t's own prompt (whatever context the rollout gave
    the policy: the whole history, a window, a summary), so IG_t = b_{t+1} - b_t uses the next row's prompt;
    ``information_gain`` has the edge cases. Worked example (credit.md section 13, gamma 1, one group of two):
    beliefs 0.1, 0.4, 0.7 and outcome 1 give r = [0.3, 0.3, 1.0]; beliefs 0.1, 0.05 and outcome 0 give
    r = [-0.05, 0.0]; pooled mean 0.31, std 0.4189; A = [1.5993, 1.6232, 1.6471] and [-1.5993, -0.7400].
    """
    gain = information_gain(inp)
    rewards = rewards_with_outcome(inp) + info_gain_weight * gain
    ids, n = dense_ids(inp.group)
    normalized = group_normalize(rewards, ids, n, scale_by_std=True, eps=eps, unbiased=True)
    belief = gold_beliefs(inp)
    known = ~np.isnan(belief)
    diagnostics = {
        "credit/gold_belief_mean": float(belief[known].mean()) if known.any() else 0.0,
        "credit/info_gain_mean": float(gain.mean()) if gain.size else 0.0,
        "credit/info_gain_abs_mean": float(np.abs(gain).mean()) if gain.size else 0.0,
        "credit/rows_without_belief": float((~known).mean()) if known.size else 0.0,
    }
    return Credit(
        turn_advantage=discounted_returns(normalized, inp, gamma),
        turn_return=discounted_returns(rewards, inp, gamma),
        diagnostics=diagnostics,
    )


@register(
    "a2tgpo", needs_group=True, needs_gold_beliefs=True, clip_scale_param="adaptive_clip",
    summary="information gain normalised per (group, turn index), depth-rescaled accumulation, plus GRPO",
)  # fmt: skip
def a2tgpo(
    inp: CreditInput, *, gamma: float = 1.0, info_gain_weight: float = 1.0, adaptive_clip: float = 1.0,
    scale_by_std: bool = True, eps: float = 1e-6,
) -> Credit:  # fmt: skip
    """A^2TGPO's advantage: IGPO's information gain, normalised among peers at the same depth, accumulated with a
    variance rescaling, added to the group-relative outcome.

    "A^2TGPO: Agentic Turn-Group Policy Optimization with Adaptive Turn-level Clipping" (Tencent, 2026; the arXiv
    id and equations are **unconfirmed**: only the abstract was available, and this is the most defensible reading
    of it). (i) Turn-group normalisation: each turn's information gain IG_t (``information_gain``) is z-scored
    within its (group, turn index) peers (unbiased std + eps; a lone peer keeps its raw value). (ii) Variance-
    rescaled discounted accumulation: S_t = sum_{k >= t} gamma^(k-t) z_k over the turns that have a gain (all but
    the episode's last), divided by sqrt(the number of terms summed), so its scale does not drift with depth.
    The outcome enters as GRPO's group-normalised outcome on every turn:
    A_t = A^GRPO + info_gain_weight * S_t (the last turn, with no gain of its own, gets A^GRPO alone).
    (iii) Adaptive turn-level clipping: each turn's PPO clip range is scaled by
    s_t = 2 * sigmoid(``adaptive_clip`` * (|z_t| - 1)) (``Credit.clip_scale``): a turn whose gain is typical
    among its peers (|z| = 1) keeps the configured range, an uninformative one (z near 0) gets a narrower one
    (down to 2 sigmoid(-k)), an informative one a wider one (up to 2x); turns without a gain (the last, or
    either belief missing: no gold reply) keep 1;
    ``adaptive_clip`` 0 turns it off. The abstract says only "modulates each turn's clipping range based on its
    normalized IG, widening ... informative turns and narrowing ... uninformative ones"; this form is clew's.

    Worked example (docs/credit.md): one group, beliefs 0.1 -> 0.4 -> 0.7 (outcome 1) and 0.1 -> 0.05 (outcome 0),
    gamma 1: IG = [0.3, 0.3, -, -0.05, -]; turn 0 peers 0.3 and -0.05 give z = +-0.7071; turn 1 has one peer (0.3,
    kept); S = [(0.7071 + 0.3) / sqrt 2, 0.3, 0, -0.7071, 0]; A^GRPO = +-0.7071; clip scales (k = 1)
    2 sigmoid(|z| - 1) = [0.8546, 0.6637, 1, 0.8546, 1] (turn 1's lone peer keeps its raw gain, 0.3).
    """
    gain = information_gain(inp)
    has_gain = np.r_[inp.turn[1:] != 0, False] if inp.n_turns else np.zeros(0, dtype=bool)
    rows = np.flatnonzero(has_gain)
    ids, n = dense_ids(inp.group[rows], inp.turn[rows])
    z = np.zeros(inp.n_turns)
    z[rows] = group_normalize(gain[rows], ids, n, scale_by_std=True, eps=eps, unbiased=True)
    accumulated = discounted_returns(z, inp, gamma)
    terms = discounted_returns(has_gain.astype(np.float64), inp, 1.0)  # gains summed from turn t to the end
    rescaled = np.where(terms > 0, accumulated / np.sqrt(np.maximum(terms, 1.0)), 0.0)
    outcome = group_relative_outcome(inp, "episode", scale_by_std, eps, np.zeros(inp.n_turns))
    diagnostics = {
        "credit/info_gain_mean": float(gain[rows].mean()) if rows.size else 0.0,
        "credit/info_gain_abs_mean": float(np.abs(gain[rows]).mean()) if rows.size else 0.0,
    }
    assert inp.gold_logprob is not None
    scored = rows[~np.isnan(inp.gold_logprob[rows]) & ~np.isnan(inp.gold_logprob[rows + 1])]  # both beliefs known
    scale = np.ones(inp.n_turns)
    scale[scored] = 2.0 / (1.0 + np.exp(-adaptive_clip * (np.abs(z[scored]) - 1.0)))
    diagnostics["credit/clip_scale_mean"] = float(scale[scored].mean()) if scored.size else 1.0
    return Credit(
        outcome + info_gain_weight * rescaled, rewards_with_outcome(inp), diagnostics=diagnostics,
        clip_scale=scale if adaptive_clip > 0 else None,
    )  # fmt: skip
