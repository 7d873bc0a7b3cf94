"""A user's agent loop trains through the gateway (``harness:`` in the config): the CLI runs it, credit and the
learner use what the gateway recorded, and a harness that raises or hangs is a recorded failure, not a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clew.cli import main
from clew.gateway import Gateway, GatewayConfig
from clew.gateway.harness import Harness
from clew.policy import HFEngine, HFPolicy
from clew.rollout import Task

pytest.importorskip("openai", reason="a harness gets an openai.AsyncOpenAI client: pip install openai")
LAB = "tests.e2e.harness_lab"
FILE = Path(__file__).with_name("harness_lab.py")  # a file path works too, as for plug-ins


def test_harness_groups_and_typed_failures(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> None:
    harness = Harness(f"{LAB}:run", f"{LAB}:flaky_tasks", timeout_s=5.0)
    tasks = [Task("harness", seed, {}) for seed in (3, 4, 5)]  # seed % 3: 0 fails, 1 hangs, 2 finishes
    with Gateway(tiny_engine, tiny_policy.tokenizer, GatewayConfig(max_tokens=3)) as gateway:
        groups = harness.collect(gateway, tasks, group_size=2, seed=11, temperature=1.0)
        assert not gateway.sessions.open_keys()  # every session closed, the failed ones too
    assert [len(g.episodes) for g in groups] == [2, 2, 2] and [g.seed for g in groups] == [3, 4, 5]
    failed, hung, done = (g.episodes for g in groups)
    assert all(e.failure == "policy" and "parser choked" in (e.error or "") and len(e.turns) == 1 for e in failed)
    assert all(e.failure == "policy" and e.error == "timeout" for e in hung)
    assert all(e.error is None and len(e.turns) == 2 and "said" in e.turns[-1].info for e in done)
    assert all(e.turns[-1].info["success"] == (e.outcome == 1.0) for e in done)


def test_rewards_that_miscount_the_calls_are_a_recorded_failure(tiny_engine: HFEngine, tiny_policy: HFPolicy) -> None:
    harness = Harness(f"{LAB}:run", f"{LAB}:miscounting_tasks", timeout_s=30.0)
    with Gateway(tiny_engine, tiny_policy.tokenizer, GatewayConfig(max_tokens=3)) as gateway:
        (group,) = harness.collect(gateway, [Task("harness", 2, {})], group_size=2, seed=0, temperature=1.0)
        assert not gateway.sessions.open_keys()
    assert all(e.failure == "policy" and "1 rewards for 2 turns" in (e.error or "") for e in group.episodes)
    assert all(len(e.turns) == 2 for e in group.episodes)  # the calls made are kept


def test_a_harness_must_be_async() -> None:
    with pytest.raises(ValueError, match="must be an async function"):
        Harness(f"{LAB}:tasks", f"{LAB}:tasks")


@pytest.mark.slow  # a short training run on the tiny model
def test_train_a_harness_through_the_cli(tiny_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "harness.yaml"
    config.write_text(
        f"preset: gigpo\npolicy: {{model: {tiny_dir}}}\nharness: {{run: '{FILE}:run', tasks: '{LAB}:tasks'}}\n"
        "iterations: 2\ntasks_per_iteration: 2\nrollout: {group_size: 4, max_new_tokens: 3}\n"
        "eval: {every: 2, episodes: 4}\ncredit: {params: {state_grouping: exact}}\n"
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iterations = [r for r in records if r.get("kind") == "iteration"]
    assert len(iterations) == 2 and all(r["rollout/mean_turns"] == 2.0 for r in iterations)
    assert any(r.get("kind") == "eval" and r["eval/episodes"] == 4 for r in records)
    assert all(r["train/rows"] > 0 for r in iterations)


@pytest.mark.slow  # SFT on the expert's episodes, then one iteration
def test_sft_on_the_harness_expert(tiny_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"preset: grpo\npolicy: {{model: {tiny_dir}}}\n"
        f"harness: {{run: '{LAB}:run', tasks: '{LAB}:tasks', expert: '{LAB}:expert'}}\n"
        "iterations: 1\ntasks_per_iteration: 2\nrollout: {group_size: 2, max_new_tokens: 3}\n"
        "sft: {enabled: true, episodes: 8, epochs: 1}\neval: {every: 0, at_start: false, at_end: false}\n"
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sft = next(r for r in records if r.get("kind") == "sft")
    assert sft["sft/demo_success"] == 1.0 and sft["sft/rows"] == 16  # 8 expert episodes of 2 calls, all won
    assert (tmp_path / "run" / "sft" / "policy" / "config.json").is_file()


def test_harness_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(f"harness: {{run: '{LAB}:nope', tasks: '{LAB}:tasks'}}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "has no harness entry 'nope'" in capsys.readouterr().err
    config.write_text(f"harness: {{run: '{LAB}:run', tasks: '{LAB}:tasks'}}\nsft: {{enabled: true}}\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run2")]) == 2
    assert "sft.enabled with a harness needs harness.expert" in capsys.readouterr().err


@pytest.mark.slow  # a short training run on the tiny model through a smolagents agent
def test_train_a_smolagents_harness(tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("smolagents", reason="smolagents: pip install smolagents")
    smol = f"{Path(__file__).parents[2] / 'examples' / 'smolagents_multiply.py'}"
    config = tmp_path / "smol.yaml"
    config.write_text(
        f"preset: grpo\npolicy: {{model: {tiny_dir}}}\nharness: {{run: '{smol}:run', tasks: '{smol}:tasks'}}\n"
        "iterations: 1\ntasks_per_iteration: 2\nrollout: {group_size: 2, max_new_tokens: 16}\n"
        "eval: {every: 1, episodes: 2}\n"
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    iteration = next(r for r in records if r.get("kind") == "iteration")
    assert iteration["rollout/mean_turns"] >= 2  # every episode made several calls (steps, then a final answer)
