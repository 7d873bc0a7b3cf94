"""``clew export``: a run's policy as a self-contained model folder that transformers, peft and vLLM load as is.

The folder holds the weights (a LoRA policy merged into its base by default, or ``adapter=True``: the adapter
alone, which peft loads onto the base its ``adapter_config.json`` names), the tokenizer with its chat template,
and a model card (``README.md``: the base model, the env, the credit estimator and objective, the held-out
evaluations with their intervals, the package versions, the resolved training config). The run's own
``config.yaml``, ``versions.json`` and ``summary.json`` are copied under ``clew/``. The folder is written
beside its destination and renamed into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from clew.policy.hf import HFPolicy
from clew.policy.lora import merged_weights
from clew.store.run import atomic_dir, latest_policy_dir, publish_dir, read_jsonl

RUN_FILES = ("config.yaml", "versions.json", "summary.json")


def export_policy(source: Path, out: Path, adapter: bool = False) -> Path:
    """Write ``source`` (a run directory, or a saved policy folder) to the new folder ``out``; returns ``out``."""
    source, out = Path(source), Path(out)
    if out.is_file() or (out.exists() and any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    run_dir = source if (source / "config.yaml").exists() else None
    policy_dir = (latest_policy_dir(source) if run_dir else source) or source
    base = _base(policy_dir) if (policy_dir / "adapter_config.json").exists() else None
    if adapter and base is None:
        raise ValueError(f"the policy in {policy_dir} has no LoRA adapter (export it whole)")
    staging = atomic_dir(out)  # beside ``out``, the umask's permissions; moved into place when complete
    try:
        _write(staging, policy_dir, run_dir, base, adapter, out.name)
        publish_dir(staging, out)  # replaces ``out`` only when it is an empty folder (checked above)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _write(folder: Path, policy_dir: Path, run_dir: Path | None, base: str | None, adapter: bool, name: str) -> None:
    policy = HFPolicy.from_pretrained(policy_dir)  # an adapter folder loads onto its base
    if adapter:
        for path in policy_dir.glob("adapter_*"):
            shutil.copy2(path, folder / path.name)
    else:
        (merged_model(policy.model, base) if base else policy.model).save_pretrained(folder)  # safetensors
    policy.tokenizer.save_pretrained(folder)  # the chat template goes with it
    if run_dir is not None:
        (folder / "clew").mkdir()
        for file in RUN_FILES:
            if (run_dir / file).exists():
                shutil.copy2(run_dir / file, folder / "clew" / file)
    (folder / "README.md").write_text(model_card(name, run_dir, policy_dir, base, adapter), encoding="utf-8")


def merged_model(model: Any, base: str) -> Any:
    """A plain ``base`` model holding ``model``'s weights with its LoRA deltas added (vLLM and plain HF load it)."""
    merged = HFPolicy.from_pretrained(base).model
    merged.load_state_dict(dict(merged_weights(model)))  # load_state_dict copies
    return merged


def _base(adapter_dir: Path) -> str:
    return str(json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"])


def model_card(name: str, run_dir: Path | None, policy_dir: Path, base: str | None, adapter: bool) -> str:
    """The model card: front matter for the Hub, then what was trained on what, how well, with which config."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if run_dir else {}
    front: dict[str, Any] = {"library_name": "peft" if adapter else "transformers"}
    front["tags"] = ["clew", "reinforcement-learning"]
    if base:
        front["base_model"] = base
    weights = "a LoRA adapter (peft), on the base model below" if adapter else (
        "the LoRA adapter merged into its base model" if base else "full weights"
    )  # fmt: skip
    parts = [
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n",
        f"# {name}\n",
        _trained(config, policy_dir, weights),
    ]
    if run_dir is not None:
        parts += [_evaluations(run_dir), _versions(run_dir)]
        parts.append(f"## Training config\n\n```yaml\n{yaml.safe_dump(config)}```\n")
    parts.append(_usage(name, adapter))
    return "\n".join(parts)


def _trained(config: dict[str, Any], policy_dir: Path, weights: str) -> str:
    env, credit, objective = config.get("env", {}), config.get("credit", {}), config.get("objective", {})
    lines = [f"Trained with clew (RL for multi-turn LLM agents); exported from `{policy_dir}`.", ""]
    lines.append(f"- weights: {weights}")
    if config:
        lines += [
            f"- environment: `{env.get('id')}` with {json.dumps(env.get('kwargs', {}))}",
            f"- credit: `{credit.get('name')}`; objective: `{objective.get('name')}`; seed {config.get('seed')}",
            f"- iterations: {config.get('iterations')} of {config.get('tasks_per_iteration')} tasks "
            f"x {config.get('rollout', {}).get('group_size')} episodes",
        ]
    return "## Training\n\n" + "\n".join(lines) + "\n"


def _evaluations(run_dir: Path) -> str:
    evals = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]
    if not evals:
        return "## Held-out evaluation\n\nNone was run.\n"
    rows = ["| iteration | env steps | episodes | success | 95 % interval (Wilson) | mean turns |"]
    rows.append("|---|---|---|---|---|---|")
    for r in evals:
        rows.append(
            f"| {r['iteration']} | {r.get('rollout/env_steps_total', 0):,} | {r['eval/episodes']:.0f} "
            f"| {r['eval/success_rate']:.1%} | [{r['eval/success_low']:.1%}, {r['eval/success_high']:.1%}] "
            f"| {r['eval/mean_turns']:.1f} |"
        )
    return "## Held-out evaluation\n\n" + "\n".join(rows) + "\n"


def _versions(run_dir: Path) -> str:
    path = run_dir / "versions.json"
    return f"## Versions\n\n```json\n{path.read_text().strip()}\n```\n" if path.exists() else ""


def _usage(name: str, adapter: bool) -> str:
    if adapter:
        load = f'from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained("{name}")'
    else:
        load = f'from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained("{name}")'
    return f"## Use\n\n```python\n{load}\n```\n" + ("" if adapter else f'\nvLLM: `vllm.LLM(model="{name}")`.\n')
