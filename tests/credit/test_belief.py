"""IGPO: credit.md section 13's worked example, the estimator against a plain loop, and its refusals."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clew.credit import CreditInput, compute, get
from clew.credit.belief import information_gain


def worked_example() -> CreditInput:
    """Two rollouts of one question: beliefs 0.1 -> 0.4 -> 0.7 then a right answer; 0.1 -> 0.05 then a wrong one."""
    beliefs = [0.1, 0.4, 0.7, 0.1, 0.05]
    return CreditInput.from_arrays(
        [0] * 5, [0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0, 0, 1, 0, 0], [1, 1, 1, 0, 0], gold_logprob=np.log(beliefs)
    )


def test_worked_example_by_hand() -> None:
    inp = worked_example()
    assert information_gain(inp) == pytest.approx([0.3, 0.3, 0.0, -0.05, 0.0])
    credit = compute("igpo", inp)
    assert credit.turn_return == pytest.approx([1.6, 1.3, 1.0, -0.05, 0.0])  # r = [0.3, 0.3, 1.0], [-0.05, 0.0]
    assert credit.turn_advantage == pytest.approx([1.5993, 1.6232, 1.6471, -1.5993, -0.7400], abs=1e-4)
    assert credit.diagnostics["credit/info_gain_mean"] == pytest.approx(0.11)


def test_a_turn_that_raises_the_belief_earns_credit_in_a_failed_episode() -> None:
    """Same outcome (0) for both: GRPO gives no signal; IGPO prefers the turn that moved the belief up."""
    beliefs = np.log([0.1, 0.6, 0.1, 0.1])
    inp = CreditInput.from_arrays([0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0] * 4, [0] * 4, gold_logprob=beliefs)
    adv = compute("igpo", inp).turn_advantage
    assert compute("grpo", inp).turn_advantage == pytest.approx([0, 0, 0, 0])
    assert adv == pytest.approx([1.0, -0.5, -1.0, -0.5], abs=1e-5)  # r = [0.5, 0], [0, 0]: mean 0.125, std 0.25


def test_gamma_and_the_weight_of_the_gain() -> None:
    inp = worked_example()
    outcome_only = compute("igpo", inp, info_gain_weight=0.0)  # rewards [0, 0, 1, 0, 0]: mean 0.2, std 0.4472
    z = (np.array([0, 0, 1, 0, 0]) - 0.2) / math.sqrt(0.2)
    expected = [z[0] + z[1] + z[2], z[1] + z[2], z[2], z[3] + z[4], z[4]]
    assert outcome_only.turn_advantage == pytest.approx(expected, abs=1e-5)  # eps 1e-6 on the std
    discounted = compute("igpo", inp, gamma=0.5)
    r = (np.array([0.3, 0.3, 1.0, -0.05, 0.0]) - 0.31) / 0.41893
    expected = [r[0] + 0.5 * r[1] + 0.25 * r[2], r[1] + 0.5 * r[2], r[2], r[3] + 0.5 * r[4], r[4]]
    assert discounted.turn_advantage == pytest.approx(expected, abs=1e-4)
    assert discounted.turn_advantage == pytest.approx([0.3760, 0.7997, 1.6471, -1.2293, -0.7400], abs=1e-4)


def test_an_episode_without_a_gold_reply_gets_no_gain() -> None:
    beliefs = [np.log(0.1), np.log(0.9), np.nan, np.nan]
    inp = CreditInput.from_arrays([0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0] * 4, [1, 1, 0, 0], gold_logprob=beliefs)
    assert information_gain(inp) == pytest.approx([0.8, 0.0, 0.0, 0.0])
    assert compute("igpo", inp).diagnostics["credit/rows_without_belief"] == 0.5


def test_refusals_name_what_is_missing() -> None:
    plain = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0])
    with pytest.raises(ValueError, match=r"needs CreditInput\.gold_logprob"):
        compute("igpo", plain)
    none = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], gold_logprob=[np.nan, np.nan])
    with pytest.raises(ValueError, match=r"no episode has one.*HasGoldReply"):
        compute("igpo", none)
    with pytest.raises(ValueError, match="gold_logprob must hold log-probs"):
        CreditInput.from_arrays([0], [0], [0], [1], [1], gold_logprob=[0.5])
    assert get("igpo").needs_gold_beliefs and get("igpo").needs_group


@st.composite
def batches(draw: st.DrawFn) -> dict:
    """Random groups of episodes of random lengths, with step rewards, env-reported outcomes and missing golds."""
    rows: dict[str, list] = defaultdict(list)
    episode = 0
    for g in range(draw(st.integers(1, 3))):
        for _ in range(draw(st.integers(1, 4))):
            n, outcome = draw(st.integers(1, 5)), float(draw(st.sampled_from([0.0, 1.0, 0.5])))
            explicit, gold = draw(st.booleans()), draw(st.integers(0, 4)) > 0
            for t in range(n):
                rows["group"].append(g)
                rows["episode"].append(episode)
                rows["turn"].append(t)
                rows["reward"].append(float(draw(st.sampled_from([0.0, 0.1, -0.2]))))
                rows["outcome"].append(outcome)
                rows["outcome_explicit"].append(explicit)
                rows["gold_logprob"].append(-draw(st.floats(0.0, 6.0)) if gold else math.nan)
            episode += 1
    return dict(rows)


def igpo_loop(rows: dict, gamma: float, weight: float, eps: float) -> list[float]:
    """The paper's recipe spelt out turn by turn: reward + weight * (next belief - belief), pooled z-score, sum."""
    n = len(rows["group"])
    reward = []
    for i in range(n):
        r = rows["reward"][i]
        last = i + 1 == n or rows["turn"][i + 1] == 0
        if last and rows["outcome_explicit"][i]:
            r += rows["outcome"][i]
        if not last:
            gain = math.exp(rows["gold_logprob"][i + 1]) - math.exp(rows["gold_logprob"][i])
            r += weight * (0.0 if math.isnan(gain) else gain)
        reward.append(r)
    z = []
    for i in range(n):
        pool = [reward[j] for j in range(n) if rows["group"][j] == rows["group"][i]]
        if len(pool) == 1:
            z.append(reward[i])
            continue
        mean = sum(pool) / len(pool)
        std = math.sqrt(sum((x - mean) ** 2 for x in pool) / (len(pool) - 1))
        z.append((reward[i] - mean) / (std + eps))
    out = []
    for i in range(n):
        total, k = 0.0, i
        while k < n and (k == i or rows["turn"][k] != 0):
            total += gamma ** (k - i) * z[k]
            k += 1
        out.append(total)
    return out


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1.0, 0.9]), st.sampled_from([1.0, 0.5]))
def test_vectorised_equals_loop(rows: dict, gamma: float, weight: float) -> None:
    if all(math.isnan(x) for x in rows["gold_logprob"]):
        rows["gold_logprob"][0] = -1.0
    inp = CreditInput.from_arrays(**rows)
    credit = compute("igpo", inp, gamma=gamma, info_gain_weight=weight)
    assert credit.turn_advantage == pytest.approx(igpo_loop(rows, gamma, weight, 1e-6), abs=1e-9)


