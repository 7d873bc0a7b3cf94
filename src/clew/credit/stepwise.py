"""Step- and turn-level estimators: GiGPO, turn returns (MARS / MAPO), MatchTIR, PURE min-form, G-RA gating."""

from __future__ import annotations

import numpy as np

from clew.credit import anchors
from clew.credit.base import Credit, CreditInput, check_choice, penalties_in_statistics, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    group_normalize,
    group_relative_outcome,
    per_episode,
    reported_outcome,
    reverse_cummin,
    rewards_with_outcome,
    segment_mean_std,
    whiten,
)


@register("gigpo", needs_group=True, needs_state_keys=True, summary="episode groups + anchor-state step groups")
def gigpo(
    inp: CreditInput,
    *,
    gamma: float = 0.95,
    step_weight: float = 1.0,
    mode: str = "mean_norm",
    episode_stats_over: str = "episode",
    eps: float = 1e-6,
    penalty_placement: str = "advantage",
    state_grouping: str = "exact",
    state_features: str = "tfidf",
    state_similarity: float = anchors.DEFAULT_SIMILARITY,
) -> Credit:
    """Group-in-Group Policy Optimization: A = A^E + step_weight * A^S.

    Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training" (arXiv 2505.10978):
    episode level Eq. 3, A^E = (R(tau) - mean) / F; discounted step return Eq. 5,
    R_t = sum_{k >= t} gamma^(k-t) r_k; anchor-state groups Eq. 6 (rows of one group with the same
    ``state_key``, see ``anchor_keys`` for the other groupings); step level Eq. 7,
    A^S = (R_t - mean_step_group) / F; combined Eq. 8.
    F = 1 for ``mode="mean_norm"`` (the default of the released scripts) or std + eps for
    ``"mean_std_norm"`` (unbiased std). Defaults: gamma 0.95, weight 1.0, eps 1e-6.

    Edge cases: an episode group of one gets A^E = R (mean 0, std 1); a step group of one (including
    every row without an anchor key: ``state_key == -1`` under exact grouping) gets A^S = 0.
    ``episode_stats_over="turn"`` pools step rows for the episode statistics, the released code's default
    (``compute_mean_std_cross_steps=True``), which weights long episodes more; ``"episode"`` is the
    paper's per-trajectory form.

    Shaping penalties (invalid actions): ``penalty_placement="advantage"`` (the preset's choice)
    charges each to its own row after the estimator, so it costs exactly its coefficient and never
    moves another turn's advantage or a baseline. ``"statistics"`` is verl-agent's placement
    (``apply_invalid_action_penalty``, applied before ``compute_gigpo_outcome_advantage``): the
    penalty is subtracted from the episode score (a row's own score with ``episode_stats_over="turn"``,
    where verl-agent puts the episode reward on every step row; the episode's summed penalties with
    per-episode statistics) and from the row's discounted step return (not propagated to earlier
    turns), before both group statistics. On credit.md section 8's example with tau3's last turn
    invalid (coefficient 0.1) it costs that turn 0.171 (mean_norm) / 0.246 (mean_std_norm) with
    row-pooled episode statistics, 0.150 / 0.123 with per-episode ones, instead of 0.100.

    Anchor states (``clew.credit.anchors``): ``state_grouping="exact"`` is the paper's exact match on the env's
    ``state_key()``; ``"normalized"`` keys on the normalised observation text and ``"similarity"`` clusters
    observations whose ``state_features`` (``"tfidf"`` or ``"hidden"``) have cosine >= ``state_similarity``
    (clew's extensions). ``credit/anchor_group_size`` and ``credit/anchor_rows_grouped`` describe the groups
    actually formed; ``Credit.anchor_group`` names each row's group.
    """
    anchors.check_grouping(state_grouping, state_features, state_similarity)
    check_choice("mode", mode, ("mean_norm", "mean_std_norm"))
    check_choice("episode_stats_over", episode_stats_over, ("episode", "turn"))
    scale = mode == "mean_std_norm"
    penalty = penalties_in_statistics(inp, penalty_placement)
    episode_adv = group_relative_outcome(inp, episode_stats_over, scale, eps, penalty)
    step_returns = discounted_returns(rewards_with_outcome(inp), inp, gamma)
    keys = anchor_keys(inp, state_grouping, state_features, state_similarity)
    step_adv, sizes, anchor_group = _anchor_step_advantage(inp, keys, step_returns - penalty, scale, eps)
    diagnostics = {
        "credit/anchor_group_size": float(sizes.mean()) if sizes.size else 0.0,
        "credit/anchor_rows_grouped": float(np.mean(sizes > 1)) if sizes.size else 0.0,
        "credit/step_adv_abs": float(np.abs(step_adv).mean()) if step_adv.size else 0.0,
    }
    charged = penalty_placement == "statistics"
    adv = episode_adv + step_weight * step_adv
    return Credit(adv, step_returns, diagnostics=diagnostics, penalty_charged=charged, anchor_group=anchor_group)


