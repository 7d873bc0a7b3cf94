"""Vectorised numpy primitives for estimators: segment statistics, returns, whitening.

No Python loops over rows: grouping uses ``np.unique``/``np.bincount``; returns loop only over
turn positions (the longest episode), vectorised across episodes.
"""

from __future__ import annotations

import numpy as np

from clew.credit.base import CreditInput

Array = np.ndarray


def dense_ids(*keys: Array) -> tuple[Array, int]:
    """Map rows with equal key tuples to the same id in ``[0, n_ids)``."""
    inverse = np.zeros(len(keys[0]), dtype=np.int64)
    n = 1
    for key in keys:  # fold columns in by dense rank: 1-D uniques only, no int64 overflow
        uniq, rank = np.unique(np.asarray(key, dtype=np.int64), return_inverse=True)
        _, inverse = np.unique(inverse * max(len(uniq), 1) + rank.reshape(-1), return_inverse=True)
        inverse = inverse.reshape(-1)
        n = int(inverse.max()) + 1 if inverse.size else 0
    return inverse, n


def segment_mean_std(values: Array, ids: Array, n: int, unbiased: bool = True) -> tuple[Array, Array, Array]:
    """Per-segment (mean, std, count), each (n,). Std of a singleton is 0 (unbiased: 0, not NaN)."""
    count = np.bincount(ids, minlength=n).astype(np.float64)
    mean = np.bincount(ids, weights=values, minlength=n) / np.maximum(count, 1)
    dev2 = np.bincount(ids, weights=(values - mean[ids]) ** 2, minlength=n)
    denom = np.maximum(count - 1, 1) if unbiased else np.maximum(count, 1)
    return mean, np.sqrt(dev2 / denom), count


def episode_starts(inp: CreditInput) -> Array:
    """Index of the first row of each episode, in row order."""
    return np.flatnonzero(inp.turn == 0)


def per_episode(inp: CreditInput) -> tuple[Array, Array, Array]:
    """(row -> episode index, episode -> group, episode -> outcome), episodes in row order."""
    starts = episode_starts(inp)
    row_ep = np.cumsum(inp.turn == 0) - 1
    return row_ep, inp.group[starts], inp.outcome[starts]


def reported_outcome(inp: CreditInput) -> Array:
    """(N,) the env-reported outcome of the row's episode, 0 where the env reported none (cut short)."""
    if inp.outcome_explicit is None:
        return np.zeros_like(inp.outcome)
    return np.where(inp.outcome_explicit, inp.outcome, 0.0)


def rewards_with_outcome(inp: CreditInput) -> Array:
    """(N,) ``reward``, plus the outcome on each episode's last turn where the env reported it apart."""
    if inp.outcome_explicit is None:
        return inp.reward.copy()
    last = np.r_[inp.turn[1:] == 0, True] if inp.n_turns else np.zeros(0, dtype=bool)
    return inp.reward + np.where(last & inp.outcome_explicit, inp.outcome, 0.0)


def penalised_outcome(inp: CreditInput, penalty: Array, stats_over: str) -> tuple[Array, Array]:
    """(score per statistics entry, row -> entry) for group-relative outcome statistics with penalties inside.

    ``stats_over="episode"``: one entry per episode, its outcome minus the sum of its rows' penalties.
    ``"turn"``: one entry per row, the episode's outcome minus that row's own penalty (verl-agent, which
    puts the episode reward on every step row and subtracts a step's penalty from that row's score).
    """
    if stats_over == "turn":
        return inp.outcome - penalty, np.arange(inp.n_turns)
    row_ep, _, ep_outcome = per_episode(inp)
    return ep_outcome - np.bincount(row_ep, weights=penalty, minlength=ep_outcome.size), row_ep


def group_relative_outcome(
    inp: CreditInput, stats_over: str, scale_by_std: bool, eps: float, penalty: Array, unbiased: bool = True
) -> Array:
    """(N,) GRPO-style normalised outcome of each row's episode (see ``penalised_outcome`` for the entries)."""
    score, row_entry = penalised_outcome(inp, penalty, stats_over)
    group = inp.group if stats_over == "turn" else per_episode(inp)[1]
    ids, n = dense_ids(group)
    return group_normalize(score, ids, n, scale_by_std, eps, unbiased)[row_entry]


def padded(values: Array, inp: CreditInput, fill: float = 0.0) -> Array:
    """(E, L) matrix of per-turn values: row = episode, column = turn index."""
    row_ep = np.cumsum(inp.turn == 0) - 1
    n_ep = int(row_ep[-1]) + 1 if row_ep.size else 0
    width = int(inp.turn.max()) + 1 if inp.turn.size else 0
    out = np.full((n_ep, width), fill, dtype=np.float64)
    out[row_ep, inp.turn] = values
    return out


