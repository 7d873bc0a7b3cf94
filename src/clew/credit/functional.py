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
    """R_t = sum_{k >= t} gamma^(k - t) r_k within each episode, (N,)."""
    mat = padded(rewards, inp)
    out = np.zeros_like(mat)
    running = np.zeros(mat.shape[0])
    for t in range(mat.shape[1] - 1, -1, -1):
        running = mat[:, t] + gamma * running
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
    w = np.ones_like(values) if weights is None else weights.astype(np.float64)
    total = w.sum()
    if total <= 1:
        return np.zeros_like(values)
    mean = (w * values).sum() / total
    var = (w * (values - mean) ** 2).sum() / (total - 1)
    return (values - mean) / np.sqrt(var + eps)


def token_counts(inp: CreditInput) -> Array | None:
    return None if inp.token_offsets is None else np.diff(inp.token_offsets).astype(np.float64)


def broadcast_to_tokens(turn_values: Array, inp: CreditInput) -> Array:
    """Repeat each row's value over its tokens, (K,)."""
    assert inp.token_offsets is not None
    return np.repeat(turn_values, np.diff(inp.token_offsets))
