"""Segment credit from Monte-Carlo values: SPO's chain, cut at turn boundaries of multi-turn episodes.

The trainer branches fresh rollouts from the state before every ``cutpoint_interval``-th turn of each episode
(``Task.prefix``: the seeded env replays the episode's actions) and records their mean return
(``CreditInput.branch_value``); a segment's advantage is how much the value rose across it.
"""

from __future__ import annotations

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import broadcast_to_tokens, dense_ids, mean_per_row, padded, rewards_with_outcome, unpad

Array = np.ndarray


def segment_advantages(inp: CreditInput) -> Array:
    """(N,) V(end of the row's segment) - V(start of it).

    Boundaries: each episode's first row, valued at its group's mean return (every member starts from that state,
    so the group is G Monte-Carlo samples of V(s0)), and every row with a ``branch_value``; an episode's last
    segment ends at its own return.
    """
    assert inp.branch_value is not None
    rewards = rewards_with_outcome(inp)
    row_ep = np.cumsum(inp.turn == 0) - 1
    n_ep = int(row_ep[-1]) + 1 if row_ep.size else 0
    own = np.bincount(row_ep, weights=rewards, minlength=n_ep)  # each episode's return
    ep_group = dense_ids(inp.group[inp.turn == 0])[0]
    start_value = (np.bincount(ep_group, weights=own) / np.bincount(ep_group))[ep_group]
    boundary = np.where(inp.turn == 0, start_value[row_ep], inp.branch_value)  # NaN: no boundary at this row
    start = _fill_forward(padded(boundary, inp, fill=np.nan))
    after = np.concatenate([padded(boundary, inp, fill=np.nan)[:, 1:], own[:, None]], axis=1)
    end = _fill_backward(after, own)
    return unpad(end - start, inp)


def _fill_forward(mat: Array) -> Array:
    """Each NaN takes the last non-NaN value to its left in its row (column 0 is never NaN where a row exists)."""
    idx = np.where(~np.isnan(mat), np.arange(mat.shape[1]), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.take_along_axis(mat, idx, axis=1)


def _fill_backward(mat: Array, last: Array) -> Array:
    """Each NaN takes the first non-NaN value to its right; past a row's last boundary, ``last`` (its return).
    Padding past an episode's end holds NaN and takes ``last`` too, which ``unpad`` never reads."""
    out = mat.copy()
    width = mat.shape[1]
    out[:, width - 1] = np.where(np.isnan(out[:, width - 1]), last, out[:, width - 1])
    for col in range(width - 2, -1, -1):
        out[:, col] = np.where(np.isnan(out[:, col]), out[:, col + 1], out[:, col])
    return out


@register(
    "spo", needs_tokens=True, needs_branch_values=True,
    summary="segment advantages from Monte-Carlo values of rollouts branched at turn boundaries (SPO-chain)",
)  # fmt: skip
def spo(
    inp: CreditInput, *, cutpoint_interval: int = 2, rollouts: int = 4, prob_mask: bool = True,
    prob_threshold: float = 0.9,
) -> Credit:  # fmt: skip
    """Segment Policy Optimization's chain advantage on an agent's turns.

    Guo et al., "Segment Policy Optimization: Effective Segment-Level Credit Assignment in RL for Large Language
    Models" (arXiv 2505.23564); the formulas follow the released code (AIFrameResearch/SPO, the shared notes'
    section 18). Segment k's advantage is V(cutpoint_k) - V(cutpoint_{k-1}), each V the mean return of Monte-Carlo
    rollouts from that state (the trainer plays ``rollouts`` continuations from the state before every
    ``cutpoint_interval``-th turn, replaying the seeded episode to get there); the first segment starts at V(s0),
    the group's mean return; the last ends at the episode's own return. Every token of a segment gets its
    advantage, except (``prob_mask``) tokens the policy sampled with probability above ``prob_threshold``
    (behaviour log-probs), which get 0: SPO's probability mask. No critic, no std.

    clew's adaptation, stated: SPO cuts a single-turn response at low-probability tokens (every 5th token with
    p < 0.9, 9 rollouts each); clew cuts multi-turn episodes at turn boundaries, every ``cutpoint_interval``
    turns, where a branch needs only the env to replay (``Task.prefix``); cutting inside a turn is not built.
    A branch point shared by several episodes (the same seed and actions) is rolled out once.

    Worked example (the shared notes' section 18): V(s0) = 0.4, V(c1) = 0.6, V(c2) = 0.2 and a final return of 0
    give segment advantages [0.2, -0.4, -0.2].
    """
    assert inp.token_offsets is not None
    turn_adv = segment_advantages(inp)
    tokens = broadcast_to_tokens(turn_adv, inp)
    if prob_mask and inp.logprob is not None:
        tokens = np.where(np.exp(inp.logprob) > prob_threshold, 0.0, tokens)
    valued = ~np.isnan(inp.branch_value) if inp.branch_value is not None else np.zeros(0, bool)
    diagnostics = {
        "credit/spo_cutpoints": float(valued.sum()),
        "credit/spo_masked_token_share": float(np.mean(tokens == 0)) if tokens.size else 0.0,
    }
    return Credit(mean_per_row(tokens, inp.token_offsets), rewards_with_outcome(inp), tokens, diagnostics)
