"""The learner: scores rows with the policy, applies objective + aggregation, steps AdamW.

Gradient accumulation is exact: aggregation weights are computed once per minibatch (every
mode is linear in the per-token loss) and sliced per microbatch, so 1 x 8 and 8 x 1 rows give the
same update. A non-finite loss or gradient skips the optimizer step and is counted.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import torch

from clew import objectives
from clew.policy.hf import HFPolicy
from clew.policy.lora import disabled_adapters, is_lora, trainable
from clew.policy.scoring import action_logprobs, action_outputs
from clew.rollout import derive_seed
from clew.tensors import PackedBatch, TokenRow, loss_units, pack_batch, pack_spans
from clew.trainer.config import CriticConfig, DistillConfig, ObjectiveConfig, TrainConfig
from clew.trainer.critic import Critic
from clew.trainer.guard import StepGuard, hold_back
from clew.trainer.timing import Stopwatch
from clew.trainer.torch_helpers import adamw, chunks, compute_dtype, training_mode

SYNC_GAP = "engine/train_logprob_max_abs_diff"  # max |learner - engine| log-prob on the first step's action tokens


class Ranks(Protocol):
    """This learner's place among data-parallel ranks, and the sum over them (``clew.trainer.distributed``)."""

    rank: int
    world: int

    def sum(self, model: Any, loss: float, metrics: dict[str, float]) -> tuple[float, dict[str, float]]:
        """Sum gradients (in place), loss and metrics over the ranks."""
        ...


