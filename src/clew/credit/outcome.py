"""Outcome-level estimators: REINFORCE, GRPO / Dr.GRPO, RLOO, REINFORCE++ (with/without baseline)."""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, check_choice, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    group_normalize,
    per_episode,
    segment_mean_std,
    token_counts,
    whiten,
)


@register("reinforce", summary="discounted per-turn return, no baseline")
def reinforce(inp: CreditInput, *, gamma: float = 1.0) -> Credit:
    """Monte Carlo REINFORCE: A_t = R_t = sum_{k >= t} gamma^(k-t) r_k, no baseline.

    Williams, "Simple statistical gradient-following algorithms for connectionist RL" (1992),
    the likelihood-ratio estimator with the return-to-go (Sutton & Barto, Eq. 13.8).
    """
    returns = discounted_returns(inp.reward, inp, gamma)
    return Credit(returns, returns, diagnostics={"credit/return_mean": float(returns.mean()) if returns.size else 0.0})


@register("grpo", needs_group=True, summary="group mean/std of outcomes (scale_by_std=False gives Dr.GRPO)")
def grpo(
    inp: CreditInput,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-6,
    unbiased_std: bool = True,
    stats_over: str = "episode",
) -> Credit:
    """GRPO outcome advantage, broadcast to every turn of the episode.

    Shao et al., "DeepSeekMath" (arXiv 2402.03300), section 4.1.2:
    A_i = (r_i - mean_G r) / (std_G r + eps). ``scale_by_std=False`` gives Dr.GRPO
    (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783, section 3.1): A_i = r_i - mean.

    Defaults follow verl: eps 1e-6, unbiased (N-1) std. A group of one gets mean 0, std 1 (A = r).
    ``stats_over="episode"`` uses one entry per episode (the paper; DCPO's de-duplication,
    arXiv 2510.12635); ``"turn"`` pools the turn rows, so long episodes weigh more (the Flow-GRPO
    code, arXiv 2510.05592; whether the paper intends that is unconfirmed).
    """
    check_choice("stats_over", stats_over, ("episode", "turn"))
    if stats_over == "turn":
        adv = group_normalize(inp.outcome, *_group_ids(inp.group), scale_by_std, eps, unbiased_std)
        return Credit(adv, inp.outcome.copy())
    row_ep, ep_group, ep_outcome = per_episode(inp)
    ids, n = _group_ids(ep_group)
    ep_adv = group_normalize(ep_outcome, ids, n, scale_by_std, eps, unbiased_std)
    return Credit(ep_adv[row_ep], inp.outcome.copy(), diagnostics=_group_diag(ep_outcome, ids, n))


@register("rloo", needs_group=True, summary="leave-one-out baseline over the group's outcomes")
def rloo(inp: CreditInput) -> Credit:
    """REINFORCE leave-one-out: A_i = r_i - mean_{j != i} r_j = G/(G-1) (r_i - mean_G r).

    Ahmadian et al., "Back to Basics: Revisiting REINFORCE Style Optimization" (arXiv 2402.14740),
    Eq. 5 (after Kool et al. 2019). A group of one gets A = 0 (verl's vectorised form; its looped
    form keeps the raw reward, the two disagree).
    """
    row_ep, ep_group, ep_outcome = per_episode(inp)
    ids, n = _group_ids(ep_group)
    mean, _, count = segment_mean_std(ep_outcome, ids, n)
    c = count[ids]
    ep_adv = np.where(c > 1, c / np.maximum(c - 1, 1) * (ep_outcome - mean[ids]), 0.0)
    return Credit(ep_adv[row_ep], inp.outcome.copy(), diagnostics=_group_diag(ep_outcome, ids, n))


@register("reinforce_pp", summary="global batch whitening of returns (optionally group-baselined)")
def reinforce_pp(
    inp: CreditInput, *, gamma: float = 1.0, group_baseline: bool = False, whiten_over: str = "tokens"
) -> Credit:
    """REINFORCE++: returns whitened over the whole batch.

    Hu et al., "REINFORCE++" (arXiv 2501.03262), section 3 (global advantage normalisation):
    G_t = sum_{s >= t} gamma^(s-t) r_s, then A = (G - mean) / sqrt(var + 1e-8) with unbiased var
    over every valid token of the batch (verl ``masked_whiten``). ``group_baseline=True`` is
    REINFORCE++-baseline: A = whiten(r_i - mean_G r). ``whiten_over="tokens"`` weights each turn
    by its token count (needs ``token_offsets``); ``"turns"`` weights turn rows equally.
    """
    check_choice("whiten_over", whiten_over, ("tokens", "turns"))
    if group_baseline:
        row_ep, ep_group, ep_outcome = per_episode(inp)
        ids, n = _group_ids(ep_group)
        mean, _, count = segment_mean_std(ep_outcome, ids, n)
        returns = (ep_outcome - np.where(count[ids] > 1, mean[ids], 0.0))[row_ep]
    else:
        returns = discounted_returns(inp.reward, inp, gamma)
    weights = token_counts(inp) if whiten_over == "tokens" else None
    return Credit(whiten(returns, weights), returns)


def _group_ids(group: np.ndarray) -> tuple[np.ndarray, int]:
    return dense_ids(group)


def _group_diag(outcomes: np.ndarray, ids: np.ndarray, n: int) -> dict[str, float]:
    _, std, count = segment_mean_std(outcomes, ids, n)
    return {
        "credit/zero_std_groups": float(np.mean(std < 1e-12)) if n else 0.0,
        "credit/mean_group_size": float(count.mean()) if n else 0.0,
    }