def anchor_keys(inp: CreditInput, grouping: str, features: str, similarity: float) -> np.ndarray:
    """(N,) each row's anchor-state key (-1: none); rows of one episode group with equal keys share a step group.

    ``"exact"``: ``state_key`` (GiGPO Eq. 6). ``"normalized"``: ``anchors.normalized_keys`` of the observation
    text. ``"similarity"``: ``anchors.similarity_keys`` (leader clustering in (episode, turn) order within each
    episode group) of ``anchors.tfidf_features`` of the observation text, or of ``state_vector`` for
    ``features="hidden"``; ``compute`` refuses input that lacks the column the grouping reads.
    """
    if grouping == "exact":
        return inp.state_key
    if grouping == "similarity" and features == "hidden":
        assert inp.state_vector is not None  # compute() refuses input without it
        return anchors.similarity_keys(inp.state_vector, inp.group, inp.episode, inp.turn, similarity)
    assert inp.observation_text is not None  # compute() refuses input without it
    texts = [str(t) for t in inp.observation_text]
    if grouping == "normalized":
        return anchors.normalized_keys(texts)
    return anchors.similarity_keys(anchors.tfidf_features(texts), inp.group, inp.episode, inp.turn, similarity)


def _anchor_step_advantage(
    inp: CreditInput, keys: np.ndarray, returns: np.ndarray, scale: bool, eps: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^S per row, anchor-group size per row, anchor-group id per row or -1); keyless rows stand alone."""
    keyed = keys >= 0
    unique_key = np.where(keyed, keys, -1 - np.arange(inp.n_turns))
    ids, n = dense_ids(inp.group, unique_key)
    mean, std, count = segment_mean_std(returns, ids, n)
    size = count[ids]
    adv = returns - mean[ids]
    if scale:
        adv = adv / (std[ids] + eps)
    return np.where(size > 1, adv, 0.0), size, np.where(keyed, ids, -1)


@register(
    "turn_returns",
    needs_group=True,
    summary="per-turn MC returns, normalised per turn / agent / mixed",
)
def turn_returns(
    inp: CreditInput,
    *,
    gamma: float = 1.0,
    normalize: str = "turn",
    scale_by_std: bool = True,
    distinct_values: bool = False,
    whiten_batch: bool = False,
    mix: float = 0.5,
    eps: float = 1e-6,
) -> Credit:
    """Turn-level credit from discounted per-turn Monte Carlo returns G_t = sum gamma^(k-t) r_k.

    ``normalize`` picks the baseline:

    - ``"turn"``: z-score among the group's returns at the same turn index (MatchTIR's turn
      normaliser, arXiv 2601.10712; a turn index reached by one episode keeps its raw value).
    - ``"agent"``: MARS / MARSHAL agent-specific normalisation (Yuan, Xu et al., arXiv 2510.15414,
      section 3.2): subtract the mean of that agent's pool of returns within the group (no std);
      ``distinct_values=True`` averages the pool's *distinct* values as the released code does
      (the paper's occurrence-weighted form is a third-party reading, unconfirmed); needs ``agent``
      (falls back to one agent).
    - ``"mixed"``: MAPO (Zhang et al., arXiv 2603.06194): ``mix * turn-level z + (1 - mix) * batch
      z``. **Unconfirmed**: the paper's exact mixing rule and weight; this convex combination is
      the most direct reading of "turn-level normalisation combined with batch-level normalisation".

    ``whiten_batch=True`` whitens the result over the batch (MARS's ``whiten_advantages``).
    """
    check_choice("normalize", normalize, ("turn", "agent", "mixed"))
    returns = discounted_returns(rewards_with_outcome(inp), inp, gamma)
    if normalize == "agent":
        adv = _agent_centred(inp, returns, distinct_values)
    else:
        ids, n = dense_ids(inp.group, inp.turn)
        adv = group_normalize(returns, ids, n, scale_by_std, eps)
        if normalize == "mixed":
            mean, std = returns.mean(), returns.std(ddof=1) if returns.size > 1 else 1.0
            adv = mix * adv + (1 - mix) * (returns - mean) / (std + eps)
    if whiten_batch:
        adv = whiten(adv)
    return Credit(adv, returns)


@register(
    "matchtir", needs_group=True, summary="MatchTIR dual-level: (trajectory GRPO + per-turn-index z of returns) / 2"
)
def matchtir(inp: CreditInput, *, gamma: float = 0.9, eps: float = 1e-6) -> Credit:
    """MatchTIR dual-level advantage: A_{i,j} = (A^traj_i + A^turn_{i,j}) / 2.

    Qu et al., "MatchTIR: Fine-Grained Supervision for Tool-Integrated Reasoning via Bipartite
    Matching" (arXiv 2601.10712), dual-level advantage estimation (code
    ``compute_grpo_outcome_advantage`` in ``quchangle1/MatchTIR``): A^traj = (S_i - mean_G S) /
    (std_G S + eps) with S_i the sum of the episode's turn rewards; A^turn = (R_{i,j} - mean) /
    (std + eps) over the group's rollouts that reach turn j, R_{i,j} = sum_{k >= j} gamma^(k-j) r_{i,k}
    (gamma 0.9, hard-coded there). Unbiased std, eps 1e-6; a group (or a turn index) with a single
    rollout uses mean 0, std 1, so the raw value. The turn rewards are ``reward`` plus, where the
    env reported it apart (``outcome_explicit``), the outcome on the episode's last turn: the
    answer turn's reward in the paper. ``turn_return`` is R_{i,j}.
    """
    rewards = rewards_with_outcome(inp)
    returns = discounted_returns(rewards, inp, gamma)
    row_ep, ep_group, _ = per_episode(inp)
    score = np.bincount(row_ep, weights=rewards, minlength=int(row_ep[-1]) + 1 if row_ep.size else 0)
    traj = group_normalize(score, *dense_ids(ep_group), True, eps)[row_ep]
    turn = group_normalize(returns, *dense_ids(inp.group, inp.turn), True, eps)
    diagnostics = {"credit/turn_adv_abs": float(np.abs(turn).mean()) if turn.size else 0.0}
    return Credit((traj + turn) / 2, returns, diagnostics=diagnostics)


def _agent_centred(inp: CreditInput, returns: np.ndarray, distinct_values: bool) -> np.ndarray:
    agent = inp.agent if inp.agent is not None else np.zeros_like(inp.group)
    ids, n = dense_ids(inp.group, agent)
    if not distinct_values:
        mean, _, _ = segment_mean_std(returns, ids, n)
        return returns - mean[ids]
    pairs, first = np.unique(np.stack([ids, _float_key(returns)], 1), axis=0, return_index=True)
    uniq_mean, _, uniq_count = segment_mean_std(returns[first], pairs[:, 0], n)
    adv = returns - uniq_mean[ids]
    return np.where(uniq_count[ids] > 1, adv, 0.0)


def _float_key(values: np.ndarray) -> np.ndarray:
    return np.round(values * 1e9).astype(np.int64)


@register("pure", summary="min-form credit over per-step process rewards")
def pure(
    inp: CreditInput,
    *,
    temperature: float = 0.1,
    form: str = "soft_min",
    baseline: str = "token",
    outcome_coef: float = 0.0,
) -> Credit:
    """PURE min-form credit: the return of a step is (about) the minimum of future process rewards.

    Cheng et al., "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model Needs"
    (arXiv 2504.15275, id unconfirmed), section 3: w_j = softmax_j(-r_j / T) over the episode's
    steps (turns), r*_j = w_j r_j, G_t = sum_{j >= t} r*_j (-> min_j r_j as T -> 0); T = 0.1;
    gamma = 1. ``form="strict_min"`` uses G_t = min_{j >= t} r_j (r*_j = G_j - G_{j+1}); ``"sum"``
    the summation form the paper shows collapses (r* = r). ``reward`` holds the process rewards.

    Advantage A_t = sum_{j >= t} (r*_j - b_j) with the official code's leave-one-out baselines
    (``CJReinforce/PURE`` main, ``experience_maker.py::process_experiences``), computed there on
    the transformed rewards r* (its per-step rewards are already the softmin-weighted ones):
    ``baseline="token"`` (its script default) b_j = (sum of the other samples' total r* / their
    action tokens) x tokens of step j, needs ``token_offsets`` (0 when the others have no tokens);
    ``"step"`` b_j = the mean over the other samples of (total r* / number of steps); ``"none"``
    A_t = G_t. A group of one gets b = 0 (the official code divides by G - 1 = 0 there).
    ``turn_return`` is G_t. ``outcome_coef`` adds coef x the RLOO-baselined verifiable reward
    (PURE's PRM+VR mode, VR = solved - 1, coef 1.0) to every step; it is the env-reported
    ``outcome`` (needs the ``outcome_explicit`` column); an episode cut short before the env
    reported one counts as unsolved (0).
    """
    check_choice("form", form, ("soft_min", "strict_min", "sum"))
    check_choice("baseline", baseline, ("token", "step", "none"))
    if outcome_coef and inp.outcome_explicit is None:
        raise ValueError(
            f"pure outcome_coef={outcome_coef} needs a verifiable reward reported by the env apart from "
            "the process rewards (StepResult.outcome, the outcome_explicit column); set outcome_coef=0"
        )
    star, returns = _min_form(inp, form, temperature)
    b = _pure_baseline(inp, star, baseline)
    adv = returns - discounted_returns(b, inp, 1.0)
    if outcome_coef:
        adv = adv + outcome_coef * _rloo_outcome(inp, reported_outcome(inp))
    diagnostics = {"credit/pure_baseline_mean": float(b.mean()) if b.size else 0.0}
    return Credit(adv, returns, diagnostics=diagnostics)


def _min_form(inp: CreditInput, form: str, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(r* per step, G_t = sum_{j >= t} r*_j) for the chosen aggregation form."""
    if form == "strict_min":
        returns = reverse_cummin(inp.reward, inp)
        next_return = np.where(np.r_[inp.turn[1:] != 0, False], np.r_[returns[1:], 0.0], 0.0)
        return returns - next_return, returns
    star = inp.reward if form == "sum" else _softmin_weighted(inp, temperature)
    return star, discounted_returns(star, inp, 1.0)


def _pure_baseline(inp: CreditInput, star: np.ndarray, baseline: str) -> np.ndarray:
    """(N,) b_j from the other episodes of the group (leave-one-out); 0 for a group of one."""
    if baseline == "none" or inp.n_turns == 0:
        return np.zeros(inp.n_turns)
    row_ep, ep_group, _ = per_episode(inp)
    gid, n = dense_ids(ep_group)
    total = np.bincount(row_ep, weights=star)
    if baseline == "step":
        per_step = total / np.bincount(row_ep)
        others = np.bincount(gid, weights=per_step, minlength=n)[gid] - per_step
        n_others = np.bincount(gid, minlength=n)[gid] - 1
        return (others / np.maximum(n_others, 1))[row_ep]
    if inp.token_offsets is None:
        raise ValueError("pure baseline='token' needs token_offsets (token counts per step); use baseline='step'")
    counts = np.diff(inp.token_offsets).astype(np.float64)
    tokens = np.bincount(row_ep, weights=counts)
    other_total = np.bincount(gid, weights=total, minlength=n)[gid] - total
    other_tokens = np.bincount(gid, weights=tokens, minlength=n)[gid] - tokens
    rate = np.where(other_tokens > 0, other_total / np.maximum(other_tokens, 1), 0.0)
    return rate[row_ep] * counts


def _softmin_weighted(inp: CreditInput, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"pure temperature must be > 0, got {temperature}")
    row_ep = np.cumsum(inp.turn == 0) - 1
    logits = -inp.reward / temperature
    peak = np.full(int(row_ep[-1]) + 1, -np.inf) if row_ep.size else np.zeros(0)
    np.maximum.at(peak, row_ep, logits)
    expo = np.exp(logits - peak[row_ep])
    return inp.reward * expo / np.bincount(row_ep, weights=expo)[row_ep]


def _rloo_outcome(inp: CreditInput, outcome: np.ndarray) -> np.ndarray:
    """(N,) the leave-one-out-baselined per-episode ``outcome`` (given per row), on every row."""
    row_ep, ep_group, _ = per_episode(inp)
    ep_outcome = outcome[np.flatnonzero(inp.turn == 0)]
    ids, n = dense_ids(ep_group)
    mean, _, count = segment_mean_std(ep_outcome, ids, n)
    c = count[ids]
    return np.where(c > 1, c / np.maximum(c - 1, 1) * (ep_outcome - mean[ids]), 0.0)[row_ep]


@register(
    "gated",
    needs_group=True,
    needs_outcome=True,
    summary="G-RA: step rewards count only when the outcome passes a threshold",
)
def gated(inp: CreditInput, *, threshold: float = 0.5, scale_by_std: bool = True, eps: float = 1e-6) -> Credit:
    """Gated Reward Accumulation (G-RA).

    Sun et al., "Stabilizing Long-term Multi-turn RL with Gated Rewards" (arXiv 2508.10548),
    section 3: r~_t = r^low_t * 1[r^high >= threshold], R = r^high + sum_t r~_t. Here ``outcome``
    is r^high and ``reward`` holds only the low-level step rewards; an episode that ended before the
    env reported its outcome (a budget, an error) gets r^high = 0, so its step rewards count only
    when 0 >= threshold (our reading: such an episode submitted nothing). The episode return R is then
    GRPO-normalised within the group (the base estimator on top of G-RA is unconfirmed; GRPO is
    the critic-free choice). ``turn_return`` is r^high + the gated reward-to-go.
    **Unconfirmed**: the threshold and reward levels of the paper; 0.5 suits 0/1 outcomes.
    """
    high = reported_outcome(inp)
    gate = (high >= threshold).astype(np.float64)
    to_go = discounted_returns(inp.reward * gate, inp, 1.0)
    row_ep, ep_group, _ = per_episode(inp)
    starts = np.flatnonzero(inp.turn == 0)
    ep_return = high[starts] + to_go[starts]
    ids, n = dense_ids(ep_group)
    adv = group_normalize(ep_return, ids, n, scale_by_std, eps)[row_ep]
    diagnostics = {"credit/gate_open": float(gate.mean()) if gate.size else 0.0}
    assert inp.outcome_explicit is not None  # compute() refuses input without the column
    diagnostics["credit/outcome_reported"] = float(inp.outcome_explicit[starts].mean()) if starts.size else 0.0
    return Credit(adv, high + to_go, diagnostics=diagnostics)
