"""Regression: a real pre-collapse state from the learning grid, and the defaults and guard that hold it.

The fixture (tests/data/pre_collapse) is a keydoor 9x9 GiGPO run of the learning-efficiency grid after
3 iterations: the policy, its AdamW state and every 4th training row of iteration 4, with the
advantages the old defaults computed. Its end-of-turn token's mean log-prob was already down to
-0.084 (-0.001 two iterations earlier). With token-mean aggregation one optimizer step pushed it to
about -0.39; a fresh AdamW (a sign step on every parameter) to about -4.4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clew.policy import HFPolicy
from clew.policy.hf import token_logprobs
from clew.tensors import TokenRow, pack_batch
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.guard import probe_kl
from clew.trainer.learner import Learner

STATE = Path(__file__).parent.parent / "data" / "pre_collapse"


def _rows() -> tuple[list[TokenRow], int]:
    data = json.loads((STATE / "rows.json").read_text())
    rows = [TokenRow.from_dict(r) for r in data["rows"]]
    return rows, int(data["seed"])


def _end_of_turn_logprob(policy: HFPolicy, rows: list[TokenRow]) -> float:
    """Mean log-prob of the end-of-turn token where it was sampled (it closes every action)."""
    batch = pack_batch(rows, policy.pad_id)
    with torch.no_grad():
        logp, _ = token_logprobs(policy.model, batch.rows.input_ids, batch.rows.attention_mask)
    eot = rows[0].spans[-1][0][-1]
    where = (batch.rows.input_ids == eot) & batch.rows.action_mask.bool()
    return float(logp[where].mean())


def _one_update(train: TrainConfig, objective: ObjectiveConfig, adam_state: bool = True) -> tuple[float, float, dict]:
    torch.manual_seed(0)
    policy = HFPolicy.from_pretrained(STATE / "policy")
    rows, seed = _rows()
    learner = Learner(policy, train, objective)
    if adam_state:
        learner.optimizer.load_state_dict(torch.load(STATE / "optimizer.pt"))
    before = _end_of_turn_logprob(policy, rows)
    metrics = learner.update(rows, seed)
    return before, _end_of_turn_logprob(policy, rows), metrics


GRID = dict(lr=3e-4, minibatch_rows=256, microbatch_rows=128)


def test_the_old_defaults_collapse_from_this_state() -> None:
    """The state is a real pre-collapse state: token-mean, no guard drops end-of-turn by > 0.25 nats in one step."""
    before, after, _ = _one_update(TrainConfig(**GRID, guard_max_kl=None), ObjectiveConfig(aggregation="token_mean"))
    assert before == pytest.approx(-0.084, abs=0.005)
    assert after < before - 0.25


def test_the_new_defaults_hold() -> None:
    """Episode-weighted aggregation (the default) with the guard (on by default) repairs the token instead."""
    before, after, metrics = _one_update(TrainConfig(**GRID), ObjectiveConfig())
    assert ObjectiveConfig().aggregation == "seq_mean_token_mean" and TrainConfig().guard_max_kl is not None
    assert after > before and metrics["train/rejected_steps"] == 0


def test_the_guard_backs_off_a_sign_step() -> None:
    """A fresh AdamW moves every parameter by the full learning rate on its first step (-4.4 nats unguarded);
    the guard halves the step until the held-back probe moves by at most guard_max_kl, or rejects it."""
    train = TrainConfig(**GRID, guard_max_kl=0.05)
    before, after, metrics = _one_update(train, ObjectiveConfig(aggregation="token_mean"), adam_state=False)
    assert metrics["train/backtracks"] >= 1 and metrics["train/probe_kl"] > 0
    assert after > before - 0.3  # measured -0.084 -> -0.221 after 3 halvings
    _, unguarded, _ = _one_update(
        TrainConfig(**GRID, guard_max_kl=None), ObjectiveConfig(aggregation="token_mean"), adam_state=False
    )
    assert unguarded < before - 2.0


def test_probe_kl_is_k3_on_the_masked_tokens() -> None:
    # d = [-1, 0.5] on masked tokens: k3 = (e^-1 - 1 + 1) = 0.367879 and (e^0.5 - 1 - 0.5) = 0.148721; mean 0.2583
    before = torch.tensor([[0.0, -1.0, -2.0, 0.0]])
    after = torch.tensor([[9.0, -2.0, -1.5, 5.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert probe_kl(before, after, mask) == pytest.approx((0.367879 + 0.148721) / 2, abs=1e-6)
