"""Trajectory preference training (``preference`` config): DPO over each group's (better, worse) episode pairs, KTO over
its successes and failures (``clew.objectives.preference``), online or offline.

- Online (``preference.loss`` without ``preference.data``): each iteration's update is preference steps on the
  batch's groups instead of the policy-gradient update; the reference is the policy that sampled them (scored at
  temperature 1 before the update), as in iterative, on-policy DPO.
- Offline (``preference.data``: a run directory): the stored episodes of every iteration of that run (its
  trajectories) are the data; one clew iteration is one pass over them, so ``iterations`` counts epochs and the usual
  held-out evaluations, checkpoints and resume apply. The reference is the policy the offline run starts from,
  scored once and kept in the run directory (``preference_reference.json``), so a resumed run uses the same one.

A step's memory stays at one microbatch however long the episodes: a no-grad pass gives every episode's summed
log-prob, the loss's gradient with respect to those sums is taken, then each microbatch back-propagates its rows'
log-probs times their episode's coefficient (the chain rule, exact in eval mode).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clew.objectives.preference import dpo_loss, kto_loss
from clew.policy.scoring import action_logprobs, eval_mode
from clew.store.run import atomic_write_text
from clew.store.trajectories import read_trajectories
from clew.tensors import pack_spans
from clew.trainer.data_sections import PreferenceConfig
from clew.trainer.states import span_logprobs
from clew.trainer.torch_helpers import chunks, compute_dtype
from clew.types import Episode

Row = tuple[list[int], list[int]]  # (prompt ids, action ids)
Loss = Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
REFERENCE_FILE = "preference_reference.json"


def preference_pairs(outcome: Sequence[float], group: Sequence[int]) -> list[tuple[int, int]]:
    """Every (better, worse) pair of episodes of the same group with different outcomes, in episode order."""
    return [(i, j) for i in range(len(outcome)) for j in range(len(outcome))
            if group[i] == group[j] and outcome[i] > outcome[j]]  # fmt: skip


@dataclass(frozen=True)
class Episodes:
    """Episodes as training data: their rows (one per turn with action tokens), each row's episode, and per episode
    its group, outcome, success and reference log-prob (summed over its rows)."""

    rows: list[Row]
    episode: np.ndarray  # (R,) int
    group: list[int]  # (E,)
    outcome: list[float]
    success: list[bool]
    reference: np.ndarray  # (E,)

    def loss(self, cfg: PreferenceConfig, episodes: Sequence[int]) -> Loss:
        """The configured loss over ``episodes`` (indices), as a function of every episode's summed log-prob."""
        index = torch.tensor(list(episodes), dtype=torch.long)
        ref = torch.from_numpy(self.reference)[index]
        if cfg.loss == "kto":
            good = torch.tensor([self.success[e] for e in episodes])
            return lambda logp: kto_loss(logp[index], ref, good, cfg.beta, cfg.desirable_weight,
                                         cfg.undesirable_weight)  # fmt: skip
        pairs = preference_pairs([self.outcome[e] for e in episodes], [self.group[e] for e in episodes])
        return lambda logp: dpo_loss(logp[index], ref, pairs, cfg.beta)


def preference_step(
    model: Any, optimizer: torch.optim.Optimizer, rows: Sequence[Row], episode: np.ndarray, n_episodes: int,
    loss_of: Loss, pad_id: int, rows_per_pass: int, dtype: str = "float32", max_grad_norm: float = 1.0,
) -> dict[str, float]:  # fmt: skip
    """One optimizer step of a loss of the episodes' summed action log-probs (temperature 1); ``episode[r]`` is row r's
    episode. Returns the loss, its metrics and the gradient norm; a loss with zero gradient (no pairs) takes no step."""
    scores = span_logprobs(model, [r[0] for r in rows], [r[1] for r in rows], pad_id, rows_per_pass, dtype, "sum")
    per_episode = torch.zeros(n_episodes, dtype=torch.float64).index_add_(
        0, torch.from_numpy(episode), torch.from_numpy(np.nan_to_num(scores))
    ).requires_grad_(True)  # fmt: skip
    loss, metrics = loss_of(per_episode)
    (coef,) = torch.autograd.grad(loss, per_episode, allow_unused=True)
    if coef is None or not bool(coef.abs().sum() > 0):  # nothing to learn from (no pairs): no step
        return {"preference/loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    with eval_mode(model):
        for micro in chunks(range(len(rows)), rows_per_pass):
            packed = pack_spans([[(rows[i][0], False), (rows[i][1], True)] for i in micro], pad_id)
            with compute_dtype(model, dtype):
                logp, _ = action_logprobs(model, packed.input_ids, packed.attention_mask, packed.action_mask)
            weights = coef[torch.from_numpy(episode[micro])].float()
            ((logp.float() * packed.action_mask).sum(dim=1) * weights).sum().backward()
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        "preference/loss": float(loss.detach()),
        "train/grad_norm": norm,
        **{k: float(v) for k, v in metrics.items()},
    }


