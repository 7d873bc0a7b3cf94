"""PURE baselines, MatchTIR, token-level REINFORCE++ and observation-aware TEMPO: hand numbers and loops."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings

from clew.credit import CreditInput, available, compute
from clew.credit.functional import segment_discounted_returns
from tests.credit.test_against_loops import batches, episodes_of, loop_returns, z


def close(a: np.ndarray | None, b: list[float] | np.ndarray | None, tol: float = 1e-4) -> None:
    assert a is not None and b is not None
    np.testing.assert_allclose(a, b, atol=tol)


# --- PURE (credit.md section 16) -----------------------------------------------------------------
def pure_three_episodes() -> CreditInput:
    # E0: r = [0.5, 0.5], tokens [1, 3]; E1: r = [0.2], tokens [2]; E2: r = [0.3, 0.3, 0.0], tokens [2, 2, 2]
    return CreditInput.from_arrays(
        [0] * 6, [0, 0, 1, 2, 2, 2], [0, 1, 0, 0, 1, 2], [0.5, 0.5, 0.2, 0.3, 0.3, 0.0], [0] * 6,
        token_offsets=[0, 1, 4, 6, 8, 10, 12],
    )  # fmt: skip


def test_pure_token_baseline() -> None:
    # sum form (r* = r): totals [1.0, 0.2, 0.6], tokens [4, 2, 6]
    # E0: others 0.8 / 8 tokens = 0.1 per token -> b = [0.1, 0.3]; G = [1.0, 0.5] -> A = [1.0 - 0.4, 0.5 - 0.3]
    # E1: others 1.6 / 10 = 0.16 -> b = 0.32; A = 0.2 - 0.32
    # E2: others 1.2 / 6 = 0.2 -> b = [0.4] * 3; G = [0.6, 0.3, 0] -> A = [0.6 - 1.2, 0.3 - 0.8, 0 - 0.4]
    credit = compute("pure", pure_three_episodes(), form="sum")
    close(credit.turn_advantage, [0.6, 0.2, -0.12, -0.6, -0.5, -0.4])
    close(credit.turn_return, [1.0, 0.5, 0.2, 0.6, 0.3, 0.0])  # turn_return stays the (min-form) return


def test_pure_step_baseline() -> None:
    # reward per step: E0 1.0 / 2 = 0.5, E1 0.2, E2 0.6 / 3 = 0.2
    # E0: b = mean(0.2, 0.2) = 0.2 -> A = [1.0 - 0.4, 0.5 - 0.2]; E1: b = mean(0.5, 0.2) = 0.35 -> 0.2 - 0.35
    # E2: b = 0.35 -> A = [0.6 - 1.05, 0.3 - 0.7, 0 - 0.35]
    credit = compute("pure", pure_three_episodes(), form="sum", baseline="step")
    close(credit.turn_advantage, [0.6, 0.3, -0.15, -0.45, -0.4, -0.35])
    close(
        compute("pure", pure_three_episodes(), form="sum", baseline="none").turn_advantage, [1, 0.5, 0.2, 0.6, 0.3, 0]
    )


def test_pure_token_baseline_worked_example() -> None:
    # E0: r = [0.9, 0.9] -> w = [0.5, 0.5], r* = [0.45, 0.45], G = [0.9, 0.45], 1 token per step
    # E1: r = [0.5], one step -> r* = 0.5, 2 tokens
    # E0: b = 0.5 / 2 = 0.25 per step -> A = [0.9 - 0.5, 0.45 - 0.25]; E1: b = 0.9 / 2 * 2 = 0.9 -> A = 0.5 - 0.9
    inp = CreditInput.from_arrays([0] * 3, [0, 0, 1], [0, 1, 0], [0.9, 0.9, 0.5], [0] * 3, token_offsets=[0, 1, 2, 4])
    credit = compute("pure", inp)
    close(credit.turn_advantage, [0.4, 0.2, -0.4])
    close(credit.turn_return, [0.9, 0.45, 0.5])


def test_pure_strict_min_baseline_uses_the_min_form_increments() -> None:
    # E0: r = [0.8, -0.4, 0.6] -> G = [-0.4, -0.4, 0.6], r* = G_j - G_{j+1} = [0, -1.0, 0.6], total -0.4
    # E1: r = [0.2] -> total 0.2; one token per step everywhere
    # E0: b = 0.2 per step -> A = [-0.4 - 0.6, -0.4 - 0.4, 0.6 - 0.2]; E1: b = -0.4 / 3 -> A = 0.2 + 0.1333
    inp = CreditInput.from_arrays(
        [0] * 4, [0, 0, 0, 1], [0, 1, 2, 0], [0.8, -0.4, 0.6, 0.2], [0] * 4, token_offsets=[0, 1, 2, 3, 4]
    )
    close(compute("pure", inp, form="strict_min").turn_advantage, [-1.0, -0.8, 0.4, 0.3333])


def test_pure_group_of_one_has_no_baseline() -> None:
    inp = CreditInput.from_arrays([0, 0, 1], [0, 0, 1], [0, 1, 0], [0.5, 0.5, 0.2], [0] * 3, token_offsets=[0, 1, 4, 6])
    for baseline in ("token", "step"):
        close(compute("pure", inp, form="sum", baseline=baseline).turn_advantage, [1.0, 0.5, 0.2])


def test_pure_token_baseline_needs_offsets() -> None:
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [0.5, 0.2], [0, 0])
    with pytest.raises(ValueError, match="baseline='step'"):
        compute("pure", inp)
    close(compute("pure", inp, baseline="step").turn_advantage, [0.5 - 0.2, 0.2 - 0.5])


def test_pure_verifiable_reward_needs_an_env_outcome() -> None:
    cols = ([0, 0], [0, 1], [0, 0], [0.5, 0.2], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"StepResult\.outcome"):
        compute("pure", CreditInput.from_arrays(*cols), baseline="none", outcome_coef=1.0)
    # E1 was cut short before the env reported (its 1.0 is only its reward sum): unsolved, 0.
    # RLOO of [1, 0]: [1 - 0, 0 - 1]; process part (none baseline) [0.5, 0.2]
    cut = CreditInput.from_arrays(*cols, outcome_explicit=[True, False])
    close(compute("pure", cut, baseline="none", outcome_coef=1.0).turn_advantage, [1.5, -0.8])
    both = CreditInput.from_arrays(*cols, outcome_explicit=[True, True])  # RLOO of [1, 1] is 0
    close(compute("pure", both, baseline="none", outcome_coef=1.0).turn_advantage, [0.5, 0.2])


def loop_pure(b: dict, baseline: str, form: str) -> list[float]:
    eps_ = episodes_of(b)
    star: dict[int, list[float]] = {}
    for e, rows in eps_.items():
        r = [b["reward"][i] for i in rows]
        if form == "soft_min":
            w = [math.exp(-x / 0.1) for x in r]
            star[e] = [wi / sum(w) * x for wi, x in zip(w, r)]
        else:
            g = [min(r[k:]) for k in range(len(r))] + [0.0]
            star[e] = [g[k] - g[k + 1] for k in range(len(r))]
    tokens = {e: [b["token_offsets"][i + 1] - b["token_offsets"][i] for i in rows] for e, rows in eps_.items()}
    out = []
    for e, rows in eps_.items():
        others = [p for p, pr in eps_.items() if p != e and b["group"][pr[0]] == b["group"][rows[0]]]
        if baseline == "token":
            other_tokens = sum(sum(tokens[p]) for p in others)
            rate = sum(sum(star[p]) for p in others) / other_tokens if other_tokens else 0.0
            base = [rate * n for n in tokens[e]]
        else:
            per_step = statistics.fmean(sum(star[p]) / len(star[p]) for p in others) if others else 0.0
            base = [per_step] * len(rows)
        out += [sum(star[e][k:]) - sum(base[k:]) for k in range(len(rows))]
    return out


@settings(max_examples=40, deadline=None)
@given(batches())
def test_pure_baselines_equal_loops(b: dict) -> None:
    inp = CreditInput.from_arrays(**b)
    for form in ("soft_min", "strict_min"):
        for baseline in ("token", "step"):
            adv = compute("pure", inp, form=form, baseline=baseline).turn_advantage
            np.testing.assert_allclose(adv, loop_pure(b, baseline, form), atol=1e-9)


# --- MatchTIR (credit.md section 24) -------------------------------------------------------------
def matchtir_example(outcome_explicit: list[bool] | None = None, outcome: list[float] | None = None) -> CreditInput:
    # turn rewards tau1 = [0.5, 1.0], tau2 = [1.0, 0.0, 0.8], tau3 = [0.0, 0.2]
    rewards = [0.5, 1.0, 1.0, 0.0, 0.8, 0.0, 0.2]
    return CreditInput.from_arrays(
        [0] * 7, [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 0, 1], rewards, outcome or [0] * 7,
        outcome_explicit=outcome_explicit,
    )  # fmt: skip


def test_matchtir_worked_example() -> None:
    # S = [1.5, 1.8, 0.2]: mean 1.1667, std 0.8505 -> A^traj = [0.3919, 0.7447, -1.1366]
    # returns (gamma 0.9): [1.4, 1.0], [1.648, 0.72, 0.8], [0.18, 0.2]
    # turn 0: mean 1.076, std 0.7858 -> [0.4123, 0.7279, -1.1402]; turn 1: mean 0.64, std 0.4060 -> [0.8867,
    # 0.1971, -1.0838]; turn 2 alone keeps 0.8. Final = (A^traj + A^turn) / 2
    credit = compute("matchtir", matchtir_example())
    close(credit.turn_advantage, [0.4021, 0.6394, 0.7363, 0.4709, 0.7723, -1.1384, -1.1102])
    close(credit.turn_return, [1.4, 1.0, 1.648, 0.72, 0.8, 0.18, 0.2])


def test_matchtir_explicit_outcome_is_the_last_turns_reward() -> None:
    # the same turn rewards, with tau2's 0.8 and tau3's 0.2 reported as outcomes apart from step rewards
    split = CreditInput.from_arrays(
        [0] * 7, [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 0, 1], [0.5, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        [1.5] * 2 + [0.8] * 3 + [0.2] * 2, outcome_explicit=[False] * 2 + [True] * 5,
    )  # fmt: skip
    close(compute("matchtir", split).turn_advantage, [0.4021, 0.6394, 0.7363, 0.4709, 0.7723, -1.1384, -1.1102])


def test_matchtir_group_of_one_keeps_raw_values() -> None:
    # one rollout r = [0, 1]: S = 1 (mean 0, std 1), returns [0.9, 1.0] raw -> [(1 + 0.9) / 2, (1 + 1) / 2]
    inp = CreditInput.from_arrays([0, 0], [0, 0], [0, 1], [0.0, 1.0], [1.0, 1.0])
    close(compute("matchtir", inp).turn_advantage, [0.95, 1.0])


def loop_matchtir(b: dict, gamma: float = 0.9) -> list[float]:
    eps_ = episodes_of(b)
    ret = loop_returns(b, gamma)
    score = {e: sum(b["reward"][i] for i in rows) for e, rows in eps_.items()}
    out = []
    for e, rows in eps_.items():
        peers = [p for p, pr in eps_.items() if b["group"][pr[0]] == b["group"][rows[0]]]
        traj = z([score[p] for p in peers], score[e], 1e-6)
        for t, i in enumerate(rows):
            same_turn = [ret[eps_[p][t]] for p in peers if len(eps_[p]) > t]
            out.append((traj + z(same_turn, ret[i], 1e-6)) / 2)
    return out


# --- REINFORCE++ per-token discount (credit.md section 6) ----------------------------------------
def test_reinforce_pp_token_discount() -> None:
    # two turns of two tokens, reward 1 on the last token, gamma 0.9: G = [0.729, 0.81, 0.9, 1.0]
    # mean 0.85975; deviations [-0.13075, -0.04975, 0.04025, 0.14025], squares sum 0.04086075,
    # unbiased var 0.01362025 -> sd sqrt(0.01362025 + 1e-8) = 0.116706
    inp = CreditInput.from_arrays([0, 0], [0, 0], [0, 1], [0.0, 1.0], [1.0, 1.0], token_offsets=[0, 2, 4])
    off = inp.token_offsets
    assert off is not None
    close(segment_discounted_returns(np.array([0, 0, 0, 1.0]), np.zeros(4, int), 0.9), [0.729, 0.81, 0.9, 1.0])
    credit = compute("reinforce_pp", inp, gamma=0.9)
    close(credit.token_advantage, [-1.12034, -0.42628, 0.34488, 1.20174])
    close(credit.turn_advantage, [-0.77331, 0.77331])  # (-1.12034 - 0.42628) / 2, (0.34488 + 1.20174) / 2
    close(credit.turn_return, [0.729, 0.9])  # the return at each turn's first token
    # per-turn discounting instead: returns [0.9, 1.0], each weighing 2 tokens -> +-0.05 / 0.057735
    close(compute("reinforce_pp", inp, gamma=0.9, discount_over="turn").turn_advantage, [-0.86603, 0.86603])


def test_reinforce_pp_turn_without_tokens() -> None:
    # turn 1 has no tokens: its reward 1 moves onto turn 0's last token -> G = [0.9, 1.0] (gamma 0.9);
    # turn 2 (1 token, reward 0) -> G = [0.0]. Tokens [0.9, 1.0, 0.0]: mean 0.63333, var 0.30333, sd 0.55076
    # turn 1's turn-level return is 1.0 -> (1.0 - 0.63333) / 0.55076 = 0.66575
    inp = CreditInput.from_arrays([0] * 3, [0] * 3, [0, 1, 2], [0.0, 1.0, 0.0], [1.0] * 3, token_offsets=[0, 2, 2, 3])
    credit = compute("reinforce_pp", inp, gamma=0.9)
    close(credit.token_advantage, [0.48418, 0.66575, -1.14993])
    close(credit.turn_advantage, [0.57497, 0.66575, -1.14993])
    close(credit.turn_return, [0.9, 1.0, 0.0])
    # a reward before any action token of its episode credits no token: here turn 0 has none
    first = CreditInput.from_arrays([0, 0], [0, 0], [0, 1], [1.0, 0.0], [1.0, 1.0], token_offsets=[0, 0, 2])
    close(compute("reinforce_pp", first).token_advantage, [0.0, 0.0])


def test_reinforce_pp_token_mode_needs_offsets_and_token_whitening() -> None:
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1.0, 0.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="discount_over='turn'"):
        compute("reinforce_pp", inp)
    close(compute("reinforce_pp", inp, discount_over="turn").turn_advantage, [0.70711, -0.70711])
    with_tokens = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], token_offsets=[0, 2, 5])
    with pytest.raises(ValueError, match="whiten_over"):
        compute("reinforce_pp", with_tokens, whiten_over="turns")


def loop_reinforce_pp(b: dict, gamma: float) -> tuple[list[float], list[float], list[float]]:
    """(token advantages, turn advantages, turn returns) with rewards on each turn's last token."""
    off, tok_returns, first_token = b["token_offsets"], [], []
    for rows in episodes_of(b).values():
        rewards: list[float] = []
        for i in rows:
            rewards += [0.0] * (off[i + 1] - off[i])
            if rewards:
                rewards[-1] += b["reward"][i]
        acc, back = 0.0, []
        for r in reversed(rewards):
            acc = r + gamma * acc
            back.append(acc)
        tok_returns += back[::-1]
    n = len(tok_returns)
    mean = statistics.fmean(tok_returns) if n > 1 else 0.0
    sd = math.sqrt(statistics.variance(tok_returns) + 1e-8) if n > 1 else math.inf
    tok_adv = [(g - mean) / sd for g in tok_returns]
    turn_level = loop_returns(b, gamma)
    turn_adv, turn_ret = [], []
    for i in range(len(b["reward"])):
        own = tok_adv[off[i] : off[i + 1]]
        turn_adv.append(statistics.fmean(own) if own else (turn_level[i] - mean) / sd)
        turn_ret.append(tok_returns[off[i]] if own else turn_level[i])
        first_token.append(off[i])
    return tok_adv, turn_adv, turn_ret


