"""Hierarchical credit over subgoal segments: HiPER's hierarchical advantage estimation (HAE).

An episode is cut into segments, each a maximal run of turns under one subgoal (a segment starts at turn 0 and at
every turn that sets a new subgoal: ``CreditInput.segment_start``). Inside a segment, turns get a TD(lambda)
advantage that bootstraps at the segment's end from the value of the next segment's start; across segments, each
segment gets a semi-Markov advantage over its whole span. A turn that opens a segment carries both.
"""

from __future__ import annotations

import itertools

import numpy as np

from clew.credit.base import Credit, CreditInput, register
from clew.credit.functional import broadcast_to_tokens, rewards_with_outcome

Array = np.ndarray


def hae(
    rewards: Array, values: Array, high_values: Array, segment_start: Array, gamma: float, lam_turn: float,
    lam_seg: float,
) -> tuple[Array, Array]:  # fmt: skip
    """One episode's (A^low, A^high), each (T,); A^high is 0 except on a segment's first turn.

    Low level, inside segment [s, e]: delta_t = r_t + gamma V_next - V(t), V_next = V(t + 1) inside the segment,
    V_high(next segment's start) at its end, 0 after the episode's last turn; A^low_t = delta_t +
    gamma lam_turn A^low_{t+1}, reset at each segment's end. High level, segment k of length d_k:
    R_k = sum_{j < d_k} gamma^j r_{s_k + j}, delta_k = R_k + gamma^{d_k} V_high(s_{k+1}) - V_high(s_k) (0 past the
    last segment), A^high_k = delta_k + gamma^{d_k} lam_seg A^high_{k+1}. ``high_values[t]`` is read at
    segment starts only.
    """
    n = rewards.size
    starts = np.flatnonzero(segment_start | (np.arange(n) == 0))
    ends = np.r_[starts[1:], n]  # exclusive
    low, high = np.zeros(n), np.zeros(n)
    following_high, following_adv = 0.0, 0.0
    for s, e in zip(starts[::-1], ends[::-1], strict=True):
        running = 0.0
        for t in range(e - 1, s - 1, -1):
            v_next = values[t + 1] if t + 1 < e else following_high
            running = rewards[t] + gamma * v_next - values[t] + gamma * lam_turn * running
            low[t] = running
        span = gamma ** np.arange(e - s)
        discount = gamma ** (e - s)
        delta = float(span @ rewards[s:e]) + discount * following_high - high_values[s]
        high[s] = following_adv = delta + discount * lam_seg * following_adv
        following_high = high_values[s]
    return low, high


def _zscore(values: Array, carried: Array) -> Array:
    """Population z-score over the entries that carry a component (+1e-8), others 0."""
    out = np.zeros_like(values)
    if carried.any():
        picked = values[carried]
        out[carried] = (picked - picked.mean()) / (picked.std() + 1e-8)
    return out


@register(
    "hiper", needs_tokens=True, needs_values=True, needs_segments=True,
    summary="hierarchical advantages: TD(lambda) inside subgoal segments + semi-Markov across them (HiPER)",
)  # fmt: skip
def hiper(
    inp: CreditInput, *, gamma: float = 1.0, lam_turn: float = 1.0, lam_seg: float = 0.95, normalize: bool = True
) -> Credit:
    """HiPER's hierarchical advantage estimation on the value head's values.

    Peng et al., "HiPER" (arXiv 2602.16165); the formulas follow the released code (JonP07/HiPER-agent,
    ``compute_hae_advantage``; the shared notes' section 11), defaults from its yaml and run scripts (gamma 1,
    lam_turn 1, lam_seg 0.95, each component z-scored over the turns that carry it). Segments come from
    ``CreditInput.segment_start`` (the trainer marks turn 0 and every turn whose reply opens with
    ``<subgoal>...</subgoal>``, the ``plan`` context). V(t) is the value head at the turn's first action token.

    What clew builds of HiPER, stated: one value head serves both levels (V_high(s_k) = V(s_k); the paper's critic
    has three heads, low, high and termination, and the termination advantage A^term on the switch tokens is not
    built), and a turn's tokens are not split into subgoal and action spans: every token of a turn gets A^low_t,
    plus A^high_k on the turn that opens segment k. The head regresses on the low-level returns A^low_t + V(t).
    An episode cut by a budget bootstraps with 0 after its last turn (as clew's GAE; the code's
    ``bootstrap_truncated`` is not built), and the code's keep/consistency reward penalties are not applied.

    Worked example (the shared notes, separate V_high): r = [0, 0, 0, 1], segments {0, 1} and {2, 3},
    V_low = [0.3, 0.4, 0.5, 0.8], V_high(0) = 0.35, V_high(2) = 0.55, gamma 1, lam_turn 1, lam_seg 0.95:
    A^low = [0.25, 0.15, 0.5, 0.2], A^high = 0.6275 (segment 0) and 0.45 (segment 2), before normalisation.
    """
    assert inp.token_offsets is not None and inp.value is not None and inp.segment_start is not None
    off = inp.token_offsets
    first = np.minimum(off[:-1], max(int(off[-1]) - 1, 0))
    values = np.where(np.diff(off) > 0, inp.value[first], 0.0) if inp.value.size else np.zeros(inp.n_turns)
    rewards, starts = rewards_with_outcome(inp), inp.segment_start | (inp.turn == 0)
    low, high = np.zeros(inp.n_turns), np.zeros(inp.n_turns)
    bounds = np.r_[np.flatnonzero(inp.turn == 0), inp.n_turns]
    for a, b in itertools.pairwise(bounds.tolist()):
        low[a:b], high[a:b] = hae(rewards[a:b], values[a:b], values[a:b], starts[a:b], gamma, lam_turn, lam_seg)
    targets = low + values
    if normalize:
        low, high = _zscore(low, np.ones(inp.n_turns, dtype=bool)), _zscore(high, starts)
    turn_adv = low + np.where(starts, high, 0.0)
    diagnostics = {
        "credit/segments_per_episode": float(starts.sum() / max(bounds.size - 1, 1)),
        "credit/value_mean": float(values.mean()) if values.size else 0.0,
    }
    return Credit(
        turn_advantage=turn_adv, turn_return=targets, token_advantage=broadcast_to_tokens(turn_adv, inp),
        diagnostics=diagnostics, value=inp.value, value_target=broadcast_to_tokens(targets, inp),
    )  # fmt: skip
