"""Correctness round 3 in the learner: episode weights over the whole batch, no dropout in the loss forward."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import torch

from clew.policy import HFPolicy
from clew.policy import lora as lora_lib
from clew.policy.hf import token_logprobs
from clew.tensors import TokenRow, pack_batch
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.learner import Learner
from clew.trainer.torch_helpers import chunks, training_mode


def _episode_rows(lengths: list[int]) -> list[TokenRow]:
    """One row per turn: episode e has ``lengths[e]`` turn rows of 2 action tokens each."""
    rows = []
    for episode, n in enumerate(lengths):
        for t in range(n):
            rows.append(TokenRow([([1, 2, 3], False), ([4 + t, 5], True)], [1.0, 1.0], [-1.0, -1.0], episode))
    return rows


class _Recording(Learner):
    """Records the weights each step receives per episode instead of training."""

    def __init__(self, policy: HFPolicy, train: TrainConfig, objective: ObjectiveConfig) -> None:
        super().__init__(policy, train, objective)
        self.per_episode: dict[int, float] = defaultdict(float)

    def _step(self, packed, micro, weights, guard, clock, proximal_from_forward=False):  # type: ignore[no-untyped-def,override]
        for i in (i for rows in micro for i in rows):
            self.per_episode[int(packed.episode_ids[i])] += float(weights[i].sum())
        return {}


@pytest.mark.parametrize("minibatch_rows", [1, 3, 5, 8, 18, 64])
@pytest.mark.parametrize("weighting", ["episode", "segment"])
def test_each_episode_weighs_alike_over_an_epoch(tiny_policy: HFPolicy, minibatch_rows: int, weighting: str) -> None:
    # a keydoor-demo-shaped batch: 16-turn and 2-turn episodes; rows shuffled one by one into minibatches
    rows = _episode_rows([16, 2, 16, 2])
    train = TrainConfig(minibatch_rows=minibatch_rows, guard_max_kl=None)
    objective = ObjectiveConfig(aggregation="seq_mean_token_mean", weighting=weighting)  # type: ignore[arg-type]
    learner = _Recording(tiny_policy, train, objective)
    learner.update(rows, seed=0)
    n_steps = len(list(chunks(range(len(rows)), minibatch_rows)))
    totals = list(learner.per_episode.values())
    assert len(totals) == 4
    # 4 episodes share the epoch's n_steps units of weight equally (each step's weights sum to 1 on average)
    assert totals == pytest.approx([n_steps / 4] * 4, rel=1e-6)


def test_first_ppo_ratio_is_one_with_lora_dropout(tiny_dir: Path) -> None:
    policy = HFPolicy.from_pretrained(tiny_dir)
    policy.model = lora_lib.attach(policy.model, r=4, alpha=8, dropout=0.5, target_modules=["q_proj", "v_proj"])
    with torch.no_grad():  # lora_B starts at 0, which would hide the dropout on the adapter's input
        for name, param in policy.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(1))
    rows = _episode_rows([3])
    batch = pack_batch(rows, policy.pad_id)
    ids, mask = batch.rows.input_ids, batch.rows.attention_mask
    policy.model.eval()
    with torch.no_grad():
        old = token_logprobs(policy.model, ids, mask)[0]  # how the engine / TIS re-scoring see the policy
        policy.model.train()
        torch.manual_seed(0)
        live = token_logprobs(policy.model, ids, mask)[0]
        assert not torch.allclose(live, old)  # dropout is live in plain train mode: this is what failed
        with training_mode(policy.model):
            loss_forward = token_logprobs(policy.model, ids, mask)[0]
    assert policy.model.training is False  # back in eval mode afterwards
    torch.testing.assert_close(loss_forward, old)  # ratio exp(new - old) = 1 on the first step


def test_reinforce_pp_kl_in_reward_in_the_loop(tiny_cfg, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The trainer scores each turn under the reference when the estimator asks for it: KL 0 before any update
    (the reference is the starting policy), positive once the policy has moved."""
    from clew.store.run import read_jsonl
    from clew.trainer import Trainer

    cfg = tiny_cfg("preset=reinforce_pp", "credit.params={group_baseline: false, kl_coef: 0.1}", "eval.every=0",
                   "eval.at_start=false", "eval.at_end=false", "train.lr=0.01")  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    kl = [r["credit/kl_in_reward_mean"] for r in rows]
    assert kl[0] == pytest.approx(0.0, abs=1e-5)
    assert kl[1] != pytest.approx(0.0, abs=1e-5)


def test_dropout_stays_off_after_a_guarded_step(tiny_dir: Path) -> None:
    """The step guard scores its probe in eval mode; restoring train mode must not switch dropout back on."""
    from clew.trainer.guard import StepGuard

    policy = HFPolicy.from_pretrained(tiny_dir)
    policy.model = lora_lib.attach(policy.model, r=4, alpha=8, dropout=0.5, target_modules=["q_proj", "v_proj"])
    with training_mode(policy.model):
        guard = StepGuard(policy.model, _episode_rows([2]), policy.pad_id, max_kl=1.0, temperature=1.0)
        guard.check(torch.optim.SGD(lora_lib.trainable(policy.model), lr=0.0))
        dropouts = [m for m in policy.model.modules() if isinstance(m, torch.nn.Dropout)]
        assert dropouts and not any(m.training for m in dropouts)
        assert policy.model.training  # the rest stays in train mode (gradient checkpointing keys on it)
