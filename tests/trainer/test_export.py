"""`clew export`: a run's policy as a folder that transformers, peft and vLLM load, with its model card."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from clew.cli import main
from clew.policy import HFPolicy
from clew.policy.lora import merged_weights
from clew.store.run import latest_policy_dir
from clew.trainer.loop import Trainer

Make = Callable[..., Any]
LORA = "policy.lora={r: 4, alpha: 8, target_modules: all-linear}"
FAST = ("eval.every=0", "eval.at_start=false", "shaping.invalid_action_penalty=0.5", "train.lr=0.01")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    from clew.trainer.config import load_config

    base = [f"policy.model={tiny_dir}", "iterations=2", "tasks_per_iteration=2", "rollout.group_size=4",
            "env.kwargs={width: 3, height: 3, max_steps: 5}", "rollout.max_turns=5", "rollout.max_new_tokens=3",
            "eval.episodes=4", *FAST]  # fmt: skip
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, extra in (("full", []), ("lora", [LORA])):
        Trainer(load_config(None, [*base, *extra]), root / name).fit()
        out[name] = root / name
    return out


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_the_export_loads_in_transformers_and_scores_like_the_run(
    runs: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    out = tmp_path / f"{kind}-model"
    assert main(["export", str(runs[kind]), "--to", str(out)]) == 0
    exported = AutoModelForCausalLM.from_pretrained(out)
    policy = HFPolicy.from_pretrained(latest_policy_dir(runs[kind]))  # base + adapter for the LoRA run
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    torch.testing.assert_close(_logits(exported, ids), _logits(policy.model, ids), atol=1e-5, rtol=1e-5)
    if kind == "lora":
        assert not (out / "adapter_config.json").exists()  # merged: plain weights
        merged = dict(merged_weights(policy.model))
        assert all(torch.equal(merged[k], v) for k, v in exported.state_dict().items() if k in merged)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == policy.tokenizer.chat_template and tokenizer.chat_template
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "## Held-out evaluation" in card
    assert "| 2 |" in card and "keydoor-v0" in card and "## Training config" in card and '"torch"' in card
    assert {p.name for p in (out / "clew").iterdir()} == {"config.yaml", "versions.json", "summary.json"}


def test_the_adapter_alone_loads_in_peft(runs: dict[str, Path], tmp_path: Path) -> None:
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "adapter"
    assert main(["export", str(runs["lora"]), "--to", str(out), "--adapter"]) == 0
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    loaded = AutoPeftModelForCausalLM.from_pretrained(out)
    policy = HFPolicy.from_pretrained(latest_policy_dir(runs["lora"]))
    ids = torch.tensor([[2, 4, 6, 8]])
    torch.testing.assert_close(_logits(loaded, ids), _logits(policy.model, ids), atol=1e-5, rtol=1e-5)
    assert "library_name: peft" in (out / "README.md").read_text()


def test_export_refuses_a_full_model_as_adapter_and_an_occupied_folder(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(runs["full"]), "--to", str(tmp_path / "a"), "--adapter"]) == 2
    assert "argument --adapter: the policy" in capsys.readouterr().err and not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("mine")
    assert main(["export", str(runs["full"]), "--to", str(tmp_path / "b")]) == 2
    assert (
        "exists and is not an empty folder" in capsys.readouterr().err and (tmp_path / "b" / "x").read_text() == "mine"
    )
    assert main(["export", str(tmp_path / "nosuch"), "--to", str(tmp_path / "c")]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging folder left behind


def test_a_failed_export_leaves_nothing(runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clew.trainer import export

    def broken(*args: Any) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(export, "model_card", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export_policy(runs["full"], tmp_path / "deep" / "model")
    assert list((tmp_path / "deep").iterdir()) == []


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_vllm_loads_the_export(runs: dict[str, Path], tmp_path: Path, kind: str) -> None:
    pytest.importorskip("vllm", reason="the vllm extra is not installed")
    from clew.policy import SamplingParams, make_engine

    out = tmp_path / f"{kind}-vllm"
    assert main(["export", str(runs[kind]), "--to", str(out)]) == 0
    engine = make_engine("vllm", out, kv_cache_gib=0.5)
    try:
        (completion,) = engine.generate([[1, 5, 9]], SamplingParams(temperature=1.0, max_new_tokens=4), [7])
    finally:
        engine.close()
    policy = HFPolicy.from_pretrained(latest_policy_dir(runs[kind]))
    (scored,) = policy.logprobs([([1, 5, 9], completion.token_ids)])
    assert max(abs(a - b) for a, b in zip(completion.logprobs, scored)) < 1e-3  # vLLM samples the trained policy
