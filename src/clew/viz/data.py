"""DuckDB queries over a run's trajectory Parquet files: groups of an iteration, episodes, anchor groups, comparisons.

Files of schema version 1 (no ``token_advantages``/``token_entropies``), 2 (no ``failure``) and 3 mix: every
read goes through ``read_parquet([...], union_by_name=true)``, and a row without token columns is upgraded by the
store's own rule (``clew.store.trajectories.upgrade_v1``: the turn advantage per token, entropies from
``info``), one without ``failure`` by ``upgrade_v2`` (an error then was infra; in SQL, ``_FAILURE_BEFORE_V3``).
Sort and status names are whitelisted; user text reaches SQL only as bound parameters.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb
from tokenizers import Tokenizer

from clew.store.trajectories import upgrade_v1, upgrade_v2
from clew.viz import runs
from clew.viz.records import (
    SORTS,
    STATUSES,
    AnchorMate,
    Comparison,
    EpisodeSummary,
    EpisodeView,
    GameSeat,
    GroupPage,
    GroupSummary,
    RunCurves,
    RunInfo,
    Token,
    TurnView,
)
from clew.viz.tokens import decode, find_tokenizer, load_tokenizer, token_texts

_STATUS_SQL = {
    "all": "TRUE",
    "success": "success",
    "failure": "NOT success",
    "invalid": "invalid_actions > 0",
    "truncated": "truncated",
    "error": "error IS NOT NULL",
    "infra_error": "failure = 'infra'",
    "policy_error": "failure = 'policy'",
}
_FAILURE = "CAST(failure AS VARCHAR)"
_FAILURE_BEFORE_V3 = "CASE WHEN error IS NOT NULL THEN 'infra' END"  # upgrade_v2's rule: every failure was infra
_SORT_SQL = {
    "group": "g",
    "success": "success_rate DESC",
    "outcome": "mean_outcome DESC",
    "spread": "outcome_std DESC",
    "turns": "mean_turns DESC",
}
_INVALID = "coalesce(json_extract_string(info, '$.invalid_action') IN ('true', '1'), false)"
_HIT = "(contains(lower(action_text), $q) OR contains(lower(observation), $q))"
_GROUPS_SQL = """
WITH turns AS (
  SELECT "group" AS g, episode, task_id, seed, outcome, reward, success, terminated, truncated, truncation_reason,
         CAST(error AS VARCHAR) AS error, {failure} AS failure, {invalid} AS invalid, ($q = '' OR {hit}) AS hit,
         {agent} AS agent, {match} AS game
  FROM {source}),
episodes AS (
  SELECT g, episode, any_value(task_id) AS task_id, any_value(seed) AS seed, any_value(outcome) AS outcome,
         sum(reward) AS total_reward, count(*) AS turns, bool_or(success) AS success, bool_or(terminated) AS terminated,
         bool_or(truncated) AS truncated, any_value(truncation_reason) AS truncation_reason, any_value(error) AS error,
         any_value(failure) AS failure, sum(invalid::INTEGER) AS invalid_actions, sum(hit::INTEGER) AS matches,
         any_value(agent) AS agent, any_value(game) AS game
  FROM turns GROUP BY g, episode),
stats AS (
  SELECT g, avg(success::DOUBLE) AS success_rate, avg(outcome) AS mean_outcome,
         coalesce(stddev_pop(outcome), 0) AS outcome_std, avg(turns) AS mean_turns
  FROM episodes GROUP BY g)
SELECT e.*, s.success_rate, s.mean_outcome, s.outcome_std,
       (SELECT count(DISTINCT g) FROM episodes) AS total_groups, (SELECT count(*) FROM episodes) AS total_episodes
