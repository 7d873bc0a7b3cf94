"""A run's plug-ins reach its Ray workers: an env host builds a plug-in env family, an engine worker serves a
plug-in engine (each worker loads the driver's plug-ins, ``clew.workers``)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from clew.envs.remote import EnvHosts
from clew.policy import SamplingParams
from clew.policy.remote import RayEngines


def test_an_env_host_builds_a_plugin_family(ray_cluster: Any, lab_plugin: ModuleType) -> None:
    hosts = EnvHosts(1, timeout_s=60.0, max_restarts=0)
    try:
        env = hosts.make("lab/arrow", steps=2)
        assert env.reset(0).startswith("The key is ")
        assert env.valid_actions() == ["up", "down", "left", "right"]  # type: ignore[attr-defined]
        env.close()  # type: ignore[attr-defined]
    finally:
        hosts.close()


def test_an_engine_worker_serves_a_plugin_engine(ray_cluster: Any, lab_plugin: ModuleType, tiny_dir: Path) -> None:
    engines = RayEngines.start(1, "lab-hf", str(tiny_dir), {}, max_restarts=0, num_cpus=0)
    try:
        out = engines.generate([[1, 2, 3]], SamplingParams(max_new_tokens=2), [0])
        assert len(out) == 1 and 1 <= len(out[0].token_ids) <= 2
    finally:
        engines.close()
