"""HiPER's HAE: the shared notes' worked example (separate high-level values), one value function for both levels
by hand, a plain recursion on random episodes, and the estimator's normalisation and token broadcast."""

from __future__ import annotations

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.credit.hierarchy import hae


def test_worked_example_with_separate_high_values() -> None:
    low, high = hae(
        np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.3, 0.4, 0.5, 0.8]), np.array([0.35, 0.0, 0.55, 0.0]),
        np.array([True, False, True, False]), gamma=1.0, lam_turn=1.0, lam_seg=0.95,
    )  # fmt: skip
    assert low == pytest.approx([0.25, 0.15, 0.5, 0.2])
    assert high == pytest.approx([0.6275, 0.0, 0.45, 0.0])


def test_one_segment_is_gae_at_the_turn_level() -> None:
    """No subgoal switch: A^low is GAE over turns (lam_turn) and A^high = G - V(s0)."""
    r, v = np.array([0.0, 0.5, 1.0]), np.array([0.2, 0.4, 0.9])
    low, high = hae(r, v, v, np.zeros(3, dtype=bool), gamma=0.9, lam_turn=0.5, lam_seg=0.95)
    d = [0.0 + 0.9 * 0.4 - 0.2, 0.5 + 0.9 * 0.9 - 0.4, 1.0 - 0.9]
    assert low == pytest.approx([d[0] + 0.45 * (d[1] + 0.45 * d[2]), d[1] + 0.45 * d[2], d[2]])
    assert high == pytest.approx([0.0 + 0.9 * 0.5 + 0.81 * 1.0 - 0.2, 0.0, 0.0])


def _recursion(r: np.ndarray, v: np.ndarray, starts: list[int], g: float, lt: float, ls: float) -> tuple:  # type: ignore[type-arg]
    """HAE written segment by segment from the formulas, for equivalence."""
    n, bounds = len(r), [*starts, len(r)]
    low, high = [0.0] * n, [0.0] * n
    seg_adv = 0.0
    for k in range(len(starts) - 1, -1, -1):
        s, e = bounds[k], bounds[k + 1]
        nxt = v[e] if e < n else 0.0
        acc = 0.0
        for t in range(e - 1, s - 1, -1):
            acc = r[t] + g * (v[t + 1] if t + 1 < e else nxt) - v[t] + g * lt * acc
            low[t] = acc
        ret = sum(g**j * r[s + j] for j in range(e - s))
        seg_adv = ret + g ** (e - s) * nxt - v[s] + g ** (e - s) * ls * seg_adv
        high[s] = seg_adv
    return low, high


def test_matches_the_recursion() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        n = int(rng.integers(1, 9))
        r, v = rng.normal(size=n), rng.normal(size=n)
        mask = rng.random(n) < 0.4
        mask[0] = True
        low, high = hae(r, v, v, mask, gamma=0.95, lam_turn=0.9, lam_seg=0.8)
        want_low, want_high = _recursion(r, v, np.flatnonzero(mask).tolist(), 0.95, 0.9, 0.8)
        assert low == pytest.approx(want_low) and high == pytest.approx(want_high)


def test_the_estimator_normalises_each_level_and_broadcasts_to_tokens() -> None:
    """Two episodes; turn values read at each turn's first action token; the head's targets are A^low + V."""
    inp = CreditInput.from_arrays(
        group=[0] * 5, episode=[0, 0, 0, 1, 1], turn=[0, 1, 2, 0, 1], reward=[0, 0, 1, 0, 0], outcome=[1, 1, 1, 0, 0],
        token_offsets=[0, 2, 3, 5, 6, 7], token_ids=[5] * 7, value=[0.2, 9, 0.4, 0.6, 9, 0.1, 0.3],
        segment_start=[False, False, True, False, False],
    )  # fmt: skip
    raw = compute("hiper", inp, normalize=False)
    low0, high0 = hae(np.array([0.0, 0, 1]), np.array([0.2, 0.4, 0.6]), np.array([0.2, 0.4, 0.6]),
                      np.array([True, False, True]), 1.0, 1.0, 0.95)  # fmt: skip
    low1, high1 = hae(np.zeros(2), np.array([0.1, 0.3]), np.array([0.1, 0.3]), np.array([True, False]), 1.0, 1.0, 0.95)
    assert raw.turn_advantage == pytest.approx(np.r_[low0 + high0, low1 + high1])
    assert raw.turn_return == pytest.approx(np.r_[low0, low1] + [0.2, 0.4, 0.6, 0.1, 0.3])
    assert raw.token_advantage is not None and raw.token_advantage[:2] == pytest.approx([raw.turn_advantage[0]] * 2)
    normed = compute("hiper", inp)
    low = np.r_[low0, low1]
    starts = np.array([True, False, True, True, False])
    high = np.r_[high0, high1][starts]
    z_low = (low - low.mean()) / (low.std() + 1e-8)
    z_high = np.zeros(5)
    z_high[starts] = (high - high.mean()) / (high.std() + 1e-8)
    assert normed.turn_advantage == pytest.approx(z_low + z_high)


def test_rows_without_action_tokens_get_no_value() -> None:
    inp = CreditInput.from_arrays(
        [0, 0],
        [0, 1],
        [0, 0],
        [1, 0],
        [1, 0],
        token_offsets=[0, 0, 0],
        token_ids=[],
        value=[],
        segment_start=[True] * 2,
    )
    # V = 0 where nothing was sampled: A^low = r and A^high = R on each one-turn episode's only segment
    assert compute("hiper", inp, normalize=False).turn_advantage == pytest.approx([2.0, 0.0])