class Learner:
    """Thin stateful shell: the model, its optimizer and a step counter."""

    def __init__(
        self,
        policy: HFPolicy,
        train: TrainConfig,
        objective: ObjectiveConfig,
        temperature: float = 1.0,
        reference: Any = None,
        ranks: Ranks | None = None,
        reference_for_credit: bool = False,
        critic: CriticConfig | None = None,
        distill: DistillConfig | None = None,
    ) -> None:
        """``reference``: a frozen model for KL (needed when ``objective.kl_coef > 0`` or
        ``reference_for_credit``, KL in the credit's rewards; defaults to a copy of the policy as it is
        now). A LoRA policy needs none: its reference is its base, adapters off.
        ``ranks``: this learner is one of several data-parallel ranks (``clew.trainer.distributed``).
        ``critic``: with ``value_coef > 0`` a value head trains beside the policy (``clew.trainer.critic``), in a
        parameter group of its own (``critic.lr``).
        ``distill``: in its ``loss`` mode, rows with teacher log-probs add its KL term to the loss."""
        self.policy, self.train_cfg, self.objective = policy, train, objective
        self.distill = distill if distill is not None and distill.mode == "loss" else None
        self.ranks = ranks
        self.model = policy.model
        self.temperature = temperature if temperature > 0 else 1.0
        params = trainable(self.model)
        self.optimizer = adamw(params, lr=train.lr, weight_decay=train.weight_decay)
        self.critic = Critic(self.model, critic) if critic is not None and critic.value_coef > 0 else None
        if self.critic is not None:
            scale = (self.critic.cfg.lr or train.lr) / train.lr
            self.optimizer.add_param_group({"params": self.critic.params, "lr_scale": scale})
        self.steps = 0
        self.guard: StepGuard | None = None  # built at the first update (train.guard_max_kl)
        self._sync_gap = False  # measure SYNC_GAP in the loss forward (the first optimizer step of an update)
        self.reference = None
        if train.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if (objective.kl_coef > 0 or reference_for_credit) and not is_lora(self.model):
            self.reference = (reference if reference is not None else copy.deepcopy(self.model)).eval()
            for p in self.reference.parameters():
                p.requires_grad_(False)

    def lr(self) -> float:
        warm = self.train_cfg.warmup_steps
        return self.train_cfg.lr * min(1.0, (self.steps + 1) / warm) if warm else self.train_cfg.lr

    # --- RL update --------------------------------------------------------------------------------
    def update(self, rows: Sequence[TokenRow], seed: int) -> dict[str, float]:
        """``ppo_epochs`` passes over ``rows`` in seeded minibatches; returns mean metrics and the seconds of each
        stage (``time/learner/<stage>``).

        The batch is packed once; each microbatch is a slice of it. With TIS and a single optimizer step per
        update the proximal policy is the one the loss forward runs on, so its detached log-probs serve as the
        old ones (as TRL does with one iteration) instead of a second forward over every row."""
        clock = Stopwatch()
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        with clock("guard"):
            rows, guard = self._guard(rows, seed)
        with clock("pack"):
            packed = pack_batch(rows, self.policy.pad_id)
            weights = self._weights(rows, packed)
        cfg = self.train_cfg
        single_step = cfg.ppo_epochs * math.ceil(len(rows) / cfg.minibatch_rows) == 1
        proximal_from_forward = self.objective.tis_cap is not None and single_step
        if self.objective.tis_cap is not None and not single_step:
            with clock("old_logprobs"):
                packed = self._with_proximal(packed)
        first_step, lengths = self.steps, packed.lengths
        self._sync_gap = True  # the first optimizer step's loss forwards run on the weights the engine got
        with training_mode(self.model):
            for epoch in range(cfg.ppo_epochs):
                order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
                for minibatch in chunks(order, cfg.minibatch_rows):
                    micro = self._microbatches(minibatch, lengths)
                    for key, value in self._step(packed, micro, weights, guard, clock, proximal_from_forward).items():
                        sums[key] += value
                        counts[key] += 1
        means = {k: sums[k] / counts[k] for k in sums if not k.startswith("tokens/")}
        if "train/rejected_steps" in sums:
            means["train/rejected_steps"] = sums["train/rejected_steps"]  # a count, not a mean
        computed = sums.get("tokens/computed", 0.0)
        means["train/padding_share"] = 1 - sums.get("tokens/real", 0.0) / computed if computed else 0.0
        return {**means, **clock.metrics(), "train/optimizer_steps": float(self.steps - first_step)}

    def _microbatches(self, minibatch: list[int], lengths: list[int]) -> list[list[int]]:
        """The minibatch's rows in microbatches; ``train.bucket_by_length`` groups rows of similar length (less
        padding; the update is the same up to float summation order, every mode being linear in the rows)."""
        if self.train_cfg.bucket_by_length:
            minibatch = sorted(minibatch, key=lambda i: lengths[i])
        return list(chunks(minibatch, self.train_cfg.microbatch_rows))

    def _guard(self, rows: Sequence[TokenRow], seed: int) -> tuple[list[TokenRow], StepGuard | None]:
        """The step guard (``train.guard_max_kl``; None turns it off): its probe rows are held back from the first
        update and kept for the run."""
        cfg = self.train_cfg
        if cfg.guard_max_kl is None or self.guard is not None:
            return list(rows), self.guard
        train_rows, probe = hold_back(rows, cfg.guard_probe_rows, derive_seed(seed, "probe"))
        if not probe:
            return train_rows, None
        self.guard = StepGuard(self.model, probe, self.policy.pad_id, cfg.guard_max_kl, self.temperature, self._extra)
        return train_rows, self.guard

    @property
    def _extra(self) -> list[torch.nn.Parameter]:
        """Trained parameters outside the model: the value head's."""
        return self.critic.params if self.critic is not None else []

    @torch.no_grad()
    def token_values(self, turns: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """The value head's V at every action token of each (prompt ids, action ids) pair, concatenated in order."""
        assert self.critic is not None, "token_values needs a critic (critic.value_coef > 0)"
        with compute_dtype(self.model, self.train_cfg.dtype):
            values = self.critic.token_values(self.model, turns, self.policy.pad_id, self.train_cfg.microbatch_rows)
        return values.tolist()

    def guard_rows(self) -> list[TokenRow] | None:
        """The step guard's probe rows (None before the first update or without a guard), for checkpoints."""
        return list(self.guard.rows) if self.guard else None

    def restore_guard(self, probe: Sequence[TokenRow]) -> None:
        """Rebuild the step guard on the probe rows a checkpoint saved (resume probes the rows the run held back)."""
        cfg = self.train_cfg
        if cfg.guard_max_kl is not None:
            self.guard = StepGuard(
                self.model, probe, self.policy.pad_id, cfg.guard_max_kl, self.temperature, self._extra
            )

    def recompute_old_logprobs(self, rows: Sequence[TokenRow]) -> list[TokenRow]:
        """Score rows with the trainer's current weights (the proximal policy for TIS)."""
        packed = self._with_proximal(pack_batch(rows, self.policy.pad_id))
        old = packed.old_logprobs
        mask = packed.rows.action_mask.bool()
        return [replace(row, old_logprobs=old[i][mask[i]].tolist()) for i, row in enumerate(rows)]

    @torch.no_grad()
    def _with_proximal(self, packed: PackedBatch) -> PackedBatch:
        """``packed`` with the current weights' log-probs as old log-probs; the previous old ones become the
        behaviour log-probs (the engine's)."""
        old = torch.zeros_like(packed.old_logprobs)
        for micro in self._microbatches(list(range(len(packed.episode_ids))), packed.lengths):
            part = packed.select(micro)
            with compute_dtype(self.model, self.train_cfg.dtype):
                logp, _ = action_logprobs(
                    self.model, part.rows.input_ids, part.rows.attention_mask, part.rows.action_mask, self.temperature
                )
            old[micro, : logp.shape[1]] = logp.float()
        return replace(packed, old_logprobs=old * packed.rows.action_mask, behavior_logprobs=packed.old_logprobs)

    @torch.no_grad()
    def reference_logprobs(self, turns: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """Log-probs of each (prompt ids, action ids) pair's action tokens under the KL reference, concatenated
        in order (the token order of ``clew.table.TurnTable``)."""
        out: list[float] = []
        for micro in chunks(range(len(turns)), self.train_cfg.microbatch_rows):
            packed = pack_spans([[(turns[i][0], False), (turns[i][1], True)] for i in micro], self.policy.pad_id)
            with compute_dtype(self.model, self.train_cfg.dtype):
                logp = self._reference_logprobs(packed.input_ids, packed.attention_mask, packed.action_mask)
            out += logp[packed.action_mask.bool()].tolist()
        return out

    def _step(
        self, packed: PackedBatch, micro: list[list[int]], weights: torch.Tensor, guard: StepGuard | None,
        clock: Stopwatch, proximal_from_forward: bool = False,
    ) -> dict[str, float]:  # fmt: skip
        """One optimizer step on a minibatch given as microbatches of row indices into ``packed``, with the
        batch's aggregation ``weights`` (B, T). Under data parallelism every rank holds the whole minibatch and
        its weights, runs the microbatches ``i`` with ``i % world == rank``, and the ranks sum gradients, loss
        and metrics before the step: the update of one learner, up to float summation order."""
        metrics: dict[str, float] = defaultdict(float)
        total = 0.0
        rank, world = (self.ranks.rank, self.ranks.world) if self.ranks else (0, 1)
        n_rows = sum(len(m) for m in micro)
        for index, rows in enumerate(micro):
            if index % world != rank:
                continue
            with clock("pack"):
                batch = packed.select(rows)
                w = weights[rows, : batch.rows.input_ids.shape[1]]
            with clock("forward_backward"):
                loss, micro_metrics = self._loss(batch, w, proximal_from_forward)
                loss.backward()
            total += float(loss.detach())
            share = len(rows) / n_rows
            for key, value in micro_metrics.items():
                if key == SYNC_GAP:  # a max over the step's rows (and over ranks: Ranks.sum)
                    metrics[key] = max(metrics[key], float(value))
                else:
                    metrics[key] += float(value) * share
            metrics["tokens/computed"] += batch.rows.input_ids.numel()
            metrics["tokens/real"] += float(batch.rows.attention_mask.sum())
        if self.ranks is not None:
            total, metrics = self.ranks.sum(self.model, total, metrics)
        metrics.update(self._apply_gradients(total, guard, clock))
        self._sync_gap = False
        return dict(metrics)

    def _weights(self, rows: list[TokenRow], packed: PackedBatch) -> torch.Tensor:
        """(B, T) aggregation weights over the whole batch, scaled for one minibatch's step.

        Units (an episode, a segment) are weighed once over all ``rows``, so an episode whose turn rows land
        in several minibatches still counts once per epoch; the normalising modes are then multiplied by the
        number of minibatches, so each step's weights sum to 1 on average (with one minibatch: exactly the
        minibatch's own weights). ``seq_sum_const`` divides by a constant and needs no rescaling.
        """
        obj = self.objective
        units = loss_units(rows, obj.weighting)
        mask = packed.loss_mask  # the action tokens, less those a token down-sampling left out
        weights = objectives.aggregation_weights(mask, obj.aggregation, units=units, const=obj.aggregation_const)
        if obj.aggregation != "seq_sum_const":
            weights = weights * math.ceil(len(rows) / self.train_cfg.minibatch_rows)
        return weights.to(torch.float32)

    def _loss(
        self, batch: PackedBatch, weights: torch.Tensor, proximal_from_forward: bool = False
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows, obj = batch.rows, self.objective
        with compute_dtype(self.model, self.train_cfg.dtype):
            args = (self.model, rows.input_ids, rows.attention_mask, rows.action_mask, self.temperature)
            if self.critic is None:
                logp, entropy = action_logprobs(*args)
            else:
                logp, entropy, states = action_outputs(*args)
            extra: dict[str, Any] = {}
            if obj.kl_coef > 0:
                extra["ref_logp"] = self._reference_logprobs(rows.input_ids, rows.attention_mask, rows.action_mask)
        old, behavior = batch.old_logprobs, batch.behavior_logprobs
        if proximal_from_forward:  # one step per update: the policy of this forward is the proximal one
            old, behavior = logp.detach().float() * rows.action_mask, batch.old_logprobs
        if obj.tis_cap is not None:
            extra["is_weights"] = objectives.tis_weights(old, behavior, rows.action_mask, obj.tis_cap)
        if batch.clip_scale is not None:  # the estimator's per-turn clip ranges (A^2TGPO)
            extra["clip_scale"] = batch.clip_scale
        per_token, metrics = objectives.compute(
            obj.name,
            logp,
            old,
            batch.advantages,
            rows.action_mask,
            kl_coef=obj.kl_coef,
            kl_estimator=obj.kl_estimator,
            entropy=entropy,
            entropy_coef=obj.entropy_coef,
            **extra,
            **obj.params,
        )
        metrics["policy/entropy"] = objectives.aggregate(entropy.detach(), rows.action_mask, "token_mean")
        if self.distill is not None and batch.teacher_logprobs is not None:  # on-policy distillation in the loss
            kl = objectives.teacher_kl(logp, batch.teacher_logprobs, rows.action_mask, self.distill.estimator)
            per_token = per_token + self.distill.coef * kl
            metrics["distill/kl_loss"] = kl.detach().sum() / torch.isfinite(batch.teacher_logprobs).sum().clamp(min=1)
        if self._sync_gap:
            gap = (logp.detach().float() - batch.behavior_logprobs).abs() * rows.action_mask
            metrics[SYNC_GAP] = gap.max() if gap.numel() else torch.zeros(())
        if self.critic is None:
            return (weights * per_token).sum(), metrics
        warm_up = self.steps < self.critic.cfg.warmup_steps  # the value head alone: no policy loss, backbone frozen
        value_loss, value_metrics = self.critic.loss(states, batch, frozen_backbone=warm_up)
        loss = self.critic.cfg.value_coef * (weights * value_loss).sum()
        return (loss if warm_up else loss + (weights * per_token).sum()), {**metrics, **value_metrics}

    @torch.no_grad()
    def _reference_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, action_mask: torch.Tensor
    ) -> torch.Tensor:
        """Log-probs under the KL reference: the separate frozen model, or the LoRA base (adapters off)."""
        if self.reference is not None:
            return action_logprobs(self.reference, input_ids, attention_mask, action_mask, self.temperature)[0]
        with disabled_adapters(self.model):
            return action_logprobs(self.model, input_ids, attention_mask, action_mask, self.temperature)[0]

    def _apply_gradients(
        self, loss: float, guard: StepGuard | None = None, clock: Stopwatch | None = None
    ) -> dict[str, float]:
        clock = clock or Stopwatch()
        with clock("optimizer"):
            params = [p for p in [*self.model.parameters(), *self._extra] if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.train_cfg.max_grad_norm)) if params else 0.0
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return {"train/loss": loss, "train/skipped_steps": 1.0, "train/grad_norm": norm}
        out = {"train/loss": loss, "train/skipped_steps": 0.0, "train/grad_norm": norm, "train/lr": self.lr()}
        accepted = True
        if guard is None:
            with clock("optimizer"):
                self._optimizer_step(self.lr())
        else:
            accepted, guarded = self._guarded_step(guard, clock)
            out.update(guarded)
        self.optimizer.zero_grad(set_to_none=True)
        self.steps += int(accepted)
        return out

    def _guarded_step(self, guard: StepGuard, clock: Stopwatch) -> tuple[bool, dict[str, float]]:
        """Backtracking line search on the learning rate (TRPO, arXiv 1502.05477, Appendix C): halve it
        until the probe KL is within ``guard_max_kl``; after ``guard_backtracks`` halvings the step is
        rejected and parameters and optimizer state stay as they were."""
        with clock("guard"):
            guard.snapshot(self.optimizer)
        accepted, kl, attempt = False, 0.0, 0
        for attempt in range(self.train_cfg.guard_backtracks + 1):
            with clock("optimizer"):
                self._optimizer_step(self.lr() * 0.5**attempt)
            with clock("guard"):
                accepted, kl = guard.check(self.optimizer)
            if accepted:
                break
        return accepted, {
            "train/probe_kl": kl,
            "train/backtracks": float(attempt),
            "train/rejected_steps": float(not accepted),
            "train/lr": self.lr() * 0.5**attempt,  # the rate actually used
        }

    def _optimizer_step(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.step()
