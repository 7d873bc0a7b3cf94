"""Step- and turn-level estimators: GiGPO, turn returns (MARS / MAPO), PURE min-form, G-RA gating."""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, check_choice, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    group_normalize,
    per_episode,
    reverse_cummin,
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
) -> Credit:
    """Group-in-Group Policy Optimization: A = A^E + step_weight * A^S.

    Feng et al., "Group-in-Group Policy Optimization for LLM Agent Training" (arXiv 2505.10978):
    episode level Eq. 3, A^E = (R(tau) - mean) / F; discounted step return Eq. 5,
    R_t = sum_{k >= t} gamma^(k-t) r_k; anchor-state groups Eq. 6 (rows of one group with the same
    ``state_key``); step level Eq. 7, A^S = (R_t - mean_step_group) / F; combined Eq. 8.
    F = 1 for ``mode="mean_norm"`` (the default of the released scripts) or std + eps for
    ``"mean_std_norm"`` (unbiased std). Defaults: gamma 0.95, weight 1.0, eps 1e-6.

    Edge cases: an episode group of one gets A^E = R (mean 0, std 1); a step group of one
    (including every row with ``state_key == -1``) gets A^S = 0. ``episode_stats_over="turn"``
    pools step rows for the episode statistics, the released code's default
    (``compute_mean_std_cross_steps=True``), which weights long episodes more; ``"episode"`` is the
    paper's per-trajectory form.
    """
    check_choice("mode", mode, ("mean_norm", "mean_std_norm"))
    check_choice("episode_stats_over", episode_stats_over, ("episode", "turn"))
    scale = mode == "mean_std_norm"
    episode_adv = _episode_level(inp, episode_stats_over, scale, eps)
    step_returns = discounted_returns(inp.reward, inp, gamma)
    step_adv, sizes = _anchor_step_advantage(inp, step_returns, scale, eps)
    diagnostics = {
        "credit/anchor_group_size": float(sizes.mean()) if sizes.size else 0.0,
        "credit/anchor_rows_grouped": float(np.mean(sizes > 1)) if sizes.size else 0.0,
        "credit/step_adv_abs": float(np.abs(step_adv).mean()) if step_adv.size else 0.0,
    }
    return Credit(episode_adv + step_weight * step_adv, step_returns, diagnostics=diagnostics)


def _episode_level(inp: CreditInput, stats_over: str, scale: bool, eps: float) -> np.ndarray:
    if stats_over == "turn":
        ids, n = dense_ids(inp.group)
        return group_normalize(inp.outcome, ids, n, scale, eps)
    row_ep, ep_group, ep_outcome = per_episode(inp)
    ids, n = dense_ids(ep_group)
    return group_normalize(ep_outcome, ids, n, scale, eps)[row_ep]


def _anchor_step_advantage(
    inp: CreditInput, returns: np.ndarray, scale: bool, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """(A^S per row, anchor-group size per row); keyless rows form groups of their own."""
    keyed = inp.state_key >= 0
    unique_key = np.where(keyed, inp.state_key, -1 - np.arange(inp.n_turns))
    ids, n = dense_ids(inp.group, unique_key)
    mean, std, count = segment_mean_std(returns, ids, n)
    size = count[ids]
    adv = returns - mean[ids]
    if scale:
        adv = adv / (std[ids] + eps)
    return np.where(size > 1, adv, 0.0), size


@register(
    "turn_returns",
    needs_group=True,
    needs_agents=False,
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
    returns = discounted_returns(inp.reward, inp, gamma)
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
    outcome_coef: float = 0.0,
) -> Credit:
    """PURE min-form credit: the return of a step is (about) the minimum of future process rewards.

    Cheng et al., "Stop Summation: Min-Form Credit Assignment Is All Process Reward Model Needs"
    (arXiv 2504.15275, id unconfirmed), section 3: w_j = softmax_j(-r_j / T) over the episode's
    steps, r*_j = w_j r_j, G_t = sum_{j >= t} r*_j (-> min_j r_j as T -> 0); T = 0.1; gamma = 1.
    ``form="strict_min"`` uses G_t = min_{j >= t} r_j; ``"sum"`` the summation form the paper shows
    collapses. ``reward`` holds the per-step process rewards. ``outcome_coef > 0`` adds a
    leave-one-out-baselined verifiable outcome (PURE's PRM+VR mode) to every step.
    """
    check_choice("form", form, ("soft_min", "strict_min", "sum"))
    if form == "strict_min":
        returns = reverse_cummin(inp.reward, inp)
    elif form == "sum":
        returns = discounted_returns(inp.reward, inp, 1.0)
    else:
        returns = discounted_returns(_softmin_weighted(inp, temperature), inp, 1.0)
    adv = returns.copy()
    if outcome_coef:
        adv = adv + outcome_coef * _rloo_outcome(inp)
    return Credit(adv, returns)


def _softmin_weighted(inp: CreditInput, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise ValueError(f"pure temperature must be > 0, got {temperature}")
    row_ep = np.cumsum(inp.turn == 0) - 1
    logits = -inp.reward / temperature
    peak = np.full(int(row_ep[-1]) + 1, -np.inf) if row_ep.size else np.zeros(0)
    np.maximum.at(peak, row_ep, logits)
    expo = np.exp(logits - peak[row_ep])
    return inp.reward * expo / np.bincount(row_ep, weights=expo)[row_ep]


def _rloo_outcome(inp: CreditInput) -> np.ndarray:
    row_ep, ep_group, ep_outcome = per_episode(inp)
    ids, n = dense_ids(ep_group)
    mean, _, count = segment_mean_std(ep_outcome, ids, n)
    c = count[ids]
    return np.where(c > 1, c / np.maximum(c - 1, 1) * (ep_outcome - mean[ids]), 0.0)[row_ep]


@register("gated", needs_group=True, summary="G-RA: step rewards count only when the outcome passes a threshold")
def gated(inp: CreditInput, *, threshold: float = 0.5, scale_by_std: bool = True, eps: float = 1e-6) -> Credit:
    """Gated Reward Accumulation (G-RA).

    Sun et al., "Stabilizing Long-term Multi-turn RL with Gated Rewards" (arXiv 2508.10548),
    section 3: r~_t = r^low_t * 1[r^high >= threshold], R = r^high + sum_t r~_t. Here ``outcome``
    is r^high and ``reward`` holds only the low-level step rewards. The episode return R is then
    GRPO-normalised within the group (the base estimator on top of G-RA is unconfirmed; GRPO is
    the critic-free choice). ``turn_return`` is r^high + the gated reward-to-go.
    **Unconfirmed**: the threshold and reward levels of the paper; 0.5 suits 0/1 outcomes.
    """
    gate = (inp.outcome >= threshold).astype(np.float64)
    to_go = discounted_returns(inp.reward * gate, inp, 1.0)
    row_ep, ep_group, _ = per_episode(inp)
    starts = np.flatnonzero(inp.turn == 0)
    ep_return = inp.outcome[starts] + to_go[starts]
    ids, n = dense_ids(ep_group)
    adv = group_normalize(ep_return, ids, n, scale_by_std, eps)[row_ep]
    return Credit(adv, inp.outcome + to_go, diagnostics={"credit/gate_open": float(gate.mean()) if gate.size else 0})
