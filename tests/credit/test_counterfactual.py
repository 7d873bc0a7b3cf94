"""InfoPO, PBSD and SIOP: hand-computed numbers (credit.md sections 14 and the docs' examples), plain loops, and
what each refuses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.credit.modes import answer_key, evidence_for, mode_targets, outcome_modes


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- InfoPO ------------------------------------------------------------------------------------------------------


def test_infopo_outcome_spread_closes_the_gate() -> None:
    """credit.md section 14: outcomes [1, 0, 0] give A_out = [1.1547, -0.5774, -0.5774], gate 9.66e-6."""
    inp = CreditInput.from_arrays(
        [0] * 6, [0, 0, 1, 1, 2, 2], [0, 1] * 3, [0, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0],
        token_offsets=range(7), token_ids=[5] * 6, counterfactual_gain=[0.4, np.nan, -0.2, np.nan, 0.1, np.nan],
    )  # fmt: skip
    credit = compute("infopo", inp)
    assert credit.diagnostics["credit/info_gate_mean"] == pytest.approx(_sigmoid(-0.57735 / 0.05), rel=1e-3)
    assert credit.turn_advantage == pytest.approx([1.1547, 1.1547, -0.5774, -0.5774, -0.5774, -0.5774], abs=1e-3)


def test_infopo_equal_outcomes_leave_the_update_to_the_information() -> None:
    """Outcomes [0, 0]: A_out = 0, gate 0.5; the gains spread per token ([0.2, 0.2] for 0.4 over two tokens, [0.1])
    are z-scored among the group's non-zero tokens, so A = 0.1 * 0.5 * m * z, m = min(1, 1 / std(A_int))."""
    inp = CreditInput.from_arrays(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0] * 4, [0] * 4,
        token_offsets=[0, 2, 3, 4, 5], token_ids=[5] * 5, counterfactual_gain=[0.4, np.nan, 0.1, np.nan],
    )  # fmt: skip
    credit = compute("infopo", inp)
    assert credit.token_advantage is not None
    values = np.array([0.2, 0.2, 0.1])
    z = (values - values.mean()) / (values.std(ddof=1) + 1e-6)
    a_int = np.array([z[0], z[1], 0.0, z[2], 0.0])
    m = min(1.0, 1.0 / (a_int.std(ddof=1) + 1e-6))
    assert credit.token_advantage == pytest.approx(0.1 * 0.5 * m * a_int, abs=1e-9)
    assert credit.turn_advantage == pytest.approx([0.05 * m * z[0], 0.0, 0.05 * m * z[2], 0.0], abs=1e-9)
    assert credit.diagnostics["credit/info_gate_mean"] == pytest.approx(0.5)


def _infopo_loop(inp: CreditInput, beta: float = 0.1, tau: float = 0.05, eps: float = 1e-6) -> np.ndarray:
    """InfoPO token advantages with plain loops (credit.md section 14), for equivalence."""
    assert inp.token_offsets is not None and inp.counterfactual_gain is not None
    off, n = inp.token_offsets, inp.n_turns
    episodes = sorted(set(inp.episode.tolist()))
    score = {e: sum(inp.outcome[i] for i in range(n) if inp.episode[i] == e and inp.turn[i] == 0) for e in episodes}
    group_of = {int(inp.episode[i]): int(inp.group[i]) for i in range(n)}
    a_out, gate, tok_val, tok_group = [], {}, [], []
    for g in set(group_of.values()):
        s = np.array([score[e] for e in episodes if group_of[e] == g])
        gate[g] = 1 / (1 + math.exp(s.std(ddof=1) / tau)) if s.size > 1 else 0.5
    for i in range(n):
        e = int(inp.episode[i])
        s = np.array([score[x] for x in episodes if group_of[x] == group_of[e]])
        z = (score[e] - s.mean()) / (s.std(ddof=1) + eps) if s.size > 1 else 0.0
        gain = 0.0 if math.isnan(inp.counterfactual_gain[i]) else inp.counterfactual_gain[i]
        for _ in range(off[i], off[i + 1]):
            a_out.append(z), tok_val.append(gain / (off[i + 1] - off[i])), tok_group.append(group_of[e])
    a_int = []
    for v, g in zip(tok_val, tok_group, strict=True):
        pool = np.array([x for x, h in zip(tok_val, tok_group, strict=True) if h == g and x != 0])
        a_int.append(0.0 if v == 0 or pool.size < 2 else (v - pool.mean()) / (pool.std(ddof=1) + eps))
    a_out_arr, a_int_arr = np.array(a_out), np.array(a_int)
    m = min(1.0, max(a_out_arr.std(ddof=1) + eps, 1.0) / (a_int_arr.std(ddof=1) + eps))
    gates = np.array([gate[g] for g in tok_group])
    return a_out_arr + beta * gates * m * a_int_arr


