"""Estimators that read tokens: EMPG entropy modulation and TEMPO prefix-tree credit."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from clew.credit.base import Credit, CreditInput, compute, register
from clew.credit.functional import dense_ids, mean_per_row, per_episode, segment_mean_std


@register("empg", needs_entropy=True, summary="entropy modulation on top of a base estimator")
def empg(
    inp: CreditInput,
    *,
    base: str = "grpo",
    base_params: dict[str, Any] | None = None,
    k: float = 1.0,
    k_future: float = 1.0,
    zeta: float = 0.1,
    center: bool = True,
) -> Credit:
    """Entropy-Modulated Policy Gradients on the ``base`` estimator's turn advantages.

    Wang, Liu, Fu et al., "Harnessing Uncertainty: Entropy-Modulated Policy Gradients for
    Long-Horizon LLM Agents" (arXiv 2509.09265), official pseudocode: H_t = mean token entropy of
    step t; H~ = batch min-max normalised (Eq. 12, +1e-8); g = exp(-k H~) / (mean exp(-k H~) + 1e-8)
    (Eq. 10); f = exp(-k_future H~) (Eq. 11); A_mod = g A + zeta f(H~_{t+1}) when step t+1 exists
    in the same episode, else g A (Eq. 8); finally subtract the batch mean (``center``).
    Defaults k = k_future = 1, zeta = 0.1. **Unconfirmed**: whether the paper also divides by std.
    """
    assert inp.token_offsets is not None and inp.entropy is not None
    base_credit = compute(base, replace(inp, penalty=None), **(base_params or {}))  # penalties: charged once, after
    step_entropy = mean_per_row(inp.entropy, inp.token_offsets)
    spread = step_entropy.max() - step_entropy.min() if step_entropy.size else 0.0
    norm = (step_entropy - (step_entropy.min() if step_entropy.size else 0.0)) / (spread + 1e-8)
    scale = np.exp(-k * norm)
    g = scale / (scale.mean() + 1e-8) if scale.size else scale
    has_next = np.r_[inp.turn[1:] != 0, False] if inp.n_turns else np.zeros(0, bool)
    future = np.where(has_next, np.exp(-k_future * np.r_[norm[1:], 0.0]), 0.0) if inp.n_turns else norm
    adv = g * base_credit.turn_advantage + zeta * future
    if center and adv.size:
        adv = adv - adv.mean()
    diag = {**base_credit.diagnostics, "credit/empg_scale_min": float(g.min()) if g.size else 0.0}
    return Credit(adv, base_credit.turn_return, diagnostics=diag, anchor_group=base_credit.anchor_group)


@register(
    "tempo", needs_group=True, needs_tokens=True, summary="prefix tree over the group's tokens; branch-gated TD on GRPO"
)
def tempo(inp: CreditInput, *, scale_by_std: bool = True, eps: float = 1e-6) -> Credit:
    """TEMPO / Prefix-to-Tree credit: GRPO plus a TD correction at branching tokens.

    Tran, Yao, Yu, "Exploiting Tree Structure for Credit Assignment in RL Training of LLMs"
    (arXiv 2509.18314), P2T: V(node) = mean outcome of the group's responses through that prefix;
    A_{i,j} = (r_i - mean_G + V(child) - V(parent)) / (std_G + eps), undiscounted, eps 1e-6,
    unbiased std. Once a response is alone in its branch the correction is 0 (plain GRPO).
    ``token_advantage`` holds A_{i,j} (one per action token); ``turn_advantage`` is the mean over
    the turn's tokens (a turn without tokens gets the GRPO value). A group of one uses mean 0,
    std 1 (the GRPO convention; the authors' code would divide by a NaN std there, unconfirmed).

    Multi-turn (a clew extension; the paper is single-turn): an episode's path is, turn by turn, a
    marker for what the agent saw (``observation``, else ``state_key`` when >= 0, else none)
    followed by the turn's action tokens, so episodes whose actions agree but whose observations
    differ part at the marker. The marker is the environment's move: its V(child) - V(parent) is
    credited to no token, and the branches' later tokens are compared within their own subtree.
    """
    assert inp.token_offsets is not None and inp.token_ids is not None
    row_ep, ep_group, ep_outcome = per_episode(inp)
    gid, n_groups = dense_ids(ep_group)
    mean, std, count = segment_mean_std(ep_outcome, gid, n_groups)
    single = count[gid] <= 1
    base_mean = np.where(single, 0.0, mean[gid])
    denom = np.where(single, 1.0, std[gid] + eps) if scale_by_std else np.ones_like(ep_outcome)
    path, is_action, path_counts = _paths(inp)
    tokens, lengths = _episode_token_matrix(path, path_counts, row_ep)
    adv_matrix = _tree_advantage(tokens, lengths, gid, n_groups, ep_outcome, base_mean, denom, mean)
    token_adv = adv_matrix[np.repeat(np.arange(lengths.size), lengths), _ranges(lengths)][is_action]
    turn_adv = mean_per_row(token_adv, inp.token_offsets)
    turn_adv = np.where(np.diff(inp.token_offsets) > 0, turn_adv, ((ep_outcome - base_mean) / denom)[row_ep])
    return Credit(turn_adv, inp.outcome.copy(), token_advantage=token_adv)


def _observation_markers(inp: CreditInput) -> np.ndarray:
    """(N,) marker id per row, -2 - key (never a token id nor the -1 padding); 0 means no marker."""
    key = inp.observation if inp.observation is not None else inp.state_key
    return np.where(key >= 0, -2 - key, 0)


def _paths(inp: CreditInput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(path ids, is-action mask, per-row path length): each row's marker (if any), then its tokens."""
    assert inp.token_offsets is not None and inp.token_ids is not None
    marker = _observation_markers(inp)
    has_marker = marker < 0
    path_counts = np.diff(inp.token_offsets) + has_marker
    path_off = np.r_[0, np.cumsum(path_counts)].astype(np.int64)
    is_action = np.ones(int(path_off[-1]), dtype=bool)
    is_action[path_off[:-1][has_marker]] = False
    path = np.empty(int(path_off[-1]), dtype=np.int64)
    path[~is_action] = marker[has_marker]
    path[is_action] = inp.token_ids
    return path, is_action, path_counts


def _ranges(lengths: np.ndarray) -> np.ndarray:
    """[0..l0-1, 0..l1-1, ...] for each length."""
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.arange(int(lengths.sum())) - starts


def _episode_token_matrix(path: np.ndarray, per_row: np.ndarray, row_ep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E, L) path ids per episode (-1 padded) and each episode's path length."""
    n_ep = int(row_ep[-1]) + 1 if row_ep.size else 0
    lengths = np.bincount(row_ep, weights=per_row, minlength=n_ep).astype(np.int64)
    matrix = np.full((n_ep, int(lengths.max()) if n_ep else 0), -1, dtype=np.int64)
    matrix[np.repeat(np.arange(n_ep), lengths), _ranges(lengths)] = path
    return matrix, lengths


def _tree_advantage(
    tokens: np.ndarray,
    lengths: np.ndarray,
    gid: np.ndarray,
    n_groups: int,
    outcome: np.ndarray,
    base_mean: np.ndarray,
    denom: np.ndarray,
    group_mean: np.ndarray,
) -> np.ndarray:
    """Walk the prefix trees depth by depth, vectorised over all episodes of all groups."""
    adv = np.zeros(tokens.shape, dtype=np.float64)
    node = gid.copy()  # root node of each group is its group id
    node_value = group_mean[gid].copy()
    next_id = n_groups
    for depth in range(tokens.shape[1]):
        alive = np.flatnonzero(lengths > depth)
        child_local, n_child = dense_ids(node[alive], tokens[alive, depth])
        child_value = np.bincount(child_local, weights=outcome[alive], minlength=n_child) / np.bincount(
            child_local, minlength=n_child
        )
        v_child = child_value[child_local]
        adv[alive, depth] = (outcome[alive] - base_mean[alive] + v_child - node_value[alive]) / denom[alive]
        node[alive], node_value[alive] = child_local + next_id, v_child
        next_id += n_child
    return adv
