"""The run's Ray cluster: started (or joined) from ``cluster:``, and the actors the trainer uses on it.

- rollout engines: ``cluster.rollout_workers`` engine actors behind one engine (``clew.policy.remote``);
- env hosts: ``cluster.env_workers`` actors stepping the episodes' envs (``clew.envs.remote``);
- learner ranks: ``cluster.learners`` data-parallel ranks (``clew.trainer.distributed``).

``address: local`` starts a Ray instance of processes on this machine (the way CI tests a cluster) and
ends it with the run; ``auto`` and ``ray://...`` join a running cluster and leave it running. Ray is an
optional dependency: ``pip install 'clew[cluster]'``.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clew.envs.remote import EnvHosts
from clew.policy import EngineError
from clew.policy.remote import RayEngines
from clew.rollout import RolloutConfig
from clew.trainer.config import ClusterConfig
from clew.trainer.distributed import LearnerGroup

INSTALL = "pip install 'clew[cluster]' (Ray)"


@dataclass
class Cluster:
    """A connection to Ray and the actors opened on it; ``close`` ends them (and a local Ray)."""

    cfg: ClusterConfig
    started: bool = False
    opened: list[Any] = field(default_factory=list)  # things with close(), ended in reverse order

    @classmethod
    def connect(cls, cfg: ClusterConfig) -> Cluster:
        try:
            import ray
        except ImportError:
            raise EngineError(f"cluster: is set but Ray is not installed; {INSTALL}") from None
        if ray.is_initialized():  # a cluster this process already joined (tests, notebooks)
            return cls(cfg)
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if cfg.address == "local":
            actors = cfg.rollout_workers + cfg.learners
            ray.init(num_cpus=max(os.cpu_count() or 1, int(actors * cfg.worker_cpus) + 1), **options)
        else:
            ray.init(address=cfg.address, **options)
        return cls(cfg, started=True)

    def engines(self, rollout: RolloutConfig, source: str | Path) -> RayEngines:
        """The rollout engines, each loading ``source`` (the learner's weights arrive with the first sync)."""
        cfg = self.cfg
        engines = RayEngines.start(
            cfg.rollout_workers, rollout.engine, str(source), dict(rollout.engine_params), cfg.worker_threads,
            cfg.max_restarts, cfg.worker_cpus,
        )  # fmt: skip
        self.opened.append(engines)
        return engines

    def env_hosts(self, step_timeout_s: float | None) -> EnvHosts | None:
        """The env hosts, their calls limited to ``step_timeout_s`` (``rollout.env_step_timeout_s``; None: none)."""
        if self.cfg.env_workers == 0:
            return None
        hosts = EnvHosts(self.cfg.env_workers, step_timeout_s, self.cfg.max_restarts)
        self.opened.append(hosts)
        return hosts

    def learners(self, *parts: Any) -> LearnerGroup:
        """``LearnerGroup(policy, train, objective, temperature, reference)`` on ``cluster.learners`` ranks."""
        cfg = self.cfg
        group = LearnerGroup(
            *parts, ranks=cfg.learners, threads=cfg.worker_threads, backend=cfg.backend, timeout_s=cfg.timeout_s,
            num_cpus=cfg.worker_cpus,
        )  # fmt: skip
        self.opened.append(group)
        return group

    def close(self) -> None:
        import ray

        for thing in reversed(self.opened):
            with contextlib.suppress(Exception):  # best effort: an actor may already be gone
                thing.close()
        self.opened.clear()
        if self.started:
            ray.shutdown()
            self.started = False