@settings(max_examples=40, deadline=None)
@given(batches())
def test_reinforce_pp_token_and_matchtir_equal_loops(b: dict) -> None:
    inp = CreditInput.from_arrays(**b)
    np.testing.assert_allclose(compute("matchtir", inp).turn_advantage, loop_matchtir(b), atol=1e-9)
    credit = compute("reinforce_pp", inp, gamma=0.9)
    tok_adv, turn_adv, turn_ret = loop_reinforce_pp(b, 0.9)
    assert credit.token_advantage is not None
    np.testing.assert_allclose(credit.token_advantage, tok_adv, atol=1e-9)
    np.testing.assert_allclose(credit.turn_advantage, turn_adv, atol=1e-9)
    np.testing.assert_allclose(credit.turn_return, turn_ret, atol=1e-9)
    by_token = compute("reinforce_pp", inp, gamma=1.0).turn_advantage  # gamma 1: where the discount sits is moot
    np.testing.assert_allclose(by_token, compute("reinforce_pp", inp, discount_over="turn").turn_advantage, atol=1e-9)


def test_reinforce_pp_gamma_one_modes_agree() -> None:
    # rewards on turns of 2, 1 and 0 tokens, and a second episode; gamma 1 -> identical turn advantages
    inp = CreditInput.from_arrays(
        [0] * 5, [0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0.2, 0.0, 1.0, 0.5, -0.3], [1.2] * 3 + [0.2] * 2,
        token_offsets=[0, 2, 3, 3, 6, 7],
    )  # fmt: skip
    by_token = compute("reinforce_pp", inp).turn_advantage
    np.testing.assert_allclose(by_token, compute("reinforce_pp", inp, discount_over="turn").turn_advantage, atol=1e-12)


