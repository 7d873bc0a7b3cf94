"""Data-parallel learner ranks: two ranks update exactly as one learner with the same global batch."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from clew.policy import HFPolicy
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.distributed import LearnerFailed, LearnerGroup
from clew.trainer.learner import Learner
from tests.trainer.test_learner import _rows

TRAIN = TrainConfig(lr=1e-3, minibatch_rows=8, microbatch_rows=2, ppo_epochs=2)  # 4 microbatches per step, guard on
OBJECTIVE = ObjectiveConfig(aggregation="seq_mean_token_mean", weighting="episode")


def _params(model: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_update_as_one_learner(ray_cluster: Any, tiny_dir: Path, tiny_policy: HFPolicy, ranks: int) -> None:
    """Same weights, optimizer state and metrics up to float summation order (atol 1e-6 on weights); with
    3 ranks and 4 microbatches the ranks hold unequal shares, which must not change any row's weight."""
    rows = _rows(tiny_policy, merge=False)[:16]
    one = Learner(HFPolicy.from_pretrained(tiny_dir), TRAIN, OBJECTIVE)
    expected = one.update(rows, seed=0)
    group = LearnerGroup(HFPolicy.from_pretrained(tiny_dir), TRAIN, OBJECTIVE, 1.0, None, ranks=ranks)
    try:
        got = group.update(rows, seed=0)
        start = _params(tiny_policy.model)
        assert any(not torch.equal(a, b) for a, b in zip(_params(one.model), start))  # the update did something
        for a, b in zip(_params(one.model), _params(group.policy.model)):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
        assert group.steps == one.steps == 4
        assert set(got) == set(expected)
        for key, value in expected.items():
            if not key.startswith("time/"):  # seconds per stage differ between processes
                assert got[key] == pytest.approx(value, abs=1e-5, rel=1e-4), key
        remote_state = group.optimizer.state_dict()["state"]
        for index, state in one.optimizer.state_dict()["state"].items():
            torch.testing.assert_close(remote_state[index]["exp_avg"], state["exp_avg"], atol=1e-7, rtol=1e-4)
    finally:
        group.close()


def test_optimizer_state_and_step_count_reach_every_rank(
    ray_cluster: Any, tiny_dir: Path, tiny_policy: HFPolicy
) -> None:
    """What resume does: load optimizer state and the step counter into new ranks, then update on."""
    rows = _rows(tiny_policy, merge=False)[:16]
    one = Learner(HFPolicy.from_pretrained(tiny_dir), TRAIN, OBJECTIVE)
    one.update(rows, seed=0)
    saved_model, saved_optimizer = copy.deepcopy(one.model.state_dict()), copy.deepcopy(one.optimizer.state_dict())
    steps = one.steps
    one.update(rows, seed=1)
    policy = HFPolicy.from_pretrained(tiny_dir)
    policy.model.load_state_dict(saved_model)
    group = LearnerGroup(policy, TRAIN, OBJECTIVE, 1.0, None, ranks=2)
    try:
        group.optimizer.load_state_dict(saved_optimizer)
        group.steps = steps
        group.restore_guard(one.guard_rows() or [])  # what resume does with the probe saved in the checkpoint
        assert group.guard_rows() == one.guard_rows()
        group.update(rows, seed=1)
        assert group.steps == one.steps
        for a, b in zip(_params(one.model), _params(group.policy.model)):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5)
    finally:
        group.close()


def test_a_rank_that_dies_stops_the_group(ray_cluster: Any, tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    rows = _rows(tiny_policy, merge=False)[:8]
    group = LearnerGroup(HFPolicy.from_pretrained(tiny_dir), TRAIN, OBJECTIVE, 1.0, None, ranks=2)
    ray_cluster.get(group.workers[1].fail_next.remote())
    with pytest.raises(LearnerFailed, match=r"learner rank 1 of 2 failed.*--resume"):
        group.update(rows, seed=0)
