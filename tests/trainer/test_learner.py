"""Learner equivalences: gradient accumulation and merged multi-turn rows."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from clew.objectives import aggregation_weights, available, compute
from clew.policy import HFPolicy
from clew.policy.hf import token_logprobs
from clew.rollout import Framing, RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.table import TurnTable
from clew.tensors import TokenRow, pack_batch
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.learner import Learner


def _groups(policy: HFPolicy, context: str = "full") -> list:
    actor = ScriptedActor("expert", noise=0.5, tokenizer=policy.tokenizer)
    cfg = RolloutConfig(group_size=2, max_turns=6, context=context)
    tasks = [Task("keydoor-v0", 3, {"width": 4, "height": 4}), Task("toolcalc-v0", 4)]
    return collect(actor, tasks, cfg, 0, Framing(policy.tokenizer, policy.chat))


def _rows(policy: HFPolicy, merge: bool, context: str = "full") -> list[TokenRow]:
    table = TurnTable.from_groups(_groups(policy, context))
    rng = np.random.default_rng(0)
    rows = to_rows(table, rng.normal(size=table.n_turns), merge_prefix=merge)
    # pretend the behaviour policy was slightly different so ratios are not all 1
    return [
        TokenRow(r.spans, r.advantages, [x - 0.05 * rng.random() for x in r.behavior_logprobs], r.episode, r.turns)
        for r in rows
    ]


def _loss_and_grads(
    policy: HFPolicy, rows: list[TokenRow], aggregation: str, objective: str = "ppo_clip"
) -> tuple[float, list[torch.Tensor]]:
    model = policy.model
    model.zero_grad()
    batch = pack_batch(rows, policy.pad_id)
    logp, _ = token_logprobs(model, batch.rows.input_ids, batch.rows.attention_mask)
    loss, _ = compute(objective, logp, batch.old_logprobs, batch.advantages, batch.rows.action_mask)
    w = aggregation_weights(batch.rows.action_mask, aggregation, units=batch.episode_ids)
    total = (w.to(loss.dtype) * loss).sum()
    total.backward()
    return float(total.detach()), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    "aggregation, objective",
    [(agg, "ppo_clip") for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum")]
    + [("seq_mean_token_mean", name) for name in sorted(available()) if name != "ppo_clip"],
)
def test_merge_prefix_gives_same_loss_and_gradients(tiny_policy: HFPolicy, aggregation: str, objective: str) -> None:
    """Every objective, sequence-level ones included, sees each turn of a merged row as its own sequence."""
    per_turn = _rows(tiny_policy, merge=False)
    merged = _rows(tiny_policy, merge=True)
    assert len(merged) < len(per_turn) and sum(r.turns for r in merged) == len(per_turn)
    assert sum(r.n_tokens for r in merged) < sum(r.n_tokens for r in per_turn)
    loss_a, grads_a = _loss_and_grads(tiny_policy, per_turn, aggregation, objective)
    loss_b, grads_b = _loss_and_grads(tiny_policy, merged, aggregation, objective)
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    for ga, gb in zip(grads_a, grads_b):
        torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-4)


def test_merge_prefix_keeps_fractured_turns_apart(tiny_policy: HFPolicy) -> None:
    """Under a window context prompts do not extend each other: nothing is merged."""
    rows = _rows(tiny_policy, merge=True, context="window")
    assert all(r.turns == 1 for r in rows)


def _update(tiny_dir: Path, rows: list[TokenRow], microbatch: int, weighting: str = "episode") -> list[torch.Tensor]:
    policy = HFPolicy.from_pretrained(tiny_dir)
    train = TrainConfig(lr=1e-3, minibatch_rows=8, microbatch_rows=microbatch, guard_max_kl=None)
    objective = ObjectiveConfig(aggregation="seq_mean_token_mean", weighting=weighting)  # type: ignore[arg-type]
    Learner(policy, train, objective).update(rows, seed=0)
    return [p.detach().clone() for p in policy.model.parameters()]


@pytest.mark.parametrize(("merge", "weighting"), [(False, "episode"), (True, "turn"), (True, "segment")])
def test_gradient_accumulation_1x8_equals_8x1(
    tiny_dir: Path, tiny_policy: HFPolicy, merge: bool, weighting: str
) -> None:
    rows = _rows(tiny_policy, merge=merge)[:8]
    one = _update(tiny_dir, rows, microbatch=8, weighting=weighting)
    eight = _update(tiny_dir, rows, microbatch=1, weighting=weighting)
    start = [p.detach() for p in tiny_policy.model.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(one, start))  # the update did something
    for a, b in zip(one, eight):  # float32 sums the microbatches in another order: ~1e-6 apart on some CPUs
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_non_finite_loss_skips_the_step(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    rows = _rows(tiny_policy, merge=False)[:4]
    bad = [TokenRow(r.spans, [float("nan")] * len(r.advantages), r.behavior_logprobs, r.episode) for r in rows]
    policy = HFPolicy.from_pretrained(tiny_dir)
    before = copy.deepcopy([p.detach() for p in policy.model.parameters()])
    learner = Learner(policy, TrainConfig(), ObjectiveConfig())
    metrics = learner.update(bad, seed=0)
    assert metrics["train/skipped_steps"] == 1.0 and learner.steps == 0
    for a, b in zip(before, policy.model.parameters()):
        assert torch.equal(a, b.detach())
