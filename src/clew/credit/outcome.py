"""Outcome-level estimators: REINFORCE, GRPO / Dr.GRPO, RLOO, REINFORCE++ (with/without baseline)."""

from __future__ import annotations

import dataclasses

import numpy as np

from clew.credit.base import Credit, CreditInput, check_choice, penalties_in_statistics, register
from clew.credit.functional import (
    dense_ids,
    discounted_returns,
    episode_starts,
    group_relative_outcome,
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
    penalty_placement: str = "advantage",
) -> Credit:
    """GRPO outcome advantage, broadcast to every turn of the episode.

    Shao et al., "DeepSeekMath" (arXiv 2402.03300), section 4.1.2:
    A_i = (r_i - mean_G r) / (std_G r + eps). ``scale_by_std=False`` gives Dr.GRPO
    (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783, section 3.1): A_i = r_i - mean.

    Defaults follow verl: eps 1e-6, unbiased (N-1) std. A group of one gets mean 0, std 1 (A = r).
    ``stats_over="episode"`` uses one entry per episode (the paper; DCPO's de-duplication,
    arXiv 2510.12635); ``"turn"`` pools the turn rows, so long episodes weigh more (the Flow-GRPO
    code, arXiv 2510.05592; whether the paper intends that is unconfirmed).

    ``penalty_placement="statistics"`` subtracts the rows' shaping penalties from the scores before
    the group statistics (DAPO's soft overlong punishment is a reward term, arXiv 2503.14476 Eq. 13,
    so it moves the group mean too); ``"advantage"`` leaves them to ``compute``, after the estimator.
    """
    check_choice("stats_over", stats_over, ("episode", "turn"))
    penalty = penalties_in_statistics(inp, penalty_placement)
    adv = group_relative_outcome(inp, stats_over, scale_by_std, eps, penalty, unbiased_std)
    charged = penalty_placement == "statistics"
    if stats_over == "turn":
        return Credit(adv, inp.outcome - penalty, penalty_charged=charged)
    _, ep_group, ep_outcome = per_episode(inp)
    ids, n = _group_ids(ep_group)
    diagnostics = _group_diag(ep_outcome, ids, n)
    return Credit(adv, inp.outcome - penalty, diagnostics=diagnostics, penalty_charged=charged)


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


@register("remax", needs_greedy_baseline=True, summary="return minus a greedy rollout's return (ReMax)")
def remax(inp: CreditInput) -> Credit:
    """ReMax: the sampled return minus the return of the policy's greedy response to the same task.

    Li et al., "ReMax: A Simple, Effective, and Efficient Reinforcement Learning Method for Aligning Large Language
    Models" (arXiv 2310.10505), Algorithm 1: A = r(x, y) - r(x, y_greedy), no std normalisation. Multi-turn, as
    verl's ``compute_remax_outcome_advantage`` does per token: A_t = G_t - b with G_t the undiscounted return from
    turn t (``rewards_with_outcome``) and b the greedy episode's return (``CreditInput.baseline``), which equals
    r - b on every turn of an outcome-only episode. A sample identical to the greedy response gets 0. Worked
    example (credit.md section 5): sample 0.7, greedy 0.5 gives +0.2; sample 0.3, greedy 0.6 gives -0.3.
    """
    assert inp.baseline is not None  # compute() refuses remax without it
    returns = discounted_returns(rewards_with_outcome(inp), inp, 1.0)
    advantage = returns - inp.baseline
    diagnostics = {"credit/greedy_return_mean": float(inp.baseline.mean()) if inp.baseline.size else 0.0}
    return Credit(advantage, returns, diagnostics=diagnostics)