def test_infopo_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        lengths = rng.integers(1, 4, size=6)
        episode = np.repeat(np.arange(6), lengths)
        turn = np.concatenate([np.arange(k) for k in lengths])
        group = episode // 3
        outcome = np.repeat(rng.integers(0, 2, size=6).astype(float), lengths)
        n = episode.size
        gain = np.where(np.r_[turn[1:] != 0, False], rng.normal(size=n), np.nan)
        offsets = np.r_[0, np.cumsum(rng.integers(1, 4, size=n))]
        inp = CreditInput.from_arrays(
            group, episode, turn, np.zeros(n), outcome, token_offsets=offsets, token_ids=np.zeros(offsets[-1]),
            counterfactual_gain=gain,
        )  # fmt: skip
        credit = compute("infopo", inp)
        assert credit.token_advantage == pytest.approx(_infopo_loop(inp), abs=1e-9)


# --- PBSD --------------------------------------------------------------------------------------------------------


def test_pbsd_worked_example() -> None:
    """docs/credit.md: outcomes 1 / 0, d = [2, 0] and [1, -1]: A = [1.2456, 0.1686] and [-0.1686, -1.2456]."""
    inp = CreditInput.from_arrays(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], privileged_logratio=[2, 0, 1, -1]
    )
    credit = compute("pbsd", inp)
    assert credit.turn_advantage == pytest.approx([1.2456, 0.1686, -0.1686, -1.2456], abs=1e-4)
    per_episode = [credit.turn_advantage[:2].sum(), credit.turn_advantage[2:].sum()]
    assert per_episode == pytest.approx([2 * 0.70711, -2 * 0.70711], abs=1e-4)  # GRPO's total credit kept


def test_pbsd_without_evidence_or_with_one_turn_is_grpo() -> None:
    base = dict(group=[0] * 4, episode=[0, 0, 1, 2], turn=[0, 1, 0, 0], reward=[0, 1, 0, 1], outcome=[1, 1, 0, 1])
    flat = CreditInput.from_arrays(**base, privileged_logratio=[0.0, 0.0, 3.0, -2.0])  # type: ignore[arg-type]
    grpo = compute("grpo", flat).turn_advantage
    assert compute("pbsd", flat).turn_advantage == pytest.approx(grpo, abs=1e-6)
    missing = CreditInput.from_arrays(**base, privileged_logratio=[np.nan, 5.0, np.nan, np.nan])  # type: ignore[arg-type]
    weights = 2 * np.array([1, math.exp(5)]) / (1 + math.exp(5))
    assert compute("pbsd", missing).turn_advantage[:2] == pytest.approx(grpo[:2] * weights, abs=1e-6)


def test_pbsd_temperature_flattens_the_weights() -> None:
    inp = CreditInput.from_arrays(
        [0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 0, 0], privileged_logratio=[2, 0, 1, -1]
    )
    hot = compute("pbsd", inp, temperature=1e6).turn_advantage
    assert hot == pytest.approx(compute("grpo", inp).turn_advantage, abs=1e-5)


def test_pbsd_refuses_a_batch_without_any_gold_answer() -> None:
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], privileged_logratio=[np.nan, np.nan])
    with pytest.raises(ValueError, match="no episode has one"):
        compute("pbsd", inp)
    with pytest.raises(ValueError, match="privileged_logratio"):
        compute("pbsd", CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0]))


# --- SIOP --------------------------------------------------------------------------------------------------------


def test_answers_fall_into_modes_after_normalisation() -> None:
    assert answer_key("  The answer: PARIS. ") == "the answer paris"
    label, rep = outcome_modes(["Paris", "paris.", "Lyon", None, "", "Paris"], [0, 0, 0, 0, 0, 1])
    assert label.tolist() == [0, 0, 1, -1, -1, 2]  # the same words in another group are another mode
    assert rep.tolist() == [0, 0, 2, -1, -1, 5]


def test_mode_targets_weigh_share_by_evidence() -> None:
    """The SIOP code's example: m = 2/3, 1/3 and r = 0.65, 0.2 with eta 1 give q = 0.75826, 0.24174."""
    label, groups = np.array([0, 0, 1, -1]), np.zeros(4, dtype=np.int64)
    q = mode_targets(label, groups, np.array([0.7, 0.6, 0.2, np.nan]), eta=1.0)
    assert q == pytest.approx([0.75826, 0.75826, 0.24174, 0.0], abs=1e-5)
    flat = mode_targets(label, groups, np.array([0.7, 0.6, 0.2, np.nan]), eta=0.0)
    assert flat == pytest.approx([2 / 3, 2 / 3, 1 / 3, 0])
    assert mode_targets(np.array([-1, -1, 0]), np.array([0, 0, 1]), np.full(3, np.nan)) == pytest.approx([0, 0, 1])
    assert evidence_for("Paris", ["the capital is Paris.", "no result", "Parisian"]) == pytest.approx(1 / 3)
    assert math.isnan(evidence_for("Paris", []))


