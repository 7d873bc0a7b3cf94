"""Outcome-level estimators: REINFORCE, GRPO / Dr.GRPO, RLOO, REINFORCE++ (with/without baseline)."""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, check_choice, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    episode_starts,
    group_normalize,
    mean_per_row,
    per_episode,
    rewards_with_outcome,
    segment_discounted_returns,
    segment_mean_std,
    token_counts,
    token_rows,
    weighted_moments,
    whiten,
    whiten_by,
)


@register("reinforce", summary="discounted per-turn return, no baseline")
def reinforce(inp: CreditInput, *, gamma: float = 1.0) -> Credit:
    """Monte Carlo REINFORCE: A_t = R_t = sum_{k >= t} gamma^(k-t) r_k, no baseline.

    Williams, "Simple statistical gradient-following algorithms for connectionist RL" (1992),
    the likelihood-ratio estimator with the return-to-go (Sutton & Barto, Eq. 13.8).
    """
    returns = discounted_returns(rewards_with_outcome(inp), inp, gamma)
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
    inp: CreditInput,
    *,
    gamma: float = 1.0,
    group_baseline: bool = False,
    whiten_over: str = "tokens",
    discount_over: str = "token",
) -> Credit:
    """REINFORCE++: returns whitened over the whole batch.

    Hu et al., "REINFORCE++" (arXiv 2501.03262), section 3 (global advantage normalisation):
    G_t = sum_{s >= t} gamma^(s-t) r_s, then A = (G - mean) / sqrt(var + 1e-8) with unbiased var
    over every valid token of the batch (verl ``masked_whiten``).

    ``discount_over="token"`` (the paper's code, verl ``compute_reinforce_plus_plus_outcome_advantage``)
    discounts per action token: each turn's reward sits on its last action token (a turn without
    tokens hands it to the last earlier action token of the episode, or drops it when there is
    none: no action came before it), G_k = r_k + gamma G_{k+1} runs backward over the episode's
    action tokens only (observation tokens are not counted) and resets at episode boundaries.
    ``token_advantage`` is the whitened G_k; ``turn_advantage`` the mean over the turn's tokens and
    ``turn_return`` G at its first token. A turn without tokens (it trains nothing) gets its
    per-turn discounted return, whitened with the token moments. Needs ``token_offsets``; verl's
    multi-turn form would also reset the return at masked observation tokens, which cuts later
    rewards off from earlier turns; this does not. ``"turn"`` discounts per turn and whitens the
    turn returns, each weighted by its token count (``whiten_over="tokens"``, needs
    ``token_offsets``) or equally (``"turns"``). With gamma = 1 the two give the same turn advantages.

    ``group_baseline=True`` is REINFORCE++-baseline: A = whiten(r_i - mean_G r) on the episode
    outcome broadcast to every turn (group of one: mean 0); ``gamma`` and ``discount_over`` do not
    apply there.
    """
    check_choice("whiten_over", whiten_over, ("tokens", "turns"))
    check_choice("discount_over", discount_over, ("token", "turn"))
    weights = token_counts(inp) if whiten_over == "tokens" else None
    if group_baseline:
        row_ep, ep_group, ep_outcome = per_episode(inp)
        ids, n = _group_ids(ep_group)
        mean, _, count = segment_mean_std(ep_outcome, ids, n)
        returns = (ep_outcome - np.where(count[ids] > 1, mean[ids], 0.0))[row_ep]
        return Credit(whiten(returns, weights), returns)
    returns = discounted_returns(rewards_with_outcome(inp), inp, gamma)
    if discount_over == "turn":
        return Credit(whiten(returns, weights), returns)
    if inp.token_offsets is None or whiten_over != "tokens":
        raise ValueError(
            "reinforce_pp discount_over='token' needs token_offsets and whitens over tokens "
            f"(got whiten_over={whiten_over!r}); use discount_over='turn' for turn-level returns"
        )
    return _token_level(inp, returns, gamma)


def _token_level(inp: CreditInput, turn_returns: np.ndarray, gamma: float) -> Credit:
    """Per-token discounted returns, whitened over the batch's tokens; turn values from them."""
    assert inp.token_offsets is not None
    off = inp.token_offsets
    row_ep = per_episode(inp)[0]
    token_returns = segment_discounted_returns(_token_rewards(inp, row_ep), row_ep[token_rows(off)], gamma)
    moments = weighted_moments(token_returns)
    token_adv = whiten_by(token_returns, moments)
    has_tokens = np.diff(off) > 0
    first = np.minimum(off[:-1], max(token_returns.size - 1, 0))
    turn_adv = np.where(has_tokens, mean_per_row(token_adv, off), whiten_by(turn_returns, moments))
    turn_ret = np.where(has_tokens, token_returns[first] if token_returns.size else 0.0, turn_returns)
    return Credit(turn_adv, turn_ret, token_advantage=token_adv)


def _token_rewards(inp: CreditInput, row_ep: np.ndarray) -> np.ndarray:
    """(K,) each turn's reward on the last action token at or before the turn's end, within its episode."""
    assert inp.token_offsets is not None
    off = inp.token_offsets
    last = off[1:] - 1
    episode_first_token = off[:-1][episode_starts(inp)][row_ep]
    keep = last >= episode_first_token
    rewards = rewards_with_outcome(inp)[keep]
    return np.bincount(last[keep], weights=rewards, minlength=int(off[-1])).astype(np.float64)


def _group_ids(group: np.ndarray) -> tuple[np.ndarray, int]:
    return dense_ids(group)


def _group_diag(outcomes: np.ndarray, ids: np.ndarray, n: int) -> dict[str, float]:
    _, std, count = segment_mean_std(outcomes, ids, n)
    return {
        "credit/zero_std_groups": float(np.mean(std < 1e-12)) if n else 0.0,
        "credit/mean_group_size": float(count.mean()) if n else 0.0,
    }