def unpad(matrix: Array, inp: CreditInput) -> Array:
    row_ep = np.cumsum(inp.turn == 0) - 1
    return matrix[row_ep, inp.turn]


def discounted_returns(rewards: Array, inp: CreditInput, gamma: float) -> Array:
    """R_t = sum_{k >= t} gamma^(k - t) r_k within each episode, (N,); k - t counts env steps.

    ``R_t = r_t + d_t R_{t+1}`` with ``d_t = gamma`` for an env step and 1 for a context-edit row
    (``inp.env_step`` False): a summary written between two env steps adds no step to the horizon and
    takes the return of the env step that follows it.
    """
    mat = padded(rewards, inp)
    discount = padded(np.where(inp.env_step, gamma, 1.0), inp) if inp.env_step is not None else None
    out = np.zeros_like(mat)
    running = np.zeros(mat.shape[0])
    for t in range(mat.shape[1] - 1, -1, -1):
        running = mat[:, t] + (gamma if discount is None else discount[:, t]) * running
        out[:, t] = running
    return unpad(out, inp)


def reverse_cummin(values: Array, inp: CreditInput) -> Array:
    """min_{k >= t} v_k within each episode, (N,)."""
    mat = padded(values, inp, fill=np.inf)
    out = np.minimum.accumulate(mat[:, ::-1], axis=1)[:, ::-1]
    return unpad(out, inp)


def group_normalize(values: Array, ids: Array, n: int, scale_by_std: bool, eps: float, unbiased: bool = True) -> Array:
    """GRPO-style ``(x - mean) / (std + eps)`` per segment; a singleton segment gets mean 0, std 1."""
    mean, std, count = segment_mean_std(values, ids, n, unbiased)
    single = count[ids] <= 1
    centred = values - np.where(single, 0.0, mean[ids])
    if not scale_by_std:
        return centred
    return centred / np.where(single, 1.0, std[ids] + eps)


def whiten(values: Array, weights: Array | None = None, eps: float = 1e-8) -> Array:
    """``(x - mean) / sqrt(var + eps)`` with unbiased, optionally weighted (token-count) moments."""
    return whiten_by(values, weighted_moments(values, weights), eps)


def weighted_moments(values: Array, weights: Array | None = None) -> tuple[float, float] | None:
    """(mean, unbiased var) with frequency ``weights``; None when the total weight is <= 1."""
    w = np.ones_like(values) if weights is None else weights.astype(np.float64)
    total = w.sum()
    if total <= 1:
        return None
    mean = (w * values).sum() / total
    return float(mean), float((w * (values - mean) ** 2).sum() / (total - 1))


def whiten_by(values: Array, moments: tuple[float, float] | None, eps: float = 1e-8) -> Array:
    """``(x - mean) / sqrt(var + eps)`` with given moments; all zeros when ``moments`` is None."""
    if moments is None:
        return np.zeros_like(values, dtype=np.float64)
    mean, var = moments
    return (values - mean) / np.sqrt(var + eps)


def token_counts(inp: CreditInput) -> Array | None:
    return None if inp.token_offsets is None else np.diff(inp.token_offsets).astype(np.float64)


def broadcast_to_tokens(turn_values: Array, inp: CreditInput) -> Array:
    """Repeat each row's value over its tokens, (K,)."""
    assert inp.token_offsets is not None
    return np.repeat(turn_values, np.diff(inp.token_offsets))


def token_rows(offsets: Array) -> Array:
    """The row of each token, (K,)."""
    counts = np.diff(offsets)
    return np.repeat(np.arange(counts.size), counts)


def mean_per_row(token_values: Array, offsets: Array) -> Array:
    """Mean of each row's token values, (N,); 0 for a row without tokens."""
    counts = np.diff(offsets)
    sums = np.bincount(token_rows(offsets), weights=token_values, minlength=counts.size)
    return sums / np.maximum(counts, 1)


def segment_discounted_returns(values: Array, segment: Array, gamma: float, discount: Array | None = None) -> Array:
    """R_k = sum_{m >= k} gamma^(m - k) v_m within contiguous segments (episodes), same shape.

    ``discount`` (same shape) replaces gamma per position, ``R_k = v_k + discount_k R_{k+1}`` (1 for the
    tokens of a context edit, which add no step). Loops over positions within a segment (the longest
    one), vectorised across segments.
    """
    if values.size == 0:
        return np.zeros(0)
    new = np.r_[True, segment[1:] != segment[:-1]]
    seg = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    pos = np.arange(values.size) - starts[seg]
    mat = np.zeros((starts.size, int(pos.max()) + 1))
    mat[seg, pos] = values
    factor = np.full(mat.shape, gamma)
    if discount is not None:
        factor[seg, pos] = discount
    running = np.zeros(starts.size)
    for t in range(mat.shape[1] - 1, -1, -1):
        running = mat[:, t] + factor[:, t] * running
        mat[:, t] = running
    return mat[seg, pos]
