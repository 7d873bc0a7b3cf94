"""Experience replay: a store of the run's successful episodes, with the behaviour log-probs they were sampled with,
used off-policy (truncated importance sampling corrects the drift: ``objective.tis_cap`` is required).

- ``arpo``: a group whose fresh episodes all failed (outcome std < 0.05 and mean < 0.2) gets one stored success of
  the same task (env and seed), drawn uniformly among the task's newest ``replay.per_task``, in place of its first
  episode, so that a task the policy cannot solve yet still has a contrast ("ARPO: End-to-End Policy Optimization for
  GUI Agents with Experience Replay", code ``verl/trainer/replay_buffer.py``, ``apply_replay``, per
  ``shared/reference/objectives.md`` section 22: a per-task FIFO of 8 successes; any importance weighting beyond PPO
  there is unconfirmed, clew's is TIS). Tasks recur only where the training tasks are a fixed set
  (``env.train_seeds``).
- ``sil``: self-imitation. ``replay.per_iteration`` stored successes join each update with the advantage
  max(R - b, 0), b the mean outcome of the fresh batch: the advantage is recomputed against the current policy's
  performance every time an episode is replayed (SPEAR, "Learn the Ropes, Then Trust the Wins: Self-imitation with
  Progressive Exploration for Agentic Reinforcement Learning", recalibrates replayed advantages for policy drift;
  max(R - b, 0) is self-imitation learning's clipped advantage, Oh et al., "Self-Imitation Learning",
  arXiv 1806.05635, Eq. 2). SPEAR's curriculum over intrinsic rewards and its covariance clipping are not built.

The store holds the ``replay.capacity`` newest successes (first in, first out) and is saved with every checkpoint
(``replay.json``), so a resumed run replays the same episodes.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clew.rollout.batch import to_rows
from clew.store.run import atomic_write_text
from clew.table import TurnTable
from clew.tensors import TokenRow
from clew.types import Episode, Group

REPLAY_FILE = "replay.json"


@dataclass
class ReplayBuffer:
    """The newest ``capacity`` successful episodes, oldest first."""

    capacity: int
    episodes: list[Episode] = field(default_factory=list)
    per_task: int = 8  # ARPO draws among a task's newest ``per_task`` successes

    def add(self, groups: Sequence[Group]) -> int:
        """Store the successful episodes of ``groups`` (without errors); returns how many were added."""
        new = [e for g in groups for e in g.episodes if e.success and e.error is None and e.turns]
        self.episodes = (self.episodes + new)[-self.capacity :] if self.capacity else []
        return len(new)

    def successes_of(self, task_id: str, seed: int) -> list[Episode]:
        """The stored successes of the task (``task_id``, ``seed``), oldest first, at most ``per_task``."""
        found = [e for e in self.episodes if e.task_id == task_id and e.seed == seed]
        return found[-self.per_task :]

    def sample(self, n: int, seed: int) -> list[Episode]:
        """``n`` stored episodes drawn without replacement (all of them when fewer), seeded."""
        if len(self.episodes) <= n:
            return list(self.episodes)
        return random.Random(seed).sample(self.episodes, n)

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / REPLAY_FILE, json.dumps([e.to_dict() for e in self.episodes]))

    def load(self, folder: Path) -> None:
        """Restore what ``save`` wrote (a checkpoint from before replay ran leaves the store empty)."""
        path = folder / REPLAY_FILE
        if path.exists():
            self.episodes = [Episode.from_dict(d) for d in json.loads(path.read_text())][-self.capacity :]


def all_failed(group: Group) -> bool:
    """ARPO's test for a group without signal to learn from: outcome std < 0.05 and mean < 0.2."""
    outcomes = np.asarray(group.outcomes, dtype=np.float64)
    return bool(outcomes.size) and float(outcomes.std()) < 0.05 and float(outcomes.mean()) < 0.2


def inject(groups: Sequence[Group], buffer: ReplayBuffer, seed: int) -> tuple[list[Group], int]:
    """ARPO: each all-failure group (``all_failed``) with a stored success of its task gets one, drawn uniformly
    (seeded), in place of its first episode, with the group's id. Returns the groups and how many received one."""
    rng, out, injected = random.Random(seed), [], 0
    for group in groups:
        stored = buffer.successes_of(group.task_id, group.seed)
        if not stored or not all_failed(group):
            out.append(group)
            continue
        replayed = dataclasses.replace(rng.choice(stored), group_id=group.group_id)
        out.append(dataclasses.replace(group, episodes=[replayed, *group.episodes[1:]]))
        injected += 1
    return out, injected


def imitation_rows(
    episodes: Sequence[Episode], baseline: float, first_episode: int, merge_prefix: bool
) -> list[TokenRow]:
    """Self-imitation rows of ``episodes``: every action token's advantage max(R - ``baseline``, 0), R the episode's
    outcome; episode ids from ``first_episode`` on (after the fresh batch's, so that aggregation units stay apart);
    episodes with a zero advantage give no rows."""
    kept = [e for e in episodes if e.outcome - baseline > 0]
    if not kept:
        return []
    table = TurnTable.from_groups([Group(-1, kept[0].task_id, -1, list(kept))])
    advantage = np.array([max(kept[int(e)].outcome - baseline, 0.0) for e in table.episode], dtype=np.float64)
    rows = to_rows(table, advantage, merge_prefix=merge_prefix)
    return [dataclasses.replace(r, episode=r.episode + first_episode) for r in rows]
