"""GAE: credit.md section 7's worked example, multi-turn rows by hand, the estimator against a loop, refusals."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clew.credit import CreditInput, compute, get
from clew.credit.critic import token_rewards


def one_turn(values: list[float], reward: float = 1.0) -> CreditInput:
    n = len(values)
    return CreditInput.from_arrays(
        [0], [0], [0], [reward], [reward], token_offsets=[0, n], token_ids=[1] * n, value=values
    )


def test_worked_example_by_hand() -> None:
    """Rewards [0, 0, 1], V = [0.5, 0.6, 0.8], gamma 1: delta = [0.1, 0.2, 0.2]."""
    inp = one_turn([0.5, 0.6, 0.8])
    credit = compute("gae", inp, lam=0.95, whiten_advantages=False)
    assert credit.token_advantage == pytest.approx([0.4705, 0.39, 0.2])
    assert credit.value_target == pytest.approx([0.9705, 0.99, 1.0])
    assert credit.value == pytest.approx([0.5, 0.6, 0.8])
    mc = compute("gae", inp, lam=1.0, whiten_advantages=False)
    assert mc.token_advantage == pytest.approx([0.5, 0.4, 0.2])  # lam 1: the Monte Carlo return minus V
    assert mc.turn_advantage == pytest.approx([np.mean([0.5, 0.4, 0.2])])


def test_whitening_over_the_batch() -> None:
    credit = compute("gae", one_turn([0.5, 0.6, 0.8]), lam=0.95)
    raw = np.array([0.4705, 0.39, 0.2])
    assert credit.token_advantage == pytest.approx((raw - raw.mean()) / math.sqrt(raw.var(ddof=1) + 1e-8), abs=1e-6)


def test_turns_skip_the_observation_and_each_reward_sits_on_its_turns_last_token() -> None:
    """Episode 0: turn 0 (2 tokens, reward 0.5), turn 1 (1 token, reward 1); episode 1: one turn of 2 tokens, 0."""
    inp = CreditInput.from_arrays(
        [0, 0, 0], [0, 0, 1], [0, 1, 0], [0.5, 1.0, 0.0], [1.5, 1.5, 0.0],
        token_offsets=[0, 2, 3, 5], token_ids=[1] * 5, value=[0.2, 0.4, 0.6, 0.1, 0.3],
    )  # fmt: skip
    assert token_rewards(inp) == pytest.approx([0.0, 0.5, 1.0, 0.0, 0.0])
    credit = compute("gae", inp, gamma=0.9, lam=0.5, whiten_advantages=False)
    # delta: 0 + 0.9*0.4 - 0.2 = 0.16; 0.5 + 0.9*0.6 - 0.4 = 0.64 (the next turn's first value); 1 - 0.6 = 0.4;
    # episode 1: 0.9*0.3 - 0.1 = 0.17; 0 - 0.3 = -0.3 (nothing after the last token). gamma*lam = 0.45.
    a2, a1 = 0.4, 0.64 + 0.45 * 0.4
    a4 = -0.3
    expected = [0.16 + 0.45 * a1, a1, a2, 0.17 + 0.45 * a4, a4]
    assert credit.token_advantage == pytest.approx(expected)
    assert credit.value_target == pytest.approx(np.array(expected) + [0.2, 0.4, 0.6, 0.1, 0.3])


def test_a_turn_without_tokens_hands_its_reward_back() -> None:
    inp = CreditInput.from_arrays(
        [0, 0, 0], [0, 0, 1], [0, 1, 0], [0.0, 1.0, 2.0], [1.0, 1.0, 2.0],
        token_offsets=[0, 2, 2, 2], token_ids=[1, 1], value=[0.0, 0.0],
    )  # fmt: skip
    assert token_rewards(inp) == pytest.approx([0.0, 1.0])  # episode 1 sampled nothing: its reward has no token


def test_refused_without_values() -> None:
    inp = CreditInput.from_arrays([0], [0], [0], [1.0], [1.0], token_offsets=[0, 1], token_ids=[1])
    with pytest.raises(ValueError, match=r"needs CreditInput\.value"):
        compute("gae", inp)
    assert get("gae").needs_values and not get("gae").needs_group


@st.composite
def batches(draw: st.DrawFn) -> dict:
    """Episodes of random turns and token counts (some turns without tokens), rewards and values."""
    rows: dict[str, list] = defaultdict(list)
    offsets, values = [0], []
    for episode in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 4))
        outcome = float(draw(st.sampled_from([0.0, 1.0])))
        for t in range(n):
            rows["group"].append(0)
            rows["episode"].append(episode)
            rows["turn"].append(t)
            rows["reward"].append(float(draw(st.sampled_from([0.0, 0.5, 1.0]))))
            rows["outcome"].append(outcome)
            k = draw(st.integers(1 if t == 0 else 0, 3))
            offsets.append(offsets[-1] + k)
            values += [draw(st.floats(-1.0, 1.0)) for _ in range(k)]
    rows["token_offsets"], rows["value"], rows["token_ids"] = offsets, values, [1] * len(values)
    return dict(rows)


def gae_loop(rows: dict, gamma: float, lam: float) -> list[float]:
    """Per episode: list its action tokens in order, the reward of each turn on its last token (or the last token
    before it), then the textbook backward recursion."""
    off, out = rows["token_offsets"], []
    n = len(rows["turn"])
    starts = [i for i in range(n) if rows["turn"][i] == 0] + [n]
    for s, e in itertools.pairwise(starts):
        tokens = list(range(off[s], off[e]))
        reward = {k: 0.0 for k in tokens}
        for i in range(s, e):
            if off[i] < off[i + 1]:
                reward[off[i + 1] - 1] += rows["reward"][i]
            elif off[i] > off[s]:
                reward[off[i] - 1] += rows["reward"][i]
        running, adv = 0.0, []
        for j in reversed(range(len(tokens))):
            nxt = rows["value"][tokens[j + 1]] if j + 1 < len(tokens) else 0.0
            delta = reward[tokens[j]] + gamma * nxt - rows["value"][tokens[j]]
            running = delta + gamma * lam * running
            adv.append(running)
        out += adv[::-1]
    return out


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1.0, 0.9]), st.sampled_from([1.0, 0.95, 0.0]))
def test_vectorised_equals_loop(rows: dict, gamma: float, lam: float) -> None:
    credit = compute("gae", CreditInput.from_arrays(**rows), gamma=gamma, lam=lam, whiten_advantages=False)
    assert credit.token_advantage == pytest.approx(gae_loop(rows, gamma, lam), abs=1e-9)
