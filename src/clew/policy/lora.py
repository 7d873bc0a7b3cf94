"""LoRA through peft: attach adapters, merge them for an engine, score the reference with them off.

LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685, eq. 3):
a frozen weight ``W`` of a targeted linear layer is used as ``W + (alpha / r) * B @ A`` with
``A`` (r x in) and ``B`` (out x r, initialised to zero) the only trainable parameters. Here:

- only adapter parameters require gradients, so only they reach the optimizer;
- the KL reference is the same model with its adapters disabled (``disabled_adapters``): the frozen
  base *is* the policy RL started from, so no second copy of the model is held in memory;
- an engine that loads plain weights gets ``merged_weights``: every targeted weight with its
  delta added, computed out of place, under the base model's own tensor names. The learner's base
  weights are never merged in place (a merge followed by an unmerge is not bit-exact, and
  ``--resume`` must be).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear

ADAPTER = "default"
ALL_LINEAR = "all-linear"


def linear_names(model: Any) -> list[str]:
    """Sorted leaf names of the model's ``nn.Linear`` modules (what ``target_modules`` may name)."""
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def check_targets(model: Any, target_modules: Sequence[str] | str) -> None:
    """Refuse targets the model does not have, and a tied output layer (its delta would be lost)."""
    if target_modules == ALL_LINEAR:
        return
    have = linear_names(model)
    missing = [t for t in target_modules if t not in have]
    if missing:
        raise ValueError(
            f"policy.lora.target_modules: {missing} are not linear layers of this model; "
            f"allowed: {have} or '{ALL_LINEAR}'"
        )
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    if tied and "lm_head" in target_modules:
        raise ValueError(
            "policy.lora.target_modules: 'lm_head' shares its weight with the input embeddings in this model "
            "(tie_word_embeddings); an adapter on it cannot be merged for the engine. Target the other layers"
        )


def attach(model: Any, r: int, alpha: int, dropout: float, target_modules: Sequence[str] | str, seed: int = 0) -> Any:
    """Wrap ``model`` in fresh LoRA adapters (B = 0: the wrapped model computes exactly what ``model`` did;
    ``A`` is drawn from ``seed``, leaving the global generator as it was)."""
    check_targets(model, target_modules)
    targets: list[str] | str = target_modules if isinstance(target_modules, str) else list(target_modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, config)


def load(base: Any, adapter_dir: str | Path) -> Any:
    """The base model with a saved adapter, trainable (resume)."""
    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)


def is_lora(model: Any) -> bool:
    return isinstance(model, PeftModel)


def trainable(model: Any) -> list[torch.nn.Parameter]:
    """The parameters an optimizer should step: all of a plain model, the adapters of a LoRA one."""
    return [p for p in model.parameters() if p.requires_grad]


def disabled_adapters(model: Any) -> AbstractContextManager[Any]:
    """Inside this context the LoRA model computes its frozen base: the KL reference."""
    return model.disable_adapter()  # type: ignore[no-any-return]


@torch.no_grad()
def merged_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the base model's state dict with every adapter delta added (out of place).

    ``model``: a peft model, or a transformers model with an adapter loaded into it (``from_pretrained`` on
    an adapter folder)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = dict(inner.named_modules())
    for key, tensor in inner.state_dict().items():
        if ".lora_" in key:
            continue
        if ".base_layer." not in key:
            yield key, tensor
            continue
        owner, _, leaf = key.partition(".base_layer.")
        layer = modules[owner]
        if leaf == "weight" and isinstance(layer, LoraLinear) and ADAPTER in layer.lora_A:
            tensor = tensor + layer.get_delta_weight(ADAPTER).to(tensor.dtype)
        yield f"{owner}.{leaf}", tensor


def merge_into_base(model: Any) -> Any:
    """The plain model with the adapters folded in (after a LoRA SFT warm start)."""
    return model.merge_and_unload()
