"""A data-parallel learner: K ranks of ``torch.distributed`` (gloo on CPU, NCCL on GPU) in Ray actors.

``LearnerGroup`` has the learner's interface (``update``, ``steps``, ``optimizer``), so the training loop
does not change. Every rank receives the whole batch and the same seed, so all ranks shuffle into the
same minibatches and compute the same aggregation weights, over the whole batch (computed once per
update, globally: the number of rows a rank holds never changes a row's weight). Rank r runs the
microbatches i with i mod K = r; the ranks then sum gradients (one flattened all-reduce), loss and
metrics, clip and step identically. The update is one learner's with the same global batch, up to the
order of float summation (tested: ``tests/cluster``).

After each update the driver takes rank 0's weights (the rollout engines and the parity probe read the
driver's copy) and the checkpoint is written by the driver alone, from rank 0's weights and optimizer
state, atomically as always (``clew.trainer.checkpoint``).

A rank that dies (or fails) stops the update: the group kills every rank and raises ``LearnerFailed``,
whose message says to resume; ``clew train --resume RUN`` starts new ranks from the last checkpoint.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from clew.plugins import loaded
from clew.policy import HFPolicy
from clew.tensors import TokenRow
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.learner import SYNC_GAP, Learner
from clew.workers import Worker


class LearnerFailed(RuntimeError):
    """A learner rank died or failed during an update; the run stopped (resume from the last checkpoint)."""


class ProcessGroupRanks:
    """``Ranks`` over the default ``torch.distributed`` process group."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def sum(self, model: Any, loss: float, metrics: dict[str, float]) -> tuple[float, dict[str, float]]:
        """All-reduce the gradients of every parameter some rank touched; gather loss and metrics."""
        params = [p for p in model.parameters() if p.requires_grad]
        touched = torch.tensor([float(p.grad is not None) for p in params])
        dist.all_reduce(touched, op=dist.ReduceOp.MAX)
        live = [p for p, t in zip(params, touched.tolist()) if t > 0]  # untouched everywhere: stays None
        for p in live:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if live:
            flat = torch.cat([p.grad.reshape(-1) for p in live])  # type: ignore[union-attr]
            dist.all_reduce(flat)
            offset = 0
            for p in live:
                n = p.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p))  # type: ignore[union-attr]
                offset += n
        parts: list[Any] = [None] * self.world
        dist.all_gather_object(parts, (loss, dict(metrics)))
        total = sum(part[0] for part in parts)
        summed: dict[str, float] = {}
        for _, part_metrics in parts:  # rank order: the same sums on every rank
            for key, value in part_metrics.items():
                summed[key] = summed.get(key, 0.0) + value
        gaps = [m[SYNC_GAP] for _, m in parts if SYNC_GAP in m]
        if gaps:  # a max over rows: the max over ranks, not their sum
            summed[SYNC_GAP] = max(gaps)
        return total, summed


class LearnerWorker(Worker):
    """One rank, in a Ray actor: a ``Learner`` on its own copy of the policy (``plugins``: the driver's, so a
    plug-in objective is known here too)."""

    def __init__(
        self, rank: int, world: int, policy: HFPolicy, train: TrainConfig, objective: ObjectiveConfig,
        temperature: float, reference: Any, threads: int, plugins: Sequence[str] = (),
    ) -> None:  # fmt: skip
        super().__init__(plugins)
        torch.set_num_threads(threads)
        self.rank, self.world = rank, world
        self._parts = (policy, train, objective, temperature, reference)
        self.learner: Learner | None = None

    def address(self) -> tuple[str, int]:
        """This node's address and a free port for the process group's rendezvous (asked of rank 0; another
        process could take the port before rank 0 binds it, which fails the start with a clear error)."""
        import ray

        with socket.socket() as sock:
            sock.bind(("", 0))
            port = int(sock.getsockname()[1])
        return ray.util.get_node_ip_address(), port

    def join(self, host: str, port: int, backend: str, timeout_s: float) -> None:
        dist.init_process_group(
            backend, init_method=f"tcp://{host}:{port}", rank=self.rank, world_size=self.world,
            timeout=timedelta(seconds=timeout_s),
        )  # fmt: skip
        policy, train, objective, temperature, reference = self._parts
        ranks = ProcessGroupRanks(self.rank, self.world)
        self.learner = Learner(policy, train, objective, temperature, reference, ranks=ranks)

    def update(self, rows: list[TokenRow], seed: int) -> tuple[dict[str, float], int]:
        self._drill()
        learner = self._learner()
        return learner.update(rows, seed), learner.steps

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self._learner().model.state_dict().items()}

    def optimizer_state(self) -> dict[str, Any]:
        return self._learner().optimizer.state_dict()  # type: ignore[no-any-return]

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self._learner().optimizer.load_state_dict(state)

    def set_steps(self, steps: int) -> None:
        self._learner().steps = steps

    def guard_rows(self) -> list[TokenRow] | None:
        return self._learner().guard_rows()

    def restore_guard(self, probe: list[TokenRow]) -> None:
        self._learner().restore_guard(probe)

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def _learner(self) -> Learner:
        if self.learner is None:
            raise RuntimeError("learner rank used before join()")
        return self.learner