def test_a2tgpo_worked_example_by_hand() -> None:
    """GRPO +-0.7071; turn 0's gains 0.3 / -0.05 z-score to +-0.7071; turn 1's lone gain 0.3 stays raw."""
    credit = compute("a2tgpo", worked_example())
    s = 0.70711
    expected = [s + (s + 0.3) / math.sqrt(2), s + 0.3, s, -s - s, -s]
    assert credit.turn_advantage == pytest.approx(expected, abs=1e-4)
    # adaptive clipping: 2 sigmoid(k (|z| - 1)); the last turns (no gain) keep the configured range
    assert credit.clip_scale == pytest.approx([0.8546, 0.6637, 1.0, 0.8546, 1.0], abs=1e-4)
    sharper = compute("a2tgpo", worked_example(), adaptive_clip=4.0).clip_scale
    assert (
        sharper is not None
        and sharper[1] < 0.6637
        and sharper[0] == pytest.approx(2 / (1 + math.exp(4 * 0.2929)), abs=1e-4)
    )
    assert compute("a2tgpo", worked_example(), adaptive_clip=0.0).clip_scale is None


def a2tgpo_loop(rows: dict, gamma: float) -> list[float]:
    """Turn-group z-scores of the gains, rescaled discounted sums, plus GRPO over episodes, turn by turn."""
    n = len(rows["group"])
    last = [i + 1 == n or rows["turn"][i + 1] == 0 for i in range(n)]
    gain = {}
    for i in range(n):
        if not last[i]:
            g = math.exp(rows["gold_logprob"][i + 1]) - math.exp(rows["gold_logprob"][i])
            gain[i] = 0.0 if math.isnan(g) else g
    z = {}
    for i, g in gain.items():
        peers = [gain[j] for j in gain if (rows["group"][j], rows["turn"][j]) == (rows["group"][i], rows["turn"][i])]
        if len(peers) == 1:
            z[i] = g
            continue
        mean = sum(peers) / len(peers)
        std = math.sqrt(sum((x - mean) ** 2 for x in peers) / (len(peers) - 1))
        z[i] = (g - mean) / (std + 1e-6)
    starts = [i for i in range(n) if rows["turn"][i] == 0]
    outcome = {s: rows["outcome"][s] for s in starts}
    out = []
    for i in range(n):
        s = max(x for x in starts if x <= i)
        peers = [outcome[x] for x in starts if rows["group"][x] == rows["group"][i]]
        if len(peers) == 1:
            grpo = outcome[s]
        else:
            mean = sum(peers) / len(peers)
            std = math.sqrt(sum((x - mean) ** 2 for x in peers) / (len(peers) - 1))
            grpo = (outcome[s] - mean) / (std + 1e-6)
        total, terms, k = 0.0, 0, i
        while k < n and (k == i or rows["turn"][k] != 0):
            if k in z:
                total += gamma ** (k - i) * z[k]
                terms += 1
            k += 1
        out.append(grpo + (total / math.sqrt(terms) if terms else 0.0))
    return out


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1.0, 0.9]))
def test_a2tgpo_vectorised_equals_loop(rows: dict, gamma: float) -> None:
    if all(math.isnan(x) for x in rows["gold_logprob"]):
        rows["gold_logprob"][0] = -1.0
    credit = compute("a2tgpo", CreditInput.from_arrays(**rows), gamma=gamma)
    assert credit.turn_advantage == pytest.approx(a2tgpo_loop(rows, gamma), abs=1e-9)


def test_a2tgpo_keeps_the_clip_range_where_no_belief_was_scored() -> None:
    """A group without a gold reply (NaN beliefs) has no information signal: its turns keep the configured range."""
    beliefs = np.log([0.1, 0.4, 0.7, 0.1, 0.05]).tolist() + [np.nan] * 4
    inp = CreditInput.from_arrays(
        [0] * 5 + [1] * 4, [0, 0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 2, 0, 1, 0, 1, 0, 1], [0, 0, 1, 0, 0, 0, 1, 0, 0],
        [1, 1, 1, 0, 0, 1, 1, 0, 0], gold_logprob=beliefs,
    )  # fmt: skip
    scale = compute("a2tgpo", inp).clip_scale
    assert scale is not None and scale[5:] == pytest.approx([1.0] * 4)
    assert scale[:5] == pytest.approx([0.8546, 0.6637, 1.0, 0.8546, 1.0], abs=1e-4)
