"""OPRL's implicit process reward model: a copy of the policy trained online by trajectory DPO, scoring each action
against the old policy (``clew.credit.prm.oprl``).

Every iteration, before credit: the old policy (the weights that sampled the batch, before this update) scores every
action; the PRM takes one DPO step on the group's (better, worse) episode pairs with the old policy as the reference;
then the updated PRM scores every action. The PRM's weights and optimizer are saved with each checkpoint
(``prm.pt``) and restored on resume. With ``rollout.max_staleness`` 1 the batch was sampled one update behind, and
"old" is the learner's weights when credit runs (one update newer than the sampler's).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clew.objectives.preference import dpo_loss
from clew.policy.lora import trainable
from clew.trainer.preference import preference_step
from clew.trainer.states import span_logprobs
from clew.trainer.torch_helpers import adamw

Row = tuple[list[int], list[int]]  # (prompt ids, action ids)


class ImplicitPRM:
    """A copy of the policy's model, its own AdamW, the DPO step and the scoring pass."""

    def __init__(self, model: Any, pad_id: int, lr: float, rows_per_pass: int, dtype: str = "float32") -> None:
        self.model = copy.deepcopy(model)
        self.model.eval()
        self.pad_id, self.rows_per_pass, self.dtype = pad_id, rows_per_pass, dtype
        self.params = trainable(self.model)
        self.optimizer = adamw(self.params, lr=lr)

    def score(self, rows: Sequence[Row]) -> np.ndarray:
        """(N,) each action's summed log-prob under the PRM (temperature 1, no gradients)."""
        prompts, actions = [r[0] for r in rows], [r[1] for r in rows]
        return span_logprobs(self.model, prompts, actions, self.pad_id, self.rows_per_pass, self.dtype, "sum")

    def dpo_step(
        self, rows: Sequence[Row], episode: np.ndarray, ref: np.ndarray, pairs: Sequence[tuple[int, int]], beta: float,
        n_episodes: int | None = None,
    ) -> float:  # fmt: skip
        """One optimizer step of trajectory DPO over ``pairs`` of episodes (``clew.trainer.preference.preference_step``,
        memory of one microbatch); returns the loss (0 without pairs). ``episode`` maps each row to its episode (of
        ``n_episodes``, default the largest index + 1), ``ref`` holds each row's summed log-prob under the reference;
        a row without action tokens counts 0 on both sides."""
        if not pairs:
            return 0.0
        n_episodes = n_episodes or int(episode.max()) + 1
        ref_episode = torch.zeros(n_episodes, dtype=torch.float64).index_add_(
            0, torch.from_numpy(episode), torch.from_numpy(np.nan_to_num(ref))
        )  # fmt: skip
        loss = lambda logp: dpo_loss(logp, ref_episode, pairs, beta)  # noqa: E731
        metrics = preference_step(self.model, self.optimizer, rows, episode, n_episodes, loss, self.pad_id,
                                  self.rows_per_pass, self.dtype)  # fmt: skip
        return metrics["preference/loss"]

    def save(self, folder: Path) -> None:
        """The PRM's trained weights and optimizer state into ``folder/prm.pt``."""
        state = {"params": [p.detach().clone() for p in self.params], "optimizer": self.optimizer.state_dict()}
        torch.save(state, folder / "prm.pt")

    def load(self, folder: Path) -> None:
        """Restore what ``save`` wrote (a checkpoint without it, from before OPRL ran, leaves the fresh copy)."""
        path = folder / "prm.pt"
        if not path.exists():
            return
        state = torch.load(path, weights_only=True)
        with torch.no_grad():
            for p, saved in zip(self.params, state["params"], strict=True):
                p.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