@register(
    "reinforce_pp", reference_param="kl_coef", summary="global batch whitening of returns (optionally group-baselined)"
)
def reinforce_pp(
    inp: CreditInput,
    *,
    gamma: float = 1.0,
    group_baseline: bool = False,
    whiten_over: str = "tokens",
    discount_over: str = "token",
    kl_coef: float = 0.0,
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

    ``kl_coef`` = beta > 0 puts the KL to the reference policy into the reward, the paper's token
    reward r_t = 1[t = T] r(x, y) - beta KL_t (section 3; verl ``apply_kl_penalty``, ``kl`` estimator):
    KL_t = log pi_behaviour(y_t) - log pi_ref(y_t) of each sampled token (``logprob`` and
    ``ref_logprob``). With ``discount_over="turn"`` a turn's reward loses beta times the sum of its
    tokens' KL. beta = 0 (the default) is plain REINFORCE++; the paper's beta is unconfirmed.
    Worked example (beta 0.1, gamma 1): A's 2 tokens have KL [0.2, 0.4] and reward 1, B's 3 tokens
    KL [0.1, 0, 0.3] and reward 0: token rewards [-0.02, 0.96], [-0.01, 0, -0.03], returns
    [0.94, 0.96], [-0.04, -0.03, -0.03], token mean 0.36, unbiased var 0.29015, so
    A = [1.0768, 1.1139], [-0.7426, -0.7240, -0.7240].
    """
    check_choice("whiten_over", whiten_over, ("tokens", "turns"))
    check_choice("discount_over", discount_over, ("token", "turn"))
    if kl_coef < 0:
        raise ValueError(f"reinforce_pp kl_coef must be >= 0, got {kl_coef}")
    if kl_coef and group_baseline:
        raise ValueError("reinforce_pp kl_coef > 0 shapes token rewards, which group_baseline=True does not use")
    token_kl = _token_kl(inp) * kl_coef if kl_coef else None
    weights = token_counts(inp) if whiten_over == "tokens" else None
    if group_baseline:
        row_ep, ep_group, ep_outcome = per_episode(inp)
        ids, n = _group_ids(ep_group)
        mean, _, count = segment_mean_std(ep_outcome, ids, n)
        returns = (ep_outcome - np.where(count[ids] > 1, mean[ids], 0.0))[row_ep]
        return Credit(whiten(returns, weights), returns)
    rewards = rewards_with_outcome(inp)
    if token_kl is not None:
        assert inp.token_offsets is not None  # _token_kl checked it
        rewards = rewards - np.bincount(token_rows(inp.token_offsets), weights=token_kl, minlength=inp.n_turns)
    returns = discounted_returns(rewards, inp, gamma)
    diagnostics = {} if token_kl is None else {"credit/kl_in_reward_mean": float(token_kl.mean() / kl_coef)}
    if discount_over == "turn":
        return Credit(whiten(returns, weights), returns, diagnostics=diagnostics)
    if inp.token_offsets is None or whiten_over != "tokens":
        raise ValueError(
            "reinforce_pp discount_over='token' needs token_offsets and whitens over tokens "
            f"(got whiten_over={whiten_over!r}); use discount_over='turn' for turn-level returns"
        )
    return dataclasses.replace(_token_level(inp, returns, gamma, token_kl), diagnostics=diagnostics)


def _token_kl(inp: CreditInput) -> np.ndarray:
    """(K,) log pi_behaviour - log pi_ref of each sampled token (the ``kl`` estimator of verl)."""
    if inp.logprob is None or inp.ref_logprob is None:
        raise ValueError(
            "reinforce_pp kl_coef > 0 needs the sampled tokens' log-probs under the rollout policy and the "
            "reference (CreditInput.logprob and ref_logprob; the trainer fills ref_logprob when kl_coef > 0)"
        )
    return inp.logprob - inp.ref_logprob


def _token_level(inp: CreditInput, turn_returns: np.ndarray, gamma: float, token_kl: np.ndarray | None) -> Credit:
    """Per-token discounted returns, whitened over the batch's tokens; turn values from them."""
    assert inp.token_offsets is not None
    off = inp.token_offsets
    row_ep = per_episode(inp)[0]
    token_rewards = _token_rewards(inp, row_ep) - (0.0 if token_kl is None else token_kl)
    rows = token_rows(off)
    discount = None if inp.env_step is None else np.where(inp.env_step[rows], gamma, 1.0)  # edits add no step
    token_returns = segment_discounted_returns(token_rewards, row_ep[rows], gamma, discount)
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