# --- TEMPO with observations (credit.md section 12) ----------------------------------------------
def two_turn_group(observation: list[int] | None = None, state_key: list[int] | None = None) -> CreditInput:
    # three episodes, action tokens turn 0 / turn 1: E0 [1] / [5] r=1; E1 [1] / [5] r=0; E2 [1] / [6] r=0
    return CreditInput.from_arrays(
        [0] * 6, [0, 0, 1, 1, 2, 2], [0, 1] * 3, [0] * 6, [1, 1, 0, 0, 0, 0], state_key,
        token_offsets=[0, 1, 2, 3, 4, 5, 6], token_ids=[1, 5, 1, 5, 1, 6], observation=observation,
    )  # fmt: skip


# outcomes [1, 0, 0]: mean 1/3, unbiased std 0.57735
# actions only: turn 0 [1] shared (V 1/3 -> 1/3, no TD): (r - 1/3) / s = [1.1547, -0.5774, -0.5774];
# turn 1: [1,5] holds E0, E1 (V 0.5), [1,6] holds E2 (V 0): E0 (2/3 + 1/6) / s = 1.4434,
# E1 (-1/3 + 1/6) / s = -0.2887, E2 (-1/3 - 1/3) / s = -1.1547
TODAY = [1.1547, 1.4434, -0.5774, -0.2887, -0.5774, -1.1547]