FROM episodes e JOIN stats s USING (g)
WHERE ({status}) AND ($q = '' OR e.matches > 0)
ORDER BY {sort}, g, episode
"""
ANCHOR_COLUMNS = ("state_key", "anchor_group")  # what the anchor-state panel groups turns by
_EPISODE_COLUMNS = (
    '"group", episode, turn, task_id, seed, len(prompt_ids) AS prompt_len, '
    "CASE WHEN turn = 0 THEN prompt_ids END AS prompt_ids, action_ids, behavior_logprobs, action_text, observation, "
    'reward, penalty, "return", advantage, state_key, outcome, success, terminated, truncated, truncation_reason, '
    "CAST(error AS VARCHAR) AS error, info, "
    # a turn starts a segment when its prompt does not extend the last turn's prompt + action (a context edit, a
    # window, a harness that trimmed its history): its rows are trained apart (clew.rollout.batch.to_rows)
    "coalesce(list_slice(prompt_ids, 1, len(lag(list_concat(prompt_ids, action_ids)) OVER (ORDER BY turn))) "
    "!= lag(list_concat(prompt_ids, action_ids)) OVER (ORDER BY turn), true) AS segment_start"
)


def source(paths: Sequence[Path]) -> str:
    """The SQL table expression reading ``paths`` (v1 and v2 files mixed by column name)."""
    quoted = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    return f"read_parquet([{quoted}], union_by_name = true)"


def first_divergence(a: Sequence[Sequence[int]], b: Sequence[Sequence[int]]) -> int | None:
    """The first turn whose action ids differ (or where one episode has ended); None if identical."""
    for t in range(max(len(a), len(b))):
        if t >= len(a) or t >= len(b) or list(a[t]) != list(b[t]):
            return t
    return None


def summary_from_rows(rows: Sequence[dict[str, Any]]) -> EpisodeSummary:
    """An episode's summary from its turn rows (all rows of one episode, in turn order)."""
    last = rows[-1]
    return EpisodeSummary(
        episode=int(last["episode"]),
        group=int(last["group"]),
        outcome=float(last["outcome"]),
        total_reward=float(sum(r["reward"] for r in rows)),
        turns=len(rows),
        success=bool(last["success"]),
        terminated=bool(last["terminated"]),
        truncated=bool(last["truncated"]),
        truncation_reason=last["truncation_reason"],
        error=last["error"],
        failure=last["failure"],
        invalid_actions=sum(_invalid(r["info"]) for r in rows),
        matches=0,
        agent=last.get("agent"),
        match=last.get("match"),
    )


def _invalid(info: str | None) -> bool:
    value = json.loads(info or "{}").get("invalid_action")
    return bool(value)


def make_tokens(row: dict[str, Any], tokenizer: Tokenizer | None) -> tuple[Token, ...]:
    """The action tokens of an (upgraded) turn row."""
    ids = [int(i) for i in row["action_ids"] or []]
    logprobs = list(row["behavior_logprobs"] or [])
    advantages = list(row["token_advantages"] or [])
    entropies = row.get("token_entropies") or [None] * len(ids)
    texts = token_texts(tokenizer, ids)
    return tuple(
        Token(index=k, id=i, text=texts[k], logprob=float(logprobs[k]), advantage=float(advantages[k]),
              entropy=None if entropies[k] is None else float(entropies[k]))
        for k, i in enumerate(ids)
    )  # fmt: skip


