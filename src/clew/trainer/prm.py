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

from clew.policy.lora import trainable
from clew.policy.scoring import action_logprobs
from clew.tensors import pack_spans
from clew.trainer.learner import adamw, chunks, compute_dtype
from clew.trainer.states import span_logprobs

Row = tuple[list[int], list[int]]  # (prompt ids, action ids)


def preference_pairs(outcome: Sequence[float], group: Sequence[int]) -> list[tuple[int, int]]:
    """Every (better, worse) pair of episodes of the same group with different outcomes, in episode order."""
    return [(i, j) for i in range(len(outcome)) for j in range(len(outcome))
            if group[i] == group[j] and outcome[i] > outcome[j]]  # fmt: skip


def dpo_loss(prm: torch.Tensor, ref: torch.Tensor, pairs: Sequence[tuple[int, int]], beta: float) -> torch.Tensor:
    """Trajectory DPO: mean over pairs of -log sigmoid(beta * [(prm_w - ref_w) - (prm_l - ref_l)]), where
    ``prm`` and ``ref`` hold each episode's summed action log-prob under the PRM and the reference."""
    better, worse = (torch.tensor([p[k] for p in pairs], dtype=torch.long) for k in (0, 1))
    margin = (prm[better] - ref[better]) - (prm[worse] - ref[worse])
    return -torch.nn.functional.logsigmoid(beta * margin).mean()


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
        """One optimizer step of trajectory DPO over ``pairs`` of episodes; returns the loss (0 without pairs).

        ``episode`` maps each row to its episode (of ``n_episodes``, default the largest index + 1), ``ref`` holds
        each row's summed log-prob under the reference; a row without action tokens counts 0 on both sides.
        Memory stays at one microbatch: the loss's gradient with respect to each episode's log-prob is taken
        first (from a scoring pass), then each microbatch back-propagates its rows' log-probs times it. Eval mode
        throughout (no dropout), so the backward pass differentiates the function the coefficients came from."""
        if not pairs:
            return 0.0
        n_episodes = n_episodes or int(episode.max()) + 1
        per_episode = torch.zeros(n_episodes, dtype=torch.float64).index_add_(
            0, torch.from_numpy(episode), torch.from_numpy(np.nan_to_num(self.score(rows)))
        ).requires_grad_(True)  # fmt: skip
        ref_episode = torch.zeros(n_episodes, dtype=torch.float64).index_add_(
            0, torch.from_numpy(episode), torch.from_numpy(np.nan_to_num(ref))
        )  # fmt: skip
        loss = dpo_loss(per_episode, ref_episode, pairs, beta)
        (coef,) = torch.autograd.grad(loss, per_episode)
        for micro in chunks(range(len(rows)), self.rows_per_pass):
            packed = pack_spans([[(rows[i][0], False), (rows[i][1], True)] for i in micro], self.pad_id)
            with compute_dtype(self.model, self.dtype):
                logp, _ = action_logprobs(self.model, packed.input_ids, packed.attention_mask, packed.action_mask)
            row_logp = (logp.float() * packed.action_mask).sum(dim=1)
            weights = coef[torch.from_numpy(episode[micro])].float()
            (row_logp * weights).sum().backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

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