def test_tempo_observation_splits_the_tree() -> None:
    close(compute("tempo", two_turn_group()).token_advantage, TODAY)
    same = compute("tempo", two_turn_group(observation=[0, 1, 0, 1, 0, 1]))
    close(same.token_advantage, TODAY)  # identical observations keep today's numbers
    # turn-1 observations: E0 saw a, E1 saw b, E2 saw a. The marker splits {E0, E2} (V 0.5) from {E1} (V 0);
    # E0's [5] then is alone (V 1): (2/3 + 1 - 0.5) / s = 2.0207; E1 alone from the marker on: (-1/3) / s;
    # E2's [6] (V 0) under V 0.5: (-1/3 - 0.5) / s = -1.4434. The marker's own TD step goes to no token.
    split = compute("tempo", two_turn_group(observation=[0, 1, 0, 2, 0, 1]))
    close(split.token_advantage, [1.1547, 2.0207, -0.5774, -0.5774, -0.5774, -1.4434])
    close(split.turn_advantage, [1.1547, 2.0207, -0.5774, -0.5774, -0.5774, -1.4434])
    # without observations, state keys (>= 0) mark what was seen; -1 means no marker
    close(compute("tempo", two_turn_group(state_key=[-1, 1, -1, 2, -1, 1])).token_advantage, split.token_advantage)
    close(compute("tempo", two_turn_group(state_key=[-1] * 6)).token_advantage, TODAY)


def test_tempo_single_turn_worked_example_with_observations() -> None:
    # credit.md section 12: the shared first observation marks every path alike, nothing changes
    inp = CreditInput.from_arrays(
        [0] * 4, range(4), [0] * 4, [1, 0, 1, 0], [1, 0, 1, 0], [3] * 4,
        token_offsets=[0, 3, 6, 9, 12], token_ids=[1, 2, 3, 1, 2, 4, 1, 5, 6, 7, 8, 9], observation=[0] * 4,
    )  # fmt: skip
    expected = [1.1547, 0.5774, 1.7321, -0.5774, -1.1547, -1.7321, 1.1547, 1.4434, 0.8660, -1.7321, -0.8660, -0.8660]
    credit = compute("tempo", inp)
    close(credit.token_advantage, expected)
    assert credit.token_advantage is not None and credit.token_advantage.shape == (12,)  # one per action token


def test_registry_metadata() -> None:
    names = available()
    assert names["matchtir"].needs_group and names["matchtir"].params["gamma"] == 0.9
    assert names["pure"].params["baseline"] == "token" and not names["pure"].needs_group
    assert names["reinforce_pp"].params["discount_over"] == "token"
