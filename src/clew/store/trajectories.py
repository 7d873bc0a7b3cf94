"""Trajectories per iteration as Parquet: one row per turn, with rewards, returns and advantages.

Schema versions (Parquet key-value metadata ``clew.schema``):

- 1 (batch 1 runs, no metadata): per-turn ``advantage`` only; token entropies, when the engine gave
  them, inside the ``info`` JSON.
- 2: adds ``token_advantages`` (one per action token: the advantage the learner used for that token)
  and ``token_entropies`` (one per action token, or null). ``read_trajectories`` fills both for
  version-1 files.
- 3: adds ``failure`` (``infra``, ``policy`` or null: the type of the episode's ``error``, see
  ``clew.types.Episode``). Older files had every failure left out of credit: ``read_trajectories``
  fills ``infra`` where ``error`` is set, so every reader sees version 3.
- 4: adds ``anchor_group`` (int or null): the anchor-state group the credit estimator computed the turn's
  step advantage in (GiGPO under its ``state_grouping``; ids unique within the file), null for a turn in no
  group or an estimator without anchor groups. ``read_trajectories`` fills null for older files, whose
  readers (``clew view``) group anchor states by ``state_key`` as before.
- 5: adds ``agent`` (int or null: the seat the episode played in a self-play game, ``Episode.agent``) and
  ``match`` (str or null: the game's id, shared by its seats' episodes). ``read_trajectories`` fills nulls.

In every version the ``info`` JSON is the env's ``info`` plus the turn's ``context_edit`` (the strategy
that wrote a summary turn) and ``cut`` (true when the action stopped at ``max_new_tokens``), which
``clew.types.Turn`` holds as typed fields.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clew.store.run import atomic_write_bytes
from clew.table import TurnTable
from clew.types import Turn

SCHEMA_VERSION = 5
SCHEMA_KEY = b"clew.schema"
TYPED_COLUMNS = pa.schema(
    [
        ("token_advantages", pa.list_(pa.float64())),
        ("token_entropies", pa.list_(pa.float64())),
        ("failure", pa.string()),
        ("anchor_group", pa.int64()),
        ("agent", pa.int64()),
        ("match", pa.string()),
    ]
)  # columns that may be null in every row, typed all the same


def turn_records(
    table: TurnTable,
    iteration: int,
    advantages: np.ndarray,
    returns: np.ndarray,
    token_advantages: np.ndarray | None = None,
    anchor_groups: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One record per row of ``table``; ``advantages``/``returns`` are (N,), ``token_advantages`` (K,) or None,
    ``anchor_groups`` (N,) int or None (-1 and None store null)."""
    table.check_aligned(advantages, token_advantages)
    table.check_aligned(returns, what="returns")
    groups = np.full(table.n_turns, -1, dtype=np.int64) if anchor_groups is None else anchor_groups
    table.check_aligned(groups, what="anchor groups")
    off = table.token_offsets
    records: list[dict[str, Any]] = []
    for i, turn in enumerate(table.turns):
        ep = table.episodes[int(table.episode[i])]
        n = int(off[i + 1] - off[i])
        token_adv = [float(advantages[i])] * n if token_advantages is None else token_advantages[off[i] : off[i + 1]]
        entropies = _entropies(turn.token_entropies, n)
        info = {**turn.info, **_typed_info(turn)}
        records.append(
            {
                "iteration": iteration, "group": int(table.group[i]), "episode": int(table.episode[i]),
                "turn": int(table.turn[i]), "task_id": ep.task_id, "seed": ep.seed, "prompt_ids": turn.prompt_ids,
                "action_ids": turn.action_ids, "behavior_logprobs": turn.behavior_logprobs,
                "action_text": turn.action_text, "observation": turn.observation, "reward": turn.reward,
                "penalty": turn.penalty, "return": float(returns[i]), "advantage": float(advantages[i]),
                "token_advantages": [float(x) for x in token_adv], "token_entropies": entropies,
                "state_key": turn.state_key, "outcome": ep.outcome, "outcome_explicit": ep.outcome_explicit,
                "success": ep.success, "terminated": ep.terminated, "truncated": ep.truncated,
                "truncation_reason": ep.truncation_reason, "error": ep.error, "failure": ep.failure,
                "info": json.dumps(info, default=str), "anchor_group": int(groups[i]) if groups[i] >= 0 else None,
                "agent": ep.agent, "match": ep.match,
            }
        )  # fmt: skip
    return records


def _typed_info(turn: Turn) -> dict[str, Any]:
    """The turn's ``context_edit`` and ``cut`` travel in the ``info`` JSON, as before they were typed."""
    edit = {"context_edit": turn.context_edit} if turn.context_edit is not None else {}
    return {**edit, **({"cut": True} if turn.cut else {})}


def _entropies(values: list[float] | None, n: int) -> list[float] | None:
    return [float(x) for x in values] if values is not None and len(values) == n else None


def write_trajectories(path: Path, records: list[dict[str, Any]]) -> None:
    """Write one iteration's turn records (``turn_records``) atomically (query later with pyarrow, pandas or
    DuckDB)."""
    arrow = pa.Table.from_pylist(records)
    for field in TYPED_COLUMNS if records else []:  # typed even when every value is null (no entropies)
        arrow = arrow.set_column(arrow.schema.get_field_index(field.name), field, arrow[field.name].cast(field.type))
    arrow = arrow.replace_schema_metadata({SCHEMA_KEY: str(SCHEMA_VERSION).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(arrow, sink, compression="zstd")
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def schema_version(path: Path) -> int:
    """The file's schema version (1 for files written before versioning)."""
    metadata = pq.read_schema(path).metadata or {}
    return int(metadata.get(SCHEMA_KEY, b"1"))


def read_trajectories(path: Path) -> list[dict[str, Any]]:
    """Rows of one file, upgraded to the current schema."""
    rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
    version = schema_version(path)
    for row in rows:
        if version < 2:
            upgrade_v1(row)
        if version < 3:
            upgrade_v2(row)
        if version < 4:
            row.setdefault("anchor_group", None)
        if version < 5:
            row.setdefault("agent", None)
            row.setdefault("match", None)
    return rows


def upgrade_v1(row: dict[str, Any]) -> dict[str, Any]:
    """Fill the version-2 columns of a version-1 row in place: the turn advantage per token, entropies from info."""
    n = len(row["action_ids"] or [])
    info = json.loads(row.get("info") or "{}")
    row["token_advantages"] = [float(row["advantage"])] * n
    row["token_entropies"] = _entropies(info.get("token_entropies"), n)
    return row


def upgrade_v2(row: dict[str, Any]) -> dict[str, Any]:
    """Fill the version-3 ``failure`` of an older row in place: ``infra`` where ``error`` is set (the rule then)."""
    row["failure"] = "infra" if row.get("error") is not None else None
    return row