def train_on(
    data: Episodes, cfg: PreferenceConfig, model: Any, optimizer: torch.optim.Optimizer, pad_id: int,
    rows_per_pass: int, dtype: str, max_grad_norm: float, seed: int,
) -> dict[str, float]:  # fmt: skip
    """One pass over ``data`` in seeded steps of ``cfg.groups_per_step`` groups; the steps' mean metrics."""
    groups = sorted(set(data.group))
    random.Random(seed).shuffle(groups)
    sums: dict[str, float] = {}
    steps = 0
    for chosen in chunks(groups, cfg.groups_per_step):
        wanted = set(chosen)
        episodes = [e for e, g in enumerate(data.group) if g in wanted]
        keep = [r for r, e in enumerate(data.episode) if data.group[e] in wanted]
        local = {e: i for i, e in enumerate(episodes)}
        rows, episode = [data.rows[r] for r in keep], np.array([local[data.episode[r]] for r in keep], dtype=np.int64)
        sub = Episodes(rows, episode, [data.group[e] for e in episodes], [data.outcome[e] for e in episodes],
                       [data.success[e] for e in episodes], data.reference[episodes])  # fmt: skip
        metrics = preference_step(model, optimizer, rows, episode, len(episodes), sub.loss(cfg, range(len(episodes))),
                                  pad_id, rows_per_pass, dtype, max_grad_norm)  # fmt: skip
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
        steps += 1
    return {**{k: v / max(steps, 1) for k, v in sums.items()}, "train/optimizer_steps": float(steps)}


def from_episodes(
    episodes: Sequence[Episode], group_of: Sequence[int], score: Callable[[list[Row]], np.ndarray]
) -> Episodes:
    """A batch's episodes as data; the reference is ``score`` (per row: the policy that sampled them, at temperature
    1, before the update) summed per episode."""
    rows: list[Row] = []
    row_episode: list[int] = []
    for e, ep in enumerate(episodes):
        for turn in ep.turns:
            if turn.action_ids:
                rows.append((list(turn.prompt_ids), list(turn.action_ids)))
                row_episode.append(e)
    episode = np.asarray(row_episode, dtype=np.int64)
    reference = np.zeros(len(episodes))
    np.add.at(reference, episode, np.nan_to_num(score(rows)) if rows else np.zeros(0))
    return Episodes(rows, episode, list(group_of), [ep.outcome for ep in episodes], [ep.success for ep in episodes],
                    reference)  # fmt: skip


def load_run_episodes(run: Path) -> tuple[list[Row], np.ndarray, list[int], list[float], list[bool]]:
    """Every stored episode of ``run`` (all iterations' trajectories): rows, each row's episode, and per episode its
    group (unique over the run), outcome and success. Episodes without action tokens are left out."""
    files = sorted((run / "trajectories").glob("iter_*.parquet"))
    if not files:
        raise ValueError(f"preference.data={run} holds no stored trajectories (run_dir/trajectories/iter_*.parquet)")
    rows: list[Row] = []
    row_episode: list[int] = []
    index: dict[tuple[int, int], int] = {}
    groups: dict[tuple[int, int], int] = {}
    group, outcome, success = [], [], []
    for path in files:
        for turn in read_trajectories(path):
            if not turn["action_ids"]:
                continue
            key = (int(turn["iteration"]), int(turn["episode"]))
            if key not in index:
                index[key] = len(index)
                group.append(groups.setdefault((key[0], int(turn["group"])), len(groups)))
                outcome.append(float(turn["outcome"]))
                success.append(bool(turn["success"]))
            rows.append((list(turn["prompt_ids"]), list(turn["action_ids"])))
            row_episode.append(index[key])
    return rows, np.asarray(row_episode, dtype=np.int64), group, outcome, success


def offline_data(run_dir: Path, cfg: PreferenceConfig, score: Callable[[list[Row]], np.ndarray]) -> Episodes:
    """The offline data set of ``cfg.data``, with each episode's reference log-prob: read from ``run_dir`` when a
    resumed run saved it, else ``score`` (the starting policy, per row) summed per episode and saved."""
    assert cfg.data is not None
    rows, episode, group, outcome, success = load_run_episodes(Path(cfg.data))
    path = run_dir / REFERENCE_FILE
    if path.exists():
        reference = np.asarray(json.loads(path.read_text()), dtype=np.float64)
    else:
        reference = np.zeros(len(group))
        np.add.at(reference, episode, np.nan_to_num(score(rows)))
        atomic_write_text(path, json.dumps(reference.tolist()))
    if len(reference) != len(group):
        raise ValueError(f"{path} holds {len(reference)} reference log-probs for {len(group)} episodes of {cfg.data}")
    return Episodes(rows, episode, group, outcome, success, reference)