def test_siop_worked_example() -> None:
    """docs/credit.md: four episodes, modes {a, b} (q 2/3) and {c} (q 1/3), d without an answer."""
    phi = [-2, -1, -0.5, -1.5, -0.5, -2, -2.5, np.nan, np.nan]
    q = [2 / 3] * 5 + [1 / 3] * 2 + [0, 0]
    inp = CreditInput.from_arrays(
        [0] * 9, [0, 0, 0, 1, 1, 2, 2, 3, 3], [0, 1, 2, 0, 1, 0, 1, 0, 1], [0] * 9, [0] * 9,
        mode_logprob=phi, mode_weight=q,
    )  # fmt: skip
    credit = compute("siop", inp)
    assert credit.turn_return == pytest.approx([2 / 3, 1 / 3, 1 / 3, 2 / 3, 1 / 3, -1 / 6, 1 / 6, 0, 0])
    expected = [1.9156, 0.5108, 0.2554, 1.6602, 0.2554, -1.7879, -0.3193, -1.7879, -0.8940]
    assert credit.turn_advantage == pytest.approx(expected, abs=1e-4)


def test_siop_reads_no_env_reward_unless_asked() -> None:
    base = dict(group=[0] * 2, episode=[0, 1], turn=[0, 0], outcome=[1, 0], mode_logprob=[-1, -1], mode_weight=[1, 1])
    right = CreditInput.from_arrays(reward=[1, 0], **base)  # type: ignore[arg-type]
    assert compute("siop", right).turn_advantage == pytest.approx([0, 0])  # label-free: both answered
    assert compute("siop", right, env_reward_weight=1.0).turn_advantage[0] > 0


def _random_batch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    lengths = rng.integers(1, 5, size=6)
    episode = np.repeat(np.arange(6), lengths)
    turn = np.concatenate([np.arange(k) for k in lengths])
    outcome = np.repeat(rng.integers(0, 2, size=6).astype(float), lengths)
    return {"group": episode // 3, "episode": episode, "turn": turn, "outcome": outcome}


def test_pbsd_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        b = _random_batch(rng)
        n = b["turn"].size
        d = np.where(rng.random(n) < 0.8, rng.normal(size=n) * 2, np.nan)
        inp = CreditInput.from_arrays(b["group"], b["episode"], b["turn"], np.zeros(n), b["outcome"],
                                      privileged_logratio=d)  # fmt: skip
        want = []
        for i in range(n):
            group_eps = sorted({int(e) for e in b["episode"][b["group"] == b["group"][i]]})
            scores = np.array([b["outcome"][b["episode"] == e][0] for e in group_eps])
            a = (b["outcome"][i] - scores.mean()) / (scores.std(ddof=1) + 1e-6)
            mine = np.flatnonzero(b["episode"] == b["episode"][i])
            logits = np.sign(a) * np.nan_to_num(d[mine])
            w = len(mine) * np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            want.append(a * w[list(mine).index(i)])
        if np.isnan(d).all():
            continue
        assert compute("pbsd", inp).turn_advantage == pytest.approx(want, abs=1e-9)


def test_siop_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(12)
    for _ in range(20):
        b = _random_batch(rng)
        n = b["turn"].size
        q = np.repeat(rng.random(6), np.bincount(b["episode"]))
        phi = -rng.random(n) * 3
        inp = CreditInput.from_arrays(b["group"], b["episode"], b["turn"], np.zeros(n), b["outcome"],
                                      mode_logprob=phi, mode_weight=q)  # fmt: skip
        r = np.zeros(n)
        for i in range(n):
            last = i + 1 == n or b["turn"][i + 1] == 0
            r[i] = 0.5 * q[i] if last else q[i] * (phi[i + 1] - phi[i])
        z = np.zeros(n)
        for g in set(b["group"].tolist()):
            pool = r[b["group"] == g]
            sd = pool.std(ddof=1)
            z[b["group"] == g] = (pool - pool.mean()) / (1.0 if sd < 1e-6 else sd + 1e-6)
        want = [sum(z[j] for j in range(i, n) if b["episode"][j] == b["episode"][i]) for i in range(n)]
        assert compute("siop", inp).turn_advantage == pytest.approx(want, abs=1e-9)