class RunData:
    """Read-only queries over one run directory; safe to share between server threads (a cursor per query)."""

    def __init__(self, name: str, run_dir: Path) -> None:
        self.name = name
        self.run_dir = Path(run_dir)
        self._db = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        self._columns: dict[Path, frozenset[str]] = {}

    def close(self) -> None:
        self._db.close()

    @cached_property
    def tokenizer_path(self) -> Path | None:
        return find_tokenizer(self.run_dir)

    @cached_property
    def tokenizer(self) -> Tokenizer | None:
        return load_tokenizer(self.tokenizer_path)

    def files(self) -> dict[int, Path]:
        return runs.iteration_files(self.run_dir)

    def file(self, iteration: int) -> Path:
        found = self.files().get(iteration)
        if found is None:
            raise KeyError(f"run {self.name} has no trajectories for iteration {iteration}")
        return found

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts (a fresh cursor: DuckDB connections are not shared across threads)."""
        with self._lock:
            cursor = self._db.cursor()
        try:
            cursor.execute(sql, params or {})
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def columns(self, path: Path) -> frozenset[str]:
        if path not in self._columns:
            self._columns[path] = frozenset(
                r["column_name"] for r in self.query(f"DESCRIBE SELECT * FROM {source([path])}")
            )
        return self._columns[path]

    def info(self) -> RunInfo:
        return runs.run_info(self.name, self.run_dir, self.tokenizer_path)

    def curves(self) -> RunCurves:
        """Curves from ``metrics.jsonl`` plus mean action/prompt tokens per turn from the trajectories."""
        return runs.curves(self.name, self.run_dir, self.length_series())

    def length_series(self) -> dict[str, list[tuple[float, float]]]:
        files = self.files()
        if not files:
            return {}
        steps = runs.steps_by_iteration(self.run_dir)
        rows = self.query(
            "SELECT iteration, avg(len(action_ids)) AS action, avg(len(prompt_ids)) AS prompt "
            f"FROM {source(list(files.values()))} GROUP BY iteration ORDER BY iteration"
        )
        known = [r for r in rows if int(r["iteration"]) in steps]
        return {
            "lengths/action_tokens": [(steps[int(r["iteration"])], float(r["action"])) for r in known],
            "lengths/prompt_tokens": [(steps[int(r["iteration"])], float(r["prompt"])) for r in known],
        }

    def groups(self, iteration: int, status: str = "all", sort: str = "group", query: str = "") -> GroupPage:
        """The iteration's groups with their ``G`` episodes, filtered, sorted and searched."""
        if status not in STATUSES or sort not in SORTS:
            raise ValueError(f"status must be one of {STATUSES} and sort one of {SORTS}; got {status!r}, {sort!r}")
        path = self.file(iteration)
        sql = _GROUPS_SQL.format(
            source=source([path]), invalid=_INVALID, hit=_HIT, status=_STATUS_SQL[status], sort=_SORT_SQL[sort],
            failure=_FAILURE if "failure" in self.columns(path) else _FAILURE_BEFORE_V3,
            agent="agent" if "agent" in self.columns(path) else "NULL::BIGINT",
            match='CAST("match" AS VARCHAR)' if "match" in self.columns(path) else "NULL::VARCHAR",
        )  # fmt: skip
        rows = self.query(sql, {"q": query.strip().lower()})
        return GroupPage(
            run=self.name, iteration=iteration, iterations=tuple(self.files()), status=status, sort=sort,
            query=query, total_groups=int(rows[0]["total_groups"]) if rows else self._count_groups(iteration),
            total_episodes=int(rows[0]["total_episodes"]) if rows else -1, groups=_assemble_groups(rows),
        )  # fmt: skip

    def _count_groups(self, iteration: int) -> int:
        rows = self.query(f'SELECT count(DISTINCT "group") AS n FROM {source([self.file(iteration)])}')
        return int(rows[0]["n"])

    def turn_rows(self, iteration: int, episode: int) -> list[dict[str, Any]]:
        """An episode's turn rows in order, upgraded to schema version 2."""
        path = self.file(iteration)
        extra: list[str] = [
            c for c in ("token_advantages", "token_entropies", "anchor_group", "agent") if c in self.columns(path)
        ]
        extra += ['CAST("match" AS VARCHAR) AS "match"'] if "match" in self.columns(path) else []
        failure = "failure" in self.columns(path)
        columns = ", ".join([_EPISODE_COLUMNS, *extra, *([f"{_FAILURE} AS failure"] if failure else [])])
        rows = self.query(f"SELECT {columns} FROM {source([path])} WHERE episode = $e ORDER BY turn", {"e": episode})
        if not rows:
            raise KeyError(f"run {self.name} iteration {iteration} has no episode {episode}")
        rows = [r if failure else upgrade_v2(r) for r in rows]
        return [r if r.get("token_advantages") is not None else upgrade_v1(r) for r in rows]

    def anchor_rows(
        self, iteration: int, group: int, keys: Sequence[str | int], column: str = "state_key"
    ) -> list[dict[str, Any]]:
        """Turns of ``group`` in ``iteration`` whose ``column`` (``state_key`` or ``anchor_group``) is in ``keys``."""
        if column not in ANCHOR_COLUMNS:
            raise ValueError(f"anchor column must be one of {list(ANCHOR_COLUMNS)}, got {column!r}")
        if not keys:
            return []
        sql = (
            f'SELECT episode, turn, {column} AS anchor, "return", advantage, action_text '
            f'FROM {source([self.file(iteration)])} WHERE "group" = $g AND list_contains($keys, {column}) '
            "ORDER BY episode, turn"
        )
        return self.query(sql, {"g": group, "keys": list(keys)})

    def episode(self, iteration: int, episode: int) -> EpisodeView:
        """Every turn of one episode with per-token credit and the anchor-state groups the credit used: by
        ``anchor_group`` where the estimator stored one (schema 4), else by ``state_key``."""
        rows = self.turn_rows(iteration, episode)
        summary = summary_from_rows(rows)
        column = "anchor_group" if any(r.get("anchor_group") is not None for r in rows) else "state_key"
        keys = sorted({r[column] for r in rows if r[column] is not None})
        mates = self.anchor_rows(iteration, summary.group, keys, column)
        prompt = rows[0]["prompt_ids"] if rows[0]["turn"] == 0 else None
        return EpisodeView(
            run=self.name, iteration=iteration, summary=summary, task_id=str(rows[0]["task_id"]),
            seed=int(rows[0]["seed"]), prompt_text=decode(self.tokenizer, prompt) if prompt is not None else None,
            prompt_tokens=int(rows[0]["prompt_len"] or 0),
            tokenizer=str(self.tokenizer_path) if self.tokenizer is not None else None,
            turns=tuple(self._turn_view(r, mates, column) for r in rows), game=self.game(iteration, summary.match),
        )  # fmt: skip

    def game(self, iteration: int, match: str | None) -> tuple[GameSeat, ...]:
        """Every seat's episode of the self-play game ``match`` in ``iteration`` (() for None)."""
        if match is None:
            return ()
        rows = self.query(
            f"SELECT episode, any_value(agent) AS agent, any_value(outcome) AS outcome, count(*) AS turns, "
            f'avg(advantage) AS mean_advantage FROM {source([self.file(iteration)])} WHERE "match" = $m '
            "GROUP BY episode ORDER BY agent",
            {"m": match},
        )
        return tuple(
            GameSeat(
                int(r["episode"]), int(r["agent"]), float(r["outcome"]), int(r["turns"]), float(r["mean_advantage"])
            )
            for r in rows
        )  # fmt: skip

    def _turn_view(self, row: dict[str, Any], mates: Sequence[dict[str, Any]], column: str) -> TurnView:
        same = [m for m in mates if row[column] is not None and m["anchor"] == row[column]]
        anchor = tuple(
            AnchorMate(int(m["episode"]), int(m["turn"]), float(m["return"]), float(m["advantage"]), m["action_text"])
            for m in same
            if (m["episode"], m["turn"]) != (row["episode"], row["turn"])
        )
        return TurnView(
            turn=int(row["turn"]), action_text=row["action_text"] or "", observation=row["observation"] or "",
            reward=float(row["reward"]), penalty=float(row["penalty"] or 0.0), turn_return=float(row["return"]),
            advantage=float(row["advantage"]), state_key=row["state_key"], invalid=_invalid(row["info"]),
            info=row["info"] or "{}", tokens=make_tokens(row, self.tokenizer), anchor=anchor,
            anchor_group=row.get("anchor_group"), segment_start=bool(row.get("segment_start", row["turn"] == 0)),
            agent=row.get("agent"),
        )  # fmt: skip

    def compare(self, iteration: int, a: int, b: int) -> Comparison:
        """Two episodes of one group side by side, with the first turn where their actions differ."""
        left, right = self.episode(iteration, a), self.episode(iteration, b)
        if left.summary.group != right.summary.group:
            raise ValueError(f"episodes {a} and {b} are in groups {left.summary.group} and {right.summary.group}")
        ids = (
            [[t.id for t in turn.tokens] for turn in left.turns],
            [[t.id for t in turn.tokens] for turn in right.turns],
        )
        return Comparison(self.name, iteration, left, right, first_divergence(*ids))

    def episode_ids(self, iteration: int) -> list[int]:
        rows = self.query(f"SELECT DISTINCT episode FROM {source([self.file(iteration)])} ORDER BY episode")
        return [int(r["episode"]) for r in rows]


