"""Vectorised estimators == slow, obviously correct loops, on random batches (hypothesis)."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from clew.credit import CreditInput, compute


@st.composite
def batches(draw: st.DrawFn) -> dict:
    """Random groups of episodes of random lengths, with state keys, tokens and rewards."""
    rows: dict[str, list] = defaultdict(list)
    offsets, episode = [0], 0
    for g in range(draw(st.integers(1, 4))):
        for _ in range(draw(st.integers(1, 4))):
            n = draw(st.integers(1, 6))
            outcome = float(draw(st.sampled_from([0.0, 1.0, 0.5, -1.0])))
            for t in range(n):
                rows["group"].append(g)
                rows["episode"].append(episode)
                rows["turn"].append(t)
                rows["reward"].append(float(draw(st.sampled_from([0.0, 0.1, -0.2, 1.0]))))
                rows["outcome"].append(outcome)
                rows["state_key"].append(draw(st.integers(-1, 3)))
                rows["observation"].append(draw(st.integers(0, 2)) if t else g)  # turn 0: the task's first
                k = draw(st.integers(0, 3))
                rows["token_ids"] += [draw(st.integers(0, 2)) for _ in range(k)]
                offsets.append(offsets[-1] + k)
            episode += 1
    rows["token_offsets"] = offsets
    return dict(rows)


def episodes_of(b: dict) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(b["episode"]):
        out[e].append(i)
    return out


def loop_returns(b: dict, gamma: float) -> list[float]:
    ret = [0.0] * len(b["reward"])
    for rows in episodes_of(b).values():
        acc = 0.0
        for i in reversed(rows):
            acc = b["reward"][i] + gamma * acc
            ret[i] = acc
    return ret


def z(values: list[float], x: float, eps: float, scale: bool = True) -> float:
    if len(values) == 1:
        return x
    mean = statistics.fmean(values)
    return (x - mean) / (statistics.stdev(values) + eps) if scale else x - mean


def loop_grpo(b: dict) -> list[float]:
    eps_ = episodes_of(b)
    by_group: dict[int, list[float]] = defaultdict(list)
    for rows in eps_.values():
        by_group[b["group"][rows[0]]].append(b["outcome"][rows[0]])
    return [z(by_group[b["group"][i]], b["outcome"][i], 1e-6) for i in range(len(b["group"]))]


def loop_gigpo(b: dict, gamma: float = 0.95) -> list[float]:
    ret = loop_returns(b, gamma)
    episode_adv = loop_grpo({**b})
    out = []
    for i in range(len(ret)):
        key = b["state_key"][i]
        peers = [
            ret[j] for j in range(len(ret)) if key >= 0 and b["group"][j] == b["group"][i] and b["state_key"][j] == key
        ]
        step = ret[i] - statistics.fmean(peers) if len(peers) > 1 else 0.0
        out.append(z_mean_only(b, i, episode_adv) + step)
    return out


def z_mean_only(b: dict, i: int, _: list[float]) -> float:
    eps_ = episodes_of(b)
    vals = [b["outcome"][rows[0]] for rows in eps_.values() if b["group"][rows[0]] == b["group"][i]]
    return b["outcome"][i] if len(vals) == 1 else b["outcome"][i] - statistics.fmean(vals)


def loop_tempo(b: dict) -> list[float]:
    """Paths: per turn, ("seen", observation or state key) when there is one, then ("tok", id) per action token."""
    key = "observation" if "observation" in b else "state_key"
    eps_ = episodes_of(b)
    responses = {
        e: [
            item
            for i in rows
            for item in ([("seen", b[key][i])] if b[key][i] >= 0 else [])
            + [("tok", t) for t in b["token_ids"][b["token_offsets"][i] : b["token_offsets"][i + 1]]]
        ]
        for e, rows in eps_.items()
    }
    out = []
    for e, rows in eps_.items():
        g, r = b["group"][rows[0]], b["outcome"][rows[0]]
        peers = [p for p, pr in eps_.items() if b["group"][pr[0]] == g]
        vals = [b["outcome"][eps_[p][0]] for p in peers]
        mean, std = (0.0, 1.0) if len(vals) == 1 else (statistics.fmean(vals), statistics.stdev(vals) + 1e-6)
        for j, (kind, _) in enumerate(responses[e]):
            parent = [b["outcome"][eps_[p][0]] for p in peers if responses[p][:j] == responses[e][:j]]
            child = [b["outcome"][eps_[p][0]] for p in peers if responses[p][: j + 1] == responses[e][: j + 1]]
            if kind == "tok":  # markers are the env's move: no token carries their correction
                out.append((r - mean + statistics.fmean(child) - statistics.fmean(parent)) / std)
    return out


def loop_softmin(b: dict, temp: float = 0.1) -> list[float]:
    out = [0.0] * len(b["reward"])
    for rows in episodes_of(b).values():
        r = [b["reward"][i] for i in rows]
        w = [math.exp(-x / temp) for x in r]
        star = [wi / sum(w) * x for wi, x in zip(w, r)]
        for k, i in enumerate(rows):
            out[i] = sum(star[k:])
    return out


@settings(max_examples=60, deadline=None)
@given(batches())
def test_vectorised_equals_loops(b: dict) -> None:
    inp = CreditInput.from_arrays(**b)
    np.testing.assert_allclose(compute("reinforce", inp, gamma=0.9).turn_advantage, loop_returns(b, 0.9), atol=1e-9)
    np.testing.assert_allclose(compute("grpo", inp).turn_advantage, loop_grpo(b), atol=1e-9)
    if any(k >= 0 for k in b["state_key"]):  # gigpo refuses a batch without any state key
        np.testing.assert_allclose(compute("gigpo", inp).turn_advantage, loop_gigpo(b), atol=1e-9)
    np.testing.assert_allclose(compute("pure", inp).turn_return, loop_softmin(b), atol=1e-9)
    without_obs = {k: v for k, v in b.items() if k != "observation"}  # markers from state keys instead
    for cols in (b, without_obs):
        tempo = compute("tempo", CreditInput.from_arrays(**cols)).token_advantage
        assert tempo is not None
        np.testing.assert_allclose(tempo, loop_tempo(cols), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(batches())
def test_rloo_equals_leave_one_out_mean(b: dict) -> None:
    inp = CreditInput.from_arrays(**b)
    adv = compute("rloo", inp).turn_advantage
    eps_ = episodes_of(b)
    for e, rows in eps_.items():
        others = [b["outcome"][r[0]] for p, r in eps_.items() if p != e and b["group"][r[0]] == b["group"][rows[0]]]
        expected = b["outcome"][rows[0]] - statistics.fmean(others) if others else 0.0
        assert abs(adv[rows[0]] - expected) < 1e-9
