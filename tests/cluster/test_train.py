"""Training on a local Ray cluster: the same run as in one process, and faults that a run survives or resumes from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clew.policy.remote import RayEngines
from clew.trainer import Trainer, load_config
from clew.trainer.config import RunConfig
from clew.trainer.distributed import LearnerFailed, LearnerGroup

CLUSTER = "cluster={rollout_workers: 2, learners: 2, env_workers: 1, worker_cpus: 0}"
EXACT = ("rollout/success_rate", "rollout/mean_return", "rollout/mean_turns", "train/rows", "train/optimizer_steps")
CLOSE = ("train/loss", "train/grad_norm", "policy/entropy", "train/probe_kl", "train/clip_fraction")


def _cfg(tiny_dir: Path, *overrides: str) -> RunConfig:
    base = [
        f"policy.model={tiny_dir}", "iterations=3", "tasks_per_iteration=3", "seed=5",
        "env.kwargs={width: 3, height: 3, max_steps: 6}", "rollout.group_size=4", "rollout.max_turns=6",
        "rollout.max_new_tokens=3", "rollout.context=window", "train.minibatch_rows=32", "train.microbatch_rows=8",
        "eval.every=0", "eval.at_start=false", "eval.episodes=8", "sft.enabled=true", "sft.episodes=16",
        "sft.epochs=2", "shaping.invalid_action_penalty=0.1",
        "rollout.parity_probe_every=1",  # every sync of the remote engines is probed: the tests read each one
    ]  # fmt: skip
    return load_config(None, [*base, *overrides])


def _iterations(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("kind") == "iteration"]


def test_two_engines_and_two_learner_ranks_train_as_one_process(
    ray_cluster: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    """With a fixed seed (and max_staleness 0, the synchronous algorithm) every iteration's rollout metrics are
    equal and the learner's agree to 1e-5: ranks sum gradients in another order, nothing else differs."""
    Trainer(_cfg(tiny_dir), tmp_path / "one").fit()
    Trainer(_cfg(tiny_dir, CLUSTER), tmp_path / "ray").fit()
    one, ray = _iterations(tmp_path / "one"), _iterations(tmp_path / "ray")
    assert len(one) == len(ray) == 3
    for a, b in zip(one, ray):
        for key in EXACT:
            assert b[key] == a[key], key
        for key in CLOSE:
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5, rel=1e-4), key
        assert b["engine/logprob_max_abs_diff"] <= 1e-5 and b["engine/worker_restarts"] == 0
    evals = [json.loads(x) for x in (tmp_path / "ray" / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval/success_rate"] for r in evals if r.get("kind") == "eval"] == [
        r["eval/success_rate"] for r in map(json.loads, (tmp_path / "one" / "metrics.jsonl").read_text().splitlines())
        if r.get("kind") == "eval"
    ]  # fmt: skip


def test_a_rollout_worker_that_dies_mid_iteration_is_restarted_and_the_run_completes(
    ray_cluster: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    trainer = Trainer(_cfg(tiny_dir, CLUSTER), tmp_path / "run")

    def fault(kind: str, record: dict[str, Any]) -> None:
        if kind == "iteration" and record["iteration"] == 1:  # after iteration 0: dies in iteration 1's rollout
            assert trainer.session is not None and trainer.session.link is not None
            engine = trainer.session.link.engine
            assert isinstance(engine, RayEngines)
            ray_cluster.get(engine.workers[0].fail_next.remote())

    trainer.report = fault
    summary = trainer.fit()
    assert summary["iterations"] == 3
    its = _iterations(tmp_path / "run")
    assert all(r["rollout/error_rate"] == 0 for r in its)  # worker 0's requests were sampled again
    assert its[1]["engine/worker_restarts"] == 1
    assert all("train/loss" in r for r in its)
    assert its[2]["engine/logprob_max_abs_diff"] <= 1e-5  # the restarted worker samples from the trained weights


def test_a_learner_rank_that_dies_stops_the_run_and_resume_finishes_it(
    ray_cluster: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_dir, CLUSTER)
    trainer = Trainer(cfg, tmp_path / "run")

    def fault(kind: str, record: dict[str, Any]) -> None:
        if kind == "iteration" and record["iteration"] == 1:
            assert trainer.session is not None
            learner = trainer.session.learner
            assert isinstance(learner, LearnerGroup)
            ray_cluster.get(learner.workers[1].fail_next.remote())

    trainer.report = fault
    with pytest.raises(LearnerFailed, match="--resume"):
        trainer.fit()
    assert [r["iteration"] for r in _iterations(tmp_path / "run")] == [1]
    summary = Trainer(cfg, tmp_path / "run").fit(resume=True)
    assert summary["iterations"] == 3
    assert [r["iteration"] for r in _iterations(tmp_path / "run")] == [1, 2, 3]
    uninterrupted = tmp_path / "whole"
    Trainer(cfg, uninterrupted).fit()
    for a, b in zip(_iterations(uninterrupted), _iterations(tmp_path / "run")):
        assert b["rollout/success_rate"] == a["rollout/success_rate"]
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-6)


def test_max_staleness_one_overlaps_the_next_rollout_with_the_update(
    ray_cluster: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    """Iteration i+1 is sampled while update i runs, by the weights before it: one update behind, TIS on.
    (max_staleness 0 is the synchronous algorithm: the equivalence test above.)"""
    cfg = _cfg(tiny_dir, CLUSTER, "rollout.max_staleness=1")
    assert cfg.objective.tis_cap == 2.0  # on by default off-policy
    Trainer(cfg, tmp_path / "run").fit()
    its = _iterations(tmp_path / "run")
    assert [r["rollout/staleness"] for r in its] == [0, 1, 1]
    assert all("policy/is_weight_mean" in r for r in its)
    assert its[0]["time/rollout_ahead_s"] > 0 and "time/rollout_ahead_s" not in its[2]  # no iteration 3 to roll out
    assert its[1]["policy/is_weight_mean"] != pytest.approx(1.0, abs=1e-9)  # behaviour != proximal weights


def test_a_lora_policy_reaches_remote_engines_as_merged_weights(
    ray_cluster: Any, tiny_dir: Path, tmp_path: Path
) -> None:
    lora = "policy.lora={r: 4, alpha: 8, target_modules: all-linear}"
    Trainer(_cfg(tiny_dir, lora, "iterations=2"), tmp_path / "one").fit()
    Trainer(_cfg(tiny_dir, lora, "iterations=2", CLUSTER), tmp_path / "ray").fit()
    for a, b in zip(_iterations(tmp_path / "one"), _iterations(tmp_path / "ray"), strict=True):
        assert b["rollout/success_rate"] == a["rollout/success_rate"]
        assert b["train/loss"] == pytest.approx(a["train/loss"], abs=1e-5)
        assert b["engine/logprob_max_abs_diff"] <= 1e-5