def _assemble_groups(rows: Sequence[dict[str, Any]]) -> tuple[GroupSummary, ...]:
    """Episode rows (already in group order) -> groups, keeping that order."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(int(row["g"]), []).append(row)
    return tuple(_group(members) for members in groups.values())


def _group(members: Sequence[dict[str, Any]]) -> GroupSummary:
    first = members[0]
    return GroupSummary(
        group=int(first["g"]), task_id=str(first["task_id"]), seed=int(first["seed"]),
        success_rate=float(first["success_rate"]), mean_outcome=float(first["mean_outcome"]),
        outcome_std=float(first["outcome_std"]), episodes=tuple(_episode_summary(m) for m in members),
    )  # fmt: skip


def _episode_summary(row: dict[str, Any]) -> EpisodeSummary:
    return EpisodeSummary(
        episode=int(row["episode"]), group=int(row["g"]), outcome=float(row["outcome"]),
        total_reward=float(row["total_reward"]), turns=int(row["turns"]), success=bool(row["success"]),
        terminated=bool(row["terminated"]), truncated=bool(row["truncated"]),
        truncation_reason=row["truncation_reason"], error=row["error"], failure=row["failure"],
        invalid_actions=int(row["invalid_actions"]), matches=int(row["matches"]),
        agent=None if row["agent"] is None else int(row["agent"]), match=row["game"],
    )  # fmt: skip
