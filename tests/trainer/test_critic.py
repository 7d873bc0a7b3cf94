"""PPO with GAE: the value head's values, its loss in the update, warm-up, the guard, checkpoints, refusals."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clew.policy import HFPolicy
from clew.store.run import checkpoints, read_jsonl
from clew.tensors import TokenRow
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.critic import HEAD_FILE, Critic
from clew.trainer.guard import StepGuard
from clew.trainer.sections import CriticConfig

Make = Callable[..., RunConfig]
REWARDED = ["env.id=tests.test_table:ReportsOutcome", "eval.every=0", "eval.at_start=false", "eval.at_end=false"]


def _head(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoints(run)[-1] / HEAD_FILE, weights_only=True)


def _policy(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1] / "policy" / "model.safetensors"))


def test_token_values_read_the_hidden_state_that_scores_each_action_token(tiny_policy: HFPolicy) -> None:
    critic = Critic(tiny_policy.model, CriticConfig(value_coef=0.1))
    torch.manual_seed(0)
    torch.nn.init.normal_(critic.head.linear.weight)
    turns = [([5, 6, 7], [8, 9]), ([5], [10, 11, 12])]
    values = critic.token_values(tiny_policy.model, turns, tiny_policy.pad_id, rows_per_pass=1)
    expected = []
    for prompt, action in turns:
        with torch.no_grad():
            hidden = tiny_policy.model(torch.tensor([prompt + action]), output_hidden_states=True).hidden_states[-1][0]
            expected += critic.head(hidden[len(prompt) - 1 : -1]).tolist()  # position t - 1 scores token t
    np.testing.assert_allclose(values, expected, atol=1e-5)
    assert values.shape == (5,)


def test_ppo_trains_the_value_head_and_reports_it(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("preset=ppo", "iterations=3", *REWARDED)
    Trainer(cfg, tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert rows[0]["credit/value_mean"] == 0.0  # zero-initialised head
    assert rows[-1]["credit/value_mean"] != 0.0 and all(r["critic/value_loss"] > 0 for r in rows)
    assert all("credit/explained_variance" in r for r in rows)
    assert float(_head(tmp_path / "run")["linear.weight"].abs().sum()) > 0


def test_warm_up_fits_the_head_alone(tiny_cfg: Make, tiny_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_cfg("preset=ppo", "iterations=1", "critic.warmup_steps=1000", "train.guard_max_kl=null", *REWARDED)
    Trainer(cfg, tmp_path / "warm").fit()
    before = load_file(str(tiny_dir / "model.safetensors"))  # the policy the run started from
    after = _policy(tmp_path / "warm")
    assert all(torch.equal(before[k], after[k]) for k in before)  # the policy did not move
    assert float(_head(tmp_path / "warm")["linear.bias"].abs().sum()) > 0


def test_a_critic_run_resumes_bit_exact(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("preset=ppo", "iterations=3", *REWARDED)
    Trainer(cfg, tmp_path / "full").fit()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    for get in (_head, _policy):
        full, split = get(tmp_path / "full"), get(tmp_path / "split")
        assert all(torch.equal(full[k], split[k]) for k in full)


def test_a_rejected_step_rolls_the_value_head_back_too(tiny_policy: HFPolicy) -> None:
    critic = Critic(tiny_policy.model, CriticConfig(value_coef=0.1))
    row = TokenRow([([5, 6], False), ([7, 8], True)], [1.0, 1.0], [-1.0, -1.0], 0)
    guard = StepGuard(tiny_policy.model, [row], tiny_policy.pad_id, -1.0, 1.0, critic.params)  # rejects every step
    params = [*tiny_policy.model.parameters(), *critic.params]
    optimizer = torch.optim.AdamW(params, lr=0.1)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.ones_like(p)
    guard.snapshot(optimizer)
    optimizer.step()
    accepted, _ = guard.check(optimizer)
    assert not accepted and all(torch.equal(p, b) for p, b in zip(params, before))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["credit.name=gae"], r"reads a value head; set critic\.value_coef > 0"),
        (["credit.name=grpo", "critic.value_coef=0.1"], r"never reads.*gae"),
    ],
)
def test_refusals_name_the_fix(tiny_cfg: Make, overrides: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_cfg(*overrides)


def test_remax_plays_each_task_greedily_and_subtracts_its_return(tiny_cfg: Make, tmp_path: Path) -> None:
    """ReportsOutcome (one step: reward 0.1, then an outcome of 1 or -0.5 by seed) scores every action alike: the
    greedy return (0.1 + the outcome, counted as credit counts it) equals every sample's, so every advantage is 0."""
    import pyarrow.parquet as pq

    cfg = tiny_cfg("preset=remax", "iterations=1", "env.kwargs.steps=1", *REWARDED)
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert row["rollout/greedy_env_steps"] == 2  # 2 tasks x 1 step
    assert row["credit/greedy_return_mean"] == pytest.approx(0.1 + (1.0 - 0.5) / 2)
    assert row["time/credit_baseline_s"] > 0
    stored = pq.read_table(tmp_path / "run" / "trajectories" / "iter_000001.parquet").to_pylist()
    assert [r["advantage"] for r in stored] == pytest.approx([0.0] * 8)  # 2 tasks x 4 samples
