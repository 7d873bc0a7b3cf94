"""Trajectories per iteration as Parquet: one row per turn, with rewards, returns and advantages."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clew.store.run import atomic_write_bytes
from clew.types import Group


def turn_records(
    groups: Sequence[Group], iteration: int, advantages: Sequence[float], returns: Sequence[float]
) -> list[dict[str, Any]]:
    """Flatten groups to per-turn records; ``advantages``/``returns`` follow (group, episode, turn) order."""
    records: list[dict[str, Any]] = []
    i = 0
    for g in groups:
        for e_index, ep in enumerate(g.episodes):
            for t, turn in enumerate(ep.turns):
                records.append(
                    {
                        "iteration": iteration, "group": g.group_id, "episode": e_index, "turn": t,
                        "task_id": ep.task_id, "seed": ep.seed, "prompt_ids": turn.prompt_ids,
                        "action_ids": turn.action_ids, "behavior_logprobs": turn.behavior_logprobs,
                        "action_text": turn.action_text, "observation": turn.observation,
                        "reward": turn.reward, "return": float(returns[i]), "advantage": float(advantages[i]),
                        "state_key": turn.state_key, "outcome": ep.outcome, "terminated": ep.terminated,
                        "truncated": ep.truncated, "truncation_reason": ep.truncation_reason, "error": ep.error,
                        "info": json.dumps(turn.info, default=str),
                    }
                )  # fmt: skip
                i += 1
    return records


def write_trajectories(
    path: Path, groups: Sequence[Group], iteration: int, advantages: Sequence[float], returns: Sequence[float]
) -> None:
    """Write one iteration's turns atomically (query later with pyarrow, pandas or DuckDB)."""
    table = pa.Table.from_pylist(turn_records(groups, iteration, advantages, returns))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
