"""The value head of a critic run (PPO with GAE): V(s) on the policy's final hidden state, its values, its loss."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clew import objectives
from clew.policy.scoring import action_outputs, eval_mode, scatter_actions
from clew.tensors import PackedBatch, pack_spans
from clew.trainer.sections import CriticConfig

HEAD_FILE = "value_head.pt"


def hidden_size(model: Any) -> int:
    """The width of the model's final hidden state (what the LM head reads)."""
    size = getattr(getattr(model, "config", None), "hidden_size", None)
    return int(size) if size else int(model.get_output_embeddings().weight.shape[1])


class ValueHead(torch.nn.Module):
    """V(s_t) = w . h_t + b in float32 on the hidden state that scores action token t; zero-initialised (V = 0)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(width, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """(n,) values of (n, H) hidden states."""
        return self.linear(states.float()).squeeze(-1)


class Critic:
    """The value head of a policy: values for credit, the value loss for the learner, its checkpoint file."""

    def __init__(self, model: Any, cfg: CriticConfig) -> None:
        self.cfg = cfg
        self.head = ValueHead(hidden_size(model)).to(next(model.parameters()).device)

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return list(self.head.parameters())

    @torch.no_grad()
    def token_values(
        self, model: Any, turns: Sequence[tuple[list[int], list[int]]], pad_id: int, rows_per_pass: int
    ) -> np.ndarray:
        """(K,) V at every action token of each (prompt ids, action ids) pair, in order, eval mode, no gradients."""
        parts: list[np.ndarray] = []
        with eval_mode(model):
            for start in range(0, len(turns), rows_per_pass):
                chunk = turns[start : start + rows_per_pass]
                packed = pack_spans([[(p, False), (a, True)] for p, a in chunk], pad_id)
                _, _, states = action_outputs(model, packed.input_ids, packed.attention_mask, packed.action_mask)
                parts.append(self.head(states).cpu().numpy().astype(np.float64))
        return np.concatenate(parts) if parts else np.zeros(0)

    def loss(
        self, states: torch.Tensor, batch: PackedBatch, frozen_backbone: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(B, T) per-token value loss of the batch (``objectives.value_loss``) and its metrics; ``frozen_backbone``
        (the warm-up): the gradient reaches the head only."""
        if batch.values is None or batch.value_targets is None:
            raise ValueError("a critic run's rows need their values and value targets (rollout.batch.to_rows)")
        mask = batch.rows.action_mask
        values = scatter_actions(self.head(states.detach() if frozen_backbone else states), mask)
        per_token = objectives.value_loss(values, batch.values, batch.value_targets, self.cfg.value_clip) * mask
        n = mask.sum().clamp(min=1)
        error = ((values.detach() - batch.value_targets) * mask).abs().sum() / n
        return per_token, {"critic/value_loss": per_token.detach().sum() / n, "critic/abs_error": error}

    def save(self, folder: Path) -> None:
        torch.save(self.head.state_dict(), folder / HEAD_FILE)

    def load(self, folder: Path) -> None:
        self.head.load_state_dict(torch.load(folder / HEAD_FILE, weights_only=True))
