"""Recording a run: header files, metrics.jsonl (truncated on resume), rollout metrics."""

from __future__ import annotations

import json
import platform
import subprocess
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from clew.credit import Credit
from clew.eval import ending_shares, summarize
from clew.eval.trajectory import episode_metrics
from clew.rollout import env_turns
from clew.store.run import append_jsonl, atomic_write_text, read_jsonl
from clew.store.trajectories import turn_records, write_trajectories
from clew.table import TurnTable
from clew.trainer.trackers import Trackers
from clew.types import Group

Reporter = Callable[[str, dict[str, float]], None]  # (kind, record): the CLI's progress display
PACKAGES = ("clew", "torch", "transformers", "tokenizers", "numpy", "pydantic", "pyarrow")


class Recorder:
    """Appends namespaced records to ``RUN/metrics.jsonl`` and mirrors them to the run's trackers."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.jsonl"
        self.trackers: Trackers | None = None

    def write_header(self, config_yaml: str) -> None:
        """Resolved config, package versions, git SHA; starts a fresh metrics file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.run_dir / "config.yaml", config_yaml)
        atomic_write_text(self.run_dir / "versions.json", json.dumps(versions(), indent=2))
        atomic_write_text(self.path, "")

    def open_trackers(
        self, names: Sequence[str], config: dict[str, Any], project: str, name: str | None, start: int = 0
    ) -> None:
        """Start ``logging.trackers`` (``clew.trainer.trackers``) at iteration ``start``; none named: nothing is
        imported."""
        if names:
            self.trackers = Trackers(names, self.run_dir, config, project, name or self.run_dir.name, start)

    def log(self, kind: str, record: dict[str, Any], iteration: int | None = None) -> None:
        plain = _plain(record)
        append_jsonl(self.path, {"kind": kind, "iteration": iteration, **plain})
        if self.trackers:
            self.trackers.log(plain, iteration)

    def table(self, name: str, rows: list[dict[str, Any]]) -> None:
        if self.trackers:
            self.trackers.table(name, rows)

    def image(self, name: str, path: Path) -> None:
        if self.trackers:
            self.trackers.image(name, path)

    def close(self) -> None:
        if self.trackers:
            self.trackers.close()
            self.trackers = None

    def truncate(self, iteration: int) -> None:
        """Drop records newer than ``iteration`` (and a torn last line) before resuming."""
        keep = [r for r in read_jsonl(self.path) if r.get("iteration") is None or r["iteration"] <= iteration]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v) for k, v in record.items()
    }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["git_sha"] = _git_sha()
    return out


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def rollout_metrics(groups: Sequence[Group]) -> dict[str, float]:
    """Episode metrics of every group collected; ``rollout/error_rate`` splits into ``error_rate_infra``
    (episodes left out of credit) and ``error_rate_policy`` (kept, scored as failures)."""
    episodes = [e for g in groups for e in g.episodes]
    result = summarize(episodes)
    n = max(len(episodes), 1)
    return {
        "rollout/episodes": float(result.episodes),
        "rollout/success_rate": result.success_rate,
        "rollout/mean_return": result.mean_return,
        "rollout/mean_turns": result.mean_turns,
        "rollout/invalid_action_rate": result.invalid_action_rate,
        "rollout/truncation_rate": result.truncation_rate,
        "rollout/error_rate": result.error_rate,
        "rollout/error_rate_infra": sum(e.error is not None and e.failure != "policy" for e in episodes) / n,
        "rollout/error_rate_policy": sum(e.failure == "policy" for e in episodes) / n,
        "rollout/env_steps": float(sum(env_turns(e) for e in episodes)),
        "rollout/zero_variance_share": sum(len(set(g.outcomes)) == 1 for g in groups if g.episodes)
        / max(len(groups), 1),
        **{f"rollout/ended_{reason}": share for reason, share in ending_shares(episodes).items()},
        **episode_metrics(episodes),  # repetition, tool errors, steps over the optimum, action lengths
    }


def write_iteration(path: Path, iteration: int, table: TurnTable, credit: Credit, collected: Sequence[Group]) -> None:
    """The iteration's trajectories: the trained turns with their credit, then the turns of episodes left out
    by an ``infra`` failure (advantage and return 0: never trained), so the store and ``clew view`` show them
    with their failure type. Episodes that failed before their first turn have no turn to store."""
    left_out = [Group(g.group_id, g.task_id, g.seed, [e for e in g.episodes if e.failure == "infra" and e.turns])
                for g in collected]  # fmt: skip
    left_out = [g for g in left_out if g.episodes]
    anchors = credit.anchor_group
    if not left_out:
        adv, ret, token_adv = credit.turn_advantage, credit.turn_return, credit.token_advantage
        write_trajectories(path, turn_records(table, iteration, adv, ret, token_adv, anchors))
        return
    extra = TurnTable.from_groups(left_out)
    both = TurnTable.from_groups(_groups_of(table) + left_out)
    zeros, zero_tokens = np.zeros(extra.n_turns), np.zeros(int(extra.token_offsets[-1]))
    token_adv = None if credit.token_advantage is None else np.concatenate([credit.token_advantage, zero_tokens])
    advantages = np.concatenate([credit.turn_advantage, zeros])
    if anchors is not None:  # left-out turns are in no anchor group
        anchors = np.concatenate([anchors, np.full(extra.n_turns, -1, dtype=np.int64)])
    returns = np.concatenate([credit.turn_return, zeros])
    write_trajectories(path, turn_records(both, iteration, advantages, returns, token_adv, anchors))


def _groups_of(table: TurnTable) -> list[Group]:
    """The groups a table was flattened from, in order (episodes keep their order and group ids)."""
    groups: list[Group] = []
    for episode in table.episodes:
        if not groups or groups[-1].group_id != episode.group_id:
            groups.append(Group(episode.group_id, episode.task_id, episode.seed))
        groups[-1].episodes.append(episode)
    return groups