class _RemoteOptimizer:
    """What checkpoints need of an optimizer: rank 0's state out, every rank's state in."""

    def __init__(self, group: LearnerGroup) -> None:
        self.group = group

    def state_dict(self) -> dict[str, Any]:
        return self.group.call(self.group.workers[0].optimizer_state.remote())  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ref = self.group.ray.put(state)
        self.group.wait([w.load_optimizer_state.remote(ref) for w in self.group.workers])


class LearnerGroup:
    """K learner ranks behind the ``Learner`` interface; the driver's ``policy`` mirrors rank 0's weights."""

    def __init__(
        self, policy: HFPolicy, train: TrainConfig, objective: ObjectiveConfig, temperature: float, reference: Any,
        *, ranks: int, threads: int = 1, backend: str = "gloo", timeout_s: float = 600.0, num_cpus: float = 1.0,
    ) -> None:  # fmt: skip
        import ray

        self.ray, self.policy, self._steps = ray, policy, 0
        remote: Any = ray.remote(num_cpus=num_cpus, max_restarts=0)(LearnerWorker)
        shared = ray.put(policy), ray.put(reference)
        self.workers = [
            remote.remote(r, ranks, shared[0], train, objective, temperature, shared[1], threads, loaded())
            for r in range(ranks)
        ]
        host, port = self.call(self.workers[0].address.remote())  # wait() kills every rank if one fails
        self.wait([w.join.remote(host, port, backend, timeout_s) for w in self.workers])
        self.optimizer = _RemoteOptimizer(self)

    @property
    def steps(self) -> int:
        return self._steps

    @steps.setter
    def steps(self, value: int) -> None:  # resume sets the counter on every rank (it drives the warm-up)
        self.wait([w.set_steps.remote(value) for w in self.workers])
        self._steps = value

    def guard_rows(self) -> list[TokenRow] | None:
        """The step guard's probe rows (every rank holds the same ones), for checkpoints."""
        return self.call(self.workers[0].guard_rows.remote())  # type: ignore[no-any-return]

    def restore_guard(self, probe: Sequence[TokenRow]) -> None:
        """Every rank probes the rows a checkpoint saved (resume trains on the rows the run trained on)."""
        ref = self.ray.put(list(probe))
        self.wait([w.restore_guard.remote(ref) for w in self.workers])

    def update(self, rows: Sequence[TokenRow], seed: int) -> dict[str, float]:
        """Every rank updates on the whole batch (its share of each minibatch); the driver takes rank 0's weights."""
        return self.finish(self.start(rows, seed))

    def start(self, rows: Sequence[TokenRow], seed: int) -> list[Any]:
        """Begin the update and return at once (the driver may roll out meanwhile); ``finish`` waits for it."""
        ref = self.ray.put(list(rows))
        return [w.update.remote(ref, seed) for w in self.workers]

    def finish(self, pending: list[Any]) -> dict[str, float]:
        results = self.wait(pending)
        metrics, self._steps = results[0]
        if any(steps != self._steps for _, steps in results):  # a step one rank took and another rejected
            self.close()
            raise LearnerFailed(
                f"learner ranks disagree on the optimizer steps taken ({[steps for _, steps in results]}); the run "
                "stopped; resume it from its last checkpoint with clew train --resume RUN"
            )
        self.policy.model.load_state_dict(self.call(self.workers[0].state_dict.remote()))
        return metrics  # type: ignore[no-any-return]

    def call(self, ref: Any) -> Any:
        return self.wait([ref])[0]

    def wait(self, refs: list[Any]) -> list[Any]:
        """The results in order; the first rank to die or fail stops the group (``LearnerFailed``)."""
        ray, pending, index = self.ray, list(refs), {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                results[index[ready[0]]] = ray.get(ready[0])
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as exc:
                self.close()
                raise LearnerFailed(
                    f"learner rank {index[ready[0]]} of {len(self.workers)} failed ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:300]}); the run stopped; resume it from its last checkpoint "
                    "with clew train --resume RUN"
                ) from exc
        return results

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w, no_restart=True)
