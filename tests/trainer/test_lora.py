"""LoRA, bf16 and gradient checkpointing: what trains, what the reference is, what the engine gets, resume."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from clew.policy import HFPolicy
from clew.policy import lora as lora_lib
from clew.policy.hf import token_logprobs
from clew.rollout import Framing, RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.store.run import checkpoints, read_jsonl
from clew.table import TurnTable
from clew.tensors import TokenRow, pack_batch
from clew.trainer import Trainer
from clew.trainer.config import ObjectiveConfig, RunConfig, TrainConfig
from clew.trainer.learner import Learner

Make = Callable[..., RunConfig]
LORA = ["policy.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj, down_proj]}"]


def _fresh(tiny_dir: Path) -> HFPolicy:
    return HFPolicy.from_pretrained(tiny_dir)


def _adapted(tiny_dir: Path, seed: int = 0) -> HFPolicy:
    """A LoRA policy whose B matrices are non-zero (as after some training)."""
    policy = _fresh(tiny_dir)
    torch.manual_seed(seed)  # peft draws A from the global generator
    model = lora_lib.attach(policy.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return HFPolicy(model, policy.tokenizer)


def _rows(policy: HFPolicy) -> list[TokenRow]:
    actor = ScriptedActor("expert", noise=0.5, tokenizer=policy.tokenizer)
    tasks = [Task("keydoor-v0", 3, {"width": 4, "height": 4}), Task("keydoor-v0", 4, {"width": 4, "height": 4})]
    groups = collect(actor, tasks, RolloutConfig(group_size=2, max_turns=6), 0, Framing(policy.tokenizer, policy.chat))
    table = TurnTable.from_groups(groups)
    return to_rows(table, np.random.default_rng(0).normal(size=table.n_turns))


def _score(model: torch.nn.Module, rows: list[TokenRow], pad_id: int) -> torch.Tensor:
    batch = pack_batch(rows, pad_id)
    with torch.no_grad():
        return token_logprobs(model, batch.rows.input_ids, batch.rows.attention_mask)[0]


def test_gradients_reach_the_adapters_only(tiny_dir: Path) -> None:
    policy = _adapted(tiny_dir)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    learner = Learner(policy, TrainConfig(minibatch_rows=64, microbatch_rows=8, guard_max_kl=None), ObjectiveConfig())
    n_adapter = sum(1 for n, _ in policy.model.named_parameters() if "lora_" in n)
    assert len(learner.optimizer.param_groups[0]["params"]) == n_adapter > 0
    learner.update(_rows(policy), seed=0)
    for name, p in policy.model.named_parameters():
        moved = not torch.equal(before[name], p.detach())
        assert moved == ("lora_" in name), name  # every adapter moved, nothing else did


def test_reference_through_disabled_adapters_equals_a_separate_copy(tiny_dir: Path) -> None:
    separate = _fresh(tiny_dir).model.eval()
    policy = _adapted(tiny_dir)
    rows = _rows(policy)
    with lora_lib.disabled_adapters(policy.model):
        through_base = _score(policy.model, rows, policy.pad_id)
    assert torch.equal(through_base, _score(separate, rows, policy.pad_id))
    assert not torch.allclose(_score(policy.model, rows, policy.pad_id), through_base)  # the adapters do matter


def test_kl_reference_of_a_lora_learner_is_its_base(tiny_dir: Path) -> None:
    policy = _adapted(tiny_dir)
    learner = Learner(policy, TrainConfig(guard_max_kl=None), ObjectiveConfig(kl_coef=0.1))
    assert learner.reference is None  # no second copy of the model
    rows = _rows(policy)
    batch = pack_batch(rows, policy.pad_id)
    mask = batch.rows.action_mask
    ref = learner._reference_logprobs(batch.rows.input_ids, batch.rows.attention_mask, mask)
    base = _score(_fresh(tiny_dir).model.eval(), rows, policy.pad_id) * mask
    assert torch.allclose(ref, base, atol=1e-5)  # action positions only (the head applied to fewer rows)


def test_merged_weights_reproduce_the_adapted_model_without_touching_it(tiny_dir: Path) -> None:
    policy = _adapted(tiny_dir)
    base_before = {k: v.clone() for k, v in policy.model.get_base_model().state_dict().items()}
    merged = dict(lora_lib.merged_weights(policy.model))
    plain = _fresh(tiny_dir).model.eval()
    assert merged.keys() == plain.state_dict().keys()  # the engine's own names
    plain.load_state_dict(merged)
    rows = _rows(policy)
    gap = (_score(plain, rows, policy.pad_id) - _score(policy.model, rows, policy.pad_id)).abs().max()
    assert float(gap) < 1e-5
    for key, value in policy.model.get_base_model().state_dict().items():
        assert torch.equal(value, base_before[key]), key  # never merged in place


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir: Path) -> None:
    grads = []
    for checkpointing in (False, True):
        policy = _adapted(tiny_dir)
        if checkpointing:
            policy.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.model.train()
        batch = pack_batch(_rows(policy), policy.pad_id)
        logp, _ = token_logprobs(policy.model, batch.rows.input_ids, batch.rows.attention_mask)
        (logp * batch.rows.action_mask).sum().backward()
        grads.append([p.grad.clone() for p in lora_lib.trainable(policy.model)])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_lora_targets_fail_at_construction(tiny_cfg: Make, tiny_dir: Path) -> None:
    with pytest.raises(ValidationError, match=r"policy\.lora\.target_modules.*allowed"):
        RunConfig.model_validate({"policy": {"lora": {"target_modules": ["qkv"]}}})
    with pytest.raises(ValidationError, match="lm_head"):
        RunConfig.model_validate({"policy": {"lora": {"target_modules": ["q_proj", "lm_head"]}}})
    with pytest.raises(ValidationError, match="r"):
        RunConfig.model_validate({"policy": {"lora": {"r": 0}}})
    with pytest.raises(ValueError, match=r"policy\.lora\.target_modules: \['c_attn'\].*allowed: \['down_proj'"):
        lora_lib.attach(_fresh(tiny_dir).model, 4, 8, 0.0, ["c_attn"])  # a model path: checked when it loads


def test_lora_run_checkpoints_the_adapter_and_resumes_bit_exact(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        *LORA, "iterations=3", "preset=gigpo", "sft.enabled=true", "sft.episodes=8", "sft.epochs=1",
        "objective.kl_coef=0.05",
    )  # fmt: skip
    Trainer(cfg, tmp_path / "full").fit()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    ckpt = checkpoints(tmp_path / "full")[-1] / "policy"
    assert (ckpt / "adapter_config.json").exists() and not (ckpt / "model.safetensors").exists()
    full, split = (load_file(str(checkpoints(tmp_path / r)[-1] / "policy" / "adapter_model.safetensors")) for r in
                   ("full", "split"))  # fmt: skip
    assert full.keys() == split.keys() and all("lora_" in k for k in full)
    for key in full:
        assert torch.equal(full[key], split[key]), key
    metrics = [
        [{k: v for k, v in r.items() if not k.startswith("time/")} for r in read_jsonl(tmp_path / n / "metrics.jsonl")
         if r["kind"] != "engine"]
        for n in ("full", "split")
    ]  # fmt: skip
    assert metrics[0] == metrics[1]
    assert (tmp_path / "full" / "sft" / "policy" / "model.safetensors").exists()  # SFT adapters folded into RL's base


def test_a_bf16_run_trains_end_to_end(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg(
        "train.dtype=bfloat16", "train.gradient_checkpointing=true", "eval.every=0",
        "shaping.invalid_action_penalty=0.5",  # a learning signal before the first success
    )  # fmt: skip
    assert cfg.objective.tis_cap == 2.0  # bf16 learner vs float32 rollouts: TIS on unless set
    summary = Trainer(cfg, tmp_path / "bf16").fit()
    assert summary["iterations"] == 2
    its = [r for r in read_jsonl(tmp_path / "bf16" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert all(np.isfinite(r["train/loss"]) and r["train/skipped_steps"] == 0 for r in its)
    assert all(r["train/grad_norm"] > 0 and r["train/optimizer_steps"] == 1 for r in its)


def test_bf16_autocast_changes_the_learner_numbers(tiny_dir: Path) -> None:
    """bfloat16 is really used (the learner's log-probs differ from float32 by bf16 rounding, not more)."""
    policy = _fresh(tiny_dir)
    rows = _rows(policy)
    batch = pack_batch(rows, policy.pad_id)
    out = {}
    for dtype in ("float32", "bfloat16"):
        learner = Learner(copy.copy(policy), TrainConfig(dtype=dtype, guard_max_kl=None), ObjectiveConfig())
        out[dtype] = learner.recompute_old_logprobs(rows)
    diffs = [abs(a - b) for r32, r16 in zip(out["float32"], out["bfloat16"]) for a, b in
             zip(r32.old_logprobs, r16.old_logprobs)]  # fmt: skip
    assert 0 < max(diffs) < 0.5
    assert batch.rows.input_ids.shape[0] == len(rows)
