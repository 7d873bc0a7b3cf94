"""Which weights a run trains and where they come from: full or LoRA, fresh or from a checkpoint.

With ``policy.lora`` the run trains adapters on a frozen base. The base is the policy RL starts
from: the SFT output when there is a warm start (SFT trains adapters too, then folds them into the
base, ``sft/policy``), else the base model. Checkpoints hold the adapter only (peft's
``adapter_config.json`` names the base); resume rebuilds the base from the run directory the same
way and loads the adapter onto it, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clew import credit
from clew.policy import HFPolicy
from clew.policy import lora as lora_lib
from clew.rollout import derive_seed
from clew.trainer.config import RunConfig

ADAPTER_CONFIG = "adapter_config.json"


def rl_base(run_dir: Path, cfg: RunConfig) -> str | Path:
    """The weights RL started from: the SFT output, else the tiny base built in the run, else the model name."""
    for path in (run_dir / "sft" / "policy", run_dir / "base"):
        if (path / "config.json").exists():
            return path
    return cfg.policy.model


def with_adapters(policy: HFPolicy, cfg: RunConfig, stage: str) -> HFPolicy:
    """Fresh LoRA adapters (seeded per run and stage) when the config asks for them; the policy otherwise."""
    spec = cfg.policy.lora
    if spec is None:
        return policy
    seed = derive_seed(cfg.seed, "lora", stage)
    model = lora_lib.attach(policy.model, spec.r, spec.alpha, spec.dropout, spec.target_modules, seed)
    return HFPolicy(model, policy.tokenizer)


def fold_adapters(policy: HFPolicy) -> HFPolicy:
    """The plain model with its adapters merged in (a LoRA SFT warm start becomes RL's base)."""
    if not lora_lib.is_lora(policy.model):
        return policy
    return HFPolicy(lora_lib.merge_into_base(policy.model), policy.tokenizer)


def from_checkpoint(policy_dir: Path, run_dir: Path, cfg: RunConfig) -> tuple[HFPolicy, str | Path]:
    """(policy, engine source) of a checkpoint: a full model, or the run's base with the saved adapter."""
    if not (policy_dir / ADAPTER_CONFIG).exists():
        return HFPolicy.from_pretrained(policy_dir), policy_dir
    base_dir = rl_base(run_dir, cfg)
    base = HFPolicy.from_pretrained(base_dir)
    return HFPolicy(lora_lib.load(base.model, policy_dir), base.tokenizer), base_dir


def needs_reference(cfg: RunConfig) -> bool:
    """A KL reference is needed: KL in the loss (``objective.kl_coef``) or in the credit's rewards."""
    return cfg.objective.kl_coef > 0 or credit.get(cfg.credit.name).needs_reference(cfg.credit.params)


def reference_model(run_dir: Path, cfg: RunConfig) -> Any:
    """The separate KL reference a full-weight run needs on resume (a LoRA run uses its base instead)."""
    if not needs_reference(cfg) or cfg.policy.lora is not None:
        return None
    return HFPolicy.from_pretrained(rl_base(run_dir, cfg)).model
