"""The loop end to end: presets, resume bit-exactness, dynamic sampling, kill -9, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from clew import credit
from clew.cli import main
from clew.store.run import checkpoints, read_jsonl
from clew.trainer import Trainer, stages
from clew.trainer.config import RunConfig, preset_names, read_preset
from clew.trainer.select import has_signal

Make = Callable[..., RunConfig]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1] / "policy" / "model.safetensors"))


def _metrics(run: Path) -> list[dict]:
    """The algorithm's records: no timings, no engine start-ups (a resumed process opens its engine again)."""
    records = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] != "engine"]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def _env_for(name: str) -> tuple[list[str], dict[str, str]]:
    """tiny_cfg's overrides and keywords for a run that gives estimator ``name`` what it needs: keydoor, toolcalc
    where it needs gold replies (IGPO's beliefs, PBSD's teacher), a value head where it reads values (GAE, HiPER),
    the plan context where it reads subgoal segments (HiPER)."""
    spec = credit.get(name)
    extra = ["critic.value_coef=0.1"] if spec.needs_values else []
    extra += ["rollout.context=plan"] if spec.needs_segments else []
    if spec.needs_gold_reply:
        return ["env.id=toolcalc-v0", *extra], {"env_kwargs": "{n_ops: 1}"}
    return extra, {}


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_trains_two_iterations(preset: str, tiny_cfg: Make, tmp_path: Path) -> None:
    env, kwargs = _env_for(str(read_preset(preset)["credit"]["name"]))
    cfg = tiny_cfg(f"preset={preset}", "eval.every=0", *env, **kwargs)
    summary = Trainer(cfg, tmp_path / preset).fit()
    assert summary["iterations"] == 2
    rows = [r for r in read_jsonl(tmp_path / preset / "metrics.jsonl") if r["kind"] == "iteration"]
    assert len(rows) == 2 and all(r.get("train/skipped_steps", 0) == 0 for r in rows)


@pytest.mark.parametrize("name", sorted(credit.available()))
def test_every_estimator_runs_in_the_loop(name: str, tiny_cfg: Make, tmp_path: Path) -> None:
    """Token-level and entropy estimators get what they need from real rollouts; G-RA gets an env-reported outcome;
    IGPO an env with gold replies."""
    env, kwargs = _env_for(name)
    if credit.get(name).needs_outcome:
        env = ["env.id=tests.test_table:ReportsOutcome", "env.kwargs.steps=1"]
    cfg = tiny_cfg(
        f"credit.name={name}", "iterations=1", "eval.every=0", "eval.at_start=false", "eval.at_end=false", *env,
        **kwargs,
    )  # fmt: skip
    Trainer(cfg, tmp_path / name).fit()
    table = pq.read_table(tmp_path / name / "trajectories" / "iter_000001.parquet").to_pylist()
    assert table and all(isinstance(r["advantage"], float) for r in table)


def test_resume_is_bit_exact(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        "iterations=3", "preset=gigpo", "sft.enabled=true", "sft.episodes=8", "sft.epochs=1", "objective.kl_coef=0.05"
    )
    Trainer(cfg, tmp_path / "full").fit()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    assert len(checkpoints(tmp_path / "split")) == 1
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    full, split = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert full.keys() == split.keys()
    for key in full:
        assert torch.equal(full[key], split[key]), key
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "split")


def test_run_directory_contents(tiny_cfg: Make, tmp_path: Path) -> None:
    run = tmp_path / "run"
    Trainer(tiny_cfg(), run).fit()
    for name in ("config.yaml", "versions.json", "metrics.jsonl", "summary.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "versions.json").read_text())["torch"]
    table = pq.read_table(run / "trajectories" / "iter_000002.parquet").to_pylist()
    assert {"prompt_ids", "action_ids", "reward", "advantage", "return"} <= set(table[0])
    ckpt = checkpoints(run)[-1]
    assert (ckpt / "policy" / "model.safetensors").exists() and (ckpt / "optimizer.pt").exists()
    assert json.loads((ckpt / "state.json").read_text())["iteration"] == 2


def test_dynamic_sampling_never_passes_a_zero_variance_group(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("preset=dapo", "iterations=3", "eval.every=0")
    trainer = Trainer(cfg, tmp_path / "dapo")
    trainer.fit(stop_after=0)
    seen = 0
    for it in range(3):
        assert trainer.session is not None
        groups, collected = stages.rollout(trainer.session, it)
        assert all(has_signal(g) for g in groups)
        seen += len(collected)
    assert seen > 0


def _tiny_yaml(path: Path, model: Path, preset: str, iterations: int, eval_every: int, eval_episodes: int) -> Path:
    """A tiny run config file for the CLI tests."""
    path.write_text(
        f"preset: {preset}\npolicy: {{model: {model}}}\niterations: {iterations}\ntasks_per_iteration: 2\n"
        "env: {id: keydoor-v0, kwargs: {width: 3, height: 3, max_steps: 5}}\n"
        "rollout: {group_size: 4, max_turns: 5, max_new_tokens: 3, context: window}\n"
        f"eval: {{every: {eval_every}, episodes: {eval_episodes}}}\n"
    )
    return path


def test_cli_train_smoke(tiny_dir: Path, tmp_path: Path) -> None:
    """`clew train` end to end on a tiny config (well under a minute)."""
    cfg = _tiny_yaml(tmp_path / "tiny.yaml", tiny_dir, "gigpo", iterations=2, eval_every=1, eval_episodes=4)
    assert main(["train", str(cfg), "seed=1", "--out", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "curves.png").exists()
    assert main(["eval", "--env", "keydoor-v0", "--policy", str(tmp_path / "cli"), "--episodes", "4"]) == 0


def test_sigkill_leaves_no_partial_files_and_resume_works(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny_yaml(tmp_path / "kill.yaml", tiny_dir, "grpo", iterations=60, eval_every=0, eval_episodes=2)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "clew.cli", "train", str(cfg), "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(checkpoints(run)) < 2:
        time.sleep(0.2)
    time.sleep(0.3)  # land somewhere inside an iteration
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoints(run), "no checkpoint was written before the kill"
    for path in run.rglob("*"):  # a checkpoint in flight lives in a hidden temp folder, cleaned on resume
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(run).parts):
            if path.suffix == ".json":
                json.loads(path.read_text())
            if path.suffix == ".parquet":
                pq.read_table(path)
    done = json.loads((checkpoints(run)[-1] / "state.json").read_text())["iteration"]
    assert main(["train", "--resume", str(run), "iterations=" + str(done + 2)]) == 0
    assert not [p for p in run.rglob(".*.tmp")]
    assert json.loads((checkpoints(run)[-1] / "state.json").read_text())["iteration"] == done + 2
