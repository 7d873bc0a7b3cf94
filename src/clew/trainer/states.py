"""The policy's hidden state at each turn's last prompt token: the ``hidden`` features of similarity anchor groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clew.policy.scoring import eval_mode, head_split
from clew.tensors import left_pad, positions
from clew.trainer.learner import chunks, compute_dtype


def prompt_states(
    model: Any, prompts: Sequence[Sequence[int]], pad_id: int, rows_per_pass: int, dtype: str = "float32"
) -> np.ndarray:
    """(N, D) float64: the last hidden state (the backbone's output, after its final norm) at the last token of
    each prompt, under ``model``'s current weights, without gradients, in eval mode, ``rows_per_pass`` prompts
    per forward (left-padded, so that the last position is every prompt's last token)."""
    backbone = split[0] if (split := head_split(model)) else None
    parts: list[np.ndarray] = []
    with torch.no_grad(), eval_mode(model), compute_dtype(model, dtype):
        for rows in chunks(range(len(prompts)), rows_per_pass):
            parts.append(_last_states(model, backbone, [prompts[i] for i in rows], pad_id))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _last_states(model: Any, backbone: Any, prompts: list[Sequence[int]], pad_id: int) -> np.ndarray:
    """(B, D) the final hidden state at the last position of each left-padded prompt."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask), "use_cache": False}
    if backbone is not None:  # no (B, T, V) logits
        hidden = backbone(**kwargs).last_hidden_state
    else:
        hidden = model(**kwargs, output_hidden_states=True).hidden_states[-1]
    return hidden[:, -1].float().cpu().numpy().astype(np.float64)  # (B, D)
