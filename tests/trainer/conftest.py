from __future__ import annotations

from pathlib import Path

import pytest

from clew.trainer.config import RunConfig, load_config


@pytest.fixture()
def tiny_cfg(tiny_dir: Path):  # type: ignore[no-untyped-def]
    """A run config small enough to train two iterations in seconds."""

    def make(*overrides: str, env_kwargs: str = "{width: 3, height: 3, max_steps: 5}") -> RunConfig:
        """``env_kwargs``: the env's kwargs (keydoor's by default; another env passes its own)."""
        base = [
            f"policy.model={tiny_dir}",
            "iterations=2",
            "tasks_per_iteration=2",
            f"env.kwargs={env_kwargs}",
            "rollout.group_size=4",
            "rollout.max_turns=5",
            "rollout.max_new_tokens=3",
            "rollout.context=window",
            "train.minibatch_rows=16",
            "train.microbatch_rows=8",
            "eval.every=1",
            "eval.episodes=4",
        ]
        return load_config(None, [*base, *overrides])

    return make
