"""SPO on turns: the shared notes' worked example, a plain loop, the probability mask, and episodes too short to cut."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.credit.segments import segment_advantages


def worked_example(**extra: object) -> CreditInput:
    """A group of five with returns [0, 1, 1, 0, 0] (V(s0) = 0.4); the first episode has three turns, branched before
    turns 1 and 2 with values 0.6 and 0.2, and returns 0."""
    return CreditInput.from_arrays(
        group=[0] * 7, episode=[0, 0, 0, 1, 2, 3, 4], turn=[0, 1, 2, 0, 0, 0, 0],
        reward=[0, 0, 0, 1, 1, 0, 0], outcome=[0, 0, 0, 1, 1, 0, 0],
        branch_value=[np.nan, 0.6, 0.2, np.nan, np.nan, np.nan, np.nan],
        token_offsets=range(8), token_ids=[5] * 7, **extra,  # type: ignore[arg-type]
    )  # fmt: skip


def test_worked_example_by_hand() -> None:
    credit = compute("spo", worked_example())
    assert credit.turn_advantage == pytest.approx([0.2, -0.4, -0.2, 0.6, 0.6, -0.4, -0.4])
    assert credit.diagnostics["credit/spo_cutpoints"] == 2


def test_confident_tokens_get_no_advantage() -> None:
    sure, unsure = math.log(0.95), math.log(0.5)
    inp = worked_example(logprob=[sure, unsure, unsure, unsure, sure, unsure, unsure])
    credit = compute("spo", inp)
    assert credit.token_advantage == pytest.approx([0.0, -0.4, -0.2, 0.6, 0.0, -0.4, -0.4])
    unmasked = compute("spo", inp, prob_mask=False).token_advantage
    assert unmasked == pytest.approx([0.2, -0.4, -0.2, 0.6, 0.6, -0.4, -0.4])


def _loop(inp: CreditInput) -> list[float]:
    """Segment advantages with plain loops over each episode's boundaries."""
    assert inp.branch_value is not None
    episodes: dict[int, list[int]] = {}
    for i, e in enumerate(inp.episode.tolist()):
        episodes.setdefault(e, []).append(i)
    ret = {e: sum(inp.reward[i] for i in rows) for e, rows in episodes.items()}
    out = [0.0] * inp.n_turns
    for rows in episodes.values():
        members = [e for e, r in episodes.items() if inp.group[r[0]] == inp.group[rows[0]]]
        values = {0: sum(ret[e] for e in members) / len(members)}
        values |= {k: inp.branch_value[i] for k, i in enumerate(rows) if k > 0 and not math.isnan(inp.branch_value[i])}
        cuts = sorted(values)
        for k, i in enumerate(rows):
            start = max(c for c in cuts if c <= k)
            later = [c for c in cuts if c > k]
            end = values[later[0]] if later else ret[inp.episode[i]]
            out[i] = end - values[start]
    return out


def test_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    for _ in range(30):
        lengths = rng.integers(1, 6, size=8)
        episode = np.repeat(np.arange(8), lengths)
        turn = np.concatenate([np.arange(k) for k in lengths])
        n = episode.size
        branch = np.where((turn > 0) & (rng.random(n) < 0.5), rng.random(n), np.nan)
        inp = CreditInput.from_arrays(episode // 4, episode, turn, rng.random(n), np.zeros(n), branch_value=branch)
        assert segment_advantages(inp) == pytest.approx(_loop(inp))


def test_without_cutpoints_it_is_the_return_against_the_group_mean() -> None:
    inp = CreditInput.from_arrays(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], branch_value=[np.nan] * 4,
        token_offsets=range(5), token_ids=[5] * 4,
    )  # fmt: skip
    assert compute("spo", inp).turn_advantage == pytest.approx([0.5, 0.5, -0.5, -0.5])
    with pytest.raises(ValueError, match="branch_value"):
        compute("spo", CreditInput.from_arrays([0], [0], [0], [1], [1], token_offsets=[0, 1], token_ids=[5]))
