"""LOOP's advantage filter and D³S down-sampling: hand-computed examples, brute force, the learner's loss weights,
the entropies, the loop."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clew import objectives
from clew.policy.hf import HFPolicy
from clew.policy.scoring import full_logprobs
from clew.store.run import read_jsonl
from clew.tensors import TokenRow, loss_units, pack_batch
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.downsample import (
    drop_small_advantages,
    episode_advantages,
    keep_tokens,
    max_variance_subset,
    row_entropies,
    schedule,
    select_samples,
)
from clew.trainer.learner import Learner
from clew.trainer.sections import ObjectiveConfig, TrainConfig
from clew.trainer.states import token_entropies

Make = Callable[..., RunConfig]


def _row(episode: int, advantages: list[float], prompt: list[int] | None = None) -> TokenRow:
    action = [5 + i for i in range(len(advantages))]
    return TokenRow([(prompt or [1, 2], False), (action, True)], advantages, [-1.0] * len(advantages), episode)


def test_max_variance_subset_worked_example() -> None:
    """objectives.md section 15: [1.5, 0.5, -0.5, -1.5], N = 2 -> {1.5, -1.5}, variance 2.25 against 1.25."""
    values = [1.5, 0.5, -0.5, -1.5]
    pick = max_variance_subset(values, 2)
    assert pick == [0, 3]
    assert np.var([values[i] for i in pick]) == pytest.approx(2.25)
    assert np.var(values) == pytest.approx(1.25)


def test_max_variance_subset_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        g = int(rng.integers(2, 9))
        values = [float(x) for x in rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0], g)] if rng.random() < 0.3 else list(
            rng.normal(size=g)
        )  # fmt: skip
        n = int(rng.integers(1, g + 1))
        best = max(np.var([values[i] for i in c]) for c in itertools.combinations(range(g), n))
        assert np.var([values[i] for i in max_variance_subset(values, n)]) == pytest.approx(best, abs=1e-12)


def test_max_variance_subset_refuses_empty() -> None:
    with pytest.raises(ValueError, match="n >= 1"):
        max_variance_subset([1.0, 2.0], 0)


def test_select_samples_per_group_and_over_the_batch() -> None:
    # group 0: episodes 0-3 with advantages 1.5, 0.5, -0.5, -1.5; group 1: episodes 4-7 with 0.1, 0.2, -0.1, -0.2
    advs = [1.5, 0.5, -0.5, -1.5, 0.1, 0.2, -0.1, -0.2]
    rows = [_row(e, [a, a]) for e, a in enumerate(advs)] + [_row(0, [1.5])]  # episode 0 has two rows
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    kept = select_samples(rows, groups, 2)
    assert kept == [0, 3, 5, 7, 8]  # both of episode 0's rows
    batch = select_samples(rows, groups, 2, scope="batch")  # 4 of 8 over the batch: the extremes of both groups
    assert sorted({rows[i].episode for i in batch}) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="scope"):
        select_samples(rows, groups, 2, scope="turn")


def test_episode_advantage_is_the_token_mean() -> None:
    rows = [_row(0, [1.0, 3.0]), _row(0, [2.0]), _row(1, [-1.0])]
    assert episode_advantages(rows) == {0: pytest.approx(2.0), 1: -1.0}


def test_keep_tokens_worked_example() -> None:
    """(|A|, H) = (1.5, 0.1), (1.5, 2.0), (0.5, 1.0): keys 0.15, 3.0, 0.5; K = 34 % keeps the second token."""
    rows = [_row(0, [1.5, -1.5]), _row(1, [0.5])]
    kept = keep_tokens(rows, [[0.1, 2.0], [1.0]], 0.34)
    assert [r.loss_weights for r in kept] == [[0.0, 1.0], [0.0]]
    two = keep_tokens(rows, [[0.1, 2.0], [1.0]], 0.67)  # floor(2.01) = 2: keys 3.0 and 0.5
    assert [r.loss_weights for r in two] == [[0.0, 1.0], [1.0]]
    assert [r.loss_weights for r in keep_tokens(rows, [[0.1, 2.0], [1.0]], 1.0)] == [[1.0, 1.0], [1.0]]
    with pytest.raises(ValueError, match="one value per action token"):
        keep_tokens(rows, [[0.1], [1.0]], 0.5)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        keep_tokens(rows, [[0.1, 2.0], [1.0]], 0.0)


def test_schedule_worked_example() -> None:
    """N_init 4, N_final 8 at p = 0.5 -> 6; p is clamped to [0, 1]."""
    assert schedule(4, 8, 0.5) == 6
    assert schedule(0.2, 0.5, 0.0) == 0.2
    assert schedule(0.2, 0.5, 2.0) == 0.5


def test_loop_filter_drops_rows_of_tied_groups() -> None:
    """LOOP's worked example: returns [1, 0, 0, 1, 1, 0] give leave-one-out advantages +-0.6 (kept); a group of equal
    returns gives 0 (dropped); a row is kept if any of its tokens reaches the threshold."""
    rows = [_row(0, [0.6]), _row(1, [-0.6]), _row(2, [0.0, 0.0]), _row(3, [0.005, -0.02]), _row(4, [0.009])]
    assert drop_small_advantages(rows, 0.01) == [0, 1, 3]


def test_row_entropies_slice_the_table_in_row_order() -> None:
    rows = [_row(0, [0.1, 0.2]), _row(1, [0.3])]
    assert row_entropies(rows, np.array([1.0, 2.0, 3.0])) == [[1.0, 2.0], [3.0]]
    assert row_entropies(rows, None) is None
    with pytest.raises(ValueError, match="4 entropies for rows of 3"):
        row_entropies(rows, np.zeros(4))


def test_loss_weights_leave_tokens_out_of_the_aggregation(tiny_policy: HFPolicy) -> None:
    """The learner's aggregation weights count only kept tokens: equal to the weights of the kept tokens' mask, 0 at
    the left-out ones, in every aggregation mode."""
    policy = tiny_policy
    rows = keep_tokens([_row(0, [1.0, 2.0, -1.0]), _row(1, [0.5, 0.1])], [[1.0, 1.0, 0.1], [1.0, 1.0]], 0.5)
    packed = pack_batch(rows, policy.pad_id)
    assert packed.loss_weights is not None
    kept = packed.loss_mask  # the top 2 of 5 by |A| * H: episode 0's first two tokens (keys 1.0 and 2.0)
    assert kept[0].tolist()[2:5] == [1.0, 1.0, 0.0] and float(kept[1].sum()) == 0.0
    for mode in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum"):
        cfg = ObjectiveConfig(aggregation=mode, weighting="episode")
        learner = Learner(policy, TrainConfig(guard_max_kl=None), cfg)
        weights = learner._weights(rows, packed)
        want = objectives.aggregation_weights(kept, mode, units=loss_units(rows, "episode"))
        assert torch.equal(weights, want.to(torch.float32))
        assert float(weights[kept == 0].abs().sum()) == 0.0


def test_token_entropies_match_the_full_distribution(tiny_policy: HFPolicy) -> None:
    policy = tiny_policy
    rows = [_row(0, [0.1, 0.2, 0.3], prompt=[3, 4, 5]), _row(1, [0.4], prompt=[6])]
    got = token_entropies(policy.model, rows, policy.pad_id, rows_per_pass=1, temperature=0.7)
    packed = pack_batch(rows, policy.pad_id)
    with torch.no_grad():
        _, entropy = full_logprobs(policy.model, packed.rows.input_ids, packed.rows.attention_mask, 0.7)
    mask = packed.rows.action_mask.bool()
    assert [len(h) for h in got] == [3, 1]
    for i, h in enumerate(got):
        assert h == pytest.approx(entropy[i][mask[i]].tolist(), abs=1e-5)


def test_the_loop_down_samples(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("eval.every=0", "iterations=2", "filters.d3s_samples=[2, 3]", "filters.d3s_tokens=[0.2, 0.6]")
    Trainer(cfg, tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert [r["select/d3s_samples_per_group"] for r in rows] == [2.0, 3.0]
    assert [r["select/d3s_token_share"] for r in rows] == [pytest.approx(0.2), pytest.approx(0.6)]
    assert all(r["select/rows_kept_share"] < 1 for r in rows)


def test_loop_preset_trains_with_its_filter(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("preset=loop", "eval.every=0")
    assert cfg.filters.min_abs_advantage == 0.01 and cfg.objective.name == "loop_clip" and cfg.credit.name == "rloo"
    Trainer(cfg, tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert all(0 <= r["select/rows_kept_share"] <= 1 for r in rows)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("filters.d3s_samples=[2, 9]", "more episodes per group than rollout.group_size"),
        ("filters.d3s_samples=[0, 2]", "d3s_samples must be >= 1"),
        ("filters.d3s_tokens=[0.0, 0.5]", r"shares in \(0, 1\]"),
        ("filters.d3s_scope=turn", "d3s_scope"),
    ],
)
def test_down_sampling_config_errors(tiny_cfg: Make, override: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_cfg(override)


def test_rows_without_loss_weights_count_whole_beside_down_sampled_ones(tiny_policy: HFPolicy) -> None:
    """Self-imitation rows join after down-sampling: their tokens count whole, the others' weights stay; a row
    without teacher log-probs is not distilled (NaN)."""
    kept = keep_tokens([_row(0, [1.0, 2.0])], [[1.0, 1.0]], 0.5)[0]
    plain = _row(1, [0.5, 0.5, 0.5])
    packed = pack_batch([kept, plain], tiny_policy.pad_id)
    assert packed.loss_mask[0].tolist()[2:4] == [0.0, 1.0] and packed.loss_mask[1].tolist()[2:5] == [1.0, 1.0, 1.0]
    taught = pack_batch([dataclasses.replace(plain, teacher_logprobs=[-1.0, -2.0, -3.0]), kept], tiny_policy.pad_id)
    assert taught.teacher_logprobs is not None
    assert taught.teacher_logprobs[0, 2:5].tolist() == [-1.0, -2.0, -3.0]
    assert torch.isnan(taught.teacher_logprobs[1, 2:4]).all()
    assert pack_batch([plain], tiny_policy.pad_id).loss_weights is None
