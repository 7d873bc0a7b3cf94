"""The real pretrained model (SmolLM2-135M-Instruct, materialised offline) through the whole loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from clew.policy.models import materialize
from clew.store.run import checkpoints, read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import load_config

NAME = "smollm2-135m-instruct"
ENV = [
    "env.id=rg/chain_sum",
    "env.kwargs={size: 100, dataset_kwargs: {min_terms: 2, max_terms: 2, min_digits: 1, max_digits: 1}}",
]


@pytest.fixture(scope="module")
def smol() -> Path:
    pytest.importorskip("reasoning_gym", reason="the rg extra is not installed")
    return materialize(NAME)


def _cfg(*overrides: str):  # type: ignore[no-untyped-def]
    base = [
        f"policy.model={NAME}", *ENV, "preset=grpo", "iterations=1", "tasks_per_iteration=2", "rollout.group_size=2",
        "rollout.max_turns=1", "rollout.max_new_tokens=6", "train.minibatch_rows=4", "train.microbatch_rows=2",
        "eval.every=0", "eval.at_start=false", "eval.at_end=false", "shaping.invalid_action_penalty=0.1",
    ]  # fmt: skip
    return load_config(None, [*base, *overrides])


def test_one_lora_rl_iteration_on_the_real_model(smol: Path, tmp_path: Path) -> None:
    """Sampled with its real chat template, scored, credited, one LoRA update, synced and probed, checkpointed."""
    cfg = _cfg("policy.lora={r: 8, alpha: 16, target_modules: [q_proj, v_proj]}", "objective.kl_coef=0.01")
    summary = Trainer(cfg, tmp_path / "run").fit()
    assert summary["iterations"] == 1
    (it,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert it["train/skipped_steps"] == 0 and it["train/optimizer_steps"] == 1
    (start,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "engine"]
    assert start["engine/logprob_max_abs_diff"] < 1e-3  # the in-process hf engine: probed at its first sync
    policy_dir = checkpoints(tmp_path / "run")[-1] / "policy"
    assert (policy_dir / "adapter_model.safetensors").exists()  # the adapter, not 517 MB of base weights


def test_the_real_model_with_the_vllm_engine(smol: Path, tmp_path: Path) -> None:
    """vLLM loads the materialised folder; after the LoRA update it gets merged weights; the probe holds."""
    pytest.importorskip("vllm", reason="the vllm extra is not installed")
    cfg = _cfg(
        "policy.lora={r: 8, alpha: 16, target_modules: [q_proj, v_proj]}",
        "rollout.engine=vllm", "rollout.engine_params={kv_cache_gib: 0.5}", "rollout.parity_probe_every=1",
    )  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    (start,) = [r for r in records if r["kind"] == "engine"]
    (it,) = [r for r in records if r["kind"] == "iteration"]
    assert start["engine/name"] == "vllm"
    assert start["engine/logprob_max_abs_diff"] < 1e-3 and it["engine/logprob_max_abs_diff"] < 1e-3
    assert it["engine/train_logprob_max_abs_diff"] < 1e-3  # the merged adapters, seen on the trained tokens
