"""On-policy distillation: the reverse-KL advantage and loss terms by hand, the quality gate, the tokenizer check,
the loop in both modes with a teacher given as a model directory and as a run directory."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clew.credit import Credit
from clew.objectives import teacher_kl
from clew.policy import HFPolicy
from clew.store.run import checkpoints, read_jsonl
from clew.store.trajectories import read_trajectories
from clew.table import TurnTable
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.distill import (
    check_same_tokenizer,
    gate_tokens,
    reverse_kl_advantage,
    with_teacher_advantage,
)
from clew.trainer.states import token_logprobs
from clew.types import Episode, Group, Turn

Make = Callable[..., RunConfig]


def _table(outcomes: list[float], actions: list[list[int]]) -> TurnTable:
    """One group, one turn per episode with the given action ids."""
    episodes = [
        Episode(task_id="t", group_id=0, seed=0, turns=[Turn([1, 2], ids, [-1.0] * len(ids), "a")], outcome=o)
        for o, ids in zip(outcomes, actions)
    ]
    return TurnTable.from_groups([Group(0, "t", 0, episodes)])


def test_reverse_kl_advantage_by_hand() -> None:
    """A_t = -coef (log pi_s - log pi_t) at gated tokens: coef 2, student [-1, -2, -0.5], teacher [-0.5, -3, -0.5]."""
    got = reverse_kl_advantage(np.array([-1.0, -2.0, -0.5]), np.array([-0.5, -3.0, -0.5]),
                               np.array([True, True, False]), 2.0)  # fmt: skip
    assert got.tolist() == [1.0, -2.0, 0.0]


def test_teacher_advantage_joins_the_turn_advantage_per_token() -> None:
    table = _table([1.0, 0.0], [[5, 6], [7]])
    credit = Credit(np.array([1.0, -1.0]), np.array([1.0, 0.0]))
    out = with_teacher_advantage(credit, table, np.array([0.1, 0.2, 0.3]))
    assert out.token_advantage is not None
    assert out.token_advantage.tolist() == pytest.approx([1.1, 1.2, -0.7])
    assert out.turn_advantage.tolist() == [1.0, -1.0]  # the estimator's own, for the store
    per_token = Credit(np.array([1.0, -1.0]), np.array([1.0, 0.0]), token_advantage=np.array([0.5, 1.5, -1.0]))
    assert with_teacher_advantage(per_token, table, np.ones(3)).token_advantage.tolist() == [1.5, 2.5, 0.0]


def test_gate_keeps_the_tokens_of_good_episodes() -> None:
    table = _table([1.0, 0.0, 0.5], [[5, 6], [7], [8, 9, 10]])
    assert gate_tokens(table, None).tolist() == [True] * 6
    assert gate_tokens(table, 0.5).tolist() == [True, True, False, True, True, True]
    assert gate_tokens(table, 1.0).tolist() == [True, True, False, False, False, False]


def test_teacher_kl_by_hand_and_its_gradient() -> None:
    """k2 = (log pi - log pi_t)^2 / 2 = 0.125 at the first token; a NaN teacher (gated out) and a masked token give 0
    and no gradient; k2's gradient is d * grad log pi."""
    logp = torch.tensor([[-1.0, -2.0, -0.3]], requires_grad=True)
    teacher = torch.tensor([[-1.5, float("nan"), -0.1]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    kl = teacher_kl(logp, teacher, mask, "k2")
    assert kl.tolist() == [[0.125, 0.0, 0.0]]
    kl.sum().backward()
    assert logp.grad is not None and logp.grad.tolist() == [[0.5, 0.0, 0.0]]
    assert teacher_kl(logp, teacher, mask, "k1").tolist() == [[0.5, 0.0, 0.0]]


def test_a_teacher_with_another_tokenizer_is_refused(tiny_policy: HFPolicy, tmp_path: Path) -> None:
    check_same_tokenizer(tiny_policy.tokenizer, tiny_policy.tokenizer, "same")
    other = HFPolicy.from_pretrained(_copy(tiny_policy, tmp_path)).tokenizer
    other.add_tokens(["<an-extra-token>"])
    with pytest.raises(ValueError, match=r"distill.teacher=other has another tokenizer .* 1 mapped differently"):
        check_same_tokenizer(other, tiny_policy.tokenizer, "other")


def _copy(policy: HFPolicy, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    policy.model.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
    return out


def _iterations(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]


@pytest.mark.parametrize("mode", ["advantage", "loss"])
def test_the_students_own_start_teaches_nothing(tiny_cfg: Make, tiny_dir: Path, tmp_path: Path, mode: str) -> None:
    """The teacher is the student's start: before the first update it scores every sampled token as the engine did
    (the reverse KL and the loss term are 0 to float rounding): the teacher sees the student's exact tokens."""
    cfg = tiny_cfg("eval.every=0", "iterations=1", f"distill.teacher={tiny_dir}", f"distill.mode={mode}")
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = _iterations(tmp_path / "run")
    assert abs(row["distill/reverse_kl"]) < 1e-5
    assert row["distill/gated_episode_share"] == 1.0
    assert row.get("distill/kl_loss", 0.0) < 1e-9
    assert ("distill/kl_loss" in row) == (mode == "loss")


@pytest.fixture(scope="module")
def teacher_run(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose last checkpoint is the tiny model after a short SFT: a teacher unlike the student."""
    from clew.trainer.config import load_config

    run = tmp_path_factory.mktemp("teacher") / "run"
    overrides = [f"policy.model={tiny_dir}", "iterations=1", "tasks_per_iteration=1", "rollout.group_size=2",
                 "env.kwargs={width: 3, height: 3, max_steps: 5}", "rollout.max_new_tokens=3", "eval.every=0",
                 "sft.enabled=true", "sft.episodes=8", "sft.epochs=1", "sft.lr=0.003"]  # fmt: skip
    Trainer(load_config(None, overrides), run).fit()
    return run


@pytest.mark.parametrize("mode", ["advantage", "loss"])
def test_a_run_directory_teaches(tiny_cfg: Make, teacher_run: Path, tmp_path: Path, mode: str) -> None:
    """A run directory as the teacher is its last checkpoint's policy; its tokens' reverse KL to the student is not 0;
    a gate above every outcome distills nothing (and then the loss mode has no term to log)."""
    cfg = tiny_cfg("eval.every=0", "iterations=1", f"distill.teacher={teacher_run}", f"distill.mode={mode}")
    Trainer(cfg, tmp_path / "student").fit()
    (row,) = _iterations(tmp_path / "student")
    assert abs(row["distill/reverse_kl"]) > 1e-3
    assert row.get("distill/kl_loss", 1.0) > 1e-6
    if mode == "advantage":  # every stored token's advantage = the estimator's + (teacher - behaviour) log-prob
        teacher = HFPolicy.from_pretrained(checkpoints(teacher_run)[-1] / "policy")
        for turn in read_trajectories(tmp_path / "student" / "trajectories" / "iter_000001.parquet"):
            want = token_logprobs(teacher.model, [(turn["prompt_ids"], turn["action_ids"])], teacher.pad_id, 8)
            want += turn["advantage"] - np.asarray(turn["behavior_logprobs"])
            assert turn["token_advantages"] == pytest.approx(want.tolist(), abs=1e-5)
    gated = tiny_cfg("eval.every=0", "iterations=1", f"distill.teacher={teacher_run}", f"distill.mode={mode}",
                     "distill.gate=2.0")  # fmt: skip
    Trainer(gated, tmp_path / "gated").fit()
    (row,) = _iterations(tmp_path / "gated")
    assert row["distill/gated_episode_share"] == 0.0
    assert row.get("distill/kl_loss", 0.0) == 0.0


def test_another_tokenizer_stops_the_run_before_training(tiny_cfg: Make, tiny_policy: HFPolicy, tmp_path: Path) -> None:
    path = _copy(tiny_policy, tmp_path)
    tok = HFPolicy.from_pretrained(path).tokenizer
    tok.add_tokens(["<an-extra-token>"])
    tok.save_pretrained(path)
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
    with pytest.raises(ValueError, match="has another tokenizer"):
        Trainer(tiny_cfg("eval.every=0", f"distill.teacher={path}"), tmp_path / "run").fit()
