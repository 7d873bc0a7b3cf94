"""Reward sources in the loop, against a real HTTP judge (``tests.rewards.judge_server``): a run whose only reward
is a judge trains end to end on a task without a verifier; process scores arrive as step rewards for a step-level
estimator; a judge that breaks makes its episodes ``infra`` and the monitor stops the run."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from clew.store.run import read_jsonl
from clew.store.trajectories import read_trajectories
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from tests.rewards.judge_server import serve

Make = Callable[..., RunConfig]


def _judge(url: str, name: str = "judge", weight: float = 1.0, **params: object) -> str:
    extra = "".join(f", {k}: {v}" for k, v in params.items())
    return f"{{name: {name}, weight: {weight}, params: {{url: '{url}', model: judge{extra}}}}}"


def _fit(cfg: RunConfig, out: Path) -> list[dict[str, object]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(cfg, out).fit()
    return read_jsonl(out / "metrics.jsonl")


def test_a_judge_is_the_only_reward_on_a_task_without_a_verifier(tiny_cfg: Make, tmp_path: Path) -> None:
    with serve("length") as server:
        cfg = tiny_cfg("env.id=instruct-v0", "rollout.max_new_tokens=6", "rollout.max_turns=1",
                       f"rewards=[{_judge(server.url)}]", "judging.success_threshold=0.3", env_kwargs="{}")  # fmt: skip
        records = _fit(cfg, tmp_path / "run")
    its = [r for r in records if r["kind"] == "iteration"]
    assert len(its) == 2 and all(r["judge/calls"] > 0 for r in its)
    assert all(0 <= r["rewards/judge/mean"] <= 1 and r["rewards/judge_failed_share"] == 0 for r in its)
    assert "train/loss" in its[0] or "train/optimizer_steps" in its[0]
    turns = read_trajectories(tmp_path / "run" / "trajectories" / "iter_000001.parquet")
    for turn in turns:  # the outcome is the judge's words / 10 of the very text the policy wrote
        assert turn["outcome"] == pytest.approx(min(10, len(turn["action_text"].split())) / 10)
        assert json.loads(turn["info"])["rewards"] == {"judge": pytest.approx(turn["outcome"])}
        assert turn["success"] == (turn["outcome"] >= 0.3)
    evals = [r for r in records if r["kind"] == "eval"]
    assert evals and all("eval/rewards/judge/mean" in r for r in evals)


def test_process_scores_are_the_step_rewards_of_a_step_level_estimator(tiny_cfg: Make, tmp_path: Path) -> None:
    with serve("length") as server:
        rewards = f"[{{name: verifier}}, {_judge(server.url, 'process', 0.5)}]"
        cfg = tiny_cfg("env.id=toolcalc-v0", "preset=turn_returns", "iterations=1", f"rewards={rewards}",
                       env_kwargs="{n_ops: 2}")  # fmt: skip
        _fit(cfg, tmp_path / "run")
    turns = read_trajectories(tmp_path / "run" / "trajectories" / "iter_000001.parquet")
    assert turns
    for turn in turns:
        info = json.loads(turn["info"])
        assert turn["reward"] == pytest.approx(0.5 * info["process"]["process"])
        assert turn["outcome"] == pytest.approx(info["rewards"]["verifier"]) if "rewards" in info else True
        assert turn["outcome_explicit"]


def test_a_broken_judge_is_infra_and_the_monitor_stops_the_run(tiny_cfg: Make, tmp_path: Path) -> None:
    with serve("garbage") as server:
        judge = f"rewards=[{_judge(server.url)}]"
        cfg = tiny_cfg("env.id=instruct-v0", "rollout.max_turns=1", "iterations=3", judge, "monitor.window=1",
                       "monitor.stop_on=[judge_failures]", "eval.every=0", env_kwargs="{}")  # fmt: skip
        records = _fit(cfg, tmp_path / "run")
    its = [r for r in records if r["kind"] == "iteration"]
    assert len(its) == 1 and its[0]["rollout/error_rate_infra"] == 1.0 and its[0]["monitor/judge_failures"] == 1.0
    assert "judge_failures" in [r["detector"] for r in records if r["kind"] == "monitor"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["monitor"]["stopped_by"] == ["judge_failures"]


def test_reward_sources_are_validated(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match="unknown params"):
        tiny_cfg("rewards=[{name: judge, params: {rubrik: x}}]")
    with pytest.raises(ValueError, match="appear twice"):
        tiny_cfg("rewards=[{name: judge}, {name: judge}]")
    with pytest.raises(ValueError, match="scale"):
        tiny_cfg("rewards=[{name: judge, params: {scale: [5, 1]}}]")
