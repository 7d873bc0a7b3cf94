"""Trajectory files: per-token credit as the learner used it, failure types, and older runs still readable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clew.rollout.batch import to_rows
from clew.store.trajectories import SCHEMA_VERSION, read_trajectories, schema_version, turn_records, write_trajectories
from clew.table import TurnTable
from clew.types import Episode, Group, Turn


def _table(entropies: bool = True) -> TurnTable:
    def turn(n: int, obs: str) -> Turn:
        values = [0.1 * (k + 1) for k in range(n)] if entropies else None
        return Turn(
            [1, 2], [5 + k for k in range(n)], [-0.5] * n, "act", observation=obs, info={"x": 1}, token_entropies=values
        )

    a = Episode("t", 0, 0, [turn(2, "o1"), turn(3, "o2")], 1.0, terminated=True)
    b = Episode("t", 0, 0, [turn(1, "o3")], 0.0, terminated=True)
    return TurnTable.from_groups([Group(0, "t", 0, [a, b])])


def test_token_advantages_are_what_the_learner_used(tmp_path: Path) -> None:
    table = _table()
    turn_adv, returns = np.array([0.5, 0.25, -1.0]), np.array([1.0, 1.0, 0.0])
    token_adv = np.array([0.1, 0.2, 0.3, 0.4, 0.5, -1.0])
    write_trajectories(tmp_path / "a.parquet", turn_records(table, 4, turn_adv, returns, token_adv))
    stored = read_trajectories(tmp_path / "a.parquet")
    rows = to_rows(table, turn_adv, token_adv)
    assert [x for r in stored for x in r["token_advantages"]] == [x for r in rows for x in r.advantages]
    assert [r["token_advantages"] for r in stored] == [[0.1, 0.2], [0.3, 0.4, 0.5], [-1.0]]
    assert stored[1]["token_entropies"] == pytest.approx([0.1, 0.2, 0.3])
    assert json.loads(stored[0]["info"]) == {"x": 1}  # entropies live in their own column only
    assert schema_version(tmp_path / "a.parquet") == SCHEMA_VERSION == 5


def test_turn_advantage_is_repeated_per_token_without_token_credit(tmp_path: Path) -> None:
    write_trajectories(
        tmp_path / "a.parquet", turn_records(_table(entropies=False), 0, np.array([0.5, 0.25, -1.0]), np.zeros(3))
    )
    stored = read_trajectories(tmp_path / "a.parquet")
    assert [r["token_advantages"] for r in stored] == [[0.5, 0.5], [0.25, 0.25, 0.25], [-1.0]]
    assert [r["token_entropies"] for r in stored] == [None, None, None]
    assert pq.read_schema(tmp_path / "a.parquet").field("token_entropies").type == pa.list_(pa.float64())


def test_misaligned_token_advantages_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="5 per-token values for 6 action tokens"):
        write_trajectories(tmp_path / "a.parquet", turn_records(_table(), 0, np.zeros(3), np.zeros(3), np.zeros(5)))


def test_version_1_files_are_upgraded_on_read(tmp_path: Path) -> None:
    """A batch-1 file: no schema metadata, no token columns, entropies inside ``info``."""
    old = [
        {"advantage": 0.5, "action_ids": [3, 4], "info": json.dumps({"token_entropies": [0.7, 0.8]})},
        {"advantage": -1.0, "action_ids": [5], "info": "{}"},
    ]
    pq.write_table(pa.Table.from_pylist(old), tmp_path / "v1.parquet")
    assert schema_version(tmp_path / "v1.parquet") == 1
    stored = read_trajectories(tmp_path / "v1.parquet")
    assert [r["token_advantages"] for r in stored] == [[0.5, 0.5], [-1.0]]
    assert [r["token_entropies"] for r in stored] == [[0.7, 0.8], None]
    assert [r["anchor_group"] for r in stored] == [None, None]  # schema 4's column, null before it


def test_anchor_groups_are_stored_and_null_without_one(tmp_path: Path) -> None:
    """The anchor-state group the credit used (GiGPO under any state_grouping): -1 stores null."""
    zeros = np.zeros(3)
    write_trajectories(
        tmp_path / "a.parquet", turn_records(_table(), 0, zeros, zeros, anchor_groups=np.array([4, -1, 4]))
    )
    assert [r["anchor_group"] for r in read_trajectories(tmp_path / "a.parquet")] == [4, None, 4]
    write_trajectories(tmp_path / "b.parquet", turn_records(_table(), 0, zeros, zeros))
    assert pq.read_schema(tmp_path / "b.parquet").field("anchor_group").type == pa.int64()
    assert [r["anchor_group"] for r in read_trajectories(tmp_path / "b.parquet")] == [None, None, None]


def test_an_iteration_without_turns_is_written(tmp_path: Path) -> None:
    table = TurnTable.from_groups([Group(0, "t", 0, [Episode("t", 0, 0, [], 0.0, truncated=True)])])
    write_trajectories(tmp_path / "a.parquet", turn_records(table, 0, np.zeros(0), np.zeros(0)))
    assert read_trajectories(tmp_path / "a.parquet") == []


def test_failure_types_are_stored_per_episode(tmp_path: Path) -> None:
    """``failure`` is a string column even when no episode failed; each turn row carries its episode's type."""
    ok = Episode("t", 0, 0, [Turn([1], [2], [-0.5], "a")], 1.0, terminated=True)
    write_trajectories(
        tmp_path / "none.parquet", turn_records(TurnTable.from_groups([Group(0, "t", 0, [ok])]), 0, *[np.zeros(1)] * 2)
    )
    assert pq.read_schema(tmp_path / "none.parquet").field("failure").type == pa.string()
    hung = Episode("t", 0, 0, [Turn([1], [3], [-0.5], "hang")], 0.0, truncated=True, error="timeout", failure="policy")
    lost = Episode("t", 0, 0, [Turn([1], [4], [-0.5], "b")], 0.0, truncated=True, error="EnvHostLost()")
    table = TurnTable.from_groups([Group(0, "t", 0, [ok, hung, lost])])
    write_trajectories(tmp_path / "a.parquet", turn_records(table, 0, np.zeros(3), np.zeros(3)))
    assert [r["failure"] for r in read_trajectories(tmp_path / "a.parquet")] == [None, "policy", "infra"]


def test_version_2_files_read_every_error_as_infra(tmp_path: Path) -> None:
    """Before failures were typed, every errored episode was left out of credit: that is what ``infra`` means."""
    old = [
        {"advantage": 0.0, "action_ids": [3], "error": None, "token_advantages": [0.0], "token_entropies": None},
        {"advantage": 0.0, "action_ids": [4], "error": "timeout", "token_advantages": [0.0], "token_entropies": None},
    ]
    pq.write_table(pa.Table.from_pylist(old).replace_schema_metadata({b"clew.schema": b"2"}), tmp_path / "v2.parquet")
    assert [r["failure"] for r in read_trajectories(tmp_path / "v2.parquet")] == [None, "infra"]
