"""Trajectories per iteration as Parquet: one row per turn, with rewards, returns and advantages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clew.store.run import atomic_write_bytes
from clew.table import TurnTable


def turn_records(table: TurnTable, iteration: int, advantages: np.ndarray, returns: np.ndarray) -> list[dict[str, Any]]:
    """One record per row of ``table``; ``advantages``/``returns`` are (N,) in its row order."""
    table.check_aligned(advantages)
    table.check_aligned(returns, what="returns")
    records: list[dict[str, Any]] = []
    for i, turn in enumerate(table.turns):
        ep = table.episodes[int(table.episode[i])]
        records.append(
            {
                "iteration": iteration, "group": int(table.group[i]), "episode": int(table.episode[i]),
                "turn": int(table.turn[i]), "task_id": ep.task_id, "seed": ep.seed, "prompt_ids": turn.prompt_ids,
                "action_ids": turn.action_ids, "behavior_logprobs": turn.behavior_logprobs,
                "action_text": turn.action_text, "observation": turn.observation, "reward": turn.reward,
                "penalty": turn.penalty, "return": float(returns[i]), "advantage": float(advantages[i]),
                "state_key": turn.state_key, "outcome": ep.outcome, "outcome_explicit": ep.outcome_explicit,
                "success": ep.success, "terminated": ep.terminated, "truncated": ep.truncated,
                "truncation_reason": ep.truncation_reason, "error": ep.error,
                "info": json.dumps(turn.info, default=str),
            }
        )  # fmt: skip
    return records


def write_trajectories(
    path: Path, table: TurnTable, iteration: int, advantages: np.ndarray, returns: np.ndarray
) -> None:
    """Write one iteration's turns atomically (query later with pyarrow, pandas or DuckDB)."""
    arrow = pa.Table.from_pylist(turn_records(table, iteration, advantages, returns))
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]
