"""Groups flattened once into one turn table: the order that credit, training rows and the store share.

Shapes: ``N`` turn rows in (group, episode, turn) order, episode-contiguous; ``K`` action tokens,
row ``i`` owning tokens ``[token_offsets[i], token_offsets[i + 1])``. Every consumer of per-turn
numbers (``CreditInput.from_table``, ``rollout.batch.to_rows``, ``store.trajectories``) reads this
table, and ``check_aligned`` refuses advantages whose length does not match it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clew.types import REPLAYED, Episode, Group, Turn

Array = np.ndarray


@dataclass(frozen=True)
class TurnTable:
    """Per-turn columns of a batch of groups, plus the records they came from.

    Attributes:
        turns: (N,) the ``Turn`` records, in row order.
        episodes: the ``Episode`` records, in order; ``episode`` indexes into it.
        group: (N,) int, the row's group id.
        episode: (N,) int, 0, 1, ... over every episode of every group (also empty ones).
        turn: (N,) int, the turn's index within its episode.
        reward, penalty: (N,) float, the env's step reward and the shaping penalty.
        outcome: (N,) float, the episode's outcome repeated on each of its rows.
        outcome_explicit: (N,) bool, whether the env reported that outcome itself.
        state_key: (N,) int, dense id of ``Turn.state_key`` (-1 for None).
        observation: (N,) int, dense id of the observation the turn answered.
        observation_text: (N,) that observation's text (a context edit's marked ``[edit] ...``).
        env_step: (N,) bool, False for a context-edit turn (a summary): no env step followed it.
        agent: (N,) int or None: the seat that acted (``info["agent"]``, else its episode's ``agent``), when every
            turn has one.
        token_offsets: (N + 1,) int; token_ids, logprob: (K,); entropy: (K,) or None.
    """

    turns: list[Turn]
    episodes: list[Episode]
    group: Array
    episode: Array
    turn: Array
    reward: Array
    penalty: Array
    outcome: Array
    outcome_explicit: Array
    state_key: Array
    observation: Array
    observation_text: list[str]
    env_step: Array
    agent: Array | None
    token_offsets: Array
    token_ids: Array
    logprob: Array
    entropy: Array | None

    @property
    def n_turns(self) -> int:
        return len(self.turns)

    @classmethod
    def from_groups(cls, groups: Sequence[Group]) -> TurnTable:
        """Flatten ``groups``; the only place in clew that walks groups -> episodes -> turns for training."""
        pairs = [(g.group_id, e) for g in groups for e in g.episodes]
        episodes = [e for _, e in pairs]
        rows = [(gid, i, t, turn) for i, (gid, e) in enumerate(pairs) for t, turn in enumerate(e.turns)]
        turns = [r[3] for r in rows]
        seen = [_seen(episodes[i], t) for _, i, t, _ in rows]
        lengths = [len(t.action_ids) for t in turns]
        entropies = [t.token_entropies for t in turns]
        has_entropy = bool(turns) and all(e is not None and len(e) == n for e, n in zip(entropies, lengths))
        agents = [turn.info.get("agent", episodes[i].agent) for _, i, _, turn in rows]
        return cls(
            turns=turns,
            episodes=episodes,
            group=np.array([r[0] for r in rows], dtype=np.int64),
            episode=np.array([r[1] for r in rows], dtype=np.int64),
            turn=np.array([r[2] for r in rows], dtype=np.int64),
            reward=np.array([t.reward for t in turns], dtype=np.float64),
            penalty=np.array([t.penalty for t in turns], dtype=np.float64),
            outcome=np.array([episodes[r[1]].outcome for r in rows], dtype=np.float64),
            outcome_explicit=np.array([episodes[r[1]].outcome_explicit for r in rows], dtype=bool),
            state_key=_dense([t.state_key for t in turns]),
            observation=_dense(seen),
            observation_text=seen,
            env_step=np.array([t.env_step for t in turns], dtype=bool),
            agent=np.array(agents, dtype=np.int64) if turns and None not in agents else None,
            token_offsets=np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64),
            token_ids=np.array([x for t in turns for x in t.action_ids], dtype=np.int64),
            logprob=np.array([x for t in turns for x in t.behavior_logprobs], dtype=np.float64),
            entropy=np.array([x for e in entropies for x in (e or [])], dtype=np.float64) if has_entropy else None,
        )

    def check_aligned(self, turn_values: Array, token_values: Array | None = None, what: str = "advantages") -> None:
        """Fail unless per-turn values have one entry per row and per-token values one per action token."""
        if turn_values.shape != (self.n_turns,):
            raise ValueError(f"{what}: {turn_values.shape[0]} per-turn values for {self.n_turns} turn rows")
        n_tokens = int(self.token_offsets[-1])
        if token_values is not None and token_values.shape != (n_tokens,):
            raise ValueError(f"{what}: {token_values.shape[0]} per-token values for {n_tokens} action tokens")

    @property
    def trained_tokens(self) -> np.ndarray:
        """(K,) bool: the action tokens that make training rows, all but those of a branch's replayed prefix (turns
        marked ``info["replayed"]``, which their root episode trains on)."""
        kept = np.array([not t.info.get(REPLAYED) for t in self.turns], dtype=bool)
        return np.repeat(kept, np.diff(self.token_offsets))

    def episode_rows(self) -> list[range]:
        """For each episode (also those without turns), the range of its rows."""
        bounds = np.searchsorted(self.episode, np.arange(len(self.episodes) + 1))
        return [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _seen(episode: Episode, t: int) -> str:
    """The observation turn ``t`` answered: the first observation, then the previous turn's; a context edit
    (a summary) is marked, so it never shares an observation group with the action that follows it."""
    seen = episode.first_observation if t == 0 else episode.turns[t - 1].observation
    edit = episode.turns[t].context_edit
    return f"[{edit}] {seen}" if edit else seen


def _dense(values: Sequence[str | None]) -> Array:
    """Strings -> 0, 1, ... in order of first appearance; None -> -1."""
    ids: dict[str, int] = {}
    return np.array([-1 if v is None else ids.setdefault(v, len(ids)) for v in values], dtype=np.int64)
